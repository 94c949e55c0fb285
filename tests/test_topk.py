"""TopK(k): the k best |path products| per node; TopK(1) == MaxAbs; brute-force k-best."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js
from jaxpr_semiring.semirings import IndexMap, TopKValue
from jaxpr_semiring.semirings.topk import topk_select as _topk_select

from brute_force import brute_force

KEY = jax.random.PRNGKey(0)
k1, k2, k3, k4 = jax.random.split(KEY, 4)
W1 = jax.random.normal(k1, (3, 4))
W2 = jax.random.normal(k2, (4, 2))
X = jax.random.normal(k3, (3,))


def mlp(x):
    h = jnp.tanh(x @ W1)
    return jnp.sum((h @ W2) ** 2)


def square_twice(x):
    return jnp.sum(x * x * jnp.sin(x))


def gather_dup(x):
    idx = jnp.array([0, 2, 0, 1, 0])
    return jnp.sum(jnp.take(x, idx) * jnp.arange(1.0, 6.0))


def scatter_add_dup(x):
    idx = jnp.array([0, 1, 0, 2])
    seg = jnp.zeros(3).at[idx].add(jnp.concatenate([x, x[:1]]) * jnp.array([1.0, -2.0, 3.0, 0.5]))
    return jnp.sum(seg * jnp.array([2.0, -1.0, 0.7]))


def reductions(x):
    m = jnp.max(x * jnp.array([1.0, -2.0, 0.5]))
    return m + jnp.sum(jnp.cumsum(x) * x) + jnp.prod(x)


def movement(x):
    y = jnp.concatenate([x, -2.0 * x[::-1]])
    z = jnp.pad(y, (1, 2)).reshape(3, 3).T
    return jnp.sum(z[1:, :2] * jnp.array([[1.0, -3.0], [0.5, 2.0]])) + jnp.sum(
        jnp.broadcast_to(x, (2, 3)) ** 2
    )


def attention(x):
    q = x[:, None] * jnp.array([[1.0, -0.5]])
    s = q @ q.T
    p = jax.nn.softmax(s, axis=-1)
    return jnp.sum(p @ q)


def relu_dead(x):
    return jnp.sum(jax.nn.relu(x - 10.0) * 3.0 + x * 2.0)


FUNS = [mlp, square_twice, gather_dup, scatter_add_dup, reductions, movement, attention, relu_dead]


def _compare_topk(got, ref):
    la = np.asarray(got.log_abs, np.float64)
    sg = np.asarray(got.sign, np.float64)
    rla, rsg = ref["log_abs"], ref["sign"]
    assert la.shape == rla.shape
    np.testing.assert_allclose(la, rla, rtol=1e-4, atol=1e-4)
    fin = np.isfinite(rla)
    np.testing.assert_array_equal(sg[fin], rsg[fin])


def _prefix(ref, k):
    return {name: v[..., :k] for name, v in ref.items()}


@pytest.mark.parametrize("f", FUNS, ids=lambda f: f.__name__)
def test_topk_equals_brute_force_and_topk1_equals_maxabs(f):
    x = X if f is not attention else X[:2]
    ref = brute_force(f, x, semiring_name="TopK", k=4)  # k-best lists are prefixes
    got4 = jax.jit(js.semiring_grad(f, js.TopK(4)))(x)
    _compare_topk(got4, ref)
    got1 = jax.jit(js.semiring_grad(f, js.TopK(1)))(x)
    _compare_topk(got1, _prefix(ref, 1))
    b = jax.jit(js.semiring_grad(f, js.MaxAbs()))(x)
    np.testing.assert_allclose(got1.log_abs[..., 0], b.log_abs, rtol=1e-6)
    fin = np.isfinite(np.asarray(b.log_abs))
    np.testing.assert_array_equal(np.asarray(got1.sign[..., 0])[fin], np.asarray(b.sign)[fin])


@pytest.mark.parametrize("f", [mlp, gather_dup], ids=lambda f: f.__name__)
def test_topk_eager_equals_jit(f):
    S = js.TopK(2)
    a = js.semiring_grad(f, S)(X)
    b = jax.jit(js.semiring_grad(f, S))(X)
    np.testing.assert_allclose(a.log_abs, b.log_abs, rtol=1e-6)
    np.testing.assert_array_equal(a.sign, b.sign)
    _compare_topk(a, brute_force(f, X, semiring_name="TopK", k=2))


def test_topk_x64_jit_vmap(enable_x64):
    x = X.astype(jnp.float64)
    S = js.TopK(3)
    g = jax.jit(js.semiring_grad(mlp, S))(x)
    assert g.log_abs.dtype == jnp.float64 and g.log_abs.shape == (3, 3)
    _compare_topk(g, brute_force(mlp, x, semiring_name="TopK", k=3))
    xs = jnp.stack([x, -x, 2 * x])
    gv = jax.jit(jax.vmap(js.semiring_grad(mlp, S)))(xs)
    for i in range(3):
        gi = jax.jit(js.semiring_grad(mlp, S))(xs[i])
        np.testing.assert_allclose(gv.log_abs[i], gi.log_abs, rtol=1e-12)
        np.testing.assert_array_equal(gv.sign[i], gi.sign)


def test_topk_values_sorted_and_annihilation():
    S = js.TopK(4)
    g = jax.jit(js.semiring_grad(mlp, S))(X)
    la = np.asarray(g.log_abs)
    assert np.all(np.diff(la, axis=-1) <= 0)
    z = S.zeros((2,), jnp.float32)
    for w in (0.0, -1.0, jnp.inf, -jnp.inf, jnp.nan * 0 + 2.0):
        s = S.scale(jnp.full((2,), w), z)
        assert np.all(np.asarray(s.log_abs) == -np.inf) and not np.any(np.isnan(np.asarray(s.sign)))
    one = S.ones((), jnp.float32)
    assert np.asarray(one.log_abs).tolist() == [0.0, -np.inf, -np.inf, -np.inf]


def test_topk_select_ties_prefer_positive():
    la = jnp.array([[1.0, 2.0, 2.0, 2.0, -jnp.inf]])
    s = jnp.array([[1.0, -1.0, 1.0, -1.0, 1.0]])
    out_la, out_s = _topk_select(la, s, 4)
    assert out_la.tolist() == [[2.0, 2.0, 2.0, 1.0]]
    assert out_s.tolist() == [[1.0, -1.0, -1.0, 1.0]]
    out_la, out_s = _topk_select(la[:, :2], s[:, :2], 3)
    assert out_la.tolist() == [[2.0, 1.0, -np.inf]]


def test_topk_scatter_duplicates_matches_sorting():
    S = js.TopK(3)
    rng = np.random.default_rng(0)
    n_upd, n_tgt = 7, 3
    idx = np.array([0, 2, 0, 0, 1, 2, 0])
    la = np.sort(rng.normal(size=(n_upd, 3)), axis=-1)[:, ::-1].copy()
    la[1, 1:] = -np.inf
    sg = rng.choice([-1.0, 1.0], size=(n_upd, 3))
    sg[1, 1:] = 1.0
    m = IndexMap(
        (n_tgt,),
        lambda op, t, u: op(
            t, jnp.asarray(idx)[:, None], u, lax.ScatterDimensionNumbers((), (0,), (0,))
        ),
        lambda t: t[jnp.asarray(idx)],
    )
    out = S.scatter(TopKValue(jnp.asarray(la, jnp.float32), jnp.asarray(sg, jnp.float32)), m)
    for t in range(n_tgt):
        items = sorted(
            [(la[u, j], sg[u, j]) for u in range(n_upd) if idx[u] == t for j in range(3)],
            key=lambda p: (-p[0], -p[1]),
        )[:3]
        np.testing.assert_allclose(np.asarray(out.log_abs[t]), [p[0] for p in items], rtol=1e-6)
        assert np.asarray(out.sign[t]).tolist() == [p[1] for p in items]


@pytest.mark.slow
def test_topk_on_small_bert_matches_maxabs():
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    m = FlaxBertForMaskedLM(cfg, seed=0)
    ids = jnp.array([1, 5, 3, 8])
    from jaxpr_semiring.models import hf_bert

    S2 = js.TopK(2)
    fa = hf_bert.embedding_flows_fn(m, semiring=S2)
    fb = hf_bert.embedding_flows_fn(m, semiring=js.MaxAbs())
    _, a = jax.jit(fa)(m.params, ids, 1, 3, 4)
    _, b = jax.jit(fb)(m.params, ids, 1, 3, 4)
    assert a.log_abs.shape == (4, 16, 2)
    np.testing.assert_allclose(a.log_abs[..., 0], b.log_abs, rtol=1e-4, atol=1e-5)
    fin = np.isfinite(np.asarray(b.log_abs))
    assert fin.all()
    np.testing.assert_array_equal(np.asarray(a.sign[..., 0]), np.asarray(b.sign))
    assert np.all(np.asarray(a.log_abs[..., 1]) <= np.asarray(a.log_abs[..., 0]))
