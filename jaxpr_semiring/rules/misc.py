"""Primitives of the jax.numpy surface found missing by the coverage sweep
(tests/test_coverage_sweep.py):

* ``stack`` (``jnp.stack`` in jax ≥ 0.10): operand i is slice i of the output along ``axis``;
* ``unstack`` (``jnp.unstack``): the transpose — outputs with no cotangent contribute 0̄;
* ``tile`` (``jnp.tile``): ⊕ over the copies;
* ``scatter-mul`` / ``scatter-max`` / ``scatter-min`` (``.at[].multiply/max/min``): weighted
  scatters, weights by forward mode.
"""
from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp

from . import register


@register("stack")
def stack(ctx, primals_in, primals_out, cts_out, *, axis, **_):
    S, ct = ctx.semiring, cts_out[0]
    return [S.map(lambda a, i=i: lax.index_in_dim(a, i, axis=axis, keepdims=False), ct) if w else None
            for i, w in enumerate(ctx.wanted)]


@register("unstack")
def unstack(ctx, primals_in, primals_out, cts_out, *, axis, **_):
    S = ctx.semiring
    pieces = [ct if ct is not None else S.zeros(y.shape, y.dtype) for ct, y in zip(cts_out, primals_out)]
    return [S.map(lambda *a: jnp.stack(a, axis=axis), *pieces)]


@register("tile")
def tile(ctx, primals_in, primals_out, cts_out, *, reps, **_):
    """``out = tile(x, reps)``: every copy of ``x[i]`` is an edge of weight 1; ⊕ over copies."""
    x, = primals_in
    S = ctx.semiring
    reps = tuple(int(r) for r in reps)
    split = tuple(d for r, n in zip(reps, x.shape) for d in (r, n))
    ct = S.map(lambda a: a.reshape(split), cts_out[0])
    ct = S.sum(ct, axes=tuple(range(0, 2 * len(reps), 2)))
    return [S.map(lambda a: a.reshape(x.shape), ct)]


@register("scatter-mul", "scatter_mul", "scatter-max", "scatter_max", "scatter-min", "scatter_min")
def scatter_combine(ctx, primals_in, primals_out, cts_out, *, dimension_numbers,
                    indices_are_sorted, unique_indices, mode, **params):
    """Scatter with a combiner (``.at[].multiply/max/min``): operand element i → out[i], and
    update j → out[index j] (no edge for dropped out-of-bounds updates). Each of them feeds one
    output element only, so one VJP of Σ out gives every edge weight (JAX's convention at ties of
    max/min; ``multiply`` needs ``unique_indices=True``, as in JAX, whose JVP is used)."""
    from .structural import _scatter_map
    x, indices, updates = primals_in
    S, ct = ctx.semiring, cts_out[0]
    prim = ctx.primitive
    bind = lambda a, u: prim.bind(a, indices, u, dimension_numbers=dimension_numbers,
                                  indices_are_sorted=indices_are_sorted,
                                  unique_indices=unique_indices, mode=mode, **params)
    # weights: d out / d x (diagonal) and d out[idx_j] / d u_j, by forward mode: x's via one JVP,
    # each update's by a one-hot JVP read at its own target (memory: #updates²).
    _, wx = jax.jvp(lambda a: bind(a, updates), (x,), (jnp.ones_like(x),))
    m = _scatter_map(x, indices, updates, dimension_numbers, indices_are_sorted, unique_indices, mode)
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
