"""Structure-only semirings: every edge lifts to 1̄ whatever its weight, so a backward pass in
them reads the graph's paths and ignores the numbers on them.

* :class:`LabelRange` — ⊕ = (min, max) of integer labels: seeded with each output element's
  label (its row, say), an input element ends up with the smallest and largest label it
  reaches (lo == hi: it reaches one label only; lo > hi: it reaches nothing).
* :class:`PathCount` — the number of paths in real space. Unlike ``Counting`` (log space) its
  backward pass is *linear* in the seeds, so ``jax.linear_transpose`` turns it into a forward
  pass: which outputs a set of inputs reaches (``count > 0``).

Atomic blocks (:mod:`jaxpr_semiring.atomic_blocks.collapse`) find their rows and their edges with
these.

>>> import jax.numpy as jnp
>>> S = LabelRange()
>>> v = S.add(S.seed(jnp.array([3, 1])), S.seed(jnp.array([2, 5])))
>>> S.sum(v, axes=0)
LabelRangeValue(lo=Array(1, dtype=int32), hi=Array(5, dtype=int32))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..numerics import broadcast_to
from .base import Semiring

__all__ = ["LabelRange", "LabelRangeValue", "PathCount"]

_HIGH = np.iinfo(np.int32).max
_LOW = np.iinfo(np.int32).min


def _free_contraction(v, w_shape, dimension_numbers, reduce):
    """⊕ over ``v``'s contracting axes, laid out like ``lax.dot_general(v, w)``: every
    (contracted element, weight) pair of a contraction is an edge, whatever the weight."""
    (vc, wc), (vb, wb) = dimension_numbers
    v_free = [d for d in range(v.ndim) if d not in vc and d not in vb]
    w_free = [d for d in range(len(w_shape)) if d not in wc and d not in wb]
    r = reduce(
        jnp.transpose(v, tuple(vb) + tuple(v_free) + tuple(vc)),
        tuple(range(len(vb) + len(v_free), v.ndim)),
    )
    r = r.reshape(r.shape + (1,) * len(w_free))
    return jnp.broadcast_to(r, r.shape[: r.ndim - len(w_free)] + tuple(w_shape[d] for d in w_free))


class LabelRangeValue(NamedTuple):
    """The smallest and largest label reached (``lo > hi``: none)."""

    lo: jax.Array
    hi: jax.Array


class LabelRange(Semiring):
    """(min, max) of int32 labels; edges ignore their weights. 0̄ = (int max, int min)."""

    name = "LabelRange"

    def dtype(self, dtype):
        return np.dtype(np.int32)

    def seed(self, labels) -> LabelRangeValue:
        labels = jnp.asarray(labels, jnp.int32)
        return LabelRangeValue(labels, labels)

    def zeros(self, shape, dtype):
        return LabelRangeValue(jnp.full(shape, _HIGH, jnp.int32), jnp.full(shape, _LOW, jnp.int32))

    def ones(self, shape, dtype):
        return self.seed(jnp.zeros(shape, jnp.int32))

    def add(self, a, b):
        return LabelRangeValue(jnp.minimum(a.lo, b.lo), jnp.maximum(a.hi, b.hi))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        return LabelRangeValue(
            jnp.min(v.lo, axis=axes, initial=_HIGH), jnp.max(v.hi, axis=axes, initial=_LOW)
        )

    def scale(self, w, v):
        shape = jnp.shape(w)
        return LabelRangeValue(broadcast_to(v.lo, shape), broadcast_to(v.hi, shape))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        lo = _free_contraction(
            v.lo, w.shape, dimension_numbers, lambda x, ax: jnp.min(x, axis=ax, initial=_HIGH)
        )
        hi = _free_contraction(
            v.hi, w.shape, dimension_numbers, lambda x, ax: jnp.max(x, axis=ax, initial=_LOW)
        )
        return LabelRangeValue(lo, hi)

    def scatter(self, v, index_map):
        return LabelRangeValue(index_map.min(v.lo), index_map.max(v.hi))


class PathCount(Semiring):
    """The number of paths (real space, float32; overflow to inf still reads as "reached").
    Every method is linear in the values, so the whole backward pass is."""

    name = "PathCount"

    def dtype(self, dtype):
        return np.dtype(np.float32)

    def zeros(self, shape, dtype):
        return jnp.zeros(shape, jnp.float32)

    def ones(self, shape, dtype):
        return jnp.ones(shape, jnp.float32)

    def add(self, a, b):
        return a + b

    def sum(self, v, axes=None):
        return jnp.sum(v, axis=self._axes(v, axes))

    def scale(self, w, v):
        return broadcast_to(v, jnp.shape(w))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return _free_contraction(v, w.shape, dimension_numbers, lambda x, ax: jnp.sum(x, axis=ax))

    def scatter(self, v, index_map):
        return index_map.add(v)
