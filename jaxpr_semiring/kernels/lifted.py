"""Log-type contractions as real matmuls against lifted weights.

Log, Counting, Entropy and Expectation contract ``⊕_c lift(w) ⊗ v`` as a max-shifted ``exp`` of
``v`` times a lifted weight matrix (|w|, |w|·log|w|, 1): BLAS on CPU, tensor cores on GPU.
:func:`lifted_dots` builds a large lifted matrix chunk by chunk along the contraction and only
once the rows it meets exist (:func:`scheduled_after`), so a backward pass never holds every
layer's lifted weights at once.

NaN and infinite weights (docs/semantics.md, "NaN"): a matmul multiplies every row entry by
every weight, 0̄ entries (0 after the lift) included, so 0·NaN or 0·inf would make NaN an
output that has no path through that weight. :func:`log_shift` and :func:`dead_rows` say which
outputs come from rows that are 0̄ at every contraction index: the semirings set those to 0̄
(they have no path at all). A row live somewhere meets every NaN of the weight columns it
contracts with (a second matmul to tell which entries meet it measured 15-65 % more compile
time on BERT).

>>> import jax.numpy as jnp
>>> v = jnp.ones((2, 3)); w = -2.0 * jnp.ones((3, 4))
>>> z, = lifted_dots([(v, jnp.abs)], w, (((1,), (0,)), ((), ())))
>>> z.tolist()[0]
[6.0, 6.0, 6.0, 6.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .. import numerics

__all__ = [
    "LIFT_CHUNK_BYTES",
    "LIVE_MAX_INDICES",
    "log_shift",
    "dead_rows",
    "real_dot",
    "stacked_dot",
    "scheduled_after",
    "lifted_dots",
    "live_or_dense",
]

# A lifted weight matrix (|w|, |w|·log|w|) larger than this is built chunk by chunk along the
# contraction: on CPU a fresh multi-MB temporary costs a page fault per 4 KiB (the 62 MB |W| of
# BERT's vocabulary projection: 26 ms to write, 3 ms to compute), and chunks also bound peak
# memory on every backend.
LIFT_CHUNK_BYTES = 4 << 20
# A chunked contraction whose rows are nonzero at no more than this many contraction indices
# gathers those weights instead of lifting all of them (:func:`live_or_dense`).
LIVE_MAX_INDICES = 256


def _layout(v_ndim, dimension_numbers):
    (vc, _), (vb, _) = dimension_numbers
    vc, vb = tuple(vc), tuple(vb)
    v_free = tuple(i for i in range(v_ndim) if i not in vc and i not in vb)
    return vb, v_free, vc


def _out_layout(x, w_ndim, dimension_numbers):
    """``x`` (shaped like the lhs, size-1 contracting axes) laid out like ``lax.dot_general``'s
    output: batch, lhs free, then size-1 rhs free axes."""
    vb, v_free, vc = _layout(x.ndim, dimension_numbers)
    (_, wc), (_, wb) = dimension_numbers
    n_w_free = w_ndim - len(wc) - len(wb)
    kept = jnp.transpose(x, vb + v_free + vc)
    return kept.reshape(kept.shape[: len(vb) + len(v_free)] + (1,) * n_w_free)


def log_shift(lv, w_ndim, dimension_numbers, with_dead: bool = False):
    """Per-row shift for a log-space contraction without transposing the weights.

    Returns ``(shift_v, shift_out)``: the max of ``lv`` over its contracting axes (0 where that
    is −inf or NaN), shaped like ``lv`` with size-1 contracting axes, and the same values laid
    out like ``lax.dot_general``'s output (batch, lhs free, then size-1 rhs free axes). The
    shift is a constant of the contraction (no gradient flows through it). With ``with_dead``
    also ``dead_out``, laid out like ``shift_out``: whether the row is −inf (0̄) at every
    contraction index, a NaN entry being live (one variadic reduce finds the max and the NaN:
    XLA CPU's max reduction drops NaN on some releases).
    """
    vb, v_free, vc = _layout(lv.ndim, dimension_numbers)
    if vc:
        m, nan = numerics.max_and_nan(lax.stop_gradient(lv), vc, keepdims=True)
    else:
        m, nan = lax.stop_gradient(lv), jnp.isnan(lv)
    shift_v = jnp.where(jnp.isfinite(m) & ~nan, m, jnp.zeros_like(m))
    shift_out = _out_layout(shift_v, w_ndim, dimension_numbers)
    if not with_dead:
        return shift_v, shift_out
    return shift_v, shift_out, _out_layout((m == -jnp.inf) & ~nan, w_ndim, dimension_numbers)


def dead_rows(dead, w_ndim, dimension_numbers):
    """Whether every contracted entry of a row is 0̄ (``dead``, boolean, shaped like the lhs),
    laid out like ``lax.dot_general``'s output (size-1 rhs free axes)."""
    vb, v_free, vc = _layout(dead.ndim, dimension_numbers)
    return _out_layout(
        jnp.all(dead, axis=vc, keepdims=True) if vc else dead, w_ndim, dimension_numbers
    )


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
    contractions run unchunked); a chunked one whose rows are zero at all but a few contraction
    indices lifts only those weights (:func:`live_or_dense`).
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

    def chunked(rows, w):
        # One loop over the full chunks (compiled once, however many there are) and a static
        # remainder. XLA fuses each slice of ``w`` into its lift: no whole-size copy is made.
        def part(start, size, after, slice_fn):
            return dots(
                [slice_fn(r, start, size, ax_v) for r in rows],
                slice_fn(w, start, size, ax_w),
                after,
            )

        dynamic = lambda x, start, size, ax: lax.dynamic_slice_in_dim(x, start, size, axis=ax)
        static = lambda x, start, size, ax: lax.slice_in_dim(x, start, start + size, axis=ax)
        n_full = C // c
        acc = part(0, c, rows[0], static)
        if n_full > 1:
            acc = lax.fori_loop(
                1,
                n_full,
                lambda k, acc: [a + b for a, b in zip(acc, part(k * c, c, acc[0], dynamic))],
                acc,
            )
        if C > n_full * c:
            acc = [a + b for a, b in zip(acc, part(n_full * c, C - n_full * c, acc[0], static))]
        return acc

    def compact(rows, w, idx, valid):
        keep = lambda x, ax: jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - ax - 1)), x, 0)
        rows = [keep(jnp.take(r, idx, axis=ax_v), ax_v) for r in rows]
        return dots(rows, keep(jnp.take(w, idx, axis=ax_w), ax_w), rows[0])

    return live_or_dense(tuple(rows), w, ax_v, min(LIVE_MAX_INDICES, c), chunked, compact)


