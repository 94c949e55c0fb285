"""The numba code of the CPU kernels (imported only when numba is installed): the tropical
contraction loops, and the readers of an ``XLA_FFI_CallFrame`` that run them on XLA's buffers
in place (:mod:`.ffi` registers those). One module because numba's on-disk cache is
invalidated per source file: a reader cached in another file would keep a stale copy of the
loops it calls.

NaN: a 0̄ entry (−inf) is skipped; a NaN entry, or a NaN weight on a live one, is a NaN
candidate that wins the max and the min (numba's ``np.maximum``/``np.minimum`` propagate NaN,
as numpy's do); the arg-max loop points at the first NaN candidate, and MaxAbs gives (NaN, NaN).

Loops. Each parallel task takes one block of ``BLOCK_N`` output columns (and a share of the
rows): it copies the live rows of that block of the weights once into a buffer that stays in
cache, transposing on the way when the weights are stored [N, C] (a dense layer's kernel read
backwards), then streams every row's contraction through it. The weights are never transposed
or copied whole, and each live one is read from memory once per call. Max-product rows whose
candidates are all numbers go through register tiles written in LLVM IR (:func:`tile_ir`):
several rows and columns of both chains held in vector registers for the whole contraction.

The low-rank loop (:func:`lowrank_task`) contracts an atomic block's Jacobian that is never
stored: each task builds the entries of one row and block of probes from the factors where it
uses them (:mod:`.lowrank`).

Frame readers. A frame is an address; fields are loaded at the byte offsets of :mod:`.ffi_abi`.
Every buffer is viewed as [prod(leading axes), rows, cols] (XLA's default row-major layout);
the leading axes that ``vmap`` adds (size 1 for an unbatched operand) are broadcast per output
batch element through index arrays, as :func:`.cpu.batch_index` does on the host. Each
``run_*`` returns 0, or 1 for operands that are neither float32 nor float64.

>>> parallel(PARALLEL_MIN_CANDIDATES), parallel(1000)
(True, False)
"""

from __future__ import annotations

import threading

import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.registry import cpu_target
from numba.extending import intrinsic

from .ffi_abi import (
    ARGS,
    ATTRS,
    BUF_DATA,
    BUF_DIMS,
    BUF_DTYPE,
    BUF_RANK,
    F32,
    F64,
    RETS,
    SCALAR_VALUE,
)

__all__ = ["BLOCK_N", "PARALLEL_MIN_CANDIDATES", "LOOPS", "RUNNERS", "parallel", "candidates"]

# Output columns per task (a [C, 128] float32 weight block is 1 MiB at C = 2048): 64, 128, 256
# and 512 measured within 10 % of each other on BERT shapes; 128 was the fastest.
BLOCK_N = 128
# Tasks per parallel loop: a few per thread (cached code keeps the value it was compiled with).
TASKS = 4 * numba.config.NUMBA_NUM_THREADS
# Calls with fewer candidate products (B·M·C·N) run on the calling thread only. 2^17: from
# 2^20 it made the paper MLP's two matrix-vector contractions (400k and 260k candidates) 1.6×
# faster and an atomic BERT LayerNorm's (1M per chunk) 1.9×; BERT-6L's calls are all larger.
PARALLEL_MIN_CANDIDATES = 1 << 17

# Start numba's threading layer now, before any runner runs: a runner loaded from the on-disk
# cache can call into it even when it is a serial one. A serial runner compiled in a process
# that had compiled the parallel runner first was cached referring to the layer's symbols; loaded
# first in a fresh process (layer not started, symbols unresolved) it crashed with a segfault
# (measured for run_maxabs_serial: BERT-sized calls then a small one, then a small one alone).
numba.get_num_threads()


