"""Oracle A: the Real semiring equals jax.grad on every function we claim to support."""

from jax.ad_checkpoint import checkpoint_name

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js

from conftest import x64

rng = np.random.default_rng(0)


def pos(shape):
    return jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)


def nrm(shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def unit(shape):
    return jnp.asarray(rng.uniform(-0.9, 0.9, shape), jnp.float32)


@jax.jit
def _jitted_inner(x):
    return jnp.sin(x) * x


@jax.custom_jvp
def _custom_square(x):
    return x * x


_custom_square.defjvp(lambda p, t: (p[0] * p[0], 2 * p[0] * t[0]))


# (name, function, args) — each function returns a scalar.
CASES = [
    ("fig1", lambda x, y: jnp.exp(x) + (x - y) * y, (nrm(()), nrm(()))),
    ("exp_sum", lambda x: jnp.sum(jnp.exp(x)), (nrm((3,)),)),
    ("log", lambda x: jnp.sum(jnp.log(x)), (pos((4,)),)),
    ("log1p_expm1", lambda x: jnp.sum(jnp.log1p(x) * jnp.expm1(x)), (pos((4,)),)),
    ("sqrt_rsqrt", lambda x: jnp.sum(jnp.sqrt(x) + lax.rsqrt(x)), (pos((4,)),)),
    ("cbrt", lambda x: jnp.sum(jnp.cbrt(x)), (pos((4,)),)),
    ("square_pow", lambda x: jnp.sum(jnp.square(x) + x**3 + x**0.5), (pos((4,)),)),
    ("pow_xy", lambda x, y: jnp.sum(x**y), (pos((3,)), nrm((3,)))),
    ("div", lambda x, y: jnp.sum(x / y), (nrm((3,)), pos((3,)))),
    ("trig", lambda x: jnp.sum(jnp.sin(x) * jnp.cos(x) + jnp.tan(x / 2)), (nrm((5,)),)),
    ("inv_trig", lambda x: jnp.sum(jnp.arcsin(x) + jnp.arccos(x) + jnp.arctan(x)), (unit((5,)),)),
    ("hyperbolic", lambda x: jnp.sum(jnp.sinh(x) + jnp.cosh(x) + jnp.tanh(x)), (nrm((5,)),)),
    (
        "inv_hyperbolic",
        lambda x: jnp.sum(jnp.arcsinh(x) + jnp.arctanh(x) + jnp.arccosh(x + 2)),
        (unit((5,)),),
    ),
    ("atan2", lambda x, y: jnp.sum(jnp.arctan2(x, y)), (nrm((4,)), pos((4,)))),
    (
        "erf_family",
        lambda x: jnp.sum(jax.scipy.special.erf(x) + jax.scipy.special.erfc(x)),
        (nrm((4,)),),
    ),
    ("erf_inv", lambda x: jnp.sum(jax.scipy.special.erfinv(x)), (unit((4,)),)),
    ("logistic", lambda x: jnp.sum(jax.nn.sigmoid(x)), (nrm((4,)),)),
    (
        "abs_max_min",
        lambda x, y: jnp.sum(jnp.abs(x) * jnp.maximum(x, y) + jnp.minimum(x, y)),
        (nrm((6,)), nrm((6,))),
    ),
    ("clip", lambda x: jnp.sum(jnp.clip(x, -0.5, 0.5) * x), (nrm((6,)),)),
    (
        "relu_gelu_silu",
        lambda x: jnp.sum(jax.nn.relu(x) + jax.nn.gelu(x) + jax.nn.silu(x)),
        (nrm((6,)),),
    ),
    ("softmax", lambda x: jnp.sum(jax.nn.softmax(x) * jnp.arange(5.0)), (nrm((5,)),)),
    ("log_softmax", lambda x: jax.nn.log_softmax(x)[2], (nrm((5,)),)),
    ("logsumexp", lambda x: jax.nn.logsumexp(x), (nrm((5,)),)),
    ("broadcast_scalar", lambda x, s: jnp.sum(x * s + s), (nrm((2, 3)), nrm(()))),
    ("broadcast_rows", lambda x, b: jnp.sum(jnp.tanh(x + b[None, :])), (nrm((2, 3)), nrm((3,)))),
    ("matmul", lambda a, b: jnp.sum(jnp.tanh(a @ b)), (nrm((2, 3)), nrm((3, 4)))),
    ("matvec_same", lambda a: jnp.sum(a @ a), (nrm((3, 3)),)),
    (
        "einsum_batch",
        lambda a, b: jnp.sum(jnp.einsum("bij,bjk->bik", a, b) ** 2),
        (nrm((2, 3, 4)), nrm((2, 4, 2))),
    ),
    (
        "einsum_odd_dims",
        lambda a, b: jnp.sum(jnp.sin(jnp.einsum("ibj,kjb->kbi", a, b))),
        (nrm((3, 2, 4)), nrm((2, 4, 2))),
    ),
    ("reduce_max", lambda x: jnp.max(x) + jnp.sum(jnp.max(x, axis=0)), (nrm((3, 4)),)),
    ("reduce_min_prod", lambda x: jnp.min(x) + jnp.prod(x), (pos((5,)),)),
    ("mean_var", lambda x: jnp.var(x) + jnp.mean(x**2), (nrm((4, 3)),)),
    (
        "layernorm",
        lambda x: jnp.sum(
            ((x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5))
            * jnp.arange(4.0)
        ),
        (nrm((3, 4)),),
    ),
    (
        "reshape_transpose",
        lambda x: jnp.sum(jnp.sin(x.reshape(3, 2).T) * jnp.arange(6.0).reshape(2, 3)),
        (nrm((6,)),),
    ),
    ("slice_strided", lambda x: jnp.sum(jnp.exp(x[1:5:2])) + x[0] * x[-1], (nrm((6,)),)),
    (
        "pad",
        lambda x, p: jnp.sum(jnp.sin(lax.pad(x, p, ((1, 2, 1),)) * jnp.arange(10.0))),
        (nrm((4,)), nrm(())),
    ),
    ("pad_negative", lambda x: jnp.sum(lax.pad(x, 0.0, ((-1, 2, 0),)) ** 2), (nrm((4,)),)),
    (
        "concatenate",
        lambda x, y: jnp.sum(jnp.concatenate([x, y, x]) * jnp.arange(8.0)),
        (nrm((3,)), nrm((2,))),
    ),
    ("rev", lambda x: jnp.sum(jnp.flip(x) * jnp.arange(4.0)), (nrm((4,)),)),
    ("where", lambda x: jnp.sum(jnp.where(x > 0, x**2, jnp.sin(x))), (nrm((6,)),)),
    (
        "take_repeated",
        lambda t: jnp.sum(
            jnp.take(t, jnp.array([0, 2, 0, 1]), axis=0) ** 2 * jnp.arange(4.0)[:, None]
        ),
        (nrm((3, 2)),),
    ),
    (
        "take_oob_fill",
        lambda t: jnp.sum(jnp.take(t, jnp.array([0, 5]), mode="fill", fill_value=0.0) ** 2),
        (nrm((3,)),),
    ),
    (
        "fancy_index",
        lambda t: jnp.sum(t[jnp.array([1, 1, 0]), jnp.array([0, 2, 2])] ** 3),
        (nrm((2, 3)),),
    ),
    (
        "dynamic_slice",
        lambda x, i: jnp.sum(lax.dynamic_slice(x, (i,), (2,)) ** 2),
        (nrm((5,)), jnp.array(2)),
    ),
    (
        "dynamic_update_slice",
        lambda x, u: jnp.sum(lax.dynamic_update_slice(x, u, (1,)) ** 2 * jnp.arange(5.0)),
        (nrm((5,)), nrm((2,))),
    ),
    (
        "scatter_add",
        lambda x, u: jnp.sum(jnp.sin(x.at[jnp.array([0, 2, 0])].add(u))),
        (nrm((4,)), nrm((3,))),
    ),
    (
        "scatter_set",
        lambda x, u: jnp.sum(jnp.sin(x.at[jnp.array([1, 3])].set(u)) * jnp.arange(4.0)),
        (nrm((4,)), nrm((2,))),
    ),
    ("cumsum", lambda x: jnp.sum(jnp.cumsum(x) ** 2), (nrm((5,)),)),
    (
        "cumsum_reverse_axis",
        lambda x: jnp.sum(lax.cumsum(x, axis=1, reverse=True) ** 2),
        (nrm((2, 4)),),
    ),
    ("cummax", lambda x: jnp.sum(lax.cummax(x) * jnp.arange(5.0)), (nrm((5,)),)),
    (
        "cumlogsumexp",
        lambda x: jnp.sum(lax.cumlogsumexp(x, axis=0) * jnp.arange(5.0)),
        (nrm((5,)),),
    ),
    ("cumprod", lambda x: jnp.sum(jnp.cumprod(x)), (pos((4,)),)),
    (
        "expand_squeeze",
        lambda x: jnp.sum(jnp.squeeze(jnp.expand_dims(x, 0) * 2.0, 0) ** 2),
        (nrm((3,)),),
    ),
    (
        "stop_gradient",
        lambda x: jnp.sum(x * lax.stop_gradient(x) + jnp.floor(x) + jnp.sign(x) * x),
        (nrm((4,)),),
    ),
    (
        "convert_types",
        lambda x: jnp.sum(
            x.astype(jnp.bfloat16).astype(jnp.float32) * 0
            + x.astype(jnp.float16).astype(jnp.float32) ** 2
        ),
        (nrm((3,)),),
    ),
    (
        "int_structure",
        lambda x: jnp.sum(x * jnp.argmax(x) + x[jnp.argsort(jnp.array([2, 0, 1]))]),
        (nrm((3,)),),
    ),
    ("jit_inner", lambda x: jnp.sum(_jitted_inner(x) + _jitted_inner(x * 2)), (nrm((3,)),)),
    ("custom_jvp", lambda x: jnp.sum(_custom_square(x) * x), (nrm((3,)),)),
    ("remat", lambda x: jax.checkpoint(lambda y: jnp.sum(jnp.sin(y) ** 2))(x), (nrm((3,)),)),
    ("checkpoint_name", lambda x: jnp.sum(checkpoint_name(jnp.exp(x), "h") * x), (nrm((3,)),)),
    ("norm", lambda x: jnp.linalg.norm(x), (nrm((4,)),)),
    (
        "pytree_args",
        lambda d: jnp.sum(d["a"] * d["b"][0]) + jnp.sum(jnp.exp(d["b"][1])),
        ({"a": nrm((3,)), "b": (nrm((3,)), nrm((2,)))},),
    ),
    ("kwarg_const", lambda x, scale=3.0: jnp.sum(x * scale), (nrm((3,)),)),
]


def _check(f, args, argnums, rtol, atol):
    got = js.semiring_grad(f, js.Real(), argnums=argnums)(*args)
    want = jax.grad(f, argnums=argnums)(*args)
    jax.tree.map(
        lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol),
        got,
        want,
    )
    assert jax.tree.structure(got) == jax.tree.structure(want)


