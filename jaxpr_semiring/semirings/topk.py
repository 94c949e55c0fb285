"""``TopK(k)``: the k best paths per node (the k largest |path products|, log space, with signs).

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> g = js.semiring_grad(lambda x: 2.0 * x + 3.0 * x, js.TopK(2))(1.0)
>>> [round(float(v), 4) for v in jnp.exp(g.log_abs)]
[3.0, 2.0]
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import kernels
from ..numerics import log_abs, sign1
from .base import Semiring

__all__ = ["TopK", "TopKValue", "topk_select"]


class TopKValue(NamedTuple):
    """The k largest |path products| as log|g| and sign (±1), trailing axis k, best first.

    Slots with no path hold log|g| = −inf and sign +1. Among equal log|g|, +1 comes first.
    """
    log_abs: jax.Array
    sign: jax.Array


def topk_select(la, s, k):
    """The k best (log|g|, sign) along the last axis, best first (ties: positive first).

    k rounds of a lexicographic arg-max (no sort): exact, vectorized, O(k·n).
    """
    n = la.shape[-1]
    if n < k:
        pad = [(0, 0)] * (la.ndim - 1) + [(0, k - n)]
        la = jnp.pad(la, pad, constant_values=-jnp.inf)
        s = jnp.pad(s, pad, constant_values=1.0)
        n = k
    out_la, out_s = [], []
    pos = lax.broadcasted_iota(jnp.int32, la.shape, la.ndim - 1)
    for r in range(k):
        best = jnp.max(la, axis=-1, keepdims=True)
        at_best = la == best
        sbest = jnp.max(jnp.where(at_best, s, -2.0), axis=-1, keepdims=True)
        chosen = at_best & (s == sbest)
        first = jnp.min(jnp.where(chosen, pos, n), axis=-1, keepdims=True)
        dead = best == -jnp.inf
        out_la.append(best[..., 0])
        out_s.append(jnp.where(dead, 1.0, sbest)[..., 0].astype(s.dtype))
        if r + 1 < k:
            la = jnp.where(pos == first, -jnp.inf, la)
    return jnp.stack(out_la, axis=-1), jnp.stack(out_s, axis=-1)


class TopK(Semiring):
    """The k best paths: the k largest |path products| per node, log space, with signs.

    Value :class:`TopKValue` ``(log_abs, sign)``, each shaped like the primal plus a trailing
    axis of size ``k``, best first. ⊕ merges two top-k lists; lift(w) ⊗ v adds log|w| to every
    slot and multiplies the signs. 0̄ = all slots (−inf, +1); 1̄ = (0, +1) then (−inf, +1)….
    ``TopK(1)`` equals :class:`MaxAbs`. Data movement works on the primal-shaped axes
    (``map`` vmaps over the trailing k axis).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x           # paths e^x, x, x at x = 1
    >>> g = js.semiring_grad(f, js.TopK(3))(1.0)
    >>> [round(float(v), 4) for v in jnp.exp(g.log_abs)], g.sign.tolist()
    ([2.7183, 1.0, 1.0], [1.0, 1.0, 1.0])
    """

    name = "TopK"
    extra_axes = 1

    def __init__(self, k: int = 2):
        if int(k) < 1:
            raise ValueError(f"TopK needs k >= 1, got {k}")
        self.k = int(k)

    def __repr__(self):
        return f"TopK({self.k})"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        shape = tuple(shape) + (self.k,)
        return TopKValue(jnp.full(shape, -jnp.inf, dt), jnp.ones(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        first = jnp.arange(self.k) == 0
        la = jnp.broadcast_to(jnp.where(first, 0.0, -jnp.inf).astype(dt), tuple(shape) + (self.k,))
        return TopKValue(la, jnp.ones(tuple(shape) + (self.k,), dt))

    # primal-shaped functions act on every slot
    def map(self, fn, *values):
        def leafwise(*leaves):
            return jax.vmap(fn, in_axes=-1, out_axes=-1)(*leaves)
        return jax.tree.map(leafwise, *values)

    def add(self, a, b):
        la = jnp.concatenate(jnp.broadcast_arrays(a.log_abs, b.log_abs), axis=-1)
        s = jnp.concatenate(jnp.broadcast_arrays(a.sign, b.sign), axis=-1)
        return TopKValue(*topk_select(la, s, self.k))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        if not axes:
            return v
        nd = v.log_abs.ndim - 1
        kept = tuple(d for d in range(nd) if d not in axes)
        perm = kept + tuple(axes) + (nd,)
        shape = tuple(v.log_abs.shape[d] for d in kept) + (-1,)
        la = jnp.transpose(v.log_abs, perm).reshape(shape)
        s = jnp.transpose(v.sign, perm).reshape(shape)
        return TopKValue(*topk_select(la, s, self.k))

    def scale(self, w, v):
        w = jnp.asarray(w).astype(v.log_abs.dtype)[..., None]
        alive = v.log_abs > -jnp.inf  # 0̄ annihilates whatever w is (also w = ±inf)
        la = jnp.where(alive, v.log_abs + log_abs(w), -jnp.inf)
        s = jnp.where(la > -jnp.inf, v.sign * sign1(w), 1.0).astype(v.sign.dtype)
        return TopKValue(la, s)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        k = self.k
        w = w.astype(v.log_abs.dtype)
        canon_v, cw, out_shape = kernels.canonical(v.log_abs[..., 0], w, dimension_numbers)
        B, C, N = cw.shape

        def canon_k(x):  # [..primal.., k] -> [B, M, C·k], c-major
            y = jax.vmap(canon_v, in_axes=-1, out_axes=-1)(x)  # [B, M, C, k]
            return y.reshape(y.shape[0], y.shape[1], -1)

        lw = jnp.repeat(log_abs(cw), k, axis=1)   # [B, C·k, N]
        sw = jnp.repeat(sign1(cw), k, axis=1)

        def chunk(vs, wk):
            la, s = vs                      # [B, M, 1, c]
            lwk, swk = wk[..., :N, :], wk[..., N:, :]  # [B, 1, N, c]
            cand = jnp.where(la > -jnp.inf, la + lwk, -jnp.inf)
            return topk_select(cand, s * swk, k)

        def combine(x, y):
            return topk_select(jnp.concatenate([x[0], y[0]], -1), jnp.concatenate([x[1], y[1]], -1), k)

        la, s = kernels.chunked_contraction(chunk, combine, [canon_k(v.log_abs), canon_k(v.sign)],
                                    jnp.concatenate([lw, sw], axis=2), (-jnp.inf, 1.0),
                                    chunk_elements=kernels.xla.TROPICAL_CHUNK_ELEMENTS // 4)
        return TopKValue(la.reshape(out_shape + (k,)), s.reshape(out_shape + (k,)))

    def scatter(self, v, index_map):
        """⊕-scatter with duplicate targets: k rounds, each moving every target's best
        remaining candidate (over all updates mapping to it) into its next slot."""
        k = self.k
        la, s = v.log_abs, v.sign
        ushape = la.shape[:-1]
        dt = la.dtype
        ids = jnp.arange(int(np.prod(ushape, dtype=np.int64)), dtype=dt).reshape(ushape)
        ptr = jnp.zeros(ushape, jnp.int32)  # next unconsumed slot of each update (sorted lists)
        out_la, out_s = [], []
        for r in range(k):
            cur_la = jnp.where(ptr < k, jnp.take_along_axis(la, jnp.minimum(ptr, k - 1)[..., None], -1)[..., 0], -jnp.inf)
            cur_s = jnp.take_along_axis(s, jnp.minimum(ptr, k - 1)[..., None], -1)[..., 0]
            best = index_map.max(cur_la)
            at_best = (cur_la == index_map.back(best)) & (cur_la > -jnp.inf)
            sbest = index_map.max(jnp.where(at_best, cur_s, -2.0))
            chosen = at_best & (cur_s == index_map.back(sbest))
            first = index_map.min(jnp.where(chosen, ids, jnp.inf))
            advance = chosen & (ids == index_map.back(first))
            dead = best == -jnp.inf
            out_la.append(best)
            out_s.append(jnp.where(dead, 1.0, sbest).astype(dt))
            ptr = ptr + advance.astype(jnp.int32)
        return TopKValue(jnp.stack(out_la, -1), jnp.stack(out_s, -1))