@numba.njit(cache=True, inline="always")
def split(M, N, Pw):
    """(blocks along N, row chunks, rows per chunk): about ``TASKS`` tasks; each copies its
    block of the weights once."""
    nblk = (N + BLOCK_N - 1) // BLOCK_N
    have = max(1, Pw * nblk)
    chunks = min(max(M, 1), max(1, (TASKS + have - 1) // have))
    return nblk, chunks, (M + chunks - 1) // chunks


@numba.njit(cache=True)
def alive_columns(v, iv, iw, Pw, chunks, rows):
    """[Pw, chunks, C]: whether contraction index c has a live entry (v ≠ −inf) in some row of
    the chunk (for the batch elements using weight batch bw). Only those weight rows are
    copied and visited: a masked-LM target leaves most of them 0̄."""
    C = v.shape[2]
    alive = np.zeros((Pw, chunks, C), np.bool_)
    for b in range(iv.size):
        for ch in range(chunks):
            out = alive[iw[b], ch]
            for m in range(ch * rows, min(v.shape[1], (ch + 1) * rows)):
                row = v[iv[b], m]
                for c in range(C):
                    out[c] |= row[c] != -np.inf  # NaN is live
    return alive


@numba.njit(cache=True, inline="always")
def fill(w, nc, bw, j0, nb, cs, blk, log_sign, sblk):
    """blk[k, j] = w[bw, cs[k], j0 + j] (or w[bw, j0 + j, cs[k]] when ``nc``); with
    ``log_sign`` blk gets log|w| (log 0 = −inf) and sblk the sign (+1 for 0)."""
    K = cs.size
    if nc:  # transpose in 8-row tiles: the 8 written cache lines stay in L1 across j
        for k0 in range(0, K, 8):
            for j in range(nb):
                row = w[bw, j0 + j]
                for k in range(k0, min(K, k0 + 8)):
                    blk[k, j] = row[cs[k]]
    else:
        for k in range(K):
            row = w[bw, cs[k]]
            for j in range(nb):
                blk[k, j] = row[j0 + j]
    if log_sign:
        for k in range(K):
            for j in range(nb):
                x = blk[k, j]
                sblk[k, j] = -1.0 if x < 0 else 1.0
                blk[k, j] = np.log(abs(x)) if x != 0 else -np.inf


@numba.njit(cache=True, inline="always")
def winners(acc, cs, blk, arg, wt):
    """Arg-max 2·k + chain over the copied rows → 2·c + chain (−1: none), and the edge weight
    of the winning candidate (0: none)."""
    for j in range(acc.size):
        k = acc[j] // 2
        arg[j] = 2 * cs[k] + acc[j] % 2 if acc[j] >= 0 else -1
        wt[j] = blk[k, j] if acc[j] >= 0 else 0


@numba.njit(cache=True, inline="always")
def task_range(t, M, N, nblk, chunks, rows):
    """Task t → (weight batch, first column, columns, first row, end row)."""
    j0 = ((t // chunks) % nblk) * BLOCK_N
    m0 = (t % chunks) * rows
    return t // (nblk * chunks), j0, min(BLOCK_N, N - j0), m0, min(M, m0 + rows)


@numba.njit(cache=True)
def finite(x):
    """Whether every element of ``x`` is a number (not ±inf, not NaN)."""
    for v in x.ravel():
        if not abs(v) < np.inf:
            return False
    return True


# --- Register tiles: the fast path's contraction in LLVM IR
#
# numba writes each candidate's max and min back to the accumulator rows in memory (two loads
# and two stores per vector of candidates) and LLVM keeps its vectors 256 bits wide on AVX-512
# hosts ("prefer-vector-width"), so the loop above ran at about 8 G candidates/s per core. A
# tile holds TILE_ROWS rows × TILE_VECTORS vectors of output columns of both chains in
# registers for the whole contraction: one weight load serves every row of the tile, one
# broadcast every vector. Written as IR because numba has no vector types and cannot set the
# function attributes that allow 512-bit registers; the tile's arithmetic is
# the loop's (a compare and a select per max and per min), so the numbers are the same.


def _vector_bits() -> int:
    """The host's widest float vector register: 512 (AVX-512), 256 (AVX) or 128."""
    features = ll.get_host_cpu_features()
    return 512 if features.get("avx512f") else 256 if features.get("avx") else 128


VECTOR_BITS = _vector_bits()
# accumulators: TILE_ROWS · TILE_VECTORS · 2 registers (16 of AVX-512's 32; 8 of AVX's 16);
# a row alone (its own live entries) takes twice the vectors: 8 accumulators
TILE_ROWS, TILE_VECTORS = (4, 2) if VECTOR_BITS == 512 else (2, 2)
TILE_BYTES = 2 * TILE_VECTORS * VECTOR_BITS // 8  # the widest tile: blocks are padded to it


def tile_ir(name: str, T: str, rows: int, vectors: int, lanes: int) -> str:
    """``void name(pv, nv, ks, K, blk, nbp, op, on)``: for each tile of ``vectors · lanes``
    columns j, op[r, j] = max over i < K of the larger of blk[ks[i], j]·pv[r, i] and
    blk[ks[i], j]·nv[r, i], on[r, j] the min of the smaller, for r < ``rows`` (pv, nv: [rows, K];
    blk, op, on: rows of nbp, a multiple of the tile's width). Candidates must be numbers."""
    VT, MT = f"<{lanes} x {T}>", f"<{lanes} x i1>"
    splat = lambda bits: "<" + ", ".join([f"{T} {bits}"] * lanes) + ">"
    accs = [f"{r}_{v}" for r in range(rows) for v in range(vectors)]
    o = [
        f"define void @{name}(ptr noalias %pv, ptr noalias %nv, ptr noalias %ks, i64 %K, "
        "ptr noalias %blk, i64 %nbp, ptr noalias %op, ptr noalias %on) #0 {",
        "entry:\n  br label %jhead",
        "jhead:\n  %j = phi i64 [0, %entry], [%jn, %kexit]",
        "  %jc = icmp ult i64 %j, %nbp\n  br i1 %jc, label %kpre, label %done",
        "kpre:\n  br label %khead",
        "khead:\n  %k = phi i64 [0, %kpre], [%kn, %kbody]",
    ]
    for s in accs:
        o.append(f"  %h{s} = phi {VT} [{splat('0xFFF0000000000000')}, %kpre], [%h{s}n, %kbody]")
        o.append(f"  %l{s} = phi {VT} [{splat('0x7FF0000000000000')}, %kpre], [%l{s}n, %kbody]")
    o += [
        "  %kc = icmp ult i64 %k, %K\n  br i1 %kc, label %kbody, label %kexit",
        "kbody:\n  %kp = getelementptr i64, ptr %ks, i64 %k\n  %ki = load i64, ptr %kp",
        "  %ro = mul i64 %ki, %nbp\n  %off = add i64 %ro, %j",
    ]
    for v in range(vectors):
        o.append(f"  %o{v} = add i64 %off, {v * lanes}")
        o.append(f"  %wp{v} = getelementptr {T}, ptr %blk, i64 %o{v}")
        o.append(f"  %w{v} = load {VT}, ptr %wp{v}, align 4")
    for r in range(rows):
        o.append(f"  %x{r} = mul i64 %K, {r}\n  %y{r} = add i64 %x{r}, %k")
        for c, src in (("p", "pv"), ("n", "nv")):
            o.append(f"  %{c}q{r} = getelementptr {T}, ptr %{src}, i64 %y{r}")
            o.append(f"  %{c}s{r} = load {T}, ptr %{c}q{r}")
            o.append(f"  %{c}e{r} = insertelement {VT} poison, {T} %{c}s{r}, i32 0")
            o.append(
                f"  %{c}b{r} = shufflevector {VT} %{c}e{r}, {VT} poison, "
                f"<{lanes} x i32> zeroinitializer"
            )
    for s in accs:
        r, v = s.split("_")
        o += [
            f"  %a{s} = fmul {VT} %w{v}, %pb{r}\n  %b{s} = fmul {VT} %w{v}, %nb{r}",
            f"  %c{s} = fcmp ogt {VT} %a{s}, %b{s}",
            f"  %hi{s} = select {MT} %c{s}, {VT} %a{s}, {VT} %b{s}",
            f"  %lo{s} = select {MT} %c{s}, {VT} %b{s}, {VT} %a{s}",
            f"  %ch{s} = fcmp ogt {VT} %h{s}, %hi{s}",
            f"  %h{s}n = select {MT} %ch{s}, {VT} %h{s}, {VT} %hi{s}",
            f"  %cl{s} = fcmp olt {VT} %l{s}, %lo{s}",
            f"  %l{s}n = select {MT} %cl{s}, {VT} %l{s}, {VT} %lo{s}",
        ]
    o.append("  %kn = add i64 %k, 1\n  br label %khead\nkexit:")
    for r in range(rows):
        o.append(f"  %ox{r} = mul i64 %nbp, {r}\n  %oy{r} = add i64 %ox{r}, %j")
    for s in accs:
        r, v = s.split("_")
        o += [
            f"  %oz{s} = add i64 %oy{r}, {int(v) * lanes}",
            f"  %hp{s} = getelementptr {T}, ptr %op, i64 %oz{s}",
            f"  store {VT} %h{s}, ptr %hp{s}, align 4",
            f"  %lp{s} = getelementptr {T}, ptr %on, i64 %oz{s}",
            f"  store {VT} %l{s}, ptr %lp{s}, align 4",
        ]
    o += [f"  %jn = add i64 %j, {vectors * lanes}\n  br label %jhead", "done:\n  ret void\n}"]
    return "\n".join(o)


def _tile_library():
    """numba's code library holding the tiles, and {(dtype, rows): (symbol, width)}."""
    texts, symbols = [], {}
    for dtype, T in ((types.float32, "float"), (types.float64, "double")):
        lanes = VECTOR_BITS // (8 * np.dtype(str(dtype)).itemsize)
        for rows, vectors in ((TILE_ROWS, TILE_VECTORS), (1, 2 * TILE_VECTORS)):
            name = f"jaxpr_semiring_tile_{T}_{rows}x{vectors}"
            texts.append(tile_ir(name, T, rows, vectors, lanes))
            symbols[dtype, rows] = (name, vectors * lanes)
    attrs = f'"min-legal-vector-width"="{VECTOR_BITS}" "prefer-vector-width"="{VECTOR_BITS}"'
    module = ll.parse_assembly("\n\n".join(texts) + f"\n\nattributes #0 = {{ nounwind {attrs} }}\n")
    module.verify()
    library = cpu_target.target_context.codegen().create_library("jaxpr_semiring_tiles")
    library.add_llvm_module(module)
    return library, symbols


_TILES, _TILE_SYMBOLS = _tile_library()


def tile_library():
    # a module function, so that numba's cache key pickles a reference to it, not the library
    return _TILES


@intrinsic
def tile(typingctx, pv, nv, ks, K, blk, nbp, op, on):
    """Call the tile of ``pv.ndim == 2 and TILE_ROWS or 1`` rows (C-contiguous arrays)."""
    # the tile reads raw pointers with C strides: another layout would read wrong elements
    for name, a in zip(("pv", "nv", "ks", "blk", "op", "on"), (pv, nv, ks, blk, op, on)):
        if a.layout != "C":
            raise numba.core.errors.TypingError(
                f"tile: {name} must be a C-contiguous array, got layout {a.layout!r}; "
                f"pass np.ascontiguousarray({name})."
            )
    rows = TILE_ROWS if pv.ndim == 2 else 1
    name = _TILE_SYMBOLS[blk.dtype, rows][0]
    sig = types.void(pv, nv, ks, K, blk, nbp, op, on)

    def codegen(context, builder, sig, args):
        context.active_code_library.add_linking_library(tile_library())
        ptr, i64 = ir.IntType(8).as_pointer(), ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, i64, ptr, i64, ptr, ptr])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)

        def data(i):
            array = context.make_array(sig.args[i])(context, builder, args[i])
            return builder.bitcast(array.data, ptr)

        builder.call(fn, [data(0), data(1), data(2), args[3], data(4), args[5], data(6), data(7)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, inline="always")
def gather_row(prow, nrow, cs, pv, nv, ks):
    """The live entries of a row at contraction indices ``cs`` into pv, nv (their positions in
    ``cs`` into ks): how many, or −1 if one is not a number (the row takes the NaN-aware loop)."""
    i = 0
    for k in range(cs.size):
        pc = prow[cs[k]]
        if pc == -np.inf:
            continue
        ncv = nrow[cs[k]]
        if not (abs(pc) < np.inf and abs(ncv) < np.inf):
            return -1
        pv[i] = pc
        nv[i] = ncv
        ks[i] = k
        i += 1
    return i


@numba.njit(cache=True, inline="always")
def store_tile(slot, g, tp, tn, out_p, out_n, j0, nb):
    """The first g rows of a tile's results to their (b, m) in the outputs."""
    for r in range(g):
        out_p[slot[r, 0], slot[r, 1], j0 : j0 + nb] = tp[r, :nb]
        out_n[slot[r, 0], slot[r, 1], j0 : j0 + nb] = tn[r, :nb]


def maxproduct_task(with_arg):
    # For a weight w < 0 the larger of w·p and w·n is w·n (sign-aware scaling without a
    # max). With ``with_arg`` (a compile-time constant: the branches are pruned) also the
    # arg-max: 2·c + chain (0: from top_pos, 1: from top_neg) of the first winning
    # candidate, −1 for none, and that candidate's edge weight. Without it, a block of
    # weights that are all numbers runs its rows of numbers through the register tiles:
    # rows with every entry live TILE_ROWS at a time, the others one at a time on their live
    # entries; rows with an inf or a NaN take the loop below.
    @numba.njit(cache=True)
    def task(t, p, n, w, nc, iv, iw, out_p, out_n, arg_p, arg_n, wt_p, wt_n, alive, split_):
        nblk, chunks, rows = split_
        bw, j0, nb, m0, m1 = task_range(t, out_p.shape[1], out_p.shape[2], nblk, chunks, rows)
        cs = np.nonzero(alive[bw, t % chunks])[0]
        K = cs.size
        width = 1 if with_arg else TILE_BYTES // out_p.itemsize
        nbp = (nb + width - 1) // width * width  # padded with weight 0: computed, not stored
        blk = np.zeros((K, nbp), w.dtype)
        fill(w, nc, bw, j0, nb, cs, blk, False, blk)
        numbers = not with_arg and finite(blk)
        R = TILE_ROWS if numbers else 0
        pv = np.zeros((R, K), out_p.dtype)
        nv = np.zeros((R, K), out_p.dtype)
        tp = np.empty((R, nbp), out_p.dtype)
        tn = np.empty((R, nbp), out_p.dtype)
        every = np.arange(K if numbers else 0)
        ks = np.empty(K if numbers else 0, np.int64)
        slot = np.empty((R, 2), np.int64)  # (b, m) of each row in the tile
        g = 0
        accp = np.empty(nb, out_p.dtype)
        accn = np.empty(nb, out_p.dtype)
        ap = np.empty(nb if with_arg else 0, np.int32)
        an = np.empty(nb if with_arg else 0, np.int32)
        for b in range(iv.size):
            if iw[b] != bw:
                continue
            bv = iv[b]
            for m in range(m0, m1):
                accp[:] = -np.inf
                accn[:] = np.inf
                if with_arg:
                    ap[:] = -1
                    an[:] = -1
                prow, nrow = p[bv, m], n[bv, m]
                if numbers:
                    live = gather_row(prow, nrow, cs, pv[g], nv[g], ks)
                    if live == K:
                        slot[g, 0], slot[g, 1] = b, m
                        g += 1
                        if g == R:
                            tile(pv, nv, every, K, blk, nbp, tp, tn)
                            store_tile(slot, g, tp, tn, out_p, out_n, j0, nb)
                            g = 0
                        continue
                    if live >= 0:
                        tile(pv[g], nv[g], ks, live, blk, nbp, tp[0], tn[0])
                        out_p[b, m, j0 : j0 + nb] = tp[0, :nb]
                        out_n[b, m, j0 : j0 + nb] = tn[0, :nb]
                        continue
                for k in range(cs.size):
                    pc = prow[cs[k]]
                    if pc == -np.inf:  # 0̄: no candidate (a NaN entry is one)
                        continue
                    ncv = nrow[cs[k]]
                    for j in range(nb):
                        wj = blk[k, j]
                        neg = wj < 0
                        hi = wj * (ncv if neg else pc)
                        lo = wj * (pc if neg else ncv)
                        if with_arg:  # the first NaN candidate wins
                            if hi > accp[j] or ap[j] < 0 or (hi != hi and accp[j] == accp[j]):
                                accp[j] = hi
                                ap[j] = 2 * k + (1 if neg else 0)
                            if lo < accn[j] or an[j] < 0 or (lo != lo and accn[j] == accn[j]):
                                accn[j] = lo
                                an[j] = 2 * k + (0 if neg else 1)
                        else:  # numba's np.maximum / np.minimum propagate NaN (as numpy's)
                            accp[j] = np.maximum(accp[j], hi)
                            accn[j] = np.minimum(accn[j], lo)
                out_p[b, m, j0 : j0 + nb] = accp
                out_n[b, m, j0 : j0 + nb] = accn
                if with_arg:
                    winners(ap, cs, blk, arg_p[b, m, j0 : j0 + nb], wt_p[b, m, j0 : j0 + nb])
                    winners(an, cs, blk, arg_n[b, m, j0 : j0 + nb], wt_n[b, m, j0 : j0 + nb])
        if g:  # the last rows: the tile's other rows hold earlier (finite) entries
            tile(pv, nv, every, K, blk, nbp, tp, tn)
            store_tile(slot, g, tp, tn, out_p, out_n, j0, nb)

    return task


@numba.njit(cache=True)
def maxabs_task(t, la, s, w, nc, iv, iw, out_la, out_s, alive, split_):
    # lexicographic max of (log|g|, sign): the larger log|g| wins, ties keep the larger sign;
    # log|w| and sign(w) are computed once per weight block
    nblk, chunks, rows = split_
    bw, j0, nb, m0, m1 = task_range(t, out_la.shape[1], out_la.shape[2], nblk, chunks, rows)
    cs = np.nonzero(alive[bw, t % chunks])[0]
    lblk = np.empty((cs.size, nb), out_la.dtype)
    sblk = np.empty((cs.size, nb), out_la.dtype)
    fill(w, nc, bw, j0, nb, cs, lblk, True, sblk)
    accl = np.empty(nb, out_la.dtype)
    accs = np.empty(nb, out_la.dtype)
    for b in range(iv.size):
        if iw[b] != bw:
            continue
        bv = iv[b]
        for m in range(m0, m1):
            accl[:] = -np.inf
            accs[:] = -1.0
            for k in range(cs.size):
                lc = la[bv, m, cs[k]]
                if lc == -np.inf:  # 0̄: no candidate (a NaN entry is one)
                    continue
                sc = s[bv, m, cs[k]]
                lrow = lblk[k]
                srow = sblk[k]
                for j in range(nb):
                    cand = lc + lrow[j]
                    sg = sc * srow[j]
                    x = accl[j]
                    y = accs[j]
                    accl[j] = np.maximum(x, cand)
                    accs[j] = sg if cand > x else (np.maximum(y, sg) if cand == x else y)
            for j in range(nb):  # no candidate: 0̄ = (−inf, +1); NaN: (NaN, NaN)
                out_la[b, m, j0 + j] = accl[j]
                out_s[b, m, j0 + j] = (
                    1.0 if accl[j] == -np.inf else accl[j] if accl[j] != accl[j] else accs[j]
                )


@numba.njit(cache=True, inline="always")
def factor_row(wrow, U, V, G, owner, b, r, k, j0, A, N):
    """wrow[j] = the weight of (row r, probe j0 + j, output k): Σ_i U[i, r, k]·V[i, r, j0 + j],
    plus G[c, r, k] where owner[c, r, k] = j0 + j. An atomic block's Jacobian entry built from
    its factors, summed in the stored formulation's order (:func:`..block_layout.low_rank`)."""
    nb = wrow.size
    wrow[:] = 0
    for i in range(U.shape[1]):
        u = U[b, i, r * A + k]
        vrow = V[b, i]
        for j in range(nb):
            wrow[j] += u * vrow[r * N + j0 + j]
    for c in range(G.shape[1]):
        o = owner[b, c, r * A + k] - j0
        if 0 <= o < nb:
            wrow[o] = G[b, c, r * A + k] + wrow[o]


@numba.njit(cache=True)
def lowrank_task(t, p, n, U, V, G, owner, out_p, out_n, nblk):
    # MaxProduct with weights that are never stored: task t (row r of batch b, a block of
    # probes) builds them per output k (:func:`factor_row`).
    rb, j0 = t // nblk, (t % nblk) * BLOCK_N
    b, r = rb // p.shape[1], rb % p.shape[1]
    A, N = p.shape[2], out_p.shape[2]
    nb = min(BLOCK_N, N - j0)
    wrow = np.empty(nb, out_p.dtype)
    accp = np.full(nb, -np.inf, out_p.dtype)
    accn = np.full(nb, np.inf, out_p.dtype)
    for k in range(A):
        pc = p[b, r, k]
        if pc == -np.inf:  # 0̄: no candidate (a NaN entry is one)
            continue
        ncv = n[b, r, k]
        factor_row(wrow, U, V, G, owner, b, r, k, j0, A, N)
        for j in range(nb):
            wj = wrow[j]
            neg = wj < 0
            accp[j] = np.maximum(accp[j], wj * (ncv if neg else pc))
            accn[j] = np.minimum(accn[j], wj * (pc if neg else ncv))
    out_p[b, r, j0 : j0 + nb] = accp
    out_n[b, r, j0 : j0 + nb] = accn


# the two loops written out (not made by :func:`driver`): see the runners' note below
@numba.njit(cache=True)
def lowrank_serial(p, n, U, V, G, owner, out_p, out_n):
    nblk = (out_p.shape[2] + BLOCK_N - 1) // BLOCK_N
    for t in range(p.shape[0] * p.shape[1] * nblk):
        lowrank_task(t, p, n, U, V, G, owner, out_p, out_n, nblk)


@numba.njit(parallel=True, cache=True)
def lowrank_parallel(p, n, U, V, G, owner, out_p, out_n):
    nblk = (out_p.shape[2] + BLOCK_N - 1) // BLOCK_N
    for t in numba.prange(p.shape[0] * p.shape[1] * nblk):
        lowrank_task(t, p, n, U, V, G, owner, out_p, out_n, nblk)


def driver(task, parallel):
    """``loop(v0, v1, w, nc, iv, iw, *outs)``: every task of the call, on numba's threads
    (``parallel``) or on the calling thread (small calls: no thread-team wake-up)."""

    @numba.njit(parallel=parallel, cache=True)
    def loop(v0, v1, w, nc, iv, iw, *outs):
        split_ = split(outs[0].shape[1], outs[0].shape[2], w.shape[0])
        alive = alive_columns(v0, iv, iw, w.shape[0], split_[1], split_[2])
        for t in numba.prange(w.shape[0] * split_[0] * split_[1]):
            task(t, v0, v1, w, nc, iv, iw, *outs, alive, split_)

    return loop


_TASKS = dict(
    maxproduct=maxproduct_task(False), maxproduct_arg=maxproduct_task(True), maxabs=maxabs_task
)
# LOOPS[name][parallel]: the driver of each kernel, serial (False) and parallel (True)
LOOPS = {name: {par: driver(task, par) for par in (False, True)} for name, task in _TASKS.items()}
maxproduct_serial, maxproduct_parallel = LOOPS["maxproduct"][False], LOOPS["maxproduct"][True]
maxproduct_arg_serial, maxproduct_arg_parallel = (
    LOOPS["maxproduct_arg"][False],
    LOOPS["maxproduct_arg"][True],
)
maxabs_serial, maxabs_parallel = LOOPS["maxabs"][False], LOOPS["maxabs"][True]


# numba's ``workqueue`` threading layer (what numba falls back to without OpenMP or TBB, or
# NUMBA_THREADING_LAYER=workqueue) aborts the process when two threads launch parallel loops at
# once, and XLA runs independent custom calls, and a data-set run's batches, on several threads:
# launches are serialized until numba's first launch shows a thread-safe layer
_LAUNCH = threading.Lock()
_threadsafe = False


def launch(loop, *args) -> None:
    """``loop(*args)`` for a ``parallel=True`` loop, serialized under a layer that is not
    thread-safe."""
    global _threadsafe
    if _threadsafe:
        loop(*args)
        return
    with _LAUNCH:
        loop(*args)
        _threadsafe = numba.threading_layer() != "workqueue"


def parallel(candidates: int) -> bool:
    """Whether a call with this many candidate products runs on numba's threads: waking the
    thread team costs more than a small loop."""
    return candidates >= PARALLEL_MIN_CANDIDATES


# --- XLA FFI call frames


@intrinsic
def _load_i64(typingctx, addr):
    def codegen(context, builder, sig, args):
        return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()))

    return types.int64(types.int64), codegen


