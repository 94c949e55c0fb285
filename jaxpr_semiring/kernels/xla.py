"""Tropical contractions in plain XLA: the fallback that runs everywhere.

A contraction ``⊕_c lift(w[b, c, n]) ⊗ v[b, m, c]`` with a max-type ⊕ has no BLAS equivalent, so
it is a broadcast-multiply-reduce, chunked over the contraction so that the candidates held at
once stay near ``TROPICAL_CHUNK_ELEMENTS`` whatever C is.

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

__all__ = ["TROPICAL_CHUNK_ELEMENTS", "canonical", "chunked_contraction", "maxproduct",
           "maxproduct_arg", "maxabs"]

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
    out_shape = tuple(v.shape[i] for i in vb) + tuple(v.shape[i] for i in v_free) + tuple(
        w.shape[i] for i in w_free)

    def canon_v(x):
        return jnp.transpose(x, vb + v_free + vc).reshape(B, M, C)

    canon_w = jnp.transpose(w, wb + wc + w_free).reshape(B, C, N)
    return canon_v, canon_w, out_shape


def chunked_contraction(chunk_fn: Callable, combine: Callable, vs: Sequence, w, pad_values,
                        chunk_elements: int | None = None):
    """⊕-contract canonical ``vs`` ([B, M, C] each) with ``w`` ([B, C, N]) in chunks over C.

    ``chunk_fn(vs_chunk, w_chunk)`` gets ``vs`` as [B, M, 1, c] and ``w`` as [B, 1, N, c] and
    returns a tuple of [B, M, N] partial results; ``combine(acc, part)`` merges two of them.
    C is padded with ``pad_values`` (0̄ of each v) and weight 0, which every chunk_fn must treat
    as no edge.
    """
    B, M, C = vs[0].shape
    N = w.shape[2]
    budget = chunk_elements or TROPICAL_CHUNK_ELEMENTS
    c = int(max(1, min(C, budget // max(1, B * M * N))))
    n_chunks = -(-C // c)
    pad = n_chunks * c - C
    if pad:
        vs = [jnp.pad(v, ((0, 0), (0, 0), (0, pad)), constant_values=p) for v, p in zip(vs, pad_values)]
        w = jnp.pad(w, ((0, 0), (0, pad), (0, 0)))
    wt = jnp.swapaxes(w, 1, 2)  # [B, N, C]

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


def maxproduct(p, n, w):
    """Signed max-times: (top_pos, top_neg) [B, M, C] with w [B, C, N] → [B, M, N] each."""
    def chunk(vs, wk):
        hi, lo = numerics.signed_scale(wk, *vs)
        return jnp.max(hi, axis=-1), jnp.min(lo, axis=-1)

    def combine(x, y):
        return jnp.maximum(x[0], y[0]), jnp.minimum(x[1], y[1])

    return chunked_contraction(chunk, combine, [p, n], w, (-jnp.inf, jnp.inf))


def maxabs(la, s, lw, sw):
    """Lexicographic max of (log|g|, sign): la, s [B, M, C] with lw, sw [B, C, N]; outputs with
    no candidate are (−inf, +1)."""
    N = lw.shape[2]

    def chunk(vs, wk):
        return numerics.lexmax_reduce(vs[0] + wk[..., :N, :], vs[1] * wk[..., N:, :], (-1,))

    def combine(x, y):
        return numerics.lexmax(x[0], x[1], y[0], y[1])

    # log|w| and sign(w) travel as one [B, C, 2N] array through the chunking.
    la, s = chunked_contraction(chunk, combine, [la, s], jnp.concatenate([lw, sw], axis=2),
                                (-jnp.inf, 1.0), chunk_elements=TROPICAL_CHUNK_ELEMENTS // 2)
    return la, jnp.where(la == -jnp.inf, jnp.ones_like(s), s)


def maxproduct_arg(p, n, w):
    """:func:`maxproduct` plus, per output, the first winning candidate as 2·c + chain (0: it
    came from top_pos, 1: from top_neg), −1 where there is none."""
    B, M, C = p.shape
    cidx = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32), (B, M, C))
    take = lambda x, i: jnp.take_along_axis(x, i, -1)[..., 0]

    def chunk(vs, wk):
        pk, nk, ck = vs                      # [B, M, 1, c]
        hi, lo = numerics.signed_scale(wk, pk, nk)   # [B, M, N, c]
        neg = jnp.broadcast_to(wk < 0, hi.shape)
        ck = jnp.broadcast_to(ck, hi.shape)
        ip = jnp.argmax(hi, axis=-1)[..., None]
        in_ = jnp.argmin(lo, axis=-1)[..., None]
        vp, vn = take(hi, ip), take(lo, in_)
        ap = jnp.where(vp > -jnp.inf, 2 * take(ck, ip) + take(neg, ip), -1)
        an = jnp.where(vn < jnp.inf, 2 * take(ck, in_) + 1 - take(neg, in_), -1)
        return vp, vn, ap.astype(jnp.int32), an.astype(jnp.int32)

    def combine(x, y):
        bp, bn = y[0] > x[0], y[1] < x[1]   # ties keep the earlier chunk (first index wins)
        return (jnp.where(bp, y[0], x[0]), jnp.where(bn, y[1], x[1]),
                jnp.where(bp, y[2], x[2]), jnp.where(bn, y[3], x[3]))

    return chunked_contraction(chunk, combine, [p, n, cidx], w, (-jnp.inf, jnp.inf, -1))
