"""Tropical contractions in plain XLA: the fallback that runs everywhere.

A contraction ``⊕_c lift(w[b, c, n]) ⊗ v[b, m, c]`` with a max-type ⊕ has no BLAS equivalent, so
it is a broadcast-multiply-reduce, chunked over the contraction so that the candidates held at
once stay near ``TROPICAL_CHUNK_ELEMENTS`` whatever C is. A 0̄ entry (−inf) meets no weight; a
NaN entry or a NaN weight on a live entry is a NaN candidate, which wins every ⊕ (the reductions
carry NaN explicitly: :func:`..numerics.max_nan`), and the arg-max variant points at the first
NaN candidate.

>>> import jax.numpy as jnp
>>> p = jnp.array([[[1.0, -2.0]]]); w = jnp.array([[[3.0], [4.0]]])
>>> [float(x[0, 0, 0]) for x in maxproduct(p, p, w)]
[3.0, -8.0]
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import numerics

__all__ = [
    "TROPICAL_CHUNK_ELEMENTS",
    "canonical",
    "layout",
    "chunked_contraction",
    "maxproduct",
    "maxproduct_arg",
    "maxabs",
]

# Budget (elements) of one chunk of candidate products in a tropical contraction.
TROPICAL_CHUNK_ELEMENTS = 1 << 22


def canonical(v, w, dimension_numbers):
    """Lay a ``dot_general`` out as v: [B, M, C], w: [B, C, N].

    Returns ``(canon_v, canon_w, out_shape)``: a function transposing/reshaping any array shaped
    like ``v`` to [B, M, C], ``w`` already in [B, C, N], and the ``lax.dot_general`` output
    shape to reshape the [B, M, N] result to.
    """
    (vc, wc), (vb, wb) = dimension_numbers
    vc, wc, vb, wb = map(tuple, (vc, wc, vb, wb))
    v_free = tuple(i for i in range(v.ndim) if i not in vc and i not in vb)
    w_free = tuple(i for i in range(w.ndim) if i not in wc and i not in wb)
    size = lambda x, axes: int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
    B, M, C, N = size(v, vb), size(v, v_free), size(v, vc), size(w, w_free)
    out_shape = (
        tuple(v.shape[i] for i in vb)
        + tuple(v.shape[i] for i in v_free)
        + tuple(w.shape[i] for i in w_free)
    )

    def canon_v(x):
        return jnp.transpose(x, vb + v_free + vc).reshape(B, M, C)

    canon_w = jnp.transpose(w, wb + wc + w_free).reshape(B, C, N)
    return canon_v, canon_w, out_shape


def layout(v, w, dimension_numbers):
    """Like :func:`canonical`, but the weights keep their stored layout where it is [B, N, C]
    (a dense layer's kernel read backwards): returns ``(canon_v, w3, nc, out_shape)`` with
    ``w3`` [B, C, N] (``nc`` False) or [B, N, C] (``nc`` True), transposed only when its axes
    are in neither order. Kernels take either, so no weight-sized transposed copy is made.
    """
    canon_v, cw, out_shape = canonical(v, w, dimension_numbers)
    (_, wc), (_, wb) = dimension_numbers
    wc, wb = tuple(wc), tuple(wb)
    w_free = tuple(i for i in range(w.ndim) if i not in wc and i not in wb)
    if wb + wc + w_free == tuple(range(w.ndim)) or wb + w_free + wc != tuple(range(w.ndim)):
        return canon_v, cw, False, out_shape
    return canon_v, w.reshape(cw.shape[0], cw.shape[2], cw.shape[1]), True, out_shape


def chunked_contraction(
    chunk_fn: Callable,
    combine: Callable,
    vs: Sequence,
    w,
    pad_values,
    chunk_elements: int | None = None,
    nc: bool = False,
):
    """⊕-contract canonical ``vs`` ([B, M, C] each) with ``w`` ([B, C, N], or [B, N, C] when
    ``nc``) in chunks over C.

    ``chunk_fn(vs_chunk, w_chunk)`` gets ``vs`` as [B, M, 1, c] and ``w`` as [B, 1, N, c] and
    returns a tuple of [B, M, N] partial results; ``combine(acc, part)`` merges two of them.
    C is padded with ``pad_values`` (0̄ of each v) and weight 0, which every chunk_fn must treat
    as no edge.
    """
    B, M, C = vs[0].shape
    wt = w if nc else jnp.swapaxes(w, 1, 2)  # [B, N, C]
    N = wt.shape[1]
    budget = chunk_elements or TROPICAL_CHUNK_ELEMENTS
    c = int(max(1, min(C, budget // max(1, B * M * N))))
    n_chunks = -(-C // c)
    pad = n_chunks * c - C
    if pad:
        vs = [
            jnp.pad(v, ((0, 0), (0, 0), (0, pad)), constant_values=p)
            for v, p in zip(vs, pad_values)
        ]
        wt = jnp.pad(wt, ((0, 0), (0, 0), (0, pad)))

    def piece(vs_k, w_k):
        return chunk_fn([v[:, :, None, :] for v in vs_k], w_k[:, None, :, :])

    if n_chunks == 1:
        return piece(vs, wt)
    vs_chunks = [jnp.moveaxis(v.reshape(B, M, n_chunks, c), 2, 0) for v in vs]
    w_chunks = jnp.moveaxis(wt.reshape(B, N, n_chunks, c), 2, 0)
    first = piece([v[0] for v in vs_chunks], w_chunks[0])

    def body(acc, xs):
        vs_k, w_k = xs
        return combine(acc, piece(vs_k, w_k)), None

    acc, _ = lax.scan(body, first, ([v[1:] for v in vs_chunks], w_chunks[1:]))
    return acc


def maxproduct(p, n, w, nc=False):
    """Signed max-times: (top_pos, top_neg) [B, M, C] with w [B, C, N] ([B, N, C] if ``nc``)
    → [B, M, N] each."""

    def chunk(vs, wk):
        hi, lo = numerics.signed_scale(wk, *vs)
        return numerics.max_nan(hi, (-1,)), numerics.min_nan(lo, (-1,))

    def combine(x, y):
        return jnp.maximum(x[0], y[0]), jnp.minimum(x[1], y[1])

    return chunked_contraction(chunk, combine, [p, n], w, (-jnp.inf, jnp.inf), nc=nc)


def maxabs(la, s, w, nc=False):
    """Lexicographic max of (log|g|, sign): la, s [B, M, C] with raw weights w [B, C, N]
    ([B, N, C] if ``nc``); outputs with no candidate are (−inf, +1)."""
    N = w.shape[1] if nc else w.shape[2]
    ax = 1 if nc else 2

    def chunk(vs, wk):
        # a 0̄ entry meets no weight (−inf + inf would be NaN); a NaN entry is live
        cand = numerics.scale_log(vs[0], wk[..., :N, :])
        sign = jnp.where(cand == -jnp.inf, 1.0, vs[1] * wk[..., N:, :])  # no sign(NaN) from 0̄
        return numerics.lexmax_reduce(cand, sign, (-1,))

    def combine(x, y):
        return numerics.lexmax(x[0], x[1], y[0], y[1])

    # log|w| and sign(w) travel as one array (2N columns) through the chunking.
    both = jnp.concatenate([numerics.log_abs(w), numerics.sign1(w)], axis=ax)
    la, s = chunked_contraction(
        chunk,
        combine,
        [la, s],
        both,
        (-jnp.inf, 1.0),
        chunk_elements=TROPICAL_CHUNK_ELEMENTS // 2,
        nc=nc,
    )
    return la, jnp.where(la == -jnp.inf, jnp.ones_like(s), s)


def maxproduct_arg(p, n, w, nc=False):
    """:func:`maxproduct` plus, per output, the first winning candidate as 2·c + chain (0: it
    came from top_pos, 1: from top_neg), −1 where there is none, and per chain the winning
    candidate's edge weight (0 where there is none)."""
    B, M, C = p.shape
    cidx = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32), (B, M, C))

    def chunk(vs, wk):
        # One variadic reduce per chunk (value, candidate code, edge weight for both chains):
        # XLA CPU compiles a kernel per reduction, and argmax + gathers cost several.
        pk, nk, ck = vs  # [B, M, 1, c]
        hi, lo = numerics.signed_scale(wk, pk, nk)  # [B, M, N, c]
        neg = (wk < 0).astype(jnp.int32)
        shape = hi.shape
        wb = jnp.broadcast_to(wk, shape)
        code_p = jnp.broadcast_to(2 * ck + neg, shape)
        code_n = jnp.broadcast_to(2 * ck + 1 - neg, shape)

        vp, ap, ep, vn, an, en = numerics.first_best_reduce(
            (hi, code_p, wb), (lo, code_n, wb), (hi.ndim - 1,)
        )
        livep, liven = vp != -jnp.inf, vn != jnp.inf  # a NaN candidate is live
        return (
            vp,
            vn,
            jnp.where(livep, ap, -1),
            jnp.where(liven, an, -1),
            jnp.where(livep, ep, 0),
            jnp.where(liven, en, 0),
        )

    def combine(x, y):
        # ties keep the earlier chunk (first index wins); the first NaN wins
        nx, ny = jnp.isnan(x[0]), jnp.isnan(y[0])
        bp = (y[0] > x[0]) | (ny & ~nx)
        bn = (y[1] < x[1]) | (jnp.isnan(y[1]) & ~jnp.isnan(x[1]))
        return (
            jnp.where(bp, y[0], x[0]),
            jnp.where(bn, y[1], x[1]),
            jnp.where(bp, y[2], x[2]),
            jnp.where(bn, y[3], x[3]),
            jnp.where(bp, y[4], x[4]),
            jnp.where(bn, y[5], x[5]),
        )

    return chunked_contraction(chunk, combine, [p, n, cidx], w, (-jnp.inf, jnp.inf, -1), nc=nc)
