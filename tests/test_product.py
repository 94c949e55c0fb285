"""Several semirings in one backward pass: ``semiring_grad(f, (S1, S2, ...))`` (a ``Product``).

Each entry must equal that semiring's ``semiring_grad`` alone (bitwise where the computation is
the same) and the brute-force fold over every path; under jit and vmap; with argnums tuples,
has_aux, value_and_semiring_grad and the decorator form; through scan, cond, gathers and
matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from brute_force import fold, path_products
from jaxpr_semiring.semirings.product import Product
from oracle import assert_matches, sign_is_ambiguous

ALL = (
    js.Real(),
    js.MaxProduct(),
    js.MaxAbs(),
    js.Log(),
    js.Entropy(),
    js.Expectation(),
    js.Counting(),
    js.Boolean(),
)


def mlp(x, w1, w2):
    return jnp.sum(jnp.tanh(jnp.tanh(x @ w1) @ w2))


def control(x, w):
    def step(h, wi):
        return jnp.tanh(h * wi + 1.0), h

    h, hs = jax.lax.scan(step, x, w)
    return (
        jax.lax.cond(h.sum() > 0, lambda h: jnp.sum(h * h), lambda h: jnp.sum(jnp.exp(h)), h)
        + hs.sum()
    )


def gathers(x, table):
    ids = jnp.array([0, 2, 2, 1])
    return jnp.sum(table[ids] * x[:, None]) + jnp.max(table)


def _args(name, rng):
    r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    return {
        "mlp": (mlp, (r(3), r(3, 4), r(4, 2))),
        "control": (control, (r(3), r(4, 3))),
        "gathers": (gathers, (r(4), r(3, 2))),
    }[name]


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("fn", ["mlp", "control", "gathers"])
@pytest.mark.parametrize("jit", [False, True])
def test_each_entry_equals_its_semiring_alone(fn, jit):
    f, args = _args(fn, np.random.default_rng(0))
    argnums = tuple(range(len(args)))
    together = js.semiring_grad(f, ALL, argnums=argnums)
    together = jax.jit(together) if jit else together
    got = together(*args)
    assert isinstance(got, tuple) and len(got) == len(ALL)
    for S, g in zip(ALL, got):
        _same(g, js.semiring_grad(f, S, argnums=argnums)(*args))


@pytest.mark.parametrize("fn", ["mlp", "gathers"])
def test_vs_brute_force(fn):
    """Every entry of one product pass equals the fold over the enumerated paths."""
    f, args = _args(fn, np.random.default_rng(1))
    prods = path_products(f, *args, argnums=0)
    got = js.semiring_grad(f, ALL)(*args)
    for S, g in zip(ALL, got):
        assert_matches(
            S,
            g,
            fold(S.name, prods),
            where=f"(Product entry {S.name})",
            ambiguous=sign_is_ambiguous(prods),
        )


def test_vmap_and_single_argnum():
    f, (x, w1, w2) = _args("mlp", np.random.default_rng(2))
    xs = jnp.stack([x, -x, 2 * x])
    pair = (js.MaxProduct(), js.Entropy())
    got = jax.jit(jax.vmap(js.semiring_grad(f, pair), in_axes=(0, None, None)))(xs, w1, w2)
    for S, g in zip(pair, got):
        want = jax.vmap(js.semiring_grad(f, S), in_axes=(0, None, None))(xs, w1, w2)
        _same(g, want)
        assert jax.tree.leaves(g)[0].shape == xs.shape  # argnums=0: shaped like x, not a tuple


def test_value_aux_and_decorator():
    f, (x, w1, w2) = _args("mlp", np.random.default_rng(3))
    pair = [js.Real(), js.Log()]
    (v, aux), (g_real, g_log) = js.value_and_semiring_grad(
        lambda *a: (f(*a), 7.0), pair, has_aux=True
    )(x, w1, w2)
    np.testing.assert_allclose(v, f(x, w1, w2), rtol=1e-6)
    assert float(aux) == 7.0
    np.testing.assert_allclose(g_real, jax.grad(f)(x, w1, w2), rtol=1e-5, atol=1e-6)
    _same(g_log, js.semiring_grad(f, js.Log())(x, w1, w2))

    @js.semiring_grad(semiring=(js.Counting(), js.Boolean()))
    def h(x):
        return jnp.sum(x * x)

    counts, reach = h(jnp.ones(2))
    np.testing.assert_allclose(np.exp(counts), [2.0, 2.0], rtol=1e-6)
    assert reach.tolist() == [True, True]
    assert js.semiring_grad(pair)(f)(x, w1, w2)[1].shape == x.shape


def test_product_object_and_errors():
    S = Product(js.Real(), js.MaxProduct())
    assert S == Product(js.Real(), js.MaxProduct()) and hash(S) == hash(
        Product(js.Real(), js.MaxProduct())
    )
    assert repr(S) == "Product(Real(), MaxProduct())"
    f = lambda x: jnp.sum(jnp.sin(x))
    g_real, g_mp = js.semiring_grad(f, S)(jnp.ones(3))
    np.testing.assert_allclose(g_real, jnp.cos(jnp.ones(3)), rtol=1e-6)
    with pytest.raises(TypeError, match="Product needs one or more semirings"):
        Product()
    with pytest.raises(TypeError, match="Product needs one or more semirings"):
        js.semiring_grad(f, (js.Real(), "Log"))(jnp.ones(3))


def test_one_trace_one_walk():
    """The point of a product: the function is traced and walked once, not once per entry."""
    calls = []

    def f(x):
        calls.append(1)
        return jnp.sum(jnp.tanh(x))

    js.semiring_grad(f, (js.Real(), js.MaxProduct(), js.Entropy()))(jnp.ones(3))
    assert len(calls) == 1
