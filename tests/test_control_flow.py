"""Control flow: scan (fori_loop, lax.map, nn.RNN, nn.scan), cond/switch, while errors.

Oracles: Real == jax.grad; every other semiring == brute-force path enumeration
(tests/brute_force.py) on tiny versions; scan == the same computation unrolled in Python.
"""

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js
from jaxpr_semiring.rules.control_flow import WhileLoopError

sys.path.insert(0, os.path.dirname(__file__))
import brute_force as bf  # noqa: E402
from conftest import x64  # noqa: E402

# ------------------------------------------------------------------- shared checking helpers

SEMIRINGS = [
    js.Real(),
    js.MaxProduct(),
    js.MaxAbs(),
    js.Log(),
    js.Entropy(),
    js.Expectation(),
    js.Counting(),
    js.Boolean(),
    js.TopK(2),
]
NON_REAL = SEMIRINGS[1:]


def _value_fields(S, v):
    name = type(S).__name__
    if name in ("Real", "Log", "Counting", "Boolean"):
        return {"value": np.asarray(v)}
    return {f: np.asarray(getattr(v, f)) for f in bf.SEMIRING_FIELDS[name]}


def _is_value(x):
    return isinstance(x, tuple) and hasattr(x, "_fields")


def assert_semiring_close(S, got, want, rtol=2e-4, atol=2e-5, where=""):
    """``got``: one semiring value; ``want``: a brute-force fold dict for the same leaf."""
    name = type(S).__name__
    fields = _value_fields(S, got)
    for field, w in want.items():
        g = (
            fields[field].astype(np.float64)
            if field != "value" or name != "Boolean"
            else fields[field]
        )
        w = np.asarray(w)
        mask = np.ones(w.shape, bool)
        if field == "sign":
            mask = np.isfinite(np.asarray(want["log_abs"]))
        if name == "Entropy" and field in ("mean_log_abs", "entropy"):
            mask = np.asarray(want["log_z"]) > -np.inf
        assert g.shape == w.shape, (name, field, g.shape, w.shape, where)
        if name == "Boolean":
            np.testing.assert_array_equal(g, w, err_msg=f"{name}.{field} {where}")
        else:
            np.testing.assert_allclose(
                np.where(mask, g, 0.0),
                np.where(mask, w, 0.0),
                rtol=rtol,
                atol=atol,
                err_msg=f"{name}.{field} {where}",
            )


def check_brute(f, *args, argnums=0, semirings=NON_REAL, rtol=2e-4, atol=2e-5):
    """Every semiring in ``semirings`` == brute-force enumeration (paths enumerated once)."""
    prods = bf.path_products(f, *args, argnums=argnums)
    is_obj = lambda x: isinstance(x, np.ndarray) and x.dtype == object
    prod_leaves = jax.tree.leaves(prods, is_leaf=is_obj)
    for S in semirings:
        got = jax.jit(js.semiring_grad(f, S, argnums=argnums))(*args)
        got_leaves = jax.tree.leaves(got, is_leaf=_is_value)
        assert len(got_leaves) == len(prod_leaves)
        for i, (g, p) in enumerate(zip(got_leaves, prod_leaves)):
            want = bf.fold(type(S).__name__, p, k=getattr(S, "k", None))
            assert_semiring_close(S, g, want, rtol, atol, where=f"leaf {i}")


def check_real(f, *args, argnums=0, rtol=1e-5, atol=1e-6, jit=False):
    sg = js.semiring_grad(f, js.Real(), argnums=argnums)
    got = (jax.jit(sg) if jit else sg)(*args)
    want = jax.grad(f, argnums=argnums)(*args)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol),
        got,
        want,
    )


def assert_values_close(S, a, b, rtol=1e-5, atol=1e-6):
    """Two semiring values (pytrees of them) agree (−inf/inf positions included)."""

    def cmp(x, y):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype == bool:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)

    jax.tree.map(cmp, a, b)


rng = np.random.default_rng(0)


