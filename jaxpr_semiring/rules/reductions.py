"""Reductions and cumulative reductions.

``reduce_sum`` and ``cumsum`` have weight-1 edges (their rules only ⊕-combine). A reduction feeds
each input element into exactly one output element, so one VJP with a
cotangent of ones gives every edge weight (JAX's convention at ties: reduce_max splits among
tied maxima). Cumulative ops (cummax, cumprod, …) connect x[i] to every out[j] at or after i;
their weights come from one JVP per position along the scanned axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import register


@register("reduce_max", "reduce_min", "reduce_prod")
def single_consumer_reduction(ctx, primals_in, primals_out, cts_out, *, axes, **params):
    (x,) = primals_in
    S = ctx.semiring
    _, pullback = jax.vjp(lambda a: ctx.primitive.bind(a, axes=axes, **params), x)
    (w,) = pullback(jnp.ones_like(primals_out[0]))
    kept = tuple(d for d in range(x.ndim) if d not in axes)
    ct = S.map(lambda a: lax.broadcast_in_dim(a, x.shape, kept), cts_out[0])
    return [S.scale(w, ct)]


@register("cummax", "cummin", "cumprod", "cumlogsumexp")
def cumulative(ctx, primals_in, primals_out, cts_out, *, axis, reverse, **params):
    (x,) = primals_in
    S = ctx.semiring
    n = x.shape[axis]
    prim = lambda a: ctx.primitive.bind(a, axis=axis, reverse=reverse, **params)
    # w[i, ..., j] = ∂out[j]/∂x[i] with the scanned axis moved last: n JVPs, one per position.
    one_hot = jnp.eye(n, dtype=x.dtype).reshape(
        (n,) + (1,) * axis + (n,) + (1,) * (x.ndim - axis - 1)
    )
    basis = jnp.broadcast_to(one_hot, (n,) + x.shape)
    w = jax.vmap(lambda t: jax.jvp(prim, (x,), (t,))[1])(basis)
    w = jnp.moveaxis(w, axis + 1, -1)
    i = jnp.arange(n)
    edge = (i[None, :] <= i[:, None]) if reverse else (i[None, :] >= i[:, None])  # [i, j]
    edge = edge.reshape((n,) + (1,) * (x.ndim - 1) + (n,))
    ct = S.map(lambda a: jnp.moveaxis(a, axis, -1)[None], cts_out[0])
    contrib = S.sum(S.where(edge, S.scale(w, ct)), axes=-1)  # [i, ...rest]
    return [S.map(lambda a: jnp.moveaxis(a, 0, axis), contrib)]


@register("reduce_sum")
def reduce_sum(ctx, primals_in, primals_out, cts_out, *, axes, **_):
    (x,) = primals_in
    kept = tuple(d for d in range(x.ndim) if d not in axes)
    return [ctx.semiring.map(lambda a: lax.broadcast_in_dim(a, x.shape, kept), cts_out[0])]


@register("cumsum")
def cumsum(ctx, primals_in, primals_out, cts_out, *, axis, reverse, **_):
    # ct_x[i] = ⊕_{j ≥ i} ct[j]: a cumulative ⊕ running the other way.
    return [lax.associative_scan(ctx.semiring.add, cts_out[0], reverse=not reverse, axis=axis)]
