"""Sorting and selection: ``sort`` (multi-operand, ``num_keys``; ``jnp.sort``, ``jnp.argsort``,
``lax.sort_key_val``), ``top_k`` and ``approx_top_k``.

The permutation is structure, not data: every output element is one input element moved, an edge
of weight 1. It is found as JAX's own sort JVP finds it — sorting an iota operand alongside the
keys (same ``num_keys``, same stability) — so ties resolve exactly as ``jax.grad`` resolves them.
Cotangents move back through the inverse permutation (a gather: each input element has exactly
one output position). ``top_k`` scatters its k selected cotangents back into their positions;
unselected elements get 0̄ (no edge).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _compat
from ..graph import is_float
from ..semirings import IndexMap
from . import register


@register("sort")
def sort(ctx, primals_in, primals_out, cts_out, **params):
    dimension, is_stable, num_keys = _compat.sort_params(params)
    S = ctx.semiring
    x0 = primals_in[0]
    iota = lax.broadcasted_iota(np.int32, x0.shape, dimension)
    # perm[.., i, ..] = input position of sorted element i
    perm = lax.sort(
        [*primals_in[:num_keys], iota], dimension=dimension, is_stable=is_stable, num_keys=num_keys
    )[-1]
    # inverse[.., j, ..] = sorted position of input element j
    inverse = lax.sort([perm, iota], dimension=dimension, is_stable=True, num_keys=1)[1]
    cts = []
    for x, ct, w in zip(primals_in, cts_out, ctx.wanted):
        if not w or ct is None or not is_float(x):
            cts.append(None)
            continue
        cts.append(S.map(lambda a: jnp.take_along_axis(a, inverse, axis=dimension), ct))
    return cts


def _along_axis_map(shape, idx, axis):
    """IndexMap of ``take_along_axis(x, idx, axis)`` read backwards (updates: idx-shaped)."""
    shape = tuple(shape)
    nd = len(shape)
    grids = jnp.meshgrid(*[jnp.arange(n, dtype=np.int32) for n in idx.shape], indexing="ij")
    coords = [idx.astype(np.int32) if d == axis else grids[d] for d in range(nd)]
    indices = jnp.stack(coords, axis=-1)
    sdn = lax.ScatterDimensionNumbers(
        update_window_dims=(),
        inserted_window_dims=tuple(range(nd)),
        scatter_dims_to_operand_dims=tuple(range(nd)),
    )
    gdn = lax.GatherDimensionNumbers(
        offset_dims=(), collapsed_slice_dims=tuple(range(nd)), start_index_map=tuple(range(nd))
    )

    def scatter_fn(op, target, updates):
        return op(
            target,
            indices,
            updates,
            sdn,
            unique_indices=True,
            mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,
        )

    def gather_fn(t):
        return lax.gather(
            t, indices, gdn, slice_sizes=(1,) * nd, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
        )

    return IndexMap(shape, scatter_fn, gather_fn)


def _select_back(ctx, x, ct, indices, axis):
    if ct is None or not ctx.wanted[0]:
        return [None] + [None] * (len(ctx.wanted) - 1)
    return [ctx.semiring.scatter(ct, _along_axis_map(x.shape, indices, axis))] + [None] * (
        len(ctx.wanted) - 1
    )


@register("top_k")
def top_k(ctx, primals_in, primals_out, cts_out, **params):
    x = primals_in[0]
    axis = _compat.top_k_axis(params, x.ndim)
    return _select_back(ctx, x, cts_out[0], primals_out[1], axis)


@register("approx_top_k")
def approx_top_k(ctx, primals_in, primals_out, cts_out, **params):
    x = primals_in[0]
    axis = params.get("reduction_dimension", -1) % x.ndim
    return _select_back(ctx, x, cts_out[0], primals_out[1], axis)