@intrinsic
def _load_i32(typingctx, addr):
    def codegen(context, builder, sig, args):
        value = builder.load(builder.inttoptr(args[0], ir.IntType(32).as_pointer()))
        return builder.sext(value, ir.IntType(64))

    return types.int64(types.int64), codegen


@intrinsic
def _pointer(typingctx, addr, like):
    """``addr`` as a pointer to elements of ``like``'s type."""

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(like)(types.int64, like), codegen


@numba.njit(cache=True)
def _item(frame, offset, i):
    """The i-th pointer of the array at ``frame + offset`` (args, rets or attrs)."""
    return _load_i64(_load_i64(frame + offset) + 8 * i)


@numba.njit(cache=True)
def _dim(buf, k):
    return _load_i64(_load_i64(buf + BUF_DIMS) + 8 * k)


@numba.njit(cache=True)
def _view(buf, like):
    """A buffer as a C-contiguous [prod(leading axes), rows, cols] array."""
    rank = _load_i64(buf + BUF_RANK)
    lead = 1
    for k in range(rank - 2):
        lead *= _dim(buf, k)
    shape = (lead, _dim(buf, rank - 2), _dim(buf, rank - 1))
    return numba.carray(_pointer(_load_i64(buf + BUF_DATA), like), shape)


@numba.njit(cache=True)
def _batch(out, v, w):
    """Per output batch element, the flat batch index into ``v`` and ``w`` (size-1 leading
    axes broadcast; axes aligned from the right)."""
    L = _load_i64(out + BUF_RANK) - 2
    Lv = _load_i64(v + BUF_RANK) - 2
    Lw = _load_i64(w + BUF_RANK) - 2
    B = 1
    for k in range(L):
        B *= _dim(out, k)
    iv = np.zeros(B, np.int64)
    iw = np.zeros(B, np.int64)
    for b in range(B):
        rem, sv, sw = b, 1, 1
        for k in range(L - 1, -1, -1):
            i = rem % _dim(out, k)
            rem //= _dim(out, k)
            kv, kw = k - (L - Lv), k - (L - Lw)
            if kv >= 0:
                d = _dim(v, kv)
                iv[b] += (0 if d == 1 else i) * sv
                sv *= d
            if kw >= 0:
                d = _dim(w, kw)
                iw[b] += (0 if d == 1 else i) * sw
                sw *= d
    return iv, iw


