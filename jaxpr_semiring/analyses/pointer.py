"""``PointerMaxProduct``: max-product whose values also say where the best path goes next.

Each chain (top_pos, top_neg) carries, besides its value, a *pointer* to the next node of its
winning path and the *weight* of the edge to it. ⊕ keeps the pointer and weight of the winning
candidate; lift(w) ⊗ v keeps v's pointer and multiplies the weight by w, taking the pointer of
the chain that App. A's sign rule selects (a negative edge swaps top_pos and top_neg). Given
an equation's outputs' values pointing at their own elements, its rule in this semiring gives
each operand element a pointer to the next element of its best path through that equation:
:func:`jaxpr_semiring.top_path` crosses that way the equations without a sparse Jacobian row
(and a ``scan``/``cond``, whose edge weight is the best path inside).

A pointer is an int32 ``2·id + chain`` (``id`` a global element number, ``chain`` 0 for top_pos
and 1 for top_neg), −1 for none (no path, or the output itself). Among equal candidates the
smaller pointer wins, so ties do not depend on the order of accumulation. A NaN candidate (a
path of product NaN) beats every number, so a NaN value points along a path of product NaN:
following it reaches the edge that made it NaN (:func:`jaxpr_semiring.top_path`).

>>> import jax.numpy as jnp
>>> S = PointerMaxProduct()
>>> v = S.ones((2,), jnp.float32)._replace(pos_ptr=jnp.array([0, 2]), neg_ptr=jnp.array([1, 3]))
>>> best = S.sum(S.scale(jnp.array([2.0, -3.0]), v), axes=0)
>>> float(best.top_pos), int(best.pos_ptr), float(best.pos_w)
(2.0, 0, 2.0)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import kernels
from ..kernels import dispatch
from ..numerics import first_best_reduce, nan_first_better, signed_scale
from ..semirings.tropical import MaxProductValue, Tropical

__all__ = ["PointerMaxProduct", "PointerValue"]

_NO = -1  # no pointer
_BIG = jnp.iinfo(jnp.int32).max  # loses every pointer comparison


class PointerValue(NamedTuple):
    """(top_pos, top_neg) with, per chain, the pointer to the next node of its best path and
    the weight of the edge to it."""

    top_pos: jax.Array
    top_neg: jax.Array
    pos_ptr: jax.Array
    neg_ptr: jax.Array
    pos_w: jax.Array
    neg_w: jax.Array

    @property
    def values(self) -> MaxProductValue:
        return MaxProductValue(self.top_pos, self.top_neg)


def _better(val_a, ptr_a, val_b, ptr_b, larger: bool):
    """Whether candidate b beats a: NaN first, then strictly better value, or equal value (both
    NaN included) and smaller pointer."""
    return nan_first_better(val_a, ptr_a, val_b, ptr_b, larger)


class PointerMaxProduct(Tropical):
    """Max-product with signs whose ⊕ and ⊗ carry an arg-max pointer and edge weight (the
    semiring behind :func:`jaxpr_semiring.top_path`). ``kernel`` as for ``MaxProduct``."""

    name = "PointerMaxProduct"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        no = jnp.full(shape, _NO, jnp.int32)
        return PointerValue(
            jnp.full(shape, -jnp.inf, dt),
            jnp.full(shape, jnp.inf, dt),
            no,
            no,
            jnp.zeros(shape, dt),
            jnp.zeros(shape, dt),
        )

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        no = jnp.full(shape, _NO, jnp.int32)
        one = jnp.ones(shape, dt)
        return PointerValue(one, one, no, no, one, one)

    def add(self, a, b):
        bp = _better(a.top_pos, a.pos_ptr, b.top_pos, b.pos_ptr, True)
        bn = _better(a.top_neg, a.neg_ptr, b.top_neg, b.neg_ptr, False)
        pick = lambda m, x, y: jnp.where(m, y, x)
        return PointerValue(
            pick(bp, a.top_pos, b.top_pos),
            pick(bn, a.top_neg, b.top_neg),
            pick(bp, a.pos_ptr, b.pos_ptr),
            pick(bn, a.neg_ptr, b.neg_ptr),
            pick(bp, a.pos_w, b.pos_w),
            pick(bn, a.neg_w, b.neg_w),
        )

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        if not axes:
            return v
        if any(v.top_pos.shape[d] == 0 for d in axes):
            shape = tuple(n for d, n in enumerate(v.top_pos.shape) if d not in axes)
            return self.zeros(shape, v.top_pos.dtype)

        # Max (value, −pointer) per chain, the same order as ⊕, in one variadic reduce.
        p, pp, pw, n, np_, nw = first_best_reduce(
            (v.top_pos, v.pos_ptr, v.pos_w), (v.top_neg, v.neg_ptr, v.neg_w), axes
        )
        return PointerValue(p, n, pp, np_, pw, nw)

    def scale(self, w, v):
        w = jnp.asarray(w).astype(v.top_pos.dtype)
        hi, lo = signed_scale(w, v.top_pos, v.top_neg)
        alive = v.top_pos != -jnp.inf  # a NaN value is a path
        pos = w >= 0  # App. A: a negative edge continues on the other chain
        return PointerValue(
            hi,
            lo,
            jnp.where(alive, jnp.where(pos, v.pos_ptr, v.neg_ptr), _NO),
            jnp.where(alive, jnp.where(pos, v.neg_ptr, v.pos_ptr), _NO),
            w * jnp.where(pos, v.pos_w, v.neg_w),
            w * jnp.where(pos, v.neg_w, v.pos_w),
        )

    def dot_general(self, v, w, dimension_numbers, precision=None):
        canon_v, w3, nc, out_shape = kernels.layout(
            v.top_pos, w.astype(v.top_pos.dtype), dimension_numbers
        )
        p, n, ap, an, wp, wn = dispatch.maxproduct_arg(
            canon_v(v.top_pos), canon_v(v.top_neg), w3, nc, self.kernel
        )

        def follow(arg, edge):
            """(pointer, weight) of the winning candidates: arg = 2·c + chain taken at c."""
            c = jnp.maximum(arg // 2, 0)
            from_neg = arg % 2 == 1
            at = lambda x: jnp.take_along_axis(canon_v(x), c, axis=2)
            ptr = jnp.where(from_neg, at(v.neg_ptr), at(v.pos_ptr))
            weight = edge * jnp.where(from_neg, at(v.neg_w), at(v.pos_w))
            return jnp.where(arg >= 0, ptr, _NO), weight

        pp, pw = follow(ap, wp)
        np_, nw = follow(an, wn)
        return PointerValue(*(x.reshape(out_shape) for x in (p, n, pp, np_, pw, nw)))

    def scatter(self, v, index_map):
        def chain(val, ptr, wt, best):
            at = index_map.back(best)
            win = (val == at) | (jnp.isnan(val) & jnp.isnan(at))
            p = index_map.min(jnp.where(win, ptr, _BIG))
            sel = win & (ptr == index_map.back(p))
            wt_sel = index_map.max(jnp.where(sel, wt, -jnp.inf))
            alive = p != _BIG
            return jnp.where(alive, p, _NO), jnp.where(alive, wt_sel, 0)

        p = index_map.max(v.top_pos)
        n = index_map.min(v.top_neg)
        pp, pw = chain(v.top_pos, v.pos_ptr, v.pos_w, p)
        np_, nw = chain(v.top_neg, v.neg_ptr, v.neg_w, n)
        return PointerValue(p, n, pp, np_, pw, nw)
