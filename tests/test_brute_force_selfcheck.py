"""Self-checks of the brute-force path oracle (tests/brute_force.py).

These never involve jaxpr_semiring: the oracle is checked against jax.grad (the 'Real'
fold) and against hand-computed path sets.
"""

import math
import os
import sys

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(__file__))
import brute_force as bf  # noqa: E402


def _real(f, *args, argnums=0):
    return bf.brute_force(f, *args, semiring_name="Real", argnums=argnums)


def _assert_matches_grad(f, *args, argnums=0, rtol=2e-5, atol=2e-6):
    got = _real(f, *args, argnums=argnums)
    want = jax.grad(f, argnums=argnums)(*args)
    got_leaves = jax.tree_util.tree_leaves(
        got, is_leaf=lambda d: isinstance(d, dict) and "value" in d
    )
    want_leaves = jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        assert g["value"].shape == np.shape(w)
        np.testing.assert_allclose(g["value"], np.asarray(w, np.float64), rtol=rtol, atol=atol)


rng = np.random.RandomState(0)
X4 = jnp.asarray(rng.randn(4).astype(np.float32))
Y4 = jnp.asarray(rng.randn(4).astype(np.float32))
M34 = jnp.asarray(rng.randn(3, 4).astype(np.float32))
W43 = jnp.asarray(rng.randn(4, 3).astype(np.float32))
TABLE = jnp.asarray(rng.randn(5, 3).astype(np.float32))
YS = jnp.asarray(np.float32(0.7))


def _inner(x):
    return jnp.sin(x) * 2.0 + x


def _scan_fn(x):
    def body(c, xi):
        c = c * xi + jnp.tanh(c)
        return c, c * 2.0

    c, ys = lax.scan(body, jnp.float32(1.0), x)
    return c + ys.sum()


