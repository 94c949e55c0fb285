"""The semiring rule of an atomic block (:mod:`jaxpr_semiring.atomic_blocks.collapse`): its
Jacobian,
contracted row by row.

A block is one node whose edges are the pairs (input element i, output element k) joined by a
path inside it, weighted by the total derivative J[k, i]. The rule computes

    ct_in[i] = ⊕_k [k reachable from i] lift(J[k, i]) ⊗ ct_out[k]

from probes chosen by :func:`~jaxpr_semiring.atomic_blocks.layout.layout` (rows, shared inputs, low
rank): dense row-local probes go through the semiring's own batched ``dot_general`` (one batch
per row), in chunks; the rest (single-position and shared elements) through a gather or the
semiring's ⊕-scatter. For the real field (``Real``) the rule is one VJP of the block.

Which pairs are edges matters only where J = 0 and only in semirings where a zero-weight edge
differs from no edge (``MaxProduct``, ``Counting``, ``Boolean``): there reachability comes from
the same probes through the transposed :class:`~jaxpr_semiring.semirings.structure.PathCount`
backward pass and masks the contraction, unless every element reaches its whole row (checked at
trace time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..graph import is_float, reachable
from ..interpreter import backward, forward
from ..kernels.lifted import LIFT_CHUNK_BYTES
from ..semirings import IndexMap
from ..semirings.structure import PathCount
from .layout import is_concrete, layout, low_rank

__all__ = ["block_rule", "MAX_ENTRIES", "CHUNK_ENTRIES"]

MAX_ENTRIES = 1 << 27  # Jacobian entries (probes × outputs) a block may need
# Dense probes go in chunks of at most this many Jacobian entries: as many float32 entries as a
# log-type contraction lifts in one piece (a larger chunk is re-chunked by the lift, measured
# 10× slower on a BERT LayerNorm); fewer, larger chunks help the tropical kernels (2× for
# MaxProduct from 2 to 4 MB).
CHUNK_ENTRIES = LIFT_CHUNK_BYTES // 4


def _index_map(owner: np.ndarray, n: int) -> IndexMap:
    dn = lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,)
    )
    idx = jnp.asarray(owner.reshape(-1, 1), jnp.int32)
    return IndexMap(
        (n,), lambda op, operand, upd: op(operand, idx, upd, dn), lambda t: t[idx[:, 0]]
    )


def _tangents(probe_ids, dtypes, first, n):
    """One-hot probe tangents [n, *shape] per input: 1 where an element's probe is first+j."""
    return [
        (jnp.asarray(p)[None] == (first + jnp.arange(n)).reshape((n,) + (1,) * p.ndim)).astype(dt)
        for p, dt in zip(probe_ids, dtypes)
    ]


