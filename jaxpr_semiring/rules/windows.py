"""Windowed primitives: ``reduce_window_sum`` / ``_max`` / ``_min``, generic ``reduce_window``
(what ``flax.linen.avg_pool`` / ``max_pool`` and ``lax.reduce_window`` produce), and the window
bookkeeping shared with :mod:`.convolution`.

Window structure is static (it depends only on shapes and parameters), so it is computed with
numpy at trace time: for every windowed dimension a table ``T[s, k]`` gives the operand position
read by output position ``s`` at window offset ``k``, or ``-1`` when that offset falls on padding
or on a hole of the base (lhs) dilation — no operand element, so **no edge** there (the padding
value is a constant). With the tables, a windowed op becomes

* a *patch gather* ``P[..., s, k] = x[..., T[s, k]]`` (im2col; invalid slots read a fill value),
* local weights per (output, offset) pair, and
* the transpose of the gather: a ⊕-scatter of the patch cotangents back into the operand
  (``Semiring.scatter``), one windowed dimension at a time (semiring-linear maps compose, and
  for a fixed offset ``k`` the map ``s → T[s, k]`` is injective, so every path is counted once).

Weights of ``reduce_window_max``/``_min``/generic ``reduce_window`` come from JAX itself: the
primitive is re-applied to the patches laid out so that windows no longer overlap (window =
stride = the window size, no padding or dilation), where one VJP with a cotangent of ones gives
every (output, offset) edge weight separately, with JAX's own convention at ties (max_pool picks
one element of a tied window, as ``jax.grad`` does). Every element of a window has an edge (a
non-maximal one with weight 0), exactly like ``reduce_max``.

Memory is that of the patches (the window size times the output), bounded and linear.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..semirings import IndexMap
from . import register

# ------------------------------------------------------------------------------ window tables


def window_table(
    length: int,
    window: int,
    stride: int,
    pad: tuple[int, int],
    base_dilation: int = 1,
    window_dilation: int = 1,
) -> np.ndarray:
    """``T[s, k]``: operand position read by output ``s`` at window offset ``k`` (-1: none).

    Output size follows XLA: the base is dilated to ``(length-1)*base_dilation+1``, padded by
    ``pad`` (negative pads crop), and the dilated window slides with ``stride``.
    """
    lo, hi = int(pad[0]), int(pad[1])
    dilated = (length - 1) * base_dilation + 1 if length > 0 else 0
    span = (window - 1) * window_dilation + 1 if window > 0 else 0
    total = lo + dilated + hi
    n_out = max(0, (total - span) // stride + 1) if total >= span else 0
    s = np.arange(n_out)[:, None]
    k = np.arange(window)[None, :]
    u = s * stride + k * window_dilation - lo  # position in the dilated, unpadded base
    ok = (u >= 0) & (u < dilated) & (u % base_dilation == 0)
    return np.where(ok, u // base_dilation, -1).astype(np.int64).reshape(n_out, window)


def gather_windows(x, axes: Sequence[int], tables: Sequence[np.ndarray], fill=0):
    """Patches of ``x``: every axis ``axes[i]`` of length L becomes two axes (S_i, K_i) in place,
    ``P[.., s, k, ..] = x[.., T_i[s, k], ..]``; invalid slots read ``fill``."""
    x = jnp.asarray(x)
    pad = [(0, 0)] * x.ndim
    for a in axes:
        pad[a] = (0, 1)
    xp = jnp.pad(x, pad, constant_values=jnp.asarray(fill, x.dtype))
    shift = 0
    for a, T in sorted(zip(axes, tables), key=lambda t: t[0]):
        L = x.shape[a]
        idx = np.where(T < 0, L, T).astype(np.int32)
        xp = jnp.take(xp, jnp.asarray(idx), axis=a + shift, mode="clip")
        shift += 1
    return xp


def patch_axes(axes: Sequence[int]) -> list[tuple[int, int]]:
    """Positions of the (S, K) axis pairs in the patches of :func:`gather_windows`."""
    out, shift = [], 0
    for a in sorted(axes):
        out.append((a + shift, a + shift + 1))
        shift += 1
    return out


def valid_mask(tables: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean [S_0, K_0, S_1, K_1, ...]: which (output, offset) pairs read an operand element."""
    m = np.ones((), bool)
    for T in tables:
        m = m[..., None, None] & (T >= 0)
    return m