@numba.njit(cache=True)
def candidates(frame):
    """Candidate products of the call (output elements × contraction length)."""
    out, v = _item(frame, RETS, 0), _item(frame, ARGS, 0)
    n = _dim(v, _load_i64(v + BUF_RANK) - 1)
    for k in range(_load_i64(out + BUF_RANK)):
        n *= _dim(out, k)
    return n


@numba.njit(cache=True)
def _nc(frame):
    """The ``nc`` attribute (an int32 scalar, the only attribute): weights stored [N, C]."""
    return _load_i32(_load_i64(_item(frame, ATTRS, 0) + SCALAR_VALUE)) != 0


@numba.njit(cache=True)
def _operands(frame, like):
    """(v0, v1, w, nc, iv, iw, out0, out1) of a call, viewed as arrays of ``like``'s type."""
    a0, a1, a2 = _item(frame, ARGS, 0), _item(frame, ARGS, 1), _item(frame, ARGS, 2)
    r0 = _item(frame, RETS, 0)
    iv, iw = _batch(r0, a0, a2)
    return (
        _view(a0, like),
        _view(a1, like),
        _view(a2, like),
        _nc(frame),
        iv,
        iw,
        _view(r0, like),
        _view(_item(frame, RETS, 1), like),
    )


@numba.njit(cache=True)
def _no_args(like):
    """Empty arg-max outputs: the plain MaxProduct loop computes none."""
    return (
        np.empty((0, 0, 0), np.int32),
        np.empty((0, 0, 0), np.int32),
        np.empty((0, 0, 0), np.asarray(like).dtype),
        np.empty((0, 0, 0), np.asarray(like).dtype),
    )


