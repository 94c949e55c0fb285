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
from ..numerics import lexmax_reduce, log_abs, opaque, scale_log, sign1
from .base import Semiring

__all__ = ["TopK", "TopKValue", "topk_select"]


class TopKValue(NamedTuple):
    """The k largest |path products| as log|g| and sign (±1), trailing axis k, best first.

    Slots with no path hold log|g| = −inf and sign +1. Among equal log|g|, +1 comes first.
    """

    log_abs: jax.Array
    sign: jax.Array


def topk_select(la, s, k):
    """The k best (log|g|, sign) along the last axis, best first (ties: positive first); a NaN
    anywhere along the axis makes all k slots (NaN, NaN).

    One ``lax.top_k`` over the candidates split by sign, positives first (``top_k`` is stable:
    among equal log|g| the lower index, so the positive one, comes first): exact, and one
    operation whatever k is (k unrolled rounds made compile time grow with k).
    """
    n = la.shape[-1]
    if k == 1 and n:  # MaxAbs's ⊕ (cheaper to compile than a top_k)
        best, sign = lexmax_reduce(la, s, (-1,))
        sign = jnp.where(best == -jnp.inf, jnp.ones_like(sign), sign)
        return best[..., None], sign[..., None]
    if n < k:
        pad = [(0, 0)] * (la.ndim - 1) + [(0, k - n)]
        la = jnp.pad(la, pad, constant_values=-jnp.inf)
        s = jnp.pad(s, pad, constant_values=1.0)
        n = k
    nan = jnp.any(jnp.isnan(la) | jnp.isnan(s), axis=-1, keepdims=True)
    neg = s < 0
    split = jnp.concatenate([jnp.where(neg, -jnp.inf, la), jnp.where(neg, la, -jnp.inf)], -1)
    best, idx = lax.top_k(jnp.where(jnp.isnan(split), -jnp.inf, split), k)
    sign = jnp.where((idx < n) | (best == -jnp.inf), 1.0, -1.0).astype(s.dtype)
    return jnp.where(nan, jnp.nan, best), jnp.where(nan, jnp.nan, sign)