CASES = {
    "exp_mul_sub": (lambda x, y: jnp.sum(jnp.exp(x) * y - x), (X4, Y4), (0, 1)),
    "rank0_broadcast": (lambda x, s: jnp.sum(x * 2.0 + x * s), (X4, YS), (0, 1)),
    "matmul": (lambda a, w: jnp.sum(jnp.tanh(a @ w)), (M34, W43), (0, 1)),
    "sum_square": (lambda x: jnp.sum(x) * jnp.sum(x**2), (X4,), 0),
    "maximum_relu": (
        lambda x, y: jnp.sum(jnp.maximum(x, 0.0) * x + jnp.maximum(x, y)),
        (X4, Y4),
        (0, 1),
    ),
    "where": (lambda x: jnp.sum(jnp.where(x > 0, x**2, -3.0 * x)), (X4,), 0),
    "take_repeated": (
        lambda t, w: jnp.sum(jnp.take(t, jnp.array([0, 2, 0, 4]), axis=0) * w),
        (TABLE, M34[:, :3].reshape(-1)[:3]),
        (0, 1),
    ),
    "slice_concat": (lambda x: jnp.sum(jnp.concatenate([x[1:], x[:2] * 3.0]) ** 2), (X4,), 0),
    "softmax": (lambda x, y: jnp.sum(jax.nn.softmax(x) * y), (X4, Y4), (0, 1)),
    "jit_inner": (lambda x: jnp.sum(jax.jit(_inner)(x) * jax.jit(_inner)(x[::-1])), (X4,), 0),
    "reduce_max_sort_cummax": (
        lambda x: jnp.max(x) * 2.0 + jnp.sort(x)[1] + lax.cummax(x)[2],
        (X4,),
        0,
    ),
    "scan": (_scan_fn, (X4 * 0.5,), 0),
    "cond_fori": (
        lambda x: (
            lax.cond(x[0] > 0, lambda t: jnp.sum(t * t), lambda t: jnp.sum(jnp.sin(t)), x)
            + lax.fori_loop(0, 3, lambda i, c: c * x[i] + 1.0, x[3])
        ),
        (X4,),
        0,
    ),
    "pytree_args": (
        lambda p: jnp.sum(p["w"] @ p["b"]) * p["s"],
        ({"w": M34, "b": X4, "s": YS},),
        0,
    ),
    "relu_logsumexp": (lambda x: jax.nn.logsumexp(jax.nn.relu(x) * x), (X4,), 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_fold_equals_grad(name):
    f, args, argnums = CASES[name]
    _assert_matches_grad(f, *args, argnums=argnums)


# ------------------------------------------------------------------- paper Fig. 1


def fig1(x, y):
    return jnp.exp(x) + (x - y) * y


def test_fig1_paths():
    x, y = jnp.float32(0.5), jnp.float32(2.0)
    px, py = bf.enumerate_paths(fig1, x, y, argnums=(0, 1))
    gx = sorted(px[()])
    gy = sorted(py[()])
    e = math.exp(0.5)
    # x: exp(x) then add (2 edges); sub, mul operand 0 (weight y), add (3 edges)
    np.testing.assert_allclose([p for p, _ in gx], sorted([e, 2.0]), rtol=1e-6)
    assert sorted(n for _, n in gx) == [2, 3]
    # y: sub (-1), mul operand 0 (y), add: -y (3 edges); mul operand 1 (x - y), add (2 edges)
    np.testing.assert_allclose(sorted(p for p, _ in gy), sorted([-2.0, -1.5]), rtol=1e-6)
    assert sorted(n for _, n in gy) == [2, 3]

    mp = bf.brute_force(fig1, x, y, semiring_name="MaxProduct", argnums=(0, 1))
    np.testing.assert_allclose(mp[0]["top_pos"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(mp[0]["top_neg"], e, rtol=1e-6)
    np.testing.assert_allclose(mp[1]["top_pos"], -1.5, rtol=1e-6)
    np.testing.assert_allclose(mp[1]["top_neg"], -2.0, rtol=1e-6)

    cnt = bf.brute_force(fig1, x, y, semiring_name="Counting", argnums=(0, 1))
    np.testing.assert_allclose(cnt[0]["value"], math.log(2))
    np.testing.assert_allclose(cnt[1]["value"], math.log(2))

    real = bf.brute_force(fig1, x, y, semiring_name="Real", argnums=(0, 1))
    gxj, gyj = jax.grad(fig1, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(real[0]["value"], gxj, rtol=1e-6)
    np.testing.assert_allclose(real[1]["value"], gyj, rtol=1e-6)

    ma = bf.brute_force(fig1, x, y, semiring_name="MaxAbs", argnums=(0, 1))
    np.testing.assert_allclose(ma[0]["log_abs"], math.log(2.0), rtol=1e-6)
    assert ma[0]["sign"] == 1.0
    np.testing.assert_allclose(ma[1]["log_abs"], math.log(2.0), rtol=1e-6)
    assert ma[1]["sign"] == -1.0

    lg = bf.brute_force(fig1, x, y, semiring_name="Log", argnums=(0, 1))
    np.testing.assert_allclose(lg[0]["value"], math.log(e + 2.0), rtol=1e-6)
    np.testing.assert_allclose(lg[1]["value"], math.log(3.5), rtol=1e-6)

    ent = bf.brute_force(fig1, x, y, semiring_name="Entropy", argnums=(0, 1))
    ex = bf.brute_force(fig1, x, y, semiring_name="Expectation", argnums=(0, 1))
    for ps, en, xp in ((gx, ent[0], ex[0]), (gy, ent[1], ex[1])):
        a = np.abs([p for p, _ in ps])
        z = a.sum()
        t = (a * np.log(a)).sum()
        np.testing.assert_allclose(xp["z"], z, rtol=1e-6)
        np.testing.assert_allclose(xp["t"], t, rtol=1e-6)
        np.testing.assert_allclose(en["log_z"], np.log(z), rtol=1e-6)
        np.testing.assert_allclose(en["mean_log_abs"], t / z, rtol=1e-6)
        q = a / z
        np.testing.assert_allclose(en["entropy"], -(q * np.log(q)).sum(), rtol=1e-5)

    tk = bf.brute_force(fig1, x, y, semiring_name="TopK", argnums=(0, 1), k=3)
    assert tk[0]["log_abs"].shape == (3,)
    np.testing.assert_allclose(tk[0]["log_abs"][:2], [math.log(2.0), 0.5], rtol=1e-6)
    assert tk[0]["log_abs"][2] == -np.inf and np.isnan(tk[0]["sign"][2])
    np.testing.assert_array_equal(tk[0]["sign"][:2], [1.0, 1.0])
    np.testing.assert_allclose(tk[1]["log_abs"][:2], [math.log(2.0), math.log(1.5)], rtol=1e-6)
    np.testing.assert_array_equal(tk[1]["sign"][:2], [-1.0, -1.0])

    bo = bf.brute_force(fig1, x, y, semiring_name="Boolean", argnums=(0, 1))
    assert bool(bo[0]["value"]) and bool(bo[1]["value"])


def test_mul_x_x_is_two_parallel_edges():
    ps = bf.path_products(lambda x: x * x, jnp.float32(3.0))
    assert sorted(ps[()]) == [3.0, 3.0]
    c = bf.brute_force(lambda x: x * x, jnp.float32(3.0), semiring_name="Counting")
    np.testing.assert_allclose(c["value"], math.log(2))


# ---------------------------------------------------------------------- dead ReLU


@pytest.mark.parametrize("relu", [jax.nn.relu, lambda x: jnp.maximum(x, 0.0)])
def test_dead_relu_is_zero_product_path(relu):
    f = lambda x: relu(x) * 3.0
    x = jnp.float32(-1.0)
    assert bf.path_products(f, x)[()] == [0.0]
    c = bf.brute_force(f, x, semiring_name="Counting")
    assert c["value"] == 0.0  # log 1
    mp = bf.brute_force(f, x, semiring_name="MaxProduct")
    assert mp["top_pos"] == 0.0 and mp["top_neg"] == 0.0
    assert bool(bf.brute_force(f, x, semiring_name="Boolean")["value"])
    assert bf.brute_force(f, x, semiring_name="Log")["value"] == -np.inf
    ma = bf.brute_force(f, x, semiring_name="MaxAbs")
    assert ma["log_abs"] == -np.inf and ma["sign"] == 1.0
    en = bf.brute_force(f, x, semiring_name="Entropy")
    assert en["log_z"] == -np.inf and en["mean_log_abs"] == 0.0
    ex = bf.brute_force(f, x, semiring_name="Expectation")
    assert ex["z"] == 0.0 and ex["t"] == 0.0


# ------------------------------------------------------------- gather / no path


def test_take_repeated_index_two_paths():
    f = lambda t: jnp.sum(jnp.take(t, jnp.array([1, 1, 0]), axis=0) * 2.0)
    t = jnp.arange(6.0, dtype=jnp.float32).reshape(3, 2)
    ps = bf.path_products(f, t)
    assert ps.shape == (3, 2)
    for j in range(2):
        assert ps[1, j] == [2.0, 2.0]
        assert ps[0, j] == [2.0]
        assert ps[2, j] == []
    c = bf.brute_force(f, t, semiring_name="Counting")["value"]
    np.testing.assert_allclose(c[1], [math.log(2)] * 2)
    np.testing.assert_allclose(c[0], [0.0, 0.0])
    assert np.all(c[2] == -np.inf)
    b = bf.brute_force(f, t, semiring_name="Boolean")["value"]
    np.testing.assert_array_equal(b, [[True, True], [True, True], [False, False]])
    mp = bf.brute_force(f, t, semiring_name="MaxProduct")
    assert np.all(mp["top_pos"][2] == -np.inf) and np.all(mp["top_neg"][2] == np.inf)
    r = bf.brute_force(f, t, semiring_name="Real")["value"]
    np.testing.assert_allclose(r, jax.grad(f)(t))


def test_stop_gradient_and_integer_operands():
    f = lambda x, i: jnp.sum(lax.stop_gradient(x) * x) + jnp.take(x, i)
    x = jnp.asarray([1.0, -2.0, 3.0], dtype=jnp.float32)
    i = jnp.int32(2)
    ps = bf.path_products(f, x, i)
    assert ps[0] == [1.0] and ps[1] == [-2.0] and sorted(ps[2]) == [1.0, 3.0]
    _assert_matches_grad(f, x, i)


def test_reduce_max_every_element_is_an_edge():
    x = jnp.asarray(np.random.RandomState(1).randn(40).astype(np.float32))
    ps = bf.path_products(jnp.max, x)
    assert all(len(ps[i]) == 1 for i in range(40))
    am = int(np.argmax(np.asarray(x)))
    assert ps[am] == [1.0] and all(ps[i] == [0.0] for i in range(40) if i != am)


def test_unused_input_and_fold_on_lists():
    r = bf.brute_force(lambda x, y: jnp.sum(x), X4, Y4, semiring_name="MaxProduct", argnums=1)
    assert np.all(r["top_pos"] == -np.inf) and np.all(r["top_neg"] == np.inf)
    d = bf.fold("MaxAbs", [0.5, -2.0, 2.0])
    assert d["log_abs"] == math.log(2.0) and d["sign"] == 1.0
    d = bf.fold("TopK", [0.5, -2.0], k=3)
    np.testing.assert_allclose(d["log_abs"], [math.log(2.0), math.log(0.5), -np.inf])


def test_while_loop_unrolled():
    # reverse mode cannot differentiate while_loop; compare with forward mode
    f = lambda x: lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.sin(c[1]) * x), (0, x)
    )[1].sum()
    got = _real(f, X4)["value"]
    np.testing.assert_allclose(got, jax.jacfwd(f)(X4), rtol=2e-5, atol=2e-6)


def test_path_limit():
    def f(x):
        for _ in range(20):
            x = x * x  # doubles the path count each time
        return x

    with pytest.raises(bf.PathLimitExceeded):
        bf.path_products(f, jnp.float32(1.0), max_paths=1000)


def test_float64_function():
    with jax.enable_x64(True):
        x = jnp.asarray([0.3, -1.2, 2.0], dtype=jnp.float64)
        f = lambda x: jnp.sum(jnp.exp(x) * jnp.maximum(x, 0.0)) + jnp.prod(x)
        _assert_matches_grad(f, x, rtol=1e-12, atol=1e-12)