def _axis_index_map(target_shape, ax, idx):
    """IndexMap for 'updates [.., S*K, ..] at axis ``ax`` → target position ``idx[j]`` on ``ax``'
    (updates have the target's shape except on ``ax``), moved to axis 0 for lax.scatter."""
    target_shape = tuple(target_shape)
    rest = target_shape[:ax] + target_shape[ax + 1 :]
    n_rest = len(rest)
    indices = jnp.asarray(idx.reshape(-1, 1).astype(np.int32))
    sdn = lax.ScatterDimensionNumbers(
        update_window_dims=tuple(range(1, 1 + n_rest)),
        inserted_window_dims=(0,),
        scatter_dims_to_operand_dims=(0,),
    )
    gdn = lax.GatherDimensionNumbers(
        offset_dims=tuple(range(1, 1 + n_rest)), collapsed_slice_dims=(0,), start_index_map=(0,)
    )
    front_shape = (target_shape[ax],) + rest

    def scatter_fn(op, target, updates):
        return op(target, indices, updates, sdn, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    def gather_fn(t):
        return lax.gather(
            t, indices, gdn, slice_sizes=(1,) + rest, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
        )

    return IndexMap(front_shape, scatter_fn, gather_fn)


def scatter_windows(S, v, shape: Sequence[int], axes: Sequence[int], tables: Sequence[np.ndarray]):
    """Transpose of :func:`gather_windows` in semiring ``S``: the ⊕ of every patch element's
    value into the operand element it read; padding/hole slots are dropped. ``shape`` is the
    operand's shape; ``v`` is shaped like the patches."""
    shape = tuple(shape)
    pairs = patch_axes(axes)
    # Undo the pairs from the last one, so earlier axis positions stay valid.
    order = sorted(zip(axes, tables, pairs), key=lambda t: t[0])
    for a, T, (sa, ka) in reversed(order):
        L = shape[a]
        idx = np.where(T < 0, L, T)  # invalid → the extra slot L, cropped below

        def to_front(arr, sa=sa):
            arr = jnp.moveaxis(arr, (sa, sa + 1), (0, 1))
            return arr.reshape((-1,) + arr.shape[2:])

        vf = S.map(to_front, v)
        rest = _primal_shape(S, vf)[1:]
        m = _axis_index_map((L + 1,) + rest, 0, idx)
        out = S.scatter(vf, m)
        v = S.map(
            lambda arr, sa=sa, L=L: jnp.moveaxis(lax.slice_in_dim(arr, 0, L, axis=0), 0, sa), out
        )
    return v


def _primal_shape(S, v):
    """Shape of the primal a semiring value belongs to (TopK values carry a trailing k axis)."""
    shapes = []
    S.map(lambda a: shapes.append(a.shape) or a, v)
    return tuple(shapes[0])


# --------------------------------------------------------------------------- reduce_window


def _window_tables(
    shape, window_dimensions, window_strides, padding, base_dilation, window_dilation
):
    return [
        window_table(n, w, s, p, b, d)
        for n, w, s, p, b, d in zip(
            shape, window_dimensions, window_strides, padding, base_dilation, window_dilation
        )
    ]


def _patch_layout(x_shape, tables):
    """Patches [S_0, K_0, S_1, K_1, ...] → the non-overlapping layout [S_0*K_0, S_1*K_1, ...]."""
    return tuple(T.shape[0] * T.shape[1] for T in tables), tuple(T.shape[1] for T in tables)


def _window_weights(prim, x, tables, params, fill):
    """∂out[s]/∂x[T[s, k]] for every (s, k), shaped like the patches [S_0, K_0, S_1, K_1, ...],
    by one VJP of ``prim`` on the patches laid out with non-overlapping windows."""
    axes = tuple(range(x.ndim))
    P = gather_windows(x, axes, tables, fill=fill)
    flat_shape, window = _patch_layout(x.shape, tables)
    n = x.ndim
    new_params = dict(params)
    new_params.update(
        window_dimensions=window,
        window_strides=window,
        padding=tuple((0, 0) for _ in range(n)),
        base_dilation=(1,) * n,
        window_dilation=(1,) * n,
    )

    def f(p):
        out = prim.bind(p.reshape(flat_shape), **new_params)
        return out

    out, pullback = jax.vjp(f, P)
    (w,) = pullback(jnp.ones_like(out))
    return w


def _window_backward(S, x, ct, tables, weights=None):
    """Scale the output cotangent by per-(s, k) weights, drop invalid slots, ⊕-scatter back."""
    n = x.ndim
    # ct [S_0, S_1, ...] → [S_0, 1, S_1, 1, ...], broadcast over offsets
    expand = tuple(2 * i + 1 for i in range(n))
    shape = tuple(d for T in tables for d in T.shape)
    vp = S.map(lambda a: jnp.broadcast_to(jnp.expand_dims(a, expand), shape), ct)
    if weights is not None:
        vp = S.scale(weights, vp)
    mask = valid_mask(tables)
    if not mask.all():
        vp = S.where(jnp.asarray(mask), vp)
    return scatter_windows(S, vp, x.shape, tuple(range(n)), tables)


def _tables_from(x, params):
    return _window_tables(
        x.shape,
        params["window_dimensions"],
        params["window_strides"],
        params["padding"],
        params["base_dilation"],
        params["window_dilation"],
    )


@register("reduce_window_sum")
def reduce_window_sum(ctx, primals_in, primals_out, cts_out, **params):
    (x,) = primals_in
    return [_window_backward(ctx.semiring, x, cts_out[0], _tables_from(x, params))]


@register("reduce_window_max", "reduce_window_min")
def reduce_window_chooser(ctx, primals_in, primals_out, cts_out, **params):
    (x,) = primals_in
    tables = _tables_from(x, params)
    fill = -jnp.inf if ctx.primitive.name == "reduce_window_max" else jnp.inf
    w = _window_weights(ctx.primitive, x, tables, params, fill)
    return [_window_backward(ctx.semiring, x, cts_out[0], tables, w)]


@register("reduce_window")
def reduce_window_generic(ctx, primals_in, primals_out, cts_out, **params):
    """Generic ``lax.reduce_window`` (a jaxpr reducer, e.g. a windowed product): operands, then
    init values (constants: the fill of padding, no edges). JAX has only a JVP for it (``jax.grad``
    fails), so the per-(output, offset) weights come from one JVP per window offset on the
    non-overlapping layout (tangent: a one-hot offset in every window at once)."""
    n_ops = len(primals_in) // 2
    operands, inits = list(primals_in[:n_ops]), list(primals_in[n_ops:])
    S = ctx.semiring
    x0 = operands[0]
    n = x0.ndim
    tables = _tables_from(x0, params)
    axes = tuple(range(n))
    patches = [gather_windows(x, axes, tables, fill=i) for x, i in zip(operands, inits)]
    pshape = patches[0].shape
    flat_shape, window = _patch_layout(x0.shape, tables)
    new_params = dict(params)
    new_params.update(
        window_dimensions=window,
        window_strides=window,
        padding=tuple((0, 0) for _ in range(n)),
        base_dilation=(1,) * n,
        window_dilation=(1,) * n,
    )
    K = int(np.prod(window, dtype=np.int64))
    # basis[kk, s0, k0, s1, k1, ...] = 1 where (k0, k1, ...) is offset number kk
    offsets = np.stack(np.unravel_index(np.arange(K), window), axis=-1)  # [K, n]
    basis = np.ones((K,) + pshape, bool)
    for d in range(n):
        kd = np.arange(window[d]).reshape(
            [1] * (1 + 2 * d + 1) + [window[d]] + [1] * (2 * (n - d - 1))
        )
        basis &= kd == offsets[:, d].reshape((K,) + (1,) * (2 * n))
    cts_in = [None] * len(primals_in)
    for i, x in enumerate(operands):
        if not (ctx.wanted[i] and jnp.issubdtype(x.dtype, jnp.floating)):
            continue

        def along_i(p, i=i):
            ps = [p if k == i else q for k, q in enumerate(patches)]
            return ctx.primitive.bind(*[q.reshape(flat_shape) for q in ps], *inits, **new_params)

        def jvp_one(t, i=i):
            return jax.jvp(along_i, (patches[i],), (t.astype(patches[i].dtype),))[1]

        tangents = jax.vmap(jvp_one)(jnp.asarray(basis))  # list over outputs of [K, S0, S1, ...]
        acc = None
        for j, (ct, y) in enumerate(zip(cts_out, primals_out)):
            if ct is None or not jnp.issubdtype(y.dtype, jnp.floating):
                continue
            t = tangents[j].reshape(tuple(window) + tangents[j].shape[1:])
            # [K0, K1, ..., S0, S1, ...] → [S0, K0, S1, K1, ...]
            perm = [a for d in range(n) for a in (n + d, d)]
            w = jnp.transpose(t, perm)
            contrib = _window_backward(S, x0, ct, tables, w)
            acc = contrib if acc is None else S.add(acc, contrib)
        cts_in[i] = acc
    return cts_in
