"""jit/vmap of semiring_grad, and float32 finiteness of the log-space semirings on deep models
where raw-space values over/underflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from oracle import SEMIRINGS

F32_MAX_LOG = float(np.log(np.finfo(np.float32).max))  # ≈ 88.7


def f(x, w):
    h = jnp.tanh(w @ x)
    return jnp.sum(jax.nn.softmax(h) * jnp.arange(3.0)) + jnp.max(x) * x[0]


X = jnp.array([0.3, -0.7, 1.1])
W = jnp.array([[0.5, -1.0, 0.2], [0.3, 0.8, -0.6], [1.2, 0.1, 0.4]])


@pytest.mark.parametrize("S", SEMIRINGS, ids=lambda s: s.name)
def test_jit_and_vmap_equal_eager(S):
    g = js.semiring_grad(f, S, argnums=(0, 1))
    eager = g(X, W)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), jax.jit(g)(X, W), eager
    )
    xs = jnp.stack([X, -X, 2 * X])
    batched = jax.vmap(g, in_axes=(0, None))(xs, W)
    for i in range(3):
        one = g(xs[i], W)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), batched, one
        )


def test_jit_of_vmap_with_closure_over_traced_values():
    @jax.jit
    def per_example(xs, w):
        return jax.vmap(lambda x: js.semiring_grad(lambda x: f(x, w), js.Entropy())(x))(xs)

    out = per_example(jnp.stack([X, X * 0.5]), W)
    np.testing.assert_allclose(
        out.log_z[0], js.semiring_grad(lambda x: f(x, W), js.Entropy())(X).log_z, rtol=1e-5
    )


# --------------------------------------------------------------------------- deep numerics

LOG_SEMIRINGS = [js.Entropy(), js.Log(), js.MaxAbs(), js.Counting()]


def _all_finite(value):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(value))


def residual_mlp(depth=48, width=16, seed=0):
    w = jnp.asarray(np.random.default_rng(seed).normal(size=(depth, width, width)), jnp.float32)

    def f(x):
        for layer in range(depth):
            x = x + jnp.tanh(w[layer] @ x)
        return jnp.sum(x)

    # at x = 0 every tanh is in its linear regime: path products do not shrink with depth
    return f, jnp.zeros(width, jnp.float32)


def test_48_layer_residual_mlp_overflows_raw_space_but_log_space_is_finite():
    f, x = residual_mlp()
    run = jax.jit(lambda x: [js.semiring_grad(f, S)(x) for S in LOG_SEMIRINGS + [js.Expectation()]])
    entropy, log, maxabs, counting, expectation = run(x)
    for v in (entropy, log, maxabs, counting):
        assert _all_finite(v)
    # raw space is hopeless here: Σ|g(p)| and the path count overflow float32
    assert float(jnp.min(log)) > F32_MAX_LOG and float(jnp.min(counting)) > F32_MAX_LOG
    assert not _all_finite(expectation)
    assert bool(jnp.all(entropy.entropy >= 0)) and bool(jnp.all(entropy.entropy <= counting + 1e-3))


def test_48_layer_chain_underflows_max_product_but_max_abs_is_finite():
    w = jnp.asarray(np.random.default_rng(2).normal(size=(48, 4, 4)) * 0.05, jnp.float32)

    def f(x):
        for layer in range(48):
            x = jnp.tanh(w[layer] @ x)
        return jnp.sum(x)

    x = jnp.ones(4)
    mp = js.semiring_grad(f, js.MaxProduct())(x)
    assert bool(jnp.all(mp.top_pos == 0)) and bool(jnp.all(mp.top_neg == 0))  # underflowed
    ma, ent = js.semiring_grad(f, js.MaxAbs())(x), js.semiring_grad(f, js.Entropy())(x)
    assert _all_finite(ma) and _all_finite(ent)
    assert float(jnp.max(ma.log_abs)) < np.log(np.finfo(np.float32).tiny)  # below float32's range


# 60 s; out of the default run: the 48-layer residual MLP above checks the same four semirings
# finite beyond float32's range, and the padded-BERT test below BERT's primitives in log space.
@pytest.mark.slow
def test_12_layer_bert_log_space_finite():
    from transformers import BertConfig, FlaxBertForMaskedLM
    from test_models_real import word_embeddings_replaced_by

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    model = FlaxBertForMaskedLM(cfg, seed=0)
    ids = jnp.array([[2, 7, 3, 9, 11, 4]])
    emb = jnp.take(model.params["bert"]["embeddings"]["word_embeddings"]["embedding"], ids, axis=0)

    def target(emb):
        with word_embeddings_replaced_by(emb):
            logits = model(ids, params=model.params).logits
        return logits[0, 2, 5] - logits[0, 2, 8]

    run = jax.jit(lambda e: [js.semiring_grad(target, S)(e) for S in LOG_SEMIRINGS])
    entropy, log, maxabs, counting = run(emb)
    for v in (entropy, log, maxabs, counting):
        assert _all_finite(v)
    # the number of paths through 12 attention layers is far beyond float32
    assert float(jnp.min(counting)) > F32_MAX_LOG


def test_padded_bert_entropy_under_jit_has_no_nan():
    """HF BERT masks padding with a finfo.min bias; exp of it is exactly 0. Under jit XLA folds
    log(exp(x)) to x, which once turned that weight's log into −3.4e38 instead of −inf, overflowed
    Σ e·mean to −inf and spread NaN to every token. log|w| must be −inf for w = 0."""
    from transformers import BertConfig, FlaxBertModel
    from test_models_real import word_embeddings_replaced_by

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    model = FlaxBertModel(cfg, seed=0)
    ids, mask = jnp.array([[2, 7, 3, 9, 0]]), jnp.array([[1, 1, 1, 1, 0]])
    emb = jnp.take(model.params["embeddings"]["word_embeddings"]["embedding"], ids, axis=0)

    def f(emb):
        with word_embeddings_replaced_by(emb):
            return jnp.sum(
                model(ids, attention_mask=mask, params=model.params).last_hidden_state[0, 1]
            )

    e = jax.jit(js.semiring_grad(f, js.Entropy()))(emb)
    assert not bool(jnp.any(jnp.isnan(e.mean_log_abs)))
    assert bool(jnp.all(jnp.isfinite(e.log_z[0, :4]))) and bool(jnp.all(e.log_z[0, 4] == -jnp.inf))


@pytest.mark.parametrize(
    "S",
    [js.Real(), js.MaxProduct(), js.MaxAbs(), js.Log(), js.Entropy(), js.Expectation(), js.TopK(2)],
    ids=lambda S: S.name,
)
def test_padded_bert_batch_under_jit_vmap_equals_unpadded(S):
    """HF Flax BERT masks padded keys with a finfo.min bias (no patch of transformers): a padded
    batch under jit∘vmap gives, at every real token, the values of the unpadded sentence run
    alone; nothing is NaN; a padded token has no path with a nonzero product (0̄ in the
    log-space semirings, entropy −inf)."""
    from transformers import BertConfig, FlaxBertModel
    from test_models_real import word_embeddings_replaced_by

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    model = FlaxBertModel(cfg, seed=0)
    table = model.params["embeddings"]["word_embeddings"]["embedding"]
    sentences = [[2, 7, 3, 9], [2, 11, 5, 8, 6, 3]]
    L = 7

    def grads(ids, mask):
        def f(emb):
            with word_embeddings_replaced_by(emb[None]):
                h = model(
                    ids[None], attention_mask=mask[None], params=model.params
                ).last_hidden_state
            return jnp.sum(h[0, 1] * jnp.linspace(-1.0, 1.0, 16))

        return js.semiring_grad(f, S)(jnp.take(table, ids, axis=0))

    ids = jnp.array([s + [0] * (L - len(s)) for s in sentences])
    mask = jnp.array([[1] * len(s) + [0] * (L - len(s)) for s in sentences])
    batched = jax.jit(jax.vmap(grads))(ids, mask)
    for leaf in jax.tree.leaves(batched):
        assert not bool(jnp.any(jnp.isnan(leaf)))
    for b, s in enumerate(sentences):
        n = len(s)
        alone = jax.jit(grads)(jnp.array(s), jnp.ones(n, jnp.int32))
        mine = jax.tree.map(lambda a: a[b, :n], batched)
        jax.tree.map(
            lambda a, c: np.testing.assert_allclose(a, c, rtol=2e-5, atol=1e-6), mine, alone
        )
        if isinstance(S, (js.Log, js.Entropy, js.MaxAbs)):
            pad = jax.tree.leaves(jax.tree.map(lambda a: a[b, n:], batched))[0]
            assert bool(jnp.all(pad == -jnp.inf))
        if isinstance(S, (js.Entropy, js.Expectation)):
            ent = jax.tree.map(lambda a: a[b], batched).entropy
            assert bool(jnp.all(ent[n:] == -jnp.inf)) and bool(jnp.all(jnp.isfinite(ent[:n])))


@pytest.mark.parametrize("S", [js.Log(), js.Entropy(), js.Expectation()], ids=lambda S: S.name)
def test_semiring_statistics_are_differentiable(S, monkeypatch):
    """jax.grad through semiring_grad (e.g. a path-entropy regularizer) equals central finite
    differences in float64, with the lifted weights built whole or in chunks, and under vmap."""
    from conftest import x64
    from jaxpr_semiring import kernels

    monkeypatch.setattr(
        kernels.lifted, "LIFT_CHUNK_BYTES", 16
    )  # 3×4 float64 weights: a chunk per row
    with x64():
        W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
        f = lambda x: jnp.sum(jnp.tanh(x @ W) * jnp.arange(1.0, 5.0))
        stat = lambda x: jnp.sum(jax.tree.leaves(js.semiring_grad(f, S)(x))[-1])
        x = jnp.asarray([0.3, -0.2, 0.5])
        eps = 1e-6
        fd = np.array(
            [(stat(x.at[i].add(eps)) - stat(x.at[i].add(-eps))) / (2 * eps) for i in range(3)]
        )
        np.testing.assert_allclose(np.asarray(jax.grad(stat)(x)), fd, rtol=1e-6, atol=1e-8)
        batched = jax.jit(jax.vmap(jax.grad(stat)))(jnp.stack([x, -x]))
        np.testing.assert_allclose(np.asarray(batched[0]), fd, rtol=1e-6, atol=1e-8)
