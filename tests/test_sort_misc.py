"""sort / argsort / top_k, cumulative ops, split, clamp, rem, nextafter, reduce_and/or,
dot_general with preferred_element_type and mixed precision."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js

sys.path.insert(0, os.path.dirname(__file__))
from test_control_flow import (
    NON_REAL,
    check_brute,  # noqa: E402
    check_real,
    check_vmap,
)

rng = np.random.default_rng(7)


def nrm(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


X = nrm(3, 4)
W = jnp.arange(12.0).reshape(3, 4) - 5.0

CASES = {
    "sort_axis0": (lambda x: jnp.sum(jnp.sort(x, axis=0) * W), (X,)),
    "sort_axis1_desc": (lambda x: jnp.sum(-jnp.sort(-x, axis=1) * W), (X,)),
    "argsort_gather": (lambda x: jnp.sum(x[0][jnp.argsort(x[1])] * W[0]), (X,)),
    "sort_key_val": (
        lambda x: jnp.sum(
            lax.sort_key_val(x[0], x[1])[1] * W[0] + lax.sort_key_val(x[0], x[1])[0] ** 2
        ),
        (X,),
    ),
    "sort_multi_num_keys2": (
        lambda x: jnp.sum(lax.sort((x[0], x[1], x[2]), num_keys=2)[2] * W[0]),
        (X,),
    ),
    "top_k": (lambda x: jnp.sum(lax.top_k(x, 2)[0] * W[:, :2]), (X,)),
    "top_k_values_and_indices": (
        lambda x: jnp.sum(lax.top_k(x[1], 3)[0] * x[0][lax.top_k(x[1], 3)[1]]),
        (X,),
    ),
    "approx_max_k": (lambda x: jnp.sum(lax.approx_max_k(x, 2)[0] ** 2), (X,)),
    "median_quantile": (lambda x: jnp.median(x) + jnp.sum(jnp.quantile(x, 0.3, axis=1)), (X,)),
    "cumsum_rev": (lambda x: jnp.sum(jnp.sin(lax.cumsum(x, axis=1, reverse=True))), (X,)),
    "cumprod": (lambda x: jnp.sum(jnp.cumprod(x, axis=1) * W), (X,)),
    "cumprod_rev_axis0": (lambda x: jnp.sum(lax.cumprod(x, axis=0, reverse=True) * W), (X,)),
    "cummax": (lambda x: jnp.sum(lax.cummax(x, axis=1) * W), (X,)),
    "cummin_rev": (lambda x: jnp.sum(lax.cummin(x, axis=0, reverse=True) * W), (X,)),
    "cumlogsumexp": (lambda x: jnp.sum(lax.cumlogsumexp(x, axis=1) * W), (X,)),
    "split": (
        lambda x: jnp.sum(jnp.split(x, [1, 3], axis=1)[1] ** 2) + jnp.sum(jnp.split(x, 3)[2]),
        (X,),
    ),
    "split_unused_piece": (lambda x: jnp.sum(jnp.split(x, 2, axis=1)[0] * 3.0), (X,)),
    "clamp": (lambda x: jnp.sum(lax.clamp(-0.5, x, 0.5) * W), (X,)),
    "clamp_array_bounds": (lambda x, lo: jnp.sum(lax.clamp(lo, x, lo + 1.0) * W), (X, nrm(3, 4))),
    "rem": (lambda x, y: jnp.sum(lax.rem(x, y) * W), (X * 3, jnp.abs(nrm(3, 4)) + 0.5)),
    "reduce_and_or": (
        lambda x: jnp.sum(
            jnp.where(jnp.all(x > -5, axis=1) & jnp.any(x > 0, axis=1), x[:, 0], 0.0)
        ),
        (X,),
    ),
    "scatter_max_min": (
        lambda x: jnp.sum(
            (
                x[0].at[jnp.array([1, 3, 1])].max(x[1, :3] * 2)
                + x[2].at[jnp.array([0, 0])].min(x[1, 2:])
            )
            * W[0]
        ),
        (X,),
    ),
    "tile": (lambda x: jnp.sum(jnp.tile(x[:, :2], (2, 3)) ** 2), (X,)),
    "stack_unstack": (
        lambda x: jnp.sum(jnp.stack([x[0], x[2] ** 2], axis=1) * 2.0) + jnp.unstack(x)[1][2],
        (X,),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_real_equals_grad(name):
    f, args = CASES[name]
    check_real(f, *args, argnums=tuple(range(len(args))))


BRUTE = [
    "sort_axis0",
    "argsort_gather",
    "sort_multi_num_keys2",
    "top_k_values_and_indices",
    "cumprod",
    "cummin_rev",
    "split_unused_piece",
    "clamp_array_bounds",
    "rem",
    "reduce_and_or",
    "stack_unstack",
    "scatter_max_min",
    "tile",
]


@pytest.mark.parametrize("name", BRUTE)
def test_all_semirings_brute_force(name):
    f, args = CASES[name]
    small = tuple(a[:2, :3] for a in args)
    f_small = f
    if name in ("sort_axis0", "cumprod", "cummin_rev", "clamp_array_bounds", "rem"):
        f_small = lambda *a: f(*[jnp.pad(b, ((0, 1), (0, 1)), constant_values=1.0) for b in a])
    if name in (
        "argsort_gather",
        "sort_multi_num_keys2",
        "top_k_values_and_indices",
        "reduce_and_or",
        "stack_unstack",
        "split_unused_piece",
        "scatter_max_min",
        "tile",
    ):
        small = args
    check_brute(
        f_small,
        *small,
        argnums=tuple(range(len(small))),
        semirings=NON_REAL
        if name in ("sort_multi_num_keys2", "cumprod", "top_k_values_and_indices")
        else [js.MaxProduct(), js.Entropy(), js.TopK(2)],
    )


def test_nextafter_is_an_identity_edge_from_x():
    """nextafter(x, y): an identity edge from x, none from y, on every JAX release (jax 0.12's
    JVP says so; older releases cannot differentiate it at all)."""
    f = lambda x: jnp.sum(jnp.nextafter(x, 0.0) * x[0] + x)
    want = (jnp.ones_like(X) + X[0][None, :]).at[0].add(jnp.sum(jnp.nextafter(X, 0.0), axis=0))
    got = js.semiring_grad(f)(X)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    try:
        np.testing.assert_allclose(got, jax.grad(f)(X), rtol=1e-6, atol=1e-6)
    except NotImplementedError:  # jax < 0.12: no derivative to compare with
        pass
    g = lambda y: jnp.sum(jnp.nextafter(X, y)) + y
    assert int(jnp.exp(js.semiring_grad(g, js.Counting())(jnp.float32(0.0)))) == 1  # only + y
    assert int(jnp.sum(js.semiring_grad(f, js.Boolean())(X))) == X.size


def test_scatter_mul():
    """JAX differentiates scatter-mul only with unique_indices=True (so does this library)."""
    f = lambda x: jnp.sum(
        x[0].at[jnp.array([1, 3, 0])].multiply(x[1, :3] * 2, unique_indices=True) * W[0]
    )
    check_real(f, X)
    check_brute(f, X, semirings=[js.MaxProduct(), js.Counting(), js.TopK(2)])


def test_sort_ties_match_jax():
    x = jnp.array([1.0, 0.0, 1.0, 0.0, 2.0])
    f = lambda x: jnp.sum(jnp.sort(x) * jnp.arange(5.0))
    check_real(f, x)
    check_brute(f, x, semirings=[js.MaxProduct(), js.TopK(2)])
    g = lambda x: jnp.sum(lax.top_k(x, 2)[0] * jnp.array([1.0, 10.0]))
    check_real(g, x)
    check_brute(g, x, semirings=[js.MaxProduct()])


def test_cumulative_ties_and_zeros():
    x = jnp.array([[1.0, 3.0, 3.0, 0.0, 2.0]])
    for f in (
        lambda x: jnp.sum(lax.cummax(x, axis=1) * jnp.arange(5.0)),
        lambda x: jnp.sum(jnp.cumprod(x, axis=1) * jnp.arange(1.0, 6.0)),
    ):
        check_real(f, x)
        check_brute(f, x, semirings=[js.MaxProduct(), js.Counting()])


def test_sort_jit_vmap():
    f = CASES["sort_multi_num_keys2"][0]
    check_vmap(f, jnp.stack([X, -X, X[::-1]]), semirings=(js.Real(), js.MaxProduct(), js.TopK(2)))
    g = CASES["top_k"][0]
    check_vmap(g, jnp.stack([X, -X]), semirings=(js.Real(), js.MaxAbs()))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_dot_general_mixed_precision(dtype):
    a, b = nrm(3, 4), nrm(4, 2)

    def f(a, b):
        y = lax.dot_general(
            a.astype(dtype),
            b.astype(dtype),
            (((1,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
        return jnp.sum(jnp.tanh(y))

    check_real(f, a, b, argnums=(0, 1), rtol=2e-2, atol=2e-2)
    for S in (js.MaxProduct(), js.Entropy(), js.Boolean()):
        g = js.semiring_grad(f, S, argnums=(0, 1))(a, b)
        for leaf in jax.tree.leaves(g):
            assert leaf.dtype in (jnp.float32, jnp.bool_)

    def g16(a, b):  # inputs already low precision
        return jnp.sum(
            jnp.tanh(
                lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
            )
        )

    a16, b16 = a.astype(dtype), b.astype(dtype)
    want = jax.grad(g16, argnums=(0, 1))(a16, b16)
    got = js.semiring_grad(g16, js.Real(), argnums=(0, 1))(a16, b16)
    for gg, ww in zip(got, want):
        np.testing.assert_allclose(
            np.asarray(gg, np.float32), np.asarray(ww, np.float32), rtol=2e-2, atol=2e-2
        )
    mp = js.semiring_grad(g16, js.MaxProduct(), argnums=0)(a16, b16)
    assert mp.top_pos.dtype == jnp.float32  # semiring values are at least float32


def test_dot_general_preferred_element_type_f32_brute():
    a, b = nrm(2, 3), nrm(3, 2)
    f = lambda a, b: jnp.sum(
        jnp.sin(lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32))
    )
    check_real(f, a, b, argnums=(0, 1))
    check_brute(f, a, b, argnums=(0, 1), semirings=[js.MaxProduct(), js.Log()])