@numba.njit(cache=True)
def _args(frame, like):
    """The arg-max outputs (arg_pos, arg_neg, w_pos, w_neg) of a maxproduct_arg call."""
    return (
        _view(_item(frame, RETS, 2), np.int32(0)),
        _view(_item(frame, RETS, 3), np.int32(0)),
        _view(_item(frame, RETS, 4), like),
        _view(_item(frame, RETS, 5), like),
    )


@numba.njit(cache=True)
def _dtype(frame):
    return _load_i32(_item(frame, ARGS, 0) + BUF_DTYPE)


# The runners. A serial one is a numba function calling its loop directly: a runner that
# merely contained the parallel loop (not taken) ran 10-20× slower half of the time, and a loop
# passed as an argument, or closed over by a runner factory, is not cacheable (numba keys a
# closure's cache entry on its pickled cells; a dispatcher pickles with a per-process id).
# Written out, each is loaded from the cache with its loop inlined. A parallel runner is
# Python: it reads the operands with a numba function and calls the parallel loop's
# dispatcher. Called from inside a numba runner, the same loop ran on one thread (BERT's MLP
# contraction, 8×30×2048×512: 70 ms at one core's load against 35 ms on both, measured on 2
# cores), cached or not. The trampoline picks the runner.


@numba.njit(cache=True)
def run_maxproduct_serial(frame):
    dt = _dtype(frame)
    if dt == F32:
        maxproduct_serial(*_operands(frame, np.float32(0)), *_no_args(np.float32(0)))
    elif dt == F64:
        maxproduct_serial(*_operands(frame, np.float64(0)), *_no_args(np.float64(0)))
    return 0 if dt == F32 or dt == F64 else 1