def nrm(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


# ----------------------------------------------------------------------------------- scan


def scan_fn(x, c, reverse=False, unroll=1):
    """Two carries, two xs, two ys, a const and an integer carry."""

    def body(carry, xs):
        a, b, i = carry
        u, v = xs
        a2 = jnp.tanh(a * u + c) + b
        b2 = b * v - a * 0.5
        return (a2, b2, i + 1), (jnp.sin(a2) * c, a2 * b2)

    (a, b, _), (y1, y2) = lax.scan(
        body, (x[0], x[1], 0), (x[2:5], x[5:8]), reverse=reverse, unroll=unroll
    )
    return a + 2.0 * b + jnp.sum(y1) + jnp.sum(y2 * jnp.arange(1.0, 4.0))


def scan_unrolled(x, c, reverse=False, unroll=1):
    a, b = x[0], x[1]
    us, vs = x[2:5], x[5:8]
    ys1, ys2 = [None] * 3, [None] * 3
    for t in range(2, -1, -1) if reverse else range(3):
        a2 = jnp.tanh(a * us[t] + c) + b
        b2 = b * vs[t] - a * 0.5
        a, b = a2, b2
        ys1[t], ys2[t] = jnp.sin(a2) * c, a2 * b2
    return a + 2.0 * b + jnp.sum(jnp.stack(ys1)) + jnp.sum(jnp.stack(ys2) * jnp.arange(1.0, 4.0))


X8 = nrm(8) * 0.8
C0 = jnp.float32(0.3)


@pytest.mark.parametrize("reverse,unroll", [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_scan_real_equals_grad(reverse, unroll):
    check_real(lambda x, c: scan_fn(x, c, reverse, unroll), X8, C0, argnums=(0, 1), jit=True)


def test_scan_real_equals_grad_eager():
    check_real(lambda x, c: scan_fn(x, c, True), X8, C0, argnums=(0, 1))


def test_scan_all_semirings_brute_force():
    # reverse=True here; forward scans: test_scan_equals_unrolled (+ straight-line rule tests)
    check_brute(lambda x, c: scan_fn(x, c, True), X8, C0, argnums=(0, 1))


@pytest.mark.parametrize("S", SEMIRINGS, ids=lambda S: type(S).__name__)
def test_scan_equals_unrolled(S):
    for reverse in (False, True) if type(S) in (js.MaxProduct, js.Entropy) else (False,):
        sg = jax.jit(js.semiring_grad(lambda x, c: scan_fn(x, c, reverse), S, argnums=(0, 1)))
        got = sg(X8, C0)
        want = js.semiring_grad(lambda x, c: scan_unrolled(x, c, reverse), S, argnums=(0, 1))(
            X8, C0
        )
        assert_values_close(S, got, want, rtol=1e-5, atol=1e-6)


def test_scan_consts_only_no_xs_and_length():
    """A scan with no xs (length=), the input only as a const, float64 too."""

    def f(w):
        def body(h, _):
            return jnp.tanh(w @ h), jnp.sum(h)

        h, ys = lax.scan(body, jnp.ones(2, w.dtype), None, length=3)
        return jnp.sum(h) + jnp.sum(ys)

    w = nrm(2, 2)
    check_real(f, w)
    check_brute(f, w, semirings=[js.MaxProduct(), js.Entropy()])
    with x64():
        w64 = w.astype(jnp.float64)
        check_real(f, w64, rtol=1e-10)
        g = js.semiring_grad(f, js.MaxProduct())(w64)
        assert g.top_pos.dtype == jnp.float64


def test_scan_unused_carry_and_zero_length():
    def f(x):
        def body(carry, xi):
            a, dead = carry
            return (a * xi, dead + 1.0), a

        (a, _), ys = lax.scan(body, (x[0], jnp.float32(0.0)), x[1:])
        return a + jnp.sum(ys)

    x = nrm(4)
    check_real(f, x)
    check_brute(f, x, semirings=[js.MaxProduct(), js.Counting(), js.Boolean()])

    def g(x):
        c, _ = lax.scan(lambda c, xi: (c * xi, None), x[0], x[1:1])
        return c * 2.0

    check_real(g, x)
    got = js.semiring_grad(g, js.MaxProduct())(x)
    np.testing.assert_array_equal(got.top_pos, [2.0, -np.inf, -np.inf, -np.inf])


def test_fori_loop_static_bounds_is_scan():
    def f(x):
        return jnp.sum(lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) * x + c * i, x))

    x = nrm(2)
    assert "scan" in str(jax.make_jaxpr(f)(x))
    check_real(f, x)
    check_brute(f, x, semirings=[js.MaxAbs(), js.Log()])


def test_while_loop_and_dynamic_fori_loop_raise_clear_error():
    def f(x, n):
        return lax.fori_loop(0, n, lambda i, c: c * x, x)

    assert "while" in str(jax.make_jaxpr(f)(1.0, 3))
    # a traced trip count (under jit) makes fori_loop a while loop
    with pytest.raises(WhileLoopError, match="lax.while_loop or lax.fori_loop") as e:
        jax.jit(js.semiring_grad(f))(1.0, 3)
    assert "constant (Python int)" in str(e.value) and "lax.scan" in str(e.value)

    def g(x):
        return lax.while_loop(lambda c: c < 10.0, lambda c: c * 2.0, x)

    with pytest.raises(WhileLoopError, match="trip count is not known"):
        js.semiring_grad(g, js.MaxProduct())(1.0)


def test_while_loop_on_structure_only_is_fine():
    """A while loop that no differentiated input reaches never needs a rule."""

    def f(x):
        n = lax.while_loop(lambda i: i < 3, lambda i: i + 1, 0)
        return jnp.sum(x * n)

    check_real(f, nrm(3))


def test_lax_map():
    def f(x):
        return jnp.sum(lax.map(lambda r: jnp.tanh(r) * r[::-1], x))

    x = nrm(3, 2)
    check_real(f, x)
    check_brute(f, x)


def check_vmap(
    f, xs, *rest, semirings=(js.Real(), js.MaxProduct(), js.Entropy()), in_axes=None, rtol=1e-5
):
    """jit(vmap(semiring_grad)) == jit(semiring_grad) per example."""
    in_axes = in_axes or (0,) + (None,) * len(rest)
    for S in semirings:
        sg = js.semiring_grad(f, S)
        batched = jax.jit(jax.vmap(sg, in_axes=in_axes))(xs, *rest)
        single = jax.jit(sg)
        n = len(jax.tree.leaves(xs)[0]) if in_axes[0] == 0 else len(rest[0])
        for i in range(n):
            args = [xs[i] if in_axes[0] == 0 else xs] + [
                r[i] if a == 0 else r for r, a in zip(rest, in_axes[1:])
            ]
            assert_values_close(S, jax.tree.map(lambda a: a[i], batched), single(*args), rtol=rtol)


def test_scan_jit_and_vmap():
    check_vmap(lambda x, c: scan_fn(x, c), jnp.stack([X8, X8 * 0.5, -X8]), C0)


# ----------------------------------------------------------------------------------- cond


def cond_fn(x, i):
    branches = [
        lambda v: jnp.sin(v[0]) * v[1],
        lambda v: v[0] * v[0] + 0.0 * v[1],  # v[1]: a zero-weight edge
        lambda v: jnp.exp(v[1]) + 1.0,
    ]  # v[0]: no edge at all (None → 0̄)
    return jnp.sum(lax.switch(i, branches, x) * x[2]) + x[0]


def bool_cond_fn(x, p):
    return lax.cond(p, lambda v: jnp.sum(v**2), lambda v: jnp.sum(jnp.tanh(v)), x)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_switch_real_and_brute(i):
    x = nrm(3)
    check_real(cond_fn, x, i)
    check_real(cond_fn, x, i, jit=True)
    check_brute(cond_fn, x, i, semirings=NON_REAL if i == 2 else [js.MaxProduct(), js.Counting()])


@pytest.mark.parametrize("p", [True, False])
def test_bool_cond(p):
    x = nrm(3)
    check_real(bool_cond_fn, x, p)
    check_brute(bool_cond_fn, x, p)


def test_cond_jit_and_vmap_over_index():
    x = nrm(3)
    idx = jnp.array([0, 1, 2, 1])
    check_vmap(
        cond_fn, x, idx, in_axes=(None, 0), semirings=(js.Real(), js.MaxProduct(), js.TopK(2))
    )
    check_vmap(cond_fn, jnp.stack([x, -x]), 2, semirings=(js.Entropy(),))


def test_cond_inside_scan():
    def f(x):
        def body(c, xi):
            c = lax.cond(xi > 0, lambda a: a * xi, lambda a: jnp.sin(a) + xi, c)
            return c, c

        c, ys = lax.scan(body, x[0], x[1:])
        return c + jnp.sum(ys)

    x = nrm(4)
    check_real(f, x)
    check_brute(f, x)


# ----------------------------------------------------------------------------- Flax models


class LSTMLM(nn.Module):
    vocab: int = 5
    hidden: int = 3
    layers: int = 2

    @nn.compact
    def __call__(self, emb_x):
        h = emb_x
        for i in range(self.layers):
            h = nn.RNN(nn.LSTMCell(self.hidden), name=f"lstm{i}")(h)
        return nn.Dense(self.vocab)(h)


def _lstm(hidden, T, batch=1):
    m = LSTMLM(hidden=hidden)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(batch, T, hidden)), jnp.float32)
    params = m.init(jax.random.PRNGKey(0), x)
    return m, params, x


