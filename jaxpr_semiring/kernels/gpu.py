"""A tiled Pallas (Triton) kernel for the MaxProduct contraction on GPU.

Tested in Pallas interpret mode on CPU; opt-in (``kernel="pallas"``) until it is measured
faster than XLA's fusion on a GPU (see ``benchmarks/``).

>>> import jax.numpy as jnp
>>> p = jnp.array([[[1.0, -2.0]]]); w = jnp.array([[[3.0], [4.0]]])
>>> [float(x[0, 0, 0]) for x in maxproduct(p, p, w, interpret=True)]
[3.0, -8.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["maxproduct"]


def _ceil_pow2(x: int) -> int:
    return 1 << max(0, int(x - 1).bit_length())


def maxproduct(
    p, n, w, *, block_m: int = 32, block_n: int = 64, block_c: int = 8, interpret: bool = False
):
    """Tiled max-times on GPU: [B, M, C] (p, n) with [B, C, N] → [B, M, N] (top_pos, top_neg).

    Grid over (B, M tiles, N tiles); each program keeps a [bm, bn] accumulator pair in
    registers and walks C in slices of ``block_c`` (a [bm, bc, bn] broadcast per step). Padding
    along M, N, C uses 0̄ rows (−inf, +inf) and weight 0, which the mask turns into no candidate.
    A NaN candidate (a NaN entry, or a NaN weight on a live one) makes both outputs NaN.
    """
    from jax.experimental import pallas as pl

    B, M, C = p.shape
    N = w.shape[2]
    bm, bn, bc = (
        min(block_m, _ceil_pow2(M)),
        min(block_n, _ceil_pow2(N)),
        min(block_c, _ceil_pow2(C)),
    )
    Mp, Np, Cp = -(-M // bm) * bm, -(-N // bn) * bn, -(-C // bc) * bc
    dt = p.dtype
    p_ = jnp.pad(p, ((0, 0), (0, Mp - M), (0, Cp - C)), constant_values=-jnp.inf)
    n_ = jnp.pad(n, ((0, 0), (0, Mp - M), (0, Cp - C)), constant_values=jnp.inf)
    w_ = jnp.pad(w, ((0, 0), (0, Cp - C), (0, Np - N)))
    steps = Cp // bc

    def kernel(p_ref, n_ref, w_ref, op_ref, on_ref):
        def body(k, acc):
            ap, an = acc
            pk = p_ref[0, :, pl.ds(k * bc, bc)]  # [bm, bc]
            nk = n_ref[0, :, pl.ds(k * bc, bc)]
            wk = w_ref[0, pl.ds(k * bc, bc), :]  # [bc, bn]
            alive = (pk != -jnp.inf)[:, :, None]  # a NaN entry is a candidate
            a = pk[:, :, None] * wk[None]
            d = nk[:, :, None] * wk[None]
            hi = jnp.where(alive, jnp.maximum(a, d), -jnp.inf)
            lo = jnp.where(alive, jnp.minimum(a, d), jnp.inf)
            # NaN wins (IEEE: a path of product NaN), carried explicitly: a GPU max may drop it
            nan = jnp.max((hi != hi).astype(dt), axis=1) > 0
            nan = nan | (ap != ap)
            ap = jnp.where(nan, jnp.nan, jnp.maximum(ap, jnp.max(hi, axis=1)))
            an = jnp.where(nan, jnp.nan, jnp.minimum(an, jnp.min(lo, axis=1)))
            return ap, an

        init = (jnp.full((bm, bn), -jnp.inf, dt), jnp.full((bm, bn), jnp.inf, dt))
        ap, an = lax.fori_loop(0, steps, body, init)
        op_ref[0] = ap
        on_ref[0] = an

    grid = (B, Mp // bm, Np // bn)
    out = pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=[
            pl.BlockSpec((1, bm, Cp), lambda b, i, j: (b, i, 0)),
            pl.BlockSpec((1, bm, Cp), lambda b, i, j: (b, i, 0)),
            pl.BlockSpec((1, Cp, bn), lambda b, i, j: (b, 0, j)),
        ],
        out_specs=[
            pl.BlockSpec((1, bm, bn), lambda b, i, j: (b, i, j)),
            pl.BlockSpec((1, bm, bn), lambda b, i, j: (b, i, j)),
        ],
        out_shape=[jax.ShapeDtypeStruct((B, Mp, Np), dt), jax.ShapeDtypeStruct((B, Mp, Np), dt)],
        interpret=interpret,
    )(p_, n_, w_)
    return out[0][:, :M, :N], out[1][:, :M, :N]