@numba.njit(cache=True)
def run_maxproduct_arg_serial(frame):
    dt = _dtype(frame)
    if dt == F32:
        maxproduct_arg_serial(*_operands(frame, np.float32(0)), *_args(frame, np.float32(0)))
    elif dt == F64:
        maxproduct_arg_serial(*_operands(frame, np.float64(0)), *_args(frame, np.float64(0)))
    return 0 if dt == F32 or dt == F64 else 1


@numba.njit(cache=True)
def run_maxabs_serial(frame):
    dt = _dtype(frame)
    if dt == F32:
        maxabs_serial(*_operands(frame, np.float32(0)))
    elif dt == F64:
        maxabs_serial(*_operands(frame, np.float64(0)))
    return 0 if dt == F32 or dt == F64 else 1


@numba.njit(cache=True)
def _lowrank_operands(frame, like):
    """(p, n, U, V, G, owner, out_p, out_n) of a MaxProduct low-rank call, each viewed
    [batch, rows, cols]."""
    a = [_item(frame, ARGS, i) for i in range(6)]
    return (
        _view(a[0], like),
        _view(a[1], like),
        _view(a[2], like),
        _view(a[3], like),
        _view(a[4], like),
        _view(a[5], np.int32(0)),
        _view(_item(frame, RETS, 0), like),
        _view(_item(frame, RETS, 1), like),
    )


