"""Fast contractions: tropical (max-times) kernels for ``MaxProduct`` and ``MaxAbs``, and real
matmuls against lifted weights for the log-type semirings (:func:`lifted_dots`).

The semirings call :func:`maxproduct_contract` / :func:`maxabs_contract` with canonical operands
(``v`` leaves ``[B, M, C]``, weights ``[B, C, N]``, see ``semirings._canonical``). Which
implementation runs is chosen per backend inside one jitted program
(``jax.lax.platform_dependent``):

* **CPU, numba installed** (``pip install numba``): a compiled, multi-threaded loop behind
  ``jax.pure_callback`` (``vmap_method="expand_dims"``, so ``vmap`` works and shared weights are
  not copied per batch element). The loop keeps a block of output rows in cache and streams the
  weight rows once per block, vectorized along the contiguous output axis — about 20× faster
  than XLA's CPU code for the same broadcast-multiply-max (shared/DESIGN.md, "Performance
  notes").
* **GPU**, opt-in with ``JAXPR_SEMIRING_KERNELS=pallas``: a tiled Pallas (Triton) kernel
  (:func:`maxproduct_pallas`); it is tested in Pallas interpret mode on CPU (no GPU was
  available to tune it), so by default GPUs use the XLA formulation below.
* otherwise: the chunked XLA broadcast-reduce (``semirings.chunked_contraction``).

All implementations compute exactly the reference semantics: a 0̄ entry of ``v`` (top_pos = −inf
for MaxProduct, log|g| = −inf for MaxAbs) contributes no candidate whatever the weight (also a
zero, negative or infinite weight); an output with no candidate is 0̄ ((−inf, +inf), resp.
(−inf, +1)).

Set ``JAXPR_SEMIRING_KERNELS=xla`` to force the XLA formulation everywhere (for comparison).

Log, Counting, Entropy and Expectation contract through real matmuls (BLAS) against lifted
weights (|w|, |w| log|w|, 1). :func:`lifted_dots` builds a large lifted matrix chunk by chunk
along the contraction and only once the rows it meets exist (:func:`scheduled_after`), so a
backward pass never holds every layer's lifted weights at once.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["numba_available", "describe", "maxproduct_contract", "maxabs_contract",
           "maxproduct_numpy", "maxabs_numpy", "maxproduct_pallas", "lifted_dots",
           "scheduled_after"]


def _mode() -> str:
    return os.environ.get("JAXPR_SEMIRING_KERNELS", "auto").lower()


# ------------------------------------------------------------------------------ numba (CPU)

_NUMBA = None  # (maxproduct_kernel, maxabs_kernel) once compiled, False if unavailable


def _numba_kernels():
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA or None
    try:
        import numba
    except Exception:  # not installed: XLA fallback
        _NUMBA = False
        return None

    # One output row (b, m) per parallel task; its [N] accumulators stay in cache while the
    # weight rows stream past, and the inner loop runs along the contiguous output axis
    # (vectorized). A 0̄ entry of v (top_pos = −inf, or NaN) is skipped: no candidate. For a
    # weight w < 0 the larger of w·p and w·n is w·n (sign-aware scaling without a max).
    @numba.njit(parallel=True, cache=True, nogil=True)
    def maxproduct_kernel(p, n, w, iv, iw, out_p, out_n):
        # p, n: [Pv, M, C]; w: [Pw, C, N]; out: [B, M, N]; iv/iw: [B] batch index into p / w
        B, M, N = out_p.shape
        C = p.shape[2]
        for t in numba.prange(B * M):
            b = t // M
            m = t % M
            bv = iv[b]
            bw = iw[b]
            accp = np.full(N, -np.inf, out_p.dtype)
            accn = np.full(N, np.inf, out_p.dtype)
            for c in range(C):
                pc = p[bv, m, c]
                if not (pc > -np.inf):
                    continue
                nc = n[bv, m, c]
                wrow = w[bw, c]
                for j in range(N):
                    wj = wrow[j]
                    neg = wj < 0
                    hi = wj * (nc if neg else pc)
                    lo = wj * (pc if neg else nc)
                    accp[j] = np.maximum(accp[j], hi)
                    accn[j] = np.minimum(accn[j], lo)
            out_p[b, m] = accp
            out_n[b, m] = accn

    @numba.njit(parallel=True, cache=True, nogil=True)
    def maxabs_kernel(la, s, lw, sw, iv, iw, out_la, out_s):
        # lexicographic max of (log|g|, sign): the larger log|g| wins, ties keep the larger sign
        B, M, N = out_la.shape
        C = la.shape[2]
        for t in numba.prange(B * M):
            b = t // M
            m = t % M
            bv = iv[b]
            bw = iw[b]
            accl = np.full(N, -np.inf, out_la.dtype)
            accs = np.full(N, -1.0, out_la.dtype)
            for c in range(C):
                lc = la[bv, m, c]
                sc = s[bv, m, c]
                lrow = lw[bw, c]
                srow = sw[bw, c]
                for j in range(N):
                    cand = lc + lrow[j]
                    sg = sc * srow[j]
                    x = accl[j]
                    y = accs[j]
                    better = cand > x
                    tie = cand == x
                    accl[j] = np.maximum(x, cand)
                    accs[j] = sg if better else (np.maximum(y, sg) if tie else y)
            out_la[b, m] = accl
            out_s[b, m] = accs

    _NUMBA = (maxproduct_kernel, maxabs_kernel)
    return _NUMBA


def numba_available() -> bool:
    return _mode() != "xla" and _numba_kernels() is not None


def describe() -> dict:
    """Which kernels this process would use (for benchmark reports)."""
    try:
        import numba
        nb = numba.__version__
    except Exception:
        nb = None
    return dict(mode=_mode(), numba=nb, cpu_tropical="numba" if numba_available() else "xla",
                gpu_tropical="pallas" if _mode() == "pallas" else "xla")


def _batch_index(lead_v, lead_w):
    """Flat output batch shape and, per output batch element, the flat index into v and w."""
    shape = np.broadcast_shapes(lead_v, lead_w)
    grid = np.indices(shape).reshape(len(shape), -1) if shape else np.zeros((0, 1), np.int64)

    def flat(lead):
        if not lead:
            return np.zeros(grid.shape[1], np.int64)
        idx = tuple(np.where(np.asarray(lead)[:, None] == 1, 0, grid[len(shape) - len(lead):]))
        return np.ravel_multi_index(idx, lead).astype(np.int64)

    return shape, flat(lead_v), flat(lead_w)


def _host_maxproduct(p, n, w):
    kern = _numba_kernels()[0]
    lead_v, lead_w = p.shape[:-2], w.shape[:-2]
    shape, iv, iw = _batch_index(lead_v, lead_w)
    M, C = p.shape[-2:]
    N = w.shape[-1]
    p3 = np.ascontiguousarray(p.reshape((-1, M, C)))
    n3 = np.ascontiguousarray(np.broadcast_to(n, p.shape).reshape((-1, M, C)))
    w3 = np.ascontiguousarray(w.reshape((-1, C, N)))
    out_p = np.empty((iv.size, M, N), p.dtype)
    out_n = np.empty((iv.size, M, N), p.dtype)
    kern(p3, n3, w3, iv, iw, out_p, out_n)
    return out_p.reshape(shape + (M, N)), out_n.reshape(shape + (M, N))


def _host_maxabs(la, s, lw, sw):
    kern = _numba_kernels()[1]
    lead_v, lead_w = la.shape[:-2], lw.shape[:-2]
    shape, iv, iw = _batch_index(lead_v, lead_w)
    M, C = la.shape[-2:]
    N = lw.shape[-1]
    la3 = np.ascontiguousarray(la.reshape((-1, M, C)))
    s3 = np.ascontiguousarray(np.broadcast_to(s, la.shape).reshape((-1, M, C)))
    lw3 = np.ascontiguousarray(lw.reshape((-1, C, N)))
    sw3 = np.ascontiguousarray(np.broadcast_to(sw, lw.shape).reshape((-1, C, N)))
    out_la = np.empty((iv.size, M, N), la.dtype)
    out_s = np.empty((iv.size, M, N), la.dtype)
    kern(la3, s3, lw3, sw3, iv, iw, out_la, out_s)
    out_s = np.where(out_la == -np.inf, np.ones((), la.dtype), out_s)
    return out_la.reshape(shape + (M, N)), out_s.reshape(shape + (M, N))


def maxproduct_numpy(p, n, w):
    """The numba CPU kernel called directly on numpy arrays ([B, M, C], [B, M, C], [B, C, N])."""
    return _host_maxproduct(np.asarray(p), np.asarray(n), np.asarray(w))


def maxabs_numpy(la, s, lw, sw):
    """The numba CPU MaxAbs kernel on numpy arrays; dead outputs (−inf) get sign +1."""
    return _host_maxabs(*(np.asarray(x) for x in (la, s, lw, sw)))


def _callback(host_fn, out_shape, dtype, *args):
    spec = jax.ShapeDtypeStruct(out_shape, dtype)
    return jax.pure_callback(host_fn, (spec, spec), *args, vmap_method="expand_dims")


# ------------------------------------------------------------------------------ Pallas (GPU)

def maxproduct_pallas(p, n, w, *, block_m: int = 32, block_n: int = 64, block_c: int = 8,
                      interpret: bool = False):
    """Tiled max-times on GPU: [B, M, C] (p, n) with [B, C, N] → [B, M, N] (top_pos, top_neg).

    Grid over (B, M tiles, N tiles); each program keeps a [bm, bn] accumulator pair in
    registers and walks C in slices of ``block_c`` (a [bm, bc, bn] broadcast per step). Padding
    along M, N, C uses 0̄ rows (−inf, +inf) and weight 0, which the mask turns into no candidate.
    """
    from jax.experimental import pallas as pl

    B, M, C = p.shape
    N = w.shape[2]
    bm, bn, bc = min(block_m, _ceil_pow2(M)), min(block_n, _ceil_pow2(N)), min(block_c, _ceil_pow2(C))
    Mp, Np, Cp = -(-M // bm) * bm, -(-N // bn) * bn, -(-C // bc) * bc
    dt = p.dtype
    p_ = jnp.pad(p, ((0, 0), (0, Mp - M), (0, Cp - C)), constant_values=-jnp.inf)
    n_ = jnp.pad(n, ((0, 0), (0, Mp - M), (0, Cp - C)), constant_values=jnp.inf)
    w_ = jnp.pad(w, ((0, 0), (0, Cp - C), (0, Np - N)))
    steps = Cp // bc

    def kernel(p_ref, n_ref, w_ref, op_ref, on_ref):
        def body(k, acc):
            ap, an = acc
            pk = p_ref[0, :, pl.ds(k * bc, bc)]          # [bm, bc]
            nk = n_ref[0, :, pl.ds(k * bc, bc)]
            wk = w_ref[0, pl.ds(k * bc, bc), :]          # [bc, bn]
            alive = (pk > -jnp.inf)[:, :, None]
            a = pk[:, :, None] * wk[None]
            d = nk[:, :, None] * wk[None]
            hi = jnp.where(alive, jnp.maximum(a, d), -jnp.inf)
            lo = jnp.where(alive, jnp.minimum(a, d), jnp.inf)
            return jnp.maximum(ap, jnp.max(hi, axis=1)), jnp.minimum(an, jnp.min(lo, axis=1))

        init = (jnp.full((bm, bn), -jnp.inf, dt), jnp.full((bm, bn), jnp.inf, dt))
        ap, an = lax.fori_loop(0, steps, body, init)
        op_ref[0] = ap
        on_ref[0] = an

    grid = (B, Mp // bm, Np // bn)
    out = pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=[pl.BlockSpec((1, bm, Cp), lambda b, i, j: (b, i, 0)),
                  pl.BlockSpec((1, bm, Cp), lambda b, i, j: (b, i, 0)),
                  pl.BlockSpec((1, Cp, bn), lambda b, i, j: (b, 0, j))],
        out_specs=[pl.BlockSpec((1, bm, bn), lambda b, i, j: (b, i, j)),
                   pl.BlockSpec((1, bm, bn), lambda b, i, j: (b, i, j))],
        out_shape=[jax.ShapeDtypeStruct((B, Mp, Np), dt), jax.ShapeDtypeStruct((B, Mp, Np), dt)],
        interpret=interpret,
    )(p_, n_, w_)
    return out[0][:, :M, :N], out[1][:, :M, :N]


def _ceil_pow2(x: int) -> int:
    return 1 << max(0, int(x - 1).bit_length())


# ------------------------------------------------------------------------------ dispatch

def _dispatch(cpu_fn: Callable | None, gpu_fn: Callable | None, xla_fn: Callable, *args):
    mode = _mode()
    if mode == "xla":
        return xla_fn(*args)
    branches = {}
    if cpu_fn is not None and numba_available():
        branches["cpu"] = cpu_fn
    if gpu_fn is not None:
        branches["cuda"] = gpu_fn
    if not branches:
        return xla_fn(*args)
    return lax.platform_dependent(*args, default=xla_fn, **branches)


# Canonical operands smaller than this (candidates B·M·C·N) stay in XLA: a host callback costs
# tens of microseconds, XLA's fused loop is as fast for tiny contractions.
MIN_KERNEL_CANDIDATES = 1 << 16


def maxproduct_contract(p, n, w, xla_fn: Callable):
    """⊕-contraction of MaxProduct values: p, n [B, M, C], w [B, C, N] → (top_pos, top_neg)."""
    B, M, C = p.shape
    N = w.shape[2]
    if B * M * C * N < MIN_KERNEL_CANDIDATES:
        return xla_fn(p, n, w)
    shape = (B, M, N)

    def cpu(p, n, w):
        return _callback(_host_maxproduct, shape, p.dtype, p, n, w)

    def gpu(p, n, w):
        return tuple(maxproduct_pallas(p, n, w))

    return _dispatch(cpu, gpu if _pallas_gpu_ok(p.dtype) else None, xla_fn, p, n, w)


def maxabs_contract(la, s, lw, sw, xla_fn: Callable):
    """⊕-contraction of MaxAbs values: la, s [B, M, C], lw, sw [B, C, N] → (log_abs, sign)."""
    B, M, C = la.shape
    N = lw.shape[2]
    if B * M * C * N < MIN_KERNEL_CANDIDATES:
        return xla_fn(la, s, lw, sw)
    shape = (B, M, N)

    def cpu(la, s, lw, sw):
        return _callback(_host_maxabs, shape, la.dtype, la, s, lw, sw)

    return _dispatch(cpu, None, xla_fn, la, s, lw, sw)


def _pallas_gpu_ok(dtype) -> bool:
    # Opt-in (JAXPR_SEMIRING_KERNELS=pallas): the kernel is verified in interpret mode only; on
    # GPU the chunked XLA fusion is the default (1.1×–7.5× a matmul, shared/DESIGN.md).
    return _mode() == "pallas" and np.dtype(dtype) == np.float32


# ----------------------------------------------------- log-space contractions as real matmuls

def _layout(v_ndim, dimension_numbers):
    (vc, _), (vb, _) = dimension_numbers
    vc, vb = tuple(vc), tuple(vb)
    v_free = tuple(i for i in range(v_ndim) if i not in vc and i not in vb)
    return vb, v_free, vc


def log_shift(lv, w_ndim, dimension_numbers):
    """Per-row shift for a log-space contraction without transposing the weights.

    Returns ``(shift_v, shift_out)``: the max of ``lv`` over its contracting axes (0 where that
    is −inf), shaped like ``lv`` with size-1 contracting axes, and the same values laid out like
    ``lax.dot_general``'s output (batch, lhs free, then size-1 rhs free axes).
    """
    vb, v_free, vc = _layout(lv.ndim, dimension_numbers)
    (_, wc), (_, wb) = dimension_numbers
    n_w_free = w_ndim - len(wc) - len(wb)
    m = jnp.max(lv, axis=vc, keepdims=True, initial=-jnp.inf) if vc else lv
    shift_v = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    kept = jnp.transpose(shift_v, vb + v_free + vc)
    shift_out = kept.reshape(kept.shape[:len(vb) + len(v_free)] + (1,) * n_w_free)
    return shift_v, shift_out


def real_dot(a, b, dimension_numbers):
    """``lax.dot_general`` at full float precision, in the operands' own layouts (XLA/BLAS
    handle transposed contractions without a materialized transpose)."""
    return lax.dot_general(a, b, dimension_numbers, precision=lax.Precision.HIGHEST)


def stacked_dot(rows, b, dimension_numbers):
    """``[real_dot(r, b) for r in rows]`` as one matmul over the stacked lhs (one pass over the
    weights, which dominate memory traffic for few rows)."""
    if len(rows) == 1:
        return [real_dot(rows[0], b, dimension_numbers)]
    (vc, wc), (vb, wb) = dimension_numbers
    nb = len(vb)
    # a new lhs axis right after the batch axes: it is a free axis; batch axes stay in front
    stacked = jnp.stack([jnp.moveaxis(r, vb, tuple(range(nb))) if nb else r for r in rows], axis=nb)
    ndim = rows[0].ndim
    # position of original lhs axis i in ``stacked``
    order = list(vb) + [i for i in range(ndim) if i not in vb]
    pos = {ax: (k if k < nb else k + 1) for k, ax in enumerate(order)}
    dims = ((tuple(pos[i] for i in vc), tuple(wc)), (tuple(range(nb)), tuple(wb)))
    out = real_dot(stacked, b, dims)
    return [out[(slice(None),) * nb + (k,)] for k in range(len(rows))]


# A lifted weight matrix (|w|, |w|·log|w|) larger than this is built chunk by chunk along the
# contraction: on CPU a fresh multi-MB temporary costs a page fault per 4 KiB (the 62 MB |W| of
# BERT's vocabulary projection: 26 ms to write, 3 ms to compute), and chunks also bound peak
# memory on every backend.
LIFT_CHUNK_BYTES = 4 << 20


@jax.custom_jvp
def scheduled_after(x, after):
    """``x``, computed no earlier than ``after``.

    A lift depends only on parameters, so XLA would schedule every lift (of every layer, every
    chunk) up front, all alive at once; on CPU each fresh page of temporaries costs a fault.
    XLA CPU drops ``optimization_barrier``, so the dependency is a select on a condition that
    is always false but reads ``after``. Under ``vmap`` the condition reads the whole batch, so
    a shared weight stays unbatched (one lift per batch, not per example). Differentiable: the
    identity in ``x``, constant in ``after``.
    """
    return _scheduled_after(x, after)


@scheduled_after.defjvp
def _scheduled_after_jvp(primals, tangents):
    return scheduled_after(*primals), tangents[0]


@jax.custom_batching.custom_vmap
def _scheduled_after(x, after):
    if after.size == 0:  # nothing to wait for
        return x
    return jnp.where(after.ravel()[0] < -jnp.inf, jnp.zeros((), x.dtype), x)


@_scheduled_after.def_vmap
def _scheduled_after_vmap(axis_size, in_batched, x, after):
    return _scheduled_after(x, after), in_batched[0]


def lifted_dots(products, w, dimension_numbers, chunk_bytes: int | None = None):
    """``[real_dot(row, lift(w)) for row, lift in products]`` without materializing ``lift(w)``
    whole when it is large.

    Rows sharing a lift (the same function object) go through one stacked matmul; each distinct
    lift of ``w`` is computed once per chunk. Only a single contracting axis is chunked (other
    contractions run unchunked).
    """
    lifts = list(dict.fromkeys(lift for _, lift in products))
    groups = [[i for i, (_, lift) in enumerate(products) if lift is g] for g in lifts]
    (vc, wc), _ = dimension_numbers
    budget = chunk_bytes or LIFT_CHUNK_BYTES

    def dots(rows, wk, after):
        wk = scheduled_after(wk, after)
        out = [None] * len(rows)
        for lift, idx in zip(lifts, groups):
            lw = lift(wk)
            for i, o in zip(idx, stacked_dot([rows[i] for i in idx], lw, dimension_numbers)):
                out[i] = o
        return out

    rows = [r for r, _ in products]
    if len(wc) != 1:
        return dots(rows, w, rows[0])
    ax_w, ax_v = wc[0], vc[0]
    C = w.shape[ax_w]
    per_index = max(1, w.size // max(C, 1)) * w.dtype.itemsize
    c = max(1, budget // per_index)
    if c >= C:
        return dots(rows, w, rows[0])
    # Static slices, unrolled: XLA fuses each slice (and a transpose feeding ``w``, as for a
    # tied embedding matrix) into the lift, so no whole-size copy of ``w`` is made.
    acc = None
    for start in range(0, C, c):
        size = min(c, C - start)
        part = dots([lax.slice_in_dim(r, start, start + size, axis=ax_v) for r in rows],
                    lax.slice_in_dim(w, start, start + size, axis=ax_w),
                    rows[0] if acc is None else acc[0])
        acc = part if acc is None else [a + b for a, b in zip(acc, part)]
    return acc
