"""Primitives of the jax.numpy surface found missing by the coverage sweep
(tests/test_coverage_sweep.py). Pure data movement (every edge has weight 1):

* ``stack`` (``jnp.stack`` in jax ≥ 0.10): operand i is slice i of the output along ``axis``;
* ``unstack`` (``jnp.unstack``): the transpose — outputs with no cotangent contribute 0̄.
"""
from __future__ import annotations

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