@numba.njit(cache=True)
def run_lowrank_serial(frame):
    dt = _dtype(frame)
    if dt == F32:
        lowrank_serial(*_lowrank_operands(frame, np.float32(0)))
    elif dt == F64:
        lowrank_serial(*_lowrank_operands(frame, np.float64(0)))
    return 0 if dt == F32 or dt == F64 else 1


def parallel_runner(loop, operands, extra=None):
    """``run(frame)``: ``loop(*operands(frame, like), *extra(frame, like))`` on numba's threads,
    ``like`` a scalar of the operands' dtype; 1 for operands neither float32 nor float64."""

    def run(frame):
        dt = _dtype(frame)
        if dt != F32 and dt != F64:
            return 1
        like = np.float32(0) if dt == F32 else np.float64(0)
        launch(loop, *operands(frame, like), *(extra(frame, like) if extra else ()))
        return 0

    return run


# RUNNERS[name][parallel](frame) -> 0, or 1 for operands neither float32 nor float64
RUNNERS = dict(
    maxproduct={
        False: run_maxproduct_serial,
        True: parallel_runner(maxproduct_parallel, _operands, lambda frame, like: _no_args(like)),
    },
    maxproduct_arg={
        False: run_maxproduct_arg_serial,
        True: parallel_runner(maxproduct_arg_parallel, _operands, _args),
    },
    maxabs={False: run_maxabs_serial, True: parallel_runner(maxabs_parallel, _operands)},
    maxproduct_lowrank={
        False: run_lowrank_serial,
        True: parallel_runner(lowrank_parallel, _lowrank_operands),
    },
)