def _live_indices(rows, axes, size):
    """(count, idx [size], valid [size]): the contraction indices where some row is nonzero."""
    live = None
    for r, ax in zip(rows, axes):
        any_r = jnp.any(r != 0, axis=tuple(i for i in range(r.ndim) if i != ax))
        live = any_r if live is None else live | any_r
    count = jnp.sum(live)
    return count, jnp.nonzero(live, size=size, fill_value=0)[0], jnp.arange(size) < count


def live_or_dense(rows, w, axis, size, dense, compact):
    """``dense(rows, w)``, or — when at most ``size`` contraction indices (``axis`` of every row)
    have a nonzero row entry — ``compact(rows, w, idx, valid)`` on those indices only.

    A masked-LM target meets the vocabulary projection through two live logits: lifting the
    whole 62 MB matrix (|w| log|w| is a log per weight) for them was a quarter of Entropy's
    time. The choice is one ``lax.cond``; under ``vmap`` the live indices are those of the
    whole batch (one gather of the shared weights, never a per-example select of both
    branches). Differentiable: the tangent is ``dense``'s.
    """

    @jax.custom_jvp
    def f(rows, w):
        return g(rows, w)

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(*primals), jax.jvp(dense, primals, tangents)[1]

    @jax.custom_batching.custom_vmap
    def g(rows, w):
        count, idx, valid = _live_indices(rows, [axis] * len(rows), size)
        return lax.cond(count <= size, lambda: compact(rows, w, idx, valid), lambda: dense(rows, w))

    @g.def_vmap
    def g_vmap(axis_size, in_batched, rows, w):
        rows_b, w_b = in_batched
        count, idx, valid = _live_indices(rows, [axis + b for b in rows_b], size)
        in_axes = (tuple(0 if b else None for b in rows_b), 0 if w_b else None)
        out = lax.cond(
            count <= size,
            lambda: jax.vmap(lambda r, w: compact(r, w, idx, valid), in_axes)(rows, w),
            lambda: jax.vmap(dense, in_axes)(rows, w),
        )
        return out, [True] * len(out)

    return f(rows, w)