def _float_argnums(args):
    return tuple(
        i for i, a in enumerate(args) if jnp.issubdtype(jax.tree.leaves(a)[0].dtype, jnp.floating)
    )


@pytest.mark.parametrize("name,f,args", CASES, ids=[c[0] for c in CASES])
def test_real_equals_jax_grad(name, f, args):
    _check(f, args, _float_argnums(args), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,f,args", CASES, ids=[c[0] for c in CASES])
def test_real_equals_jax_grad_x64(name, f, args):
    with x64():
        args64 = jax.tree.map(
            lambda a: (
                jnp.asarray(np.asarray(a, np.float64))
                if jnp.issubdtype(a.dtype, jnp.floating)
                else a
            ),
            args,
        )
        _check(f, args64, _float_argnums(args64), rtol=1e-10, atol=1e-12)
        g = js.semiring_grad(f, js.Real(), argnums=_float_argnums(args64))(*args64)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(g))


def test_argnums_int_and_tuple_match_jax_grad():
    f, args = CASES[0][1], CASES[0][2]
    for argnums in (0, 1, (1,), (0, 1), (1, 0)):
        _check(f, args, argnums, 1e-6, 1e-6)


def test_has_aux_returns_aux_untouched():
    def f(x):
        return jnp.sum(x**2), {"norm": jnp.linalg.norm(x), "tag": x[0]}

    x = nrm((3,))
    g, aux = js.semiring_grad(f, js.Real(), has_aux=True)(x)
    g2, aux2 = jax.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, g2, rtol=1e-6)
    jax.tree.map(np.testing.assert_allclose, aux, aux2)
    (v, aux3), g3 = js.value_and_semiring_grad(f, js.MaxProduct(), has_aux=True)(x)
    np.testing.assert_allclose(v, f(x)[0], rtol=1e-6)
    np.testing.assert_allclose(g3.top_pos, 2 * x, rtol=1e-6)


def test_value_and_semiring_grad():
    f = lambda x: jnp.sum(jnp.sin(x))
    x = nrm((4,))
    v, g = js.value_and_semiring_grad(f)(x)
    np.testing.assert_allclose(v, f(x), rtol=1e-6)
    np.testing.assert_allclose(g, jnp.cos(x), rtol=1e-6)


def test_default_semiring_is_real():
    x = nrm((3,))
    np.testing.assert_allclose(js.semiring_grad(lambda x: jnp.sum(x**3))(x), 3 * x**2, rtol=1e-6)


def test_enough_cases():
    assert len(CASES) >= 40
