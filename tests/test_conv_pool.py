"""Convolutions and windowed reductions (pooling), and a Flax CNN.

Oracles: Real == jax.grad; every other semiring == brute-force path enumeration on small shapes.
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
from jaxpr_semiring.rules.contractions import conv_backward

sys.path.insert(0, os.path.dirname(__file__))
from test_control_flow import (
    NON_REAL,
    SEMIRINGS,
    assert_values_close,
    check_brute,  # noqa: E402
    check_real,
    check_vmap,
)
from conftest import x64  # noqa: E402

rng = np.random.default_rng(3)


def nrm(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


# (lhs shape, rhs shape, conv kwargs)
CONV_CASES = {
    "valid": ((2, 3, 5, 6), (4, 3, 2, 3), dict(window_strides=(1, 1), padding="VALID")),
    "same_strided": ((2, 3, 5, 6), (4, 3, 2, 3), dict(window_strides=(2, 1), padding="SAME")),
    "pad_dilations": (
        (2, 3, 5, 6),
        (4, 3, 2, 3),
        dict(
            window_strides=(2, 3),
            padding=((1, 2), (0, 1)),
            lhs_dilation=(2, 1),
            rhs_dilation=(1, 2),
        ),
    ),
    "feature_groups": (
        (2, 4, 5, 6),
        (6, 2, 2, 3),
        dict(window_strides=(1, 2), padding="SAME", feature_group_count=2),
    ),
    "batch_groups": (
        (4, 3, 5, 6),
        (6, 3, 2, 3),
        dict(window_strides=(1, 1), padding=((1, 1), (2, 0)), batch_group_count=2),
    ),
    "negative_pad": (
        (4, 3, 5, 6),
        (6, 3, 2, 3),
        dict(
            window_strides=(1, 1),
            padding=((-1, 1), (2, 0)),
            batch_group_count=2,
            rhs_dilation=(2, 1),
        ),
    ),
    "nhwc": (
        (2, 5, 6, 3),
        (2, 3, 3, 4),
        dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "nhwc_groups_nchw_out": (
        (2, 5, 6, 4),
        (2, 3, 2, 4),
        dict(
            window_strides=(2, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NCHW"),
            feature_group_count=2,
        ),
    ),
    "conv1d_lhs_dilation": (
        (2, 3, 7),
        (4, 3, 3),
        dict(window_strides=(2,), padding=((2, 1),), lhs_dilation=(3,)),
    ),
    "conv3d": ((1, 2, 4, 3, 3), (2, 2, 2, 2, 2), dict(window_strides=(1, 1, 1), padding="SAME")),
}


def _conv_fn(kw):
    return lambda x, w: jnp.sum(jnp.tanh(lax.conv_general_dilated(x, w, **kw)) * 0.7)


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_real_equals_grad(name):
    ls, rs, kw = CONV_CASES[name]
    check_real(_conv_fn(kw), nrm(*ls), nrm(*rs), argnums=(0, 1), rtol=2e-5, atol=2e-6, jit=True)


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_patch_path_is_exact_for_real(name):
    """The generic (non-Real) patches formulation, run with Real arithmetic, equals JAX's
    transpose rules exactly (float64): the index bookkeeping of every dimension number,
    stride, padding, dilation and group count."""
    ls, rs, kw = CONV_CASES[name]
    with x64():
        lhs = jnp.asarray(rng.normal(size=ls))
        rhs = jnp.asarray(rng.normal(size=rs))
        f = lambda a, b: lax.conv_general_dilated(a, b, **kw)
        out, pullback = jax.vjp(f, lhs, rhs)
        ct = jnp.asarray(rng.normal(size=out.shape))
        want = pullback(ct)
        params = jax.make_jaxpr(f)(lhs, rhs).jaxpr.eqns[0].params
        got = conv_backward(js.Real(), lhs, rhs, ct, (True, True), **params)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


BRUTE_CONVS = {
    "groups_stride_pad_rhs_dil": (
        (1, 2, 4, 3),
        (2, 1, 2, 2),
        dict(
            window_strides=(2, 1),
            padding=((1, 0), (1, 1)),
            rhs_dilation=(1, 2),
            feature_group_count=2,
        ),
    ),
    "lhs_dilation_pad": (
        (1, 2, 3, 3),
        (1, 2, 2, 2),
        dict(window_strides=(1, 1), padding=((1, 1), (0, 1)), lhs_dilation=(2, 1)),
    ),
    "batch_groups_1d": (
        (2, 2, 4),
        (2, 2, 2),
        dict(window_strides=(1,), padding=((1, 0),), batch_group_count=2),
    ),
}


@pytest.mark.parametrize("name", list(BRUTE_CONVS))
def test_conv_all_semirings_brute_force(name):
    ls, rs, kw = BRUTE_CONVS[name]
    semirings = (
        NON_REAL
        if name == "groups_stride_pad_rhs_dil"
        else [js.MaxProduct(), js.Entropy(), js.TopK(2)]
    )
    check_brute(_conv_fn(kw), nrm(*ls), nrm(*rs), argnums=(0, 1), semirings=semirings)


def test_conv_mixed_precision():
    x, w = nrm(1, 2, 4, 4), nrm(3, 2, 2, 2)
    f = lambda x, w: jnp.sum(
        lax.conv_general_dilated(
            x.astype(jnp.bfloat16),
            w.astype(jnp.bfloat16),
            (1, 1),
            "SAME",
            preferred_element_type=jnp.float32,
        )
        ** 2
    )
    check_real(f, x, w, argnums=(0, 1), rtol=2e-2, atol=2e-2)
    g = js.semiring_grad(f, js.MaxProduct(), argnums=1)(x, w)
    assert g.top_pos.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g.top_pos)))


# ------------------------------------------------------------------------------- pooling

X = nrm(2, 4, 5, 3)
TIES = jnp.round(nrm(1, 4, 4, 1))  # many tied window maxima


POOLS = {
    "max_pool": lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2),
    "max_pool_same_overlap": lambda x: jnp.sum(
        jnp.sin(nn.max_pool(x, (3, 2), strides=(1, 2), padding="SAME"))
    ),
    "avg_pool": lambda x: jnp.sum(
        nn.avg_pool(x, (2, 2), strides=(2, 1), padding=((1, 0), (0, 1))) ** 2
    ),
    "avg_pool_count_pad": lambda x: jnp.sum(
        jnp.cos(nn.avg_pool(x, (2, 3), padding="SAME", count_include_pad=False))
    ),
    "min_pool_dilated": lambda x: jnp.sum(
        lax.reduce_window(
            x, jnp.inf, lax.min, (1, 2, 2, 1), (1, 1, 2, 1), "SAME", base_dilation=(1, 2, 1, 1)
        )
        ** 2
    ),
    # jax.grad has no VJP for window dilation of max/min pools (brute force only, below)
    "max_pool_window_dilation": lambda x: jnp.sum(
        lax.reduce_window(
            x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "SAME", window_dilation=(1, 2, 1, 1)
        )
        ** 2
    ),
    "sum_window_strided": lambda x: jnp.sum(
        jnp.tanh(
            lax.reduce_window(
                x, 0.0, lax.add, (1, 3, 1, 2), (1, 2, 1, 1), ((0, 0), (1, 2), (0, 0), (0, 1))
            )
        )
    ),
}


@pytest.mark.parametrize("name", [n for n in POOLS if "window_dilation" not in n])
def test_pool_real_equals_grad(name):
    check_real(POOLS[name], X, jit=True)


def test_max_pool_ties_follow_jax_grad():
    """At tied window maxima JAX's forward mode (jacfwd: select_and_gather_add) and reverse mode
    (jax.grad: select_and_scatter_add) pick *different* elements. Weights follow jax.grad; the
    structure (every window element has an edge) is the brute force's."""
    f = lambda x: jnp.sum(
        nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
        * jnp.arange(16.0).reshape(1, 4, 4, 1)
    )
    g = lambda x: nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
    assert not np.array_equal(jax.jacfwd(g)(TIES), jax.jacrev(g)(TIES))  # JAX's own disagreement
    check_real(f, TIES)
    check_brute(f, TIES, semirings=[js.Counting(), js.Boolean()])
    mp = js.semiring_grad(f, js.MaxProduct())(TIES)
    real = js.semiring_grad(f, js.Real())(TIES)
    # all path products are >= 0 here (weights 0/1 and arange): the best one is <= their sum
    assert bool(jnp.all(mp.top_pos <= jnp.maximum(real, 0) + 1e-6))


