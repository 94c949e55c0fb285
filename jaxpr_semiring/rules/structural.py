"""Data movement: every edge has weight 1 (lift(1) ⊗ v = v), so these rules only move semiring
values around. Fan-in (broadcast, repeated gather indices) is ⊕; positions that no input element
reaches (padding, overwritten elements, out-of-bounds gathers) get 0̄.

Each rule mirrors JAX's transpose rule for the same primitive with + replaced by ⊕ and 0 by 0̄.
The weighted scatters (``scatter-mul``/``-max``/``-min``) live here too: they are gathers read
backwards, with weights from forward mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..semirings import IndexMap
from . import register


def _zero_fill(S, x):
    """0̄ as one scalar per leaf, for padding/filling values shaped like primal ``x``."""
    return S.zeros((), x.dtype)


def _zeros_like(S, x):
    return S.zeros(x.shape, x.dtype)


@register("reshape", "squeeze", "expand_dims")
def reshape(ctx, primals_in, primals_out, cts_out, **params):
    x = primals_in[0]
    return [ctx.semiring.map(lambda a: a.reshape(x.shape), cts_out[0])] + [None] * (
        len(primals_in) - 1
    )


@register("transpose")
def transpose(ctx, primals_in, primals_out, cts_out, *, permutation, **_):
    inverse = tuple(int(i) for i in np.argsort(permutation))
    return [ctx.semiring.map(lambda a: jnp.transpose(a, inverse), cts_out[0])]


@register("rev")
def rev(ctx, primals_in, primals_out, cts_out, *, dimensions, **_):
    return [ctx.semiring.map(lambda a: lax.rev(a, dimensions), cts_out[0])]


@register("broadcast_in_dim")
def broadcast_in_dim(ctx, primals_in, primals_out, cts_out, *, shape, broadcast_dimensions, **_):
    x = primals_in[0]
    new_axes = [d for d in range(len(shape)) if d not in broadcast_dimensions]
    expanded = [d for i, d in enumerate(broadcast_dimensions) if x.shape[i] == 1 and shape[d] != 1]
    ct = cts_out[0]
    if new_axes or expanded:
        ct = ctx.semiring.sum(ct, axes=tuple(sorted(new_axes + expanded)))
    ct = ctx.semiring.map(lambda a: a.reshape(x.shape), ct)
    return [ct] + [None] * (len(primals_in) - 1)


@register("convert_element_type")
def convert_element_type(ctx, primals_in, primals_out, cts_out, **params):
    (x,) = primals_in
    if not (
        jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(primals_out[0].dtype, jnp.floating)
    ):
        return [None]  # integers and booleans are structure, not data
    S = ctx.semiring
    dt = S.dtype(x.dtype)
    return [
        S.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating) else a, cts_out[0])
    ]


@register("slice")
def slice_(ctx, primals_in, primals_out, cts_out, *, start_indices, limit_indices, strides, **_):
    (x,) = primals_in
    S, ct = ctx.semiring, cts_out[0]
    out_shape = primals_out[0].shape
    if strides is None or all(s == 1 for s in strides):
        config = [(lo, n - hi, 0) for lo, hi, n in zip(start_indices, limit_indices, x.shape)]
    else:
        real_limits = [
            lo + (0 if t == 0 else 1 + (t - 1) * s)
            for lo, t, s in zip(start_indices, out_shape, strides)
        ]
        config = [
            (lo, n - hi, s - 1)
            for lo, hi, n, s in zip(start_indices, real_limits, x.shape, strides)
        ]
    return [S.map(lambda a, z: lax.pad(a, z.astype(a.dtype), config), ct, _zero_fill(S, x))]


@register("pad")
def pad(ctx, primals_in, primals_out, cts_out, *, padding_config, **_):
    x, padding_value = primals_in
    S, ct = ctx.semiring, cts_out[0]
    cts = [None, None]
    if ctx.wanted[0]:
        lo, hi, interior = zip(*padding_config)
        unpad = [(-l, -h, 0) for l, h in zip(lo, hi)]

        def crop(a, z):
            a = lax.pad(a, z.astype(a.dtype), unpad)  # negative pads crop; positive ones were crops
            return lax.slice(a, [0] * a.ndim, a.shape, [i + 1 for i in interior])

        cts[0] = S.map(crop, ct, _zero_fill(S, x))
    if ctx.wanted[1]:
        padded = lax.pad(jnp.zeros(x.shape, bool), jnp.array(True), padding_config)
        cts[1] = S.sum(S.where(padded, ct), axes=tuple(range(x.ndim)))
    return cts


@register("concatenate")
def concatenate(ctx, primals_in, primals_out, cts_out, *, dimension, **_):
    S, ct = ctx.semiring, cts_out[0]
    cts, start = [], 0
    for x, wanted in zip(primals_in, ctx.wanted):
        stop = start + x.shape[dimension]
        if wanted:
            cts.append(
                S.map(lambda a, s=start, e=stop: lax.slice_in_dim(a, s, e, axis=dimension), ct)
            )
        else:
            cts.append(None)
        start = stop
    return cts


@register("split")
def split(ctx, primals_in, primals_out, cts_out, *, sizes, axis, **_):
    S = ctx.semiring
    pieces = [ct if ct is not None else _zeros_like(S, y) for ct, y in zip(cts_out, primals_out)]
    return [S.map(lambda *a: jnp.concatenate(a, axis=axis), *pieces)]


@register("stack")
def stack(ctx, primals_in, primals_out, cts_out, *, axis, **_):
    S, ct = ctx.semiring, cts_out[0]
    return [
        S.map(lambda a, i=i: lax.index_in_dim(a, i, axis=axis, keepdims=False), ct) if w else None
        for i, w in enumerate(ctx.wanted)
    ]


@register("unstack")
def unstack(ctx, primals_in, primals_out, cts_out, *, axis, **_):
    S = ctx.semiring
    pieces = [
        ct if ct is not None else S.zeros(y.shape, y.dtype) for ct, y in zip(cts_out, primals_out)
    ]
    return [S.map(lambda *a: jnp.stack(a, axis=axis), *pieces)]


@register("tile")
def tile(ctx, primals_in, primals_out, cts_out, *, reps, **_):
    """``out = tile(x, reps)``: every copy of ``x[i]`` is an edge of weight 1; ⊕ over copies."""
    (x,) = primals_in
    S = ctx.semiring
    reps = tuple(int(r) for r in reps)
    split = tuple(d for r, n in zip(reps, x.shape) for d in (r, n))
    ct = S.map(lambda a: a.reshape(split), cts_out[0])
    ct = S.sum(ct, axes=tuple(range(0, 2 * len(reps), 2)))
    return [S.map(lambda a: a.reshape(x.shape), ct)]


@register("select_n")
def select_n(ctx, primals_in, primals_out, cts_out, **_):
    pred, *cases = primals_in
    S, ct = ctx.semiring, cts_out[0]
    which = lax.convert_element_type(pred, np.int32)
    return [None] + [
        S.where(which == i, ct) if wanted else None for i, wanted in enumerate(ctx.wanted[1:])
    ]


@register("dynamic_slice")
def dynamic_slice(ctx, primals_in, primals_out, cts_out, **params):
    x, *idx = primals_in
    S = ctx.semiring
    ct = S.map(
        lambda a, z: lax.dynamic_update_slice(jnp.full(x.shape, z, a.dtype), a, idx),
        cts_out[0],
        _zero_fill(S, x),
    )
    return [ct] + [None] * len(idx)


@register("dynamic_update_slice")
def dynamic_update_slice(ctx, primals_in, primals_out, cts_out, **params):
    x, update, *idx = primals_in
    S, ct = ctx.semiring, cts_out[0]
    ct_x = (
        S.map(
            lambda a, z: lax.dynamic_update_slice(a, jnp.full(update.shape, z, a.dtype), idx),
            ct,
            _zero_fill(S, update),
        )
        if ctx.wanted[0]
        else None
    )
    ct_u = S.map(lambda a: lax.dynamic_slice(a, idx, update.shape), ct) if ctx.wanted[1] else None
    return [ct_x, ct_u] + [None] * len(idx)


# ------------------------------------------------------------------------ gathers and scatters


def _scatter_dnums(d: lax.GatherDimensionNumbers) -> lax.ScatterDimensionNumbers:
    return lax.ScatterDimensionNumbers(
        update_window_dims=d.offset_dims,
        inserted_window_dims=d.collapsed_slice_dims,
        scatter_dims_to_operand_dims=d.start_index_map,
        operand_batching_dims=d.operand_batching_dims,
        scatter_indices_batching_dims=d.start_indices_batching_dims,
    )


def _gather_dnums(d: lax.ScatterDimensionNumbers) -> lax.GatherDimensionNumbers:
    return lax.GatherDimensionNumbers(
        offset_dims=d.update_window_dims,
        collapsed_slice_dims=d.inserted_window_dims,
        start_index_map=d.scatter_dims_to_operand_dims,
        operand_batching_dims=d.operand_batching_dims,
        start_indices_batching_dims=d.scatter_indices_batching_dims,
    )


def _scatter_slice_sizes(dnums: lax.ScatterDimensionNumbers, operand_shape, updates_shape):
    sizes, pos = [], 0
    for i in range(len(operand_shape)):
        if i in dnums.inserted_window_dims or i in dnums.operand_batching_dims:
            sizes.append(1)
        else:
            sizes.append(updates_shape[dnums.update_window_dims[pos]])
            pos += 1
    return tuple(sizes)


class GatherMap:
    """The element map of a gather (updates = gathered elements, targets = operand elements)."""

    def __init__(self, operand_shape, indices, gdnums, slice_sizes, mode, sorted_, unique):
        self.operand_shape, self.indices = tuple(operand_shape), indices
        self.gdnums, self.slice_sizes, self.mode = gdnums, tuple(slice_sizes), mode
        self.sdnums = _scatter_dnums(gdnums)
        self.sorted, self.unique = sorted_, unique

    def scatter(self, op, target, updates):
        return op(
            target,
            self.indices,
            updates,
            self.sdnums,
            indices_are_sorted=self.sorted,
            unique_indices=self.unique,
            mode=self.mode,
        )

    def gather(self, t, fill=0):
        return lax.gather(
            t,
            self.indices,
            self.gdnums,
            self.slice_sizes,
            mode=self.mode,
            fill_value=fill,
            indices_are_sorted=self.sorted,
            unique_indices=self.unique,
        )

    def index_map(self) -> IndexMap:
        return IndexMap(self.operand_shape, self.scatter, self.gather)

    def gather_value(self, S, v, dtype):
        """Read a semiring value at the gathered positions; out-of-bounds reads are 0̄."""
        out = S.map(self.gather, v)
        if self.mode == lax.GatherScatterMode.FILL_OR_DROP:
            inside = self.gather(jnp.ones(self.operand_shape, bool), fill=False)
            out = S.where(inside, out)
        return out


@register("gather")
def gather(
    ctx,
    primals_in,
    primals_out,
    cts_out,
    *,
    dimension_numbers,
    slice_sizes,
    indices_are_sorted,
    unique_indices,
    mode,
    fill_value,
    **_,
):
    x, indices = primals_in
    m = GatherMap(
        x.shape, indices, dimension_numbers, slice_sizes, mode, indices_are_sorted, unique_indices
    )
    return [ctx.semiring.scatter(cts_out[0], m.index_map()), None]


def scatter_map(x, indices, updates, dimension_numbers, indices_are_sorted, unique_indices, mode):
    gd = _gather_dnums(dimension_numbers)
    sizes = _scatter_slice_sizes(dimension_numbers, x.shape, updates.shape)
    return GatherMap(x.shape, indices, gd, sizes, mode, indices_are_sorted, unique_indices)


@register("scatter-add", "scatter-sub")
def scatter_add(
    ctx,
    primals_in,
    primals_out,
    cts_out,
    *,
    dimension_numbers,
    indices_are_sorted,
    unique_indices,
    mode,
    **_,
):
    """``x.at[i].add(u)``; ``.subtract(u)`` is the same with weight −1 on the update edges."""
    x, indices, updates = primals_in
    S, ct = ctx.semiring, cts_out[0]
    m = scatter_map(
        x, indices, updates, dimension_numbers, indices_are_sorted, unique_indices, mode
    )
    ct_u = m.gather_value(S, ct, updates.dtype) if ctx.wanted[2] else None
    if ct_u is not None and ctx.primitive.name == "scatter-sub":
        ct_u = S.scale(jnp.asarray(-1, updates.dtype), ct_u)
    return [ct, None, ct_u]


@register("scatter")
def scatter(
    ctx,
    primals_in,
    primals_out,
    cts_out,
    *,
    dimension_numbers,
    indices_are_sorted,
    unique_indices,
    mode,
    **_,
):
    """Overwriting scatter: the last write of each element wins (found as JAX's JVP does, by
    scattering update ids); overwritten operand elements and losing updates get no edge."""
    x, indices, updates = primals_in
    S, ct = ctx.semiring, cts_out[0]
    m = scatter_map(
        x, indices, updates, dimension_numbers, indices_are_sorted, unique_indices, mode
    )
    ids = jnp.arange(1, updates.size + 1, dtype=np.int32).reshape(updates.shape)
    written = m.scatter(lax.scatter, jnp.zeros(x.shape, np.int32), ids)
    ct_x = S.where(written == 0, ct) if ctx.wanted[0] else None
    ct_u = None
    if ctx.wanted[2]:
        wins = m.gather(written, fill=-1) == ids
        ct_u = S.where(wins, m.gather_value(S, ct, updates.dtype))
    return [ct_x, None, ct_u]


@register("scatter-mul", "scatter-max", "scatter-min")
def scatter_combine(
    ctx,
    primals_in,
    primals_out,
    cts_out,
    *,
    dimension_numbers,
    indices_are_sorted,
    unique_indices,
    mode,
    **params,
):
    """Scatter with a combiner (``.at[].multiply/max/min``): operand element i → out[i], and
    update j → out[index j] (no edge for dropped out-of-bounds updates). Each of them feeds one
    output element only, so one VJP of Σ out gives every edge weight (JAX's convention at ties of
    max/min; ``multiply`` needs ``unique_indices=True``, as in JAX, whose JVP is used)."""
    x, indices, updates = primals_in
    S, ct = ctx.semiring, cts_out[0]
    prim = ctx.primitive
    bind = lambda a, u: prim.bind(
        a,
        indices,
        u,
        dimension_numbers=dimension_numbers,
        indices_are_sorted=indices_are_sorted,
        unique_indices=unique_indices,
        mode=mode,
        **params,
    )
    # weights: d out / d x (diagonal) and d out[idx_j] / d u_j, by forward mode: x's via one JVP,
    # each update's by a one-hot JVP read at its own target (memory: #updates²).
    _, wx = jax.jvp(lambda a: bind(a, updates), (x,), (jnp.ones_like(x),))
    m = scatter_map(
        x, indices, updates, dimension_numbers, indices_are_sorted, unique_indices, mode
    )
    cts = [None, None, None]
    if ctx.wanted[0]:
        cts[0] = S.scale(wx, ct)
    if ctx.wanted[2]:
        # u_j's weight: JVP with a one-hot tangent per update is exact; batched over updates
        n = updates.size
        basis = jnp.eye(n, dtype=updates.dtype).reshape((n,) + updates.shape)
        dout = jax.vmap(lambda t: jax.jvp(lambda u: bind(x, u), (updates,), (t,))[1])(basis)
        # read each update's own target: gather dout[j] at update j's position
        wu = jax.vmap(lambda d: m.gather(d))(dout)  # [n, *updates.shape]
        wu = jnp.sum(wu.reshape(n, n) * jnp.eye(n, dtype=wu.dtype), axis=1).reshape(updates.shape)
        cts[2] = S.scale(wu, m.gather_value(S, ct, updates.dtype))
    return cts