def test_lstm_lm_real_params_and_inputs():
    m, params, x = _lstm(hidden=8, T=6, batch=2)

    def f(params, x):
        return jax.nn.log_softmax(m.apply(params, x))[:, -1, 1].sum()

    check_real(f, params, x, argnums=(0, 1), rtol=2e-5, atol=1e-6, jit=True)


def test_lstm_lm_all_semirings_brute_force_tiny():
    m, params, x = _lstm(hidden=2, T=2)
    check_brute(lambda x: m.apply(params, x)[0, -1, 1], x, rtol=5e-4, atol=5e-5)


def test_lstm_lm_jit_vmap():
    m, params, x = _lstm(hidden=3, T=3)
    f = lambda x: m.apply(params, x[None])[0, -1, 1]
    check_vmap(f, jnp.stack([x[0], -x[0]]), semirings=(js.MaxProduct(),))


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, h, _):
        return jnp.tanh(nn.Dense(self.width)(h)) + h, None


class ScannedStack(nn.Module):
    """nn.scan over layers (parameters stacked along a leading layer axis)."""

    width: int = 3
    depth: int = 3

    @nn.compact
    def __call__(self, x):
        Stack = nn.scan(
            Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth
        )
        h, _ = Stack(self.width, name="layers")(x, None)
        return jnp.sum(nn.Dense(1)(h))


def test_nn_scan_over_layers():
    m = ScannedStack()
    x = nrm(1, 3)
    params = m.init(jax.random.PRNGKey(2), x)
    assert "scan" in str(jax.make_jaxpr(lambda p: m.apply(p, x))(params))
    check_real(lambda p, x: m.apply(p, x), params, x, argnums=(0, 1))
    tiny = ScannedStack(width=2, depth=2)
    x2 = nrm(1, 2)
    p2 = tiny.init(jax.random.PRNGKey(3), x2)
    check_brute(
        lambda p, x: tiny.apply(p, x),
        p2,
        x2,
        argnums=(0, 1),
        semirings=[js.MaxProduct(), js.Entropy(), js.Counting(), js.TopK(2)],
    )
    check_vmap(lambda x: m.apply(params, x), jnp.stack([x, -x]), semirings=(js.MaxAbs(),))
