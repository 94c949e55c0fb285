"""Coverage sweep: ≥ 120 jax.numpy / jax.nn / jax.scipy / jax.lax functions, each checked
``semiring_grad(f, Real()) == jax.grad(f)`` (rtol 1e-5, float32), plus a structural smoke test
of MaxProduct on all of them (finite where Real is nonzero). Primitives that cannot be
supported are listed, with reasons, in docs/coverage.md.
"""

import functools

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js

rng = np.random.default_rng(11)


def nrm(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def pos(*shape):
    return jnp.asarray(rng.uniform(0.5, 2.0, size=shape), jnp.float32)


def unit(*shape):
    return jnp.asarray(rng.uniform(-0.9, 0.9, size=shape), jnp.float32)


V = nrm(5)  # vector
P = pos(5)  # positive vector
U = unit(5)  # in (-1, 1)
M = nrm(3, 4)  # matrix
A = nrm(3, 3)  # square
B = nrm(4, 2)
T3 = nrm(2, 3, 4)
WV = jnp.linspace(-1.0, 1.5, 5)
WM = jnp.linspace(-1.0, 1.5, 12).reshape(3, 4)
IDX = jnp.array([2, 0, 2, 4])


def s(x):
    """Scalarize with distinct weights so every element's gradient is distinct."""
    x = jnp.asarray(x)
    w = jnp.cos(jnp.arange(x.size, dtype=jnp.float32) * 0.7 + 0.3).reshape(x.shape)
    return jnp.sum(x * w)


def un(fn, x=V):
    return (lambda x: s(fn(x)), (x,))


def bi(fn, x=V, y=P):
    return (lambda x, y: s(fn(x, y)), (x, y))


CASES = {
    # --- elementwise unary (jnp)
    "sin": un(jnp.sin),
    "cos": un(jnp.cos),
    "tan": un(jnp.tan, U),
    "arcsin": un(jnp.arcsin, U),
    "arccos": un(jnp.arccos, U),
    "arctan": un(jnp.arctan),
    "sinh": un(jnp.sinh),
    "cosh": un(jnp.cosh),
    "tanh": un(jnp.tanh),
    "arcsinh": un(jnp.arcsinh),
    "arccosh": un(jnp.arccosh, P + 1.0),
    "arctanh": un(jnp.arctanh, U),
    "exp": un(jnp.exp),
    "exp2": un(jnp.exp2),
    "expm1": un(jnp.expm1),
    "log": un(jnp.log, P),
    "log2": un(jnp.log2, P),
    "log10": un(jnp.log10, P),
    "log1p": un(jnp.log1p, P),
    "sqrt": un(jnp.sqrt, P),
    "cbrt": un(jnp.cbrt, P),
    "square": un(jnp.square),
    "abs": un(jnp.abs),
    "fabs": un(jnp.fabs),
    "negative": un(jnp.negative),
    "positive": un(jnp.positive),
    "reciprocal": un(jnp.reciprocal, P),
    "sign_times_x": un(lambda x: jnp.sign(x) * x),
    "floor_ceil_round": un(
        lambda x: jnp.floor(x) + jnp.ceil(x) * x + jnp.round(x) + jnp.trunc(x) * x
    ),
    "rint_trunc": un(lambda x: jnp.rint(x) * x + jnp.trunc(x)),
    "sinc": un(jnp.sinc),
    "deg2rad_rad2deg": un(lambda x: jnp.deg2rad(x) + jnp.rad2deg(x)),
    "rsqrt": un(lax.rsqrt, P),
    "integer_pow": un(lambda x: x**3 + x**-2),
    "pow_float": un(lambda x: x**1.7, P),
    "nan_to_num": un(lambda x: jnp.nan_to_num(jnp.log(x))),
    "real_conj": un(lambda x: jnp.real(x) + jnp.conj(x)),
    "i0": un(jnp.i0),
    "heaviside_x": un(lambda x: jnp.heaviside(x, 0.5) * x),
    "isfinite_where": un(lambda x: jnp.where(jnp.isfinite(1.0 / x), x, 0.0)),
    # --- elementwise binary
    "add_sub_mul_div": bi(lambda x, y: (x + y) * (x - y) / y),
    "power": bi(lambda x, y: y**x),
    "float_power": bi(lambda x, y: jnp.float_power(y, x)),
    "arctan2": bi(jnp.arctan2),
    "hypot": bi(jnp.hypot),
    "logaddexp": bi(jnp.logaddexp),
    "logaddexp2": bi(jnp.logaddexp2),
    "maximum_minimum": bi(lambda x, y: jnp.maximum(x, y) * jnp.minimum(x, y)),
    "fmax_fmin": bi(lambda x, y: jnp.fmax(x, y) + jnp.fmin(x, y) * 2),
    "copysign": bi(jnp.copysign, P, V),
    "fmod": bi(jnp.fmod, V * 3, P),
    "remainder": bi(jnp.remainder, V * 3, P),
    "true_divide": bi(jnp.true_divide),
    "floor_divide_x": bi(lambda x, y: jnp.floor_divide(x, y) * x + y),
    "where3": bi(lambda x, y: jnp.where(x > 0, x * y, y)),
    "clip": un(lambda x: jnp.clip(x, -0.5, 0.7)),
    "clip_arrays": bi(lambda x, y: jnp.clip(x, -y, y)),
    "broadcast_scalar": bi(lambda x, y: x * y[0], V, P),
    "broadcast_rows": (lambda m, v: s(m + v[None, :4]), (M, V)),
    # --- jax.nn
    "relu": un(jax.nn.relu),
    "relu6": un(lambda x: jax.nn.relu6(3 * x)),
    "sigmoid": un(jax.nn.sigmoid),
    "softplus": un(jax.nn.softplus),
    "soft_sign": un(jax.nn.soft_sign),
    "silu": un(jax.nn.silu),
    "gelu_tanh": un(jax.nn.gelu),
    "gelu_erf": un(functools.partial(jax.nn.gelu, approximate=False)),
    "elu": un(jax.nn.elu),
    "celu": un(jax.nn.celu),
    "selu": un(jax.nn.selu),
    "leaky_relu": un(jax.nn.leaky_relu),
    "hard_tanh": un(lambda x: jax.nn.hard_tanh(2 * x)),
    "hard_sigmoid": un(jax.nn.hard_sigmoid),
    "hard_silu": un(jax.nn.hard_silu),
    "log_sigmoid": un(jax.nn.log_sigmoid),
    "softmax": un(jax.nn.softmax),
    "softmax_axis0": un(lambda m: jax.nn.softmax(m, axis=0), M),
    "log_softmax": un(jax.nn.log_softmax, M),
    "logsumexp_nn": un(lambda x: jax.nn.logsumexp(x, axis=-1), M),
    "one_hot": un(lambda x: jax.nn.one_hot(jnp.array([1, 3, 0]), 5) @ x),
    "standardize": un(jax.nn.standardize, M),
    "glu": un(jax.nn.glu, M),
    "mish": un(jax.nn.mish),
    "squareplus": un(jax.nn.squareplus),
    "sparse_plus": un(jax.nn.sparse_plus),
    # --- jax.scipy.special
    "erf_erfc": un(lambda x: jsp.erf(x) + jsp.erfc(x) * x),
    "erfinv": un(jsp.erfinv, U),
    "gammaln": un(jsp.gammaln, P),
    "digamma": un(jsp.digamma, P),
    "xlogy": bi(jsp.xlogy),
    "xlog1py": bi(jsp.xlog1py),
    "entr": un(jsp.entr, P),
    "logit": un(jsp.logit, (U + 1) / 2),
    "expit": un(jsp.expit),
    "ndtr": un(jsp.ndtr),
    "ndtri": un(jsp.ndtri, (U + 1) / 2),
    "log_ndtr": un(jsp.log_ndtr),
    "i0e_i1e": un(lambda x: jsp.i0e(x) + jsp.i1e(x)),
    "logsumexp_scipy": un(lambda m: jsp.logsumexp(m, axis=0), M),
    "logsumexp_weighted": bi(lambda x, b: jsp.logsumexp(x, b=b)),
    "betaln": bi(jsp.betaln, P, P[::-1]),
    "gamma": un(jsp.gamma, P),
    # --- reductions
    "sum_axis": un(lambda m: jnp.sum(m, axis=1), M),
    "mean": un(jnp.mean, M),
    "prod": un(jnp.prod, P),
    "max_axis": un(lambda m: jnp.max(m, axis=0), M),
    "min": un(jnp.min, M),
    "amax_amin": un(lambda m: jnp.amax(m, 1) * jnp.amin(m, 1), M),
    "var_std": un(lambda m: jnp.var(m, axis=0) + jnp.std(m), M),
    "ptp": un(lambda m: jnp.ptp(m, axis=1), M),
    "average_weights": bi(lambda x, w: jnp.average(x, weights=w)),
    "nansum_nanmean": un(lambda m: jnp.nansum(m) + jnp.nanmean(m, axis=0), M),
    "nanmax": un(lambda m: jnp.nanmax(m, axis=1), M),
    "cumsum": un(lambda m: jnp.cumsum(m, axis=1), M),
    "cumprod": un(lambda m: jnp.cumprod(m, axis=0), M),
    "cummax": un(lambda m: lax.cummax(m, axis=1), M),
    "cumulative_sum": un(lambda m: jnp.cumulative_sum(m, axis=1, include_initial=True), M),
    "norm_l2": un(jnp.linalg.norm),
    "norm_fro": un(jnp.linalg.norm, M),
    "norm_l1": un(lambda x: jnp.linalg.norm(x, 1)),
    "norm_inf": un(lambda x: jnp.linalg.norm(x, jnp.inf)),
    "norm_axis": un(lambda m: jnp.linalg.norm(m, axis=1), M),
    "norm_ord3": un(lambda x: jnp.linalg.norm(x, 3)),
    "norm_matrix_1": un(lambda m: jnp.linalg.norm(m, 1), M),
    "vector_norm": un(lambda m: jnp.linalg.vector_norm(m, axis=0), M),
    "trace": un(jnp.trace, A),
    "count_nonzero_weight": un(lambda x: x * jnp.count_nonzero(x > 0)),
    "all_any_where": un(
        lambda m: jnp.where(jnp.all(m > -3, axis=1, keepdims=True) | jnp.any(m > 5), m, 0.0), M
    ),
    "median": un(jnp.median, M),
    "quantile": un(lambda m: jnp.quantile(m, 0.25, axis=1), M),
    "percentile": un(lambda x: jnp.percentile(x, 60.0)),
    # --- linear algebra
    "dot": bi(jnp.dot, V, P),
    "matmul": (lambda m, b: s(m @ b), (M, B)),
    "vdot": bi(jnp.vdot),
    "inner": bi(jnp.inner),
    "outer": bi(jnp.outer),
    "tensordot": (lambda t, b: s(jnp.tensordot(t, b, axes=([2], [0]))), (T3, B)),
    "einsum_matmul": (lambda m, b: s(jnp.einsum("ij,jk->ik", m, b)), (M, B)),
    "einsum_batch": (lambda t: s(jnp.einsum("bij,bkj->bik", t, t)), (T3,)),
    "einsum_trace_diag": (lambda a: s(jnp.einsum("ii->i", a) + jnp.einsum("ii", a)), (A,)),
    "einsum_outer_sum": (lambda x, y: s(jnp.einsum("i,j->", x, y)), (V, P)),
    "einsum_three": (lambda m, b, v: s(jnp.einsum("ij,jk,i->k", m, b, v[:3])), (M, B, V)),
    "kron": (lambda a, b: s(jnp.kron(a, b)), (A, B)),
    "matrix_power": (lambda a: s(jnp.linalg.matrix_power(a, 3)), (A,)),
    "multi_dot": (lambda a, m, b: s(jnp.linalg.multi_dot([a, m, b])), (A, M, B)),
    "cross": (lambda x, y: s(jnp.cross(x[:3], y[:3])), (V, P)),
    "polyval": (lambda c, x: s(jnp.polyval(c, x)), (V, P)),
    "vecdot_matvec": (lambda m, x: s(jnp.vecdot(m, x[:4]) + jnp.matvec(m, x[:4])), (M, V)),
    "convolve_full": (lambda x, y: s(jnp.convolve(x, y[:3])), (V, P)),
    "correlate_same": (lambda x, y: s(jnp.correlate(x, y[:3], mode="same")), (V, P)),
    # --- indexing and data movement
    "index_int": un(lambda m: m[1], M),
    "slice_step": un(lambda x: x[1:5:2]),
    "reverse": un(lambda x: x[::-1]),
    "fancy_index_repeat": un(lambda x: x[IDX]),
    "take": un(lambda m: jnp.take(m, IDX[:3] % 3, axis=0), M),
    "take_along_axis": un(lambda m: jnp.take_along_axis(m, jnp.argsort(m, axis=1), axis=1), M),
    "at_set": un(lambda x: x.at[IDX[:2]].set(x[0] * 2)),
    "at_add": un(lambda x: x.at[IDX].add(x[:4] ** 2)),
    "at_mul_unique": un(lambda x: x.at[jnp.array([1, 3])].multiply(x[:2], unique_indices=True)),
    "at_min_max": un(
        lambda x: x.at[jnp.array([1, 3])].min(x[:2]) + x.at[jnp.array([0, 2])].max(x[3:])
    ),
    "at_get_fill": un(lambda x: x.at[jnp.array([1, 9])].get(mode="fill", fill_value=0.0)),
    "dynamic_slice": un(lambda x: lax.dynamic_slice(x, (jnp.int32(1),), (3,))),
    "dynamic_update_slice": bi(
        lambda x, y: lax.dynamic_update_slice(x, y[:2] * 3, (jnp.int32(2),))
    ),
    "roll": un(lambda m: jnp.roll(m, 2, axis=1), M),
    "flip_rot90": un(lambda m: jnp.flip(m, 0) + jnp.rot90(m, 2), M),
    "transpose_swap_moveaxis": un(
        lambda t: (
            jnp.transpose(t, (2, 0, 1)).sum(0)
            + jnp.swapaxes(t, 0, 2).sum(0).T
            + jnp.moveaxis(t, 0, 1).sum(2).T * 2
        ),
        T3,
    ),
    "reshape_ravel": un(lambda t: t.reshape(6, 4).ravel()[::3], T3),
    "squeeze_expand": un(lambda m: jnp.squeeze(jnp.expand_dims(m, 1), 1), M),
    "broadcast_to": un(lambda x: jnp.broadcast_to(x, (3, 5))),
    "tile_repeat": un(lambda x: jnp.tile(x, 2) + jnp.repeat(x, 2)),
    "concatenate": bi(lambda x, y: jnp.concatenate([x, y, x[:2]])),
    "stack": bi(lambda x, y: jnp.stack([x, y], axis=1)),
    "hstack_vstack": bi(lambda x, y: jnp.vstack([x, y]).ravel() + jnp.hstack([x, y])),
    "split": un(lambda x: jnp.split(x, [2])[1]),
    "array_split": un(lambda x: jnp.array_split(x, 2)[0]),
    "unstack": un(lambda m: jnp.unstack(m)[1], M),
    "pad_constant": un(lambda x: jnp.pad(x, (2, 1))),
    "pad_edge": un(lambda x: jnp.pad(x, (2, 3), mode="edge")),
    "pad_reflect": un(lambda x: jnp.pad(x, (2, 3), mode="reflect")),
    "pad_wrap": un(lambda x: jnp.pad(x, (2, 3), mode="wrap")),
    "tril_triu": un(lambda a: jnp.tril(a) * 2 + jnp.triu(a, 1), A),
    "diag": un(lambda a: jnp.diag(a) + jnp.diag(jnp.diag(a)).sum(0), A),
    "diagonal_offset": un(lambda m: jnp.diagonal(m, 1), M),
    "diff": un(lambda x: jnp.diff(x, n=2)),
    "ediff1d": un(jnp.ediff1d),
    "sort": un(jnp.sort),
    "argsort_gather": un(lambda x: x[jnp.argsort(-x)]),
    "argmax_gather": un(lambda m: m[jnp.arange(3), jnp.argmax(m, axis=1)], M),
    "searchsorted_gather": un(lambda x: x[jnp.searchsorted(jnp.sort(x), 0.1)]),
    "interp": bi(lambda x, y: jnp.interp(jnp.array([0.2, 0.7]), jnp.sort(x), y)),
    "top_k": un(lambda x: lax.top_k(x, 3)[0]),
    "lexsort_gather": un(lambda m: m[:, jnp.lexsort((m[0], m[1]))], M),
    "select_n": un(lambda x: lax.select_n(jnp.array([0, 1, 0, 1, 1]) > 0, x, x**2)),
    "meshgrid": bi(lambda x, y: jnp.stack(jnp.meshgrid(x[:2], y[:3])).ravel()),
    "linspace_start": un(lambda x: jnp.linspace(x[0], x[1], 4)),
    "outer_via_newaxis": un(lambda x: x[:, None] * x[None, :]),
    # --- lax control flow and windows
    "fori_loop": un(lambda x: lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) + c * x, x)),
    "scan_cumulative": un(lambda x: lax.scan(lambda c, v: (c * v + 1.0, c), 1.0, x)[1]),
    "associative_scan": un(lambda x: lax.associative_scan(jnp.multiply, x)),
    "lax_map": un(lambda m: lax.map(jnp.sum, m**2), M),
    "cond": un(lambda x: lax.cond(x[0] > 0, jnp.sin, jnp.cos, x)),
    "switch": un(lambda x: lax.switch(2, [jnp.sin, jnp.cos, jnp.tanh], x)),
    "vmap_inside": un(lambda m: jax.vmap(lambda r: r @ r)(m), M),
    "remat": un(jax.checkpoint(lambda x: jnp.sin(jnp.sin(x)))),
    "custom_jvp_logsumexp": un(lambda m: jax.nn.logsumexp(m), M),
    "jit_inside": un(jax.jit(lambda x: x * jnp.tanh(x))),
    "conv1d_lax": (
        lambda x, w: s(lax.conv(x[None, None], w[None, None, :3], (1,), "SAME")),
        (V, P),
    ),
    "reduce_window_avg": un(
        lambda m: lax.reduce_window(m, 0.0, lax.add, (2, 2), (1, 1), "VALID") / 4, M
    ),
    "reduce_window_max": un(
        lambda m: lax.reduce_window(m, -jnp.inf, lax.max, (2, 2), (1, 2), "SAME"), M
    ),
    "stop_gradient": un(lambda x: x * lax.stop_gradient(x)),
    "checkpoint_name": un(lambda x: jnp.sin(jax.ad_checkpoint.checkpoint_name(x, "a"))),
    "reduce_precision": un(lambda x: lax.reduce_precision(x, 8, 23) * x),
    "convert_dtypes": un(
        lambda x: (
            x.astype(jnp.bfloat16).astype(jnp.float32) * 0
            + x.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        )
    ),
}


def test_at_least_120_functions():
    assert len(CASES) >= 120, len(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_equals_grad(name):
    f, args = CASES[name]
    argnums = tuple(range(len(args)))
    got = js.semiring_grad(f, js.Real(), argnums=argnums)(*args)
    want = jax.grad(f, argnums=argnums)(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6, err_msg=name)