@pytest.mark.parametrize(
    "name", ["max_pool_same_overlap", "avg_pool", "min_pool_dilated", "max_pool_window_dilation"]
)
def test_pool_all_semirings_brute_force(name):
    semirings = (
        NON_REAL if name == "max_pool_same_overlap" else [js.MaxProduct(), js.Log(), js.TopK(2)]
    )
    check_brute(POOLS[name], nrm(1, 3, 4, 1), semirings=semirings)


def test_generic_reduce_window_product():
    """lax.reduce_window with a custom reducer (jax.grad cannot differentiate it: JVP only)
    equals the same product written with slices, for every semiring."""
    x = nrm(2, 5)
    f = lambda x: jnp.sum(
        jnp.sin(lax.reduce_window(x, 1.0, lax.mul, (1, 2), (1, 2), ((0, 0), (1, 0))))
    )

    def explicit(x):
        xp = jnp.pad(x, ((0, 0), (1, 0)), constant_values=1.0)
        return jnp.sum(jnp.sin(xp[:, 0::2] * xp[:, 1::2]))

    for S in SEMIRINGS:
        assert_values_close(S, jax.jit(js.semiring_grad(f, S))(x), js.semiring_grad(explicit, S)(x))
    check_vmap(f, jnp.stack([x, -x]), semirings=(js.MaxProduct(),))


# ------------------------------------------------------------------------------ Flax CNN


class CNN(nn.Module):
    channels: int = 4
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(
            nn.Conv(
                self.channels,
                (3, 3),
                strides=(1, 1),
                padding="VALID",
                feature_group_count=2,
                name="conv2",
            )(x)
        )
        x = nn.avg_pool(x, (2, 2), strides=(1, 1))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.classes, name="head")(x)


def _cnn(size=8, channels=4):
    m = CNN(channels=channels)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, size, size, 2)), jnp.float32)
    params = m.init(jax.random.PRNGKey(0), x)
    return m, params, x


def test_flax_cnn_real_params_and_inputs():
    m, params, x = _cnn()

    def f(params, x):
        return jax.nn.log_softmax(m.apply(params, x))[:, 1].sum()

    check_real(f, params, x, argnums=(0, 1), rtol=2e-5, atol=2e-6, jit=True)


def test_flax_cnn_all_semirings_brute_force_tiny():
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jnp.tanh(nn.Conv(2, (2, 2), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            return nn.Dense(1)(x.reshape(-1))[0]

    m = Tiny()
    x = nrm(1, 4, 4, 1)
    params = m.init(jax.random.PRNGKey(1), x)
    check_brute(lambda x: m.apply(params, x), x)
    check_brute(lambda p: m.apply(p, x), params, semirings=[js.MaxProduct(), js.Log()])


def test_flax_cnn_jit_vmap():
    m, params, x = _cnn(size=8)
    f = lambda x: m.apply(params, x[None])[0, 1]
    check_vmap(f, x, semirings=(js.Real(), js.MaxProduct()))
