"""top_path: explicit recovery of the top gradient path (paper App. A)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from brute_force import enumerate_paths

KEY = jax.random.PRNGKey(1)
k1, k2, k3 = jax.random.split(KEY, 3)
W1 = jax.random.normal(k1, (3, 4))
W2 = jax.random.normal(k2, (4, 2))
X = jax.random.normal(k3, (3,))


def fig1(x, y):
    return jnp.exp(x) + (x - y) * y


def mlp(x):
    h = jnp.tanh(x @ W1)
    return jnp.sum((h @ W2) ** 2 * jnp.array([1.0, -0.5]))


def gathers(x):
    idx = jnp.array([0, 2, 0, 1])
    y = jnp.take(x, idx) * jnp.array([1.0, -2.0, 0.5, 3.0])
    return jnp.sum(jnp.cumsum(y) * y) + jnp.max(x)


def relu_dead(x):
    return jnp.sum(jax.nn.relu(x - 10.0) * 3.0)


def sign_switch(x):
    # best positive path for x: two negative edges (-2 then -5) = 10 beats the direct 3;
    # y has top_pos 2 and top_neg -5, so the path must switch to y's top_neg chain
    y = -2.0 * x
    return (y * -5.0 + y * 2.0) + 3.0 * x


def _best_from_brute(f, x, chain="top_pos"):
    paths = enumerate_paths(f, x)
    best = {}
    for idx in np.ndindex(*np.shape(x)):
        ps = paths[idx] if np.ndim(x) else paths.item() if hasattr(paths, "item") else paths
        if not ps:
            continue
        pick = max if chain == "top_pos" else min
        best[idx] = pick(ps, key=lambda t: t[0])
    return best, paths


@pytest.mark.parametrize("f", [mlp, gathers], ids=lambda f: f.__name__)
@pytest.mark.parametrize("chain", ["top_pos", "top_neg"])
def test_top_path_equals_brute_force(f, chain):
    x = X
    g = js.semiring_grad(f, js.MaxProduct())(x)
    best, paths = _best_from_brute(f, x, chain)
    for i in range(x.shape[0]):
        p = js.top_path(f, at=i, chain=chain)(x)
        val = float(getattr(g, chain)[i])
        assert p.value == pytest.approx(val, rel=1e-5)
        assert p.product == pytest.approx(val, rel=1e-4, abs=1e-7)
        prod, n_edges = best[(i,)]
        assert p.product == pytest.approx(prod, rel=1e-4, abs=1e-7)
        # unique best path: same length as the brute-force best
        ties = [q for q in paths[i] if abs(q[0] - prod) <= 1e-6 * max(1, abs(prod))]
        if len(ties) == 1:
            assert len(p) == n_edges
        # invariant: running product · best remaining = total at every step
        for s in p.steps:
            assert s.product * s.remaining == pytest.approx(val, rel=1e-4, abs=1e-7)
    # default start: the element with the largest top_pos
    p = js.top_path(f)(x)
    assert p.start["index"] == (int(np.argmax(np.asarray(g.top_pos))),)


def test_fig1():
    p = js.top_path(fig1, argnums=1)(1.0, 2.0)
    assert [s.primitive for s in p.steps] == ["mul", "add"]
    assert p.product == pytest.approx(-1.0) and p.value == pytest.approx(-1.0)
    p = js.top_path(fig1, argnums=(0, 1))(1.0, 2.0)  # x has top_pos e
    assert p.start["leaf"] == 0 and p.product == pytest.approx(np.e, rel=1e-6)
    assert [s.primitive for s in p.steps] == ["exp", "add"]
    p = js.top_path(fig1, argnums=(0, 1), at=(), leaf=1, chain="top_neg")(1.0, 2.0)
    # y's paths: y →sub (−1) →mul (·y = 2) = −2 and y →mul (·(x − y) = −1) = −1
    assert p.product == pytest.approx(-2.0)
    assert [s.primitive for s in p.steps] == ["sub", "mul", "add"]
    assert "top gradient path" in str(p) and "mul" in str(p)


def test_sign_switching():
    p = js.top_path(sign_switch)(1.5)
    assert p.product == pytest.approx(10.0) and p.value == pytest.approx(10.0)
    assert [s.weight for s in p.steps] == pytest.approx([-2.0, -5.0, 1.0, 1.0])
    assert [s.chain for s in p.steps] == ["top_neg", "top_pos", "top_pos", "top_pos"]
    assert p.steps[0].remaining == pytest.approx(-5.0)
    # the most negative path: -2 then +2 = -4
    g = js.semiring_grad(sign_switch, js.MaxProduct())(1.5)
    q = js.top_path(sign_switch, chain="top_neg")(1.5)
    assert q.product == pytest.approx(float(g.top_neg)) and q.product == pytest.approx(-4.0)
    assert [s.chain for s in q.steps][0] == "top_pos"


def test_zero_weight_edge_path():
    x = jnp.array([1.0, 2.0])
    p = js.top_path(relu_dead, at=0)(x)
    assert p.product == 0.0 and p.value == 0.0
    assert 0.0 in [s.weight for s in p.steps] and p.steps[0].primitive == "sub"


def test_top_path_small_bert_module_paths():
    from transformers import BertConfig, FlaxBertForMaskedLM
    import flax.linen as nn

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    m = FlaxBertForMaskedLM(cfg, seed=0)
    ids = jnp.array([1, 5, 3, 8])
    emb = m.params["bert"]["embeddings"]["word_embeddings"]["embedding"][ids]

    def f(e):
        def replace(next_fun, args, kwargs, ctx):
            if ctx.method_name == "__call__" and js.flax_hooks.module_path(ctx.module).endswith(
                "word_embeddings"
            ):
                return e[None]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(replace):
            logits = m(ids[None]).logits
        return logits[0, 2, 7] - logits[0, 2, 9]

    g = jax.jit(js.semiring_grad(f, js.MaxProduct()))(emb)
    p = js.top_path(f)(emb)
    assert p.value == pytest.approx(float(jnp.max(g.top_pos)), rel=1e-5)
    assert p.product == pytest.approx(p.value, rel=1e-3)
    paths = " ".join(s.path for s in p.steps)
    assert "layer/0" in paths and "layer/1" in paths and "predictions" in paths
    assert p.steps[-1].chain == "top_pos" and p.steps[-1].remaining == pytest.approx(1.0)


# ------------------------------------------- the forward walk vs enumeration, random programs

from hypothesis import HealthCheck, given, settings  # noqa: E402

from test_semirings_vs_paths import build, programs  # noqa: E402


def _walk_matches_enumeration(program, xs):
    """On every input element with a path and on both chains: the walked path's product is the
    best enumerated product (the MaxProduct value), and some enumerated path of that product has
    as many edges as the walked one (unless a transpose was folded into a contraction: one
    edge fewer in the graph than in the enumerated jaxpr)."""
    f = build(program)
    folded = any(kind == "b" and op == 6 or kind == "u" and op == 17 for kind, op, _, _ in program)
    x, y = jnp.array(xs[:3], jnp.float32), jnp.array(xs[3:], jnp.float32)
    paths = enumerate_paths(f, x, y, argnums=0)
    for chain, pick in (("top_pos", max), ("top_neg", min)):
        for i in range(3):
            if not paths[i]:
                continue
            best = pick(q[0] for q in paths[i])
            p = js.top_path(f, at=i, chain=chain)(x, y)
            tol = 5e-4 * max(1.0, abs(best))
            assert abs(p.value - best) <= tol, (chain, i)
            assert abs(p.product - best) <= tol, (chain, i)
            if not folded:
                assert len(p) in {n for q, n in paths[i] if abs(q - best) <= tol}, (chain, i)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**programs)
def test_top_path_walk_equals_enumeration_on_random_programs(program, xs):
    _walk_matches_enumeration(program, xs)


@pytest.mark.slow  # the same property on 6x the programs (test above: 10 in the default run)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**programs)
def test_top_path_walk_equals_enumeration_on_random_programs_thorough(program, xs):
    _walk_matches_enumeration(program, xs)