def block_rule(ctx, primals_in, primals_out, cts_out, *, block, **_):
    S = ctx.semiring
    g = block.graph
    wanted = [i for i, (a, w) in enumerate(zip(g.invars, ctx.wanted)) if w and is_float(a.aval)]
    live = [
        k for k, (r, c) in enumerate(zip(g.outvars, cts_out)) if c is not None and is_float(r.aval)
    ]
    cts_in: list = [None] * len(primals_in)
    if not wanted or not live:
        return cts_in
    xs = [primals_in[i] for i in wanted]

    def outputs(*vals):
        args = list(primals_in)
        for i, v in zip(wanted, vals):
            args[i] = v
        outs = block.evaluate(args)
        return [outs[k] for k in live]

    _, lin = jax.linearize(outputs, *xs)
    cts = [cts_out[k] for k in live]
    flat = lambda *ts: jnp.concatenate([o.reshape(-1) for o in lin(*ts)])
    ct_flat = S.map(lambda *a: jnp.concatenate([x.reshape(-1) for x in a]), *cts)
    real = S.linear_vjp(flat, [jnp.zeros_like(x) for x in xs], ct_flat)
    if real is not None:  # the real field: J^T ct, one VJP
        for i, v in zip(wanted, real):
            cts_in[i] = v
        return cts_in

    env = forward(g, primals_in)
    lay = layout(g, env, wanted, live)
    n_out = sum(int(np.prod(g.outvars[k].aval.shape, dtype=np.int64)) for k in live)
    if lay.n_probes * n_out > MAX_ENTRIES:
        why = (
            "its structure depends on traced values (a select or gather inside reads one), "
            "so rows cannot be found at trace time"
            if lay.traced
            else "it has no cheaper row structure"
        )
        raise ValueError(
            f"atomic block '{block.label}' needs {lay.n_probes} JVPs over {n_out} output "
            f"elements ({lay.n_probes * n_out} Jacobian entries, limit "
            f"block_jacobian.MAX_ENTRIES = {MAX_ENTRIES}): {why}. Make the block smaller, e.g. "
            f"atomic per row under jax.vmap."
        )
    R = lay.rows
    count_fwd = _forward_reach(g, env, wanted, live) if S.zero_weight_is_edge else None
    as_rows = lambda ys, n: jnp.concatenate([y.reshape(n, R, m) for y, m in zip(ys, lay.sizes)], 2)
    dtypes = [x.dtype for x in xs]

    def probe_outputs(first, n):
        """Jacobian entries [n, R, a_out] of probes first..first+n−1."""
        return as_rows(jax.vmap(lin)(*_tangents(lay.probe, dtypes, first, n)), n)

    def reach(first, n):
        return as_rows(count_fwd(_tangents(lay.probe, [jnp.float32] * len(xs), first, n)), n) > 0

    ct_rows = S.map(
        lambda *a: jnp.concatenate([x.reshape(R, m) for x, m in zip(a, lay.sizes)], 1), *cts
    )
    parts = []
    if lay.n_dense:
        per = max(1, min(lay.n_dense, CHUNK_ENTRIES // max(1, R * sum(lay.sizes))))
        masked = count_fwd is not None and not _all_edges(lay, reach, per)
        lr = None if masked else low_rank(g, env, lay, wanted, live, primals_in, per)
        dense = None if lr is None else S.low_rank_dot(ct_rows, lr.U, lr.V, lr.G, lr.owner)
        if dense is None:  # the Jacobian stored chunk by chunk
            dense = _contract_dense(
                S,
                lay,
                ct_rows,
                lr.jacobian if lr is not None else probe_outputs,
                reach if masked else None,
                per,
                lr is not None,
            )
        parts.append(("dense", dense))
    if lay.n_probes > lay.n_dense:
        n_sp = lay.n_probes - lay.n_dense
        J = probe_outputs(lay.n_dense, n_sp).reshape(-1)
        M = None if count_fwd is None else reach(lay.n_dense, n_sp).reshape(-1)
        ct_b = S.map(lambda a: jnp.broadcast_to(a[None], (n_sp,) + a.shape).reshape(-1), ct_rows)

        def edges(ent):  # lift(J) ⊗ ct at sparse entries (masked to the real edges)
            ent = jnp.asarray(ent)
            v = S.scale(J[ent], S.map(lambda a: a[ent], ct_b))
            return v if M is None else S.where(M[ent], v)

        # an element owning one entry takes it as it is; shared ones ⊕ theirs by a scatter
        parts.append(
            (
                "own",
                [
                    edges(np.maximum(e, 0).reshape(-1)) if (e >= 0).any() else None
                    for e in lay.own_entry
                ],
            )
        )
        if len(lay.sparse_owner):
            parts.append(
                (
                    "shared",
                    S.scatter(
                        edges(lay.sparse_entries),
                        _index_map(lay.sparse_owner, sum(x.size for x in xs)),
                    ),
                )
            )
    off = 0
    for j, (i, x, probe, row, own) in enumerate(zip(wanted, xs, lay.probe, lay.row, lay.own_entry)):
        ct = None
        for kind, val in parts:
            if kind == "dense":
                sel = (probe >= 0) & (probe < lay.n_dense)
                idx = jnp.asarray((row * lay.n_dense + np.where(sel, probe, 0)).reshape(-1))
                piece = S.map(lambda a: a.reshape(-1)[idx].reshape(x.shape), val)
            elif kind == "own":
                sel = own >= 0
                if val[j] is None:
                    continue
                piece = S.map(lambda a: a.reshape(x.shape), val[j])
            else:
                sel = (probe >= lay.n_dense) & (own < 0)
                piece = S.map(lambda a: a[off : off + x.size].reshape(x.shape), val)
            if not sel.any():
                continue
            piece = piece if sel.all() else S.where(jnp.asarray(sel), piece)
            ct = piece if ct is None else S.where(jnp.asarray(sel), piece, ct)
        cts_in[i] = ct
        off += x.size
    return cts_in


def _contract_dense(S, lay, ct_rows, jacobian, reach, per, unroll):
    """⊕ over each row's outputs for the dense row-local probes: [R, n_dense]. Probes go in
    chunks of about CHUNK_ENTRIES Jacobian entries: on CPU (BERT LayerNorm, 512 probes) chunks
    that stay in cache were 10–50× faster than one pass over all probes. Low-rank chunks (a
    cheap elementwise pass each) run 4× faster unrolled than under ``lax.map``; JVP chunks 10×
    slower unrolled (measured), so those run under ``lax.map``."""
    dims = (((1,), (2,)), ((0,), (1,)))  # ct [R, a_out] · J [n, R, a_out] → [R, n]

    def chunk(first, n):  # first: static when unrolled, traced under lax.map
        J = jacobian(first, n)
        if reach is None:
            return S.dot_general(ct_rows, J, dims)
        v = S.where(reach(first, n), S.scale(J, S.map(lambda a: a[None], ct_rows)))
        return S.map(lambda a: a.T, S.sum(v, axes=2))

    if unroll:
        outs = [chunk(first, min(per, lay.n_dense - first)) for first in range(0, lay.n_dense, per)]
        return S.map(lambda *a: jnp.concatenate(a, axis=1), *outs)
    R, n_chunks = lay.rows, -(-lay.n_dense // per)
    out = lax.map(lambda first: chunk(first, per), jnp.arange(n_chunks) * per)  # [chunks, R, per]
    return S.map(lambda a: jnp.moveaxis(a, 0, 1).reshape(R, n_chunks * per)[:, : lay.n_dense], out)


def _all_edges(lay, reach, per) -> bool:
    """At trace time: does every dense row-local element reach every output of its row? (Then
    the contraction needs no mask.) False when that depends on traced values."""
    rows = np.concatenate(
        [
            np.where((p >= 0) & (p < lay.n_dense), r, -1).reshape(-1)
            for p, r in zip(lay.probe, lay.row)
        ]
    )
    counts = np.bincount(rows[rows >= 0], minlength=lay.rows)
    with jax.ensure_compile_time_eval():
        for first in range(0, lay.n_dense, per):
            n = min(per, lay.n_dense - first)
            M = reach(first, n)
            if not is_concrete(M):
                return False
            exists = (first + np.arange(n))[:, None] < counts[None, :]  # [n, R]
            if not np.all(np.asarray(M) | ~exists[:, :, None]):
                return False
    return True


def _forward_reach(g, env, wanted, live):
    """tangents (per wanted input, leading probe axis) → per live output: #paths reaching it
    (the transposed PathCount backward pass, vmapped over probes)."""
    S = PathCount()
    reach = reachable(g, [g.invars[i] for i in wanted])
    shapes_in = [tuple(g.invars[i].aval.shape) for i in wanted]

    def backward_counts(*seeds):
        cts_out = [None] * len(g.outvars)
        for k, s in zip(live, seeds):
            cts_out[k] = s
        cts = backward(S, g, env, cts_out, reach)
        return [
            cts.get(g.invars[i].key, jnp.zeros(s, jnp.float32)) for i, s in zip(wanted, shapes_in)
        ]

    examples = [jnp.zeros(g.outvars[k].aval.shape, jnp.float32) for k in live]
    fwd = jax.linear_transpose(backward_counts, *examples)
    return lambda tangents: jax.vmap(lambda *t: list(fwd(list(t))))(
        *[t.astype(jnp.float32) for t in tangents]
    )