class TopK(Semiring):
    """The k best paths: the k largest |path products| per node, log space, with signs.

    Value :class:`TopKValue` ``(log_abs, sign)``, each shaped like the primal plus a trailing
    axis of size ``k``, best first. ⊕ merges two top-k lists; lift(w) ⊗ v adds log|w| to every
    slot and multiplies the signs. 0̄ = all slots (−inf, +1); 1̄ = (0, +1) then (−inf, +1)….
    ``TopK(1)`` equals :class:`MaxAbs`. A path of product NaN makes every slot (NaN, NaN).
    Data movement works on the primal-shaped axes (``map`` vmaps over the trailing k axis).
    Compile time does not grow with k (every merge is one ``lax.top_k``, the scatter a loop).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x           # paths e^x, x, x at x = 1
    >>> g = js.semiring_grad(f, js.TopK(3))(1.0)
    >>> [round(float(v), 4) for v in jnp.exp(g.log_abs)], g.sign.tolist()
    ([2.7183, 1.0, 1.0], [1.0, 1.0, 1.0])
    """

    name = "TopK"
    extra_axes = 1
    cli_name, cli_arg = "top-k", "K"
    default_field = flow_field = "log_abs[0]"
    combine = "max"
    zero_weight_is_edge = False

    def __init__(self, k: int = 2):
        if int(k) < 1:
            raise ValueError(f"TopK needs k >= 1, got {k}")
        self.k = int(k)

    def __repr__(self):
        return f"TopK({self.k})"

    @classmethod
    def from_cli(cls, arg):
        if arg is None:
            raise ValueError("semiring 'top-k' needs k: name it 'top-k:K', e.g. 'top-k:3'.")
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"top-k:K needs an integer K >= 1, got {arg!r}: e.g. 'top-k:3'.")
        return cls(int(arg))

    @property
    def label(self):
        return f"top-k:{self.k}"

    @property
    def fields(self):
        """``log_abs[i]``, ``sign[i]`` for the i-th best path (i from 0)."""
        return tuple(f"{f}[{i}]" for i in range(self.k) for f in ("log_abs", "sign"))

    @property
    def log_fields(self):
        return self.fields[::2]

    def field_values(self, value):
        return {
            f"{f}[{i}]": np.asarray(getattr(value, f))[..., i]
            for i in range(self.k)
            for f in ("log_abs", "sign")
        }

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        shape = tuple(shape) + (self.k,)
        return TopKValue(jnp.full(shape, -jnp.inf, dt), jnp.ones(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        first = jnp.arange(self.k) == 0
        la = jnp.broadcast_to(jnp.where(first, 0.0, -jnp.inf).astype(dt), tuple(shape) + (self.k,))
        return TopKValue(*opaque((la, jnp.ones(tuple(shape) + (self.k,), dt))))  # see opaque

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
        # 0̄ annihilates whatever w is (also w = ±inf, NaN); a NaN slot or weight gives NaN
        la = scale_log(v.log_abs, log_abs(w))
        s = jnp.where(la == -jnp.inf, 1.0, v.sign * sign1(w)).astype(v.sign.dtype)
        nan = jnp.any(jnp.isnan(la) | jnp.isnan(s), axis=-1, keepdims=True)
        return TopKValue(jnp.where(nan, jnp.nan, la), jnp.where(nan, jnp.nan, s))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        k = self.k
        w = w.astype(v.log_abs.dtype)
        canon_v, cw, out_shape = kernels.canonical(v.log_abs[..., 0], w, dimension_numbers)
        B, C, N = cw.shape

        def canon_k(x):  # [..primal.., k] -> [B, M, C·k], c-major
            y = jax.vmap(canon_v, in_axes=-1, out_axes=-1)(x)  # [B, M, C, k]
            return y.reshape(y.shape[0], y.shape[1], -1)

        lw = jnp.repeat(log_abs(cw), k, axis=1)  # [B, C·k, N]
        sw = jnp.repeat(sign1(cw), k, axis=1)

        def chunk(vs, wk):
            la, s = vs  # [B, M, 1, c]
            lwk, swk = wk[..., :N, :], wk[..., N:, :]  # [B, 1, N, c]
            cand = scale_log(la, lwk)  # 0̄ meets no weight (NaN, inf included)
            return topk_select(cand, jnp.where(cand == -jnp.inf, 1.0, s * swk), k)

        def combine(x, y):
            return topk_select(
                jnp.concatenate([x[0], y[0]], -1), jnp.concatenate([x[1], y[1]], -1), k
            )

        la, s = kernels.chunked_contraction(
            chunk,
            combine,
            [canon_k(v.log_abs), canon_k(v.sign)],
            jnp.concatenate([lw, sw], axis=2),
            (-jnp.inf, 1.0),
            chunk_elements=kernels.xla.TROPICAL_CHUNK_ELEMENTS // 4,
        )
        return TopKValue(la.reshape(out_shape + (k,)), s.reshape(out_shape + (k,)))

    def scatter(self, v, index_map):
        """⊕-scatter with duplicate targets: k rounds (a ``fori_loop``: compile time flat in
        k), each moving every target's best remaining candidate (over all updates mapping to
        it) into its next slot. A target that some NaN update maps to is NaN."""
        k = self.k
        la, s = v.log_abs, v.sign
        ushape = la.shape[:-1]
        dt = la.dtype
        ids = jnp.arange(int(np.prod(ushape, dtype=np.int64)), dtype=dt).reshape(ushape)
        nan_u = jnp.any(jnp.isnan(la) | jnp.isnan(s), axis=-1)
        nan_t = index_map.max(nan_u.astype(dt)) > 0
        la = jnp.where(nan_u[..., None], -jnp.inf, la)
        tshape = index_map.target_shape

        def round_(r, state):
            ptr, out_la, out_s = state  # ptr: next unconsumed slot of each update (sorted lists)
            at = jnp.minimum(ptr, k - 1)[..., None]
            cur_la = jnp.where(ptr < k, jnp.take_along_axis(la, at, -1)[..., 0], -jnp.inf)
            cur_s = jnp.take_along_axis(s, at, -1)[..., 0]
            best = index_map.max(cur_la)
            at_best = (cur_la == index_map.back(best)) & (cur_la > -jnp.inf)
            sbest = index_map.max(jnp.where(at_best, cur_s, -2.0))
            chosen = at_best & (cur_s == index_map.back(sbest))
            first = index_map.min(jnp.where(chosen, ids, jnp.inf))
            advance = chosen & (ids == index_map.back(first))
            sign = jnp.where(best == -jnp.inf, 1.0, sbest).astype(dt)
            out_la = lax.dynamic_update_index_in_dim(out_la, best, r, -1)
            out_s = lax.dynamic_update_index_in_dim(out_s, sign, r, -1)
            return ptr + advance.astype(jnp.int32), out_la, out_s

        init = (
            jnp.zeros(ushape, jnp.int32),
            jnp.full(tuple(tshape) + (k,), -jnp.inf, dt),
            jnp.ones(tuple(tshape) + (k,), dt),
        )
        if k <= 2:  # a loop costs more to compile than two rounds
            state = init
            for r in range(k):
                state = round_(r, state)
            _, out_la, out_s = state
        else:
            _, out_la, out_s = lax.fori_loop(0, k, round_, init)
        nan_t = nan_t[..., None]
        return TopKValue(jnp.where(nan_t, jnp.nan, out_la), jnp.where(nan_t, jnp.nan, out_s))
