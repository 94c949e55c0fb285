"""How an atomic block's Jacobian is probed (:mod:`jaxpr_semiring.atomic_blocks.jacobian`
contracts it).

A block's dense Jacobian is [outputs × inputs]. Instead, :func:`layout` finds **rows**: the
outputs split along their leading ``r`` axes into R rows, and an input element that reaches
one row only is *row-local*. One JVP whose tangent is 1 at the p-th row-local element of every
row gives column p of every row's Jacobian at once (rows do not mix): a LayerNorm over
[tokens, hidden] needs ``hidden`` probes, not tokens·hidden. Elements reaching one within-row
position share probes further (GELU: one probe). Inputs reaching several rows (LayerNorm's
scale and bias) are *shared*: those reaching one position each go in as few probes as the most
that share a position, the rest get one probe each.

The structure comes from a backward pass of
:class:`~jaxpr_semiring.semirings.structure.LabelRange` seeded with each output element's row
and position for every candidate ``r``, evaluated at trace time
(``jax.ensure_compile_time_eval``): structure depends only on integer/boolean values, so it is
concrete unless a select or gather inside the block reads a traced one. Then the block is dense
(one probe per input element).

**Low rank** (:func:`low_rank`). Inside a LayerNorm or a softmax every path either stays
elementwise or crosses a per-row statistic (mean, 1/std, normalizer): J = G_x + U·V, with G_x
the Jacobian while those *narrow* variables are held fixed (one position per element: one
probe), U their effect on the outputs and V their total derivative (one JVP resp. one VJP per
narrow element per row). J is then built chunk by chunk in one fused elementwise pass.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..graph import Graph, Ref, is_float, reachable
from ..interpreter import backward, forward, value_of
from ..semirings.structure import LabelRange

__all__ = ["Layout", "LowRank", "layout", "low_rank", "narrow_exits", "is_concrete", "NARROW"]

NARROW = 4  # a per-row statistic has at most this many elements per row


class Layout(NamedTuple):
    """How a block's Jacobian is probed. Probes ``0..n_dense-1`` are dense row-local (probe
    p: the p-th such element of every row); every later probe owns *sparse* entries, flat in
    [probe − n_dense, row, position], each belonging to one input element."""

    rows: int  # R
    r: int  # leading output axes that index the rows
    sizes: tuple  # within-row size of each live output (a_out = sum)
    probe: list  # per wanted input: probe of each element, −1: reaches nothing
    row: list  # per wanted input: row of each row-local element (else 0)
    n_dense: int
    n_probes: int
    own_entry: list  # per wanted input: the one sparse entry of an element owning one
    sparse_entries: np.ndarray  # the entries of elements owning several (shared elements) …
    sparse_owner: np.ndarray  # … and their owners (wanted inputs concatenated)
    traced: bool  # structure depends on traced values (dense fallback)


class _Classes(NamedTuple):
    probe: np.ndarray
    row: np.ndarray
    pos: np.ndarray
    lsingle: np.ndarray  # row-local, one position
    ssingle: np.ndarray  # several rows, one position
    wide: np.ndarray
    n_dense: int
    n_lsingle: int
    n_ssingle: int
    n_probes: int


def is_concrete(tree) -> bool:
    """Whether every leaf is a concrete array (not a tracer)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _rank_in_groups(groups: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries share its group (stable)."""
    order = np.argsort(groups, kind="stable")
    sorted_g = groups[order]
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(len(groups)) - np.searchsorted(sorted_g, sorted_g, side="left")
    return rank


def _count(rank) -> int:
    return int(rank.max()) + 1 if len(rank) else 0


def _candidates(out_shapes):
    """Row-axis counts r (leading axes shared by every live output), largest first."""
    r_max = min(len(s) for s in out_shapes)
    while any(s[:r_max] != out_shapes[0][:r_max] for s in out_shapes):
        r_max -= 1
    return list(range(r_max, -1, -1))


def _labels(out_shapes, r):
    """(R, rows, positions): every output element's row and its within-row position."""
    rows_shape = out_shapes[0][:r]
    R = int(np.prod(rows_shape, dtype=np.int64))
    rows, pos, off = [], [], 0
    for s in out_shapes:
        m = int(np.prod(s[r:], dtype=np.int64))
        rows.append(np.broadcast_to(np.arange(R).reshape(rows_shape + (1,) * (len(s) - r)), s))
        pos.append(np.broadcast_to(off + np.arange(m).reshape(s[r:]), s))
        off += m
    return R, rows, pos


def _label_ranges(graph, env, live, label_sets, keys):
    """At trace time, per label set (one label array per live output): the LabelRange value
    of every variable in ``keys`` (numpy), or None when it depends on traced values."""
    S = LabelRange()
    reach = reachable(graph, [r for r in graph.invars if is_float(r.aval)])
    shapes = {r.key: r.aval.shape for r in graph.invars}
    shapes.update({r.key: r.aval.shape for n in graph.nodes for r in n.outvars})

    def one(*labels):
        cts_out = [None] * len(graph.outvars)
        for k, lab in zip(live, labels):
            cts_out[k] = S.seed(lab)
        cts = backward(S, graph, env, cts_out, reach)
        return [cts.get(k, S.zeros(shapes[k], None)) for k in keys]

    with jax.ensure_compile_time_eval():
        stacked = [
            np.stack([ls[j] for ls in label_sets]).astype(np.int32) for j in range(len(live))
        ]
        res = jax.vmap(one)(*stacked)
    if not is_concrete(res):
        return None
    return [jax.tree.map(np.asarray, v) for v in res]


def _classify(row_lo, row_hi, pos_lo, pos_hi, a_out) -> _Classes:
    """Each input element's probe from the (row, position) ranges it reaches (flat arrays)."""
    dead = row_lo > row_hi
    local = ~dead & (row_lo == row_hi)
    one_pos = pos_lo == pos_hi
    dense, lsingle = local & ~one_pos, local & one_pos
    ssingle, wide = ~dead & ~local & one_pos, ~dead & ~local & ~one_pos
    probe = np.full(len(row_lo), -1, np.int64)
    probe[dense] = _rank_in_groups(row_lo[dense])
    n_dense = _count(probe[dense])
    rank_l = _rank_in_groups(row_lo[lsingle] * a_out + pos_lo[lsingle])
    probe[lsingle] = n_dense + rank_l
    rank_s = _rank_in_groups(pos_lo[ssingle])
    probe[ssingle] = n_dense + _count(rank_l) + rank_s
    first_wide = n_dense + _count(rank_l) + _count(rank_s)
    probe[wide] = first_wide + np.arange(int(wide.sum()))
    return _Classes(
        probe,
        np.where(local, row_lo, 0),
        pos_lo,
        lsingle,
        ssingle,
        wide,
        n_dense,
        _count(rank_l),
        _count(rank_s),
        first_wide + int(wide.sum()),
    )


def layout(graph, env, wanted, live) -> Layout:
    """Choose the rows and the probes of a block (see the module docstring)."""
    out_shapes = [tuple(graph.outvars[k].aval.shape) for k in live]
    in_shapes = [tuple(graph.invars[i].aval.shape) for i in wanted]
    n_in = [int(np.prod(s, dtype=np.int64)) for s in in_shapes]
    n_out = sum(int(np.prod(s, dtype=np.int64)) for s in out_shapes)
    cands = _candidates(out_shapes)
    seeds = [_labels(out_shapes, r) for r in cands]
    res = _label_ranges(
        graph,
        env,
        live,
        [ls for sd in seeds for ls in sd[1:]],
        [graph.invars[i].key for i in wanted],
    )
    if res is None:
        offs = np.concatenate([[0], np.cumsum(n_in)])
        probe = [np.arange(o, o + n).reshape(s) for o, n, s in zip(offs, n_in, in_shapes)]
        return Layout(
            1,
            0,
            (n_out,),
            probe,
            [np.zeros(s, np.int64) for s in in_shapes],
            sum(n_in),
            sum(n_in),
            [np.full(s, -1, np.int64) for s in in_shapes],
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            True,
        )
    flat = lambda xs: np.concatenate([x.reshape(-1) for x in xs])
    best = None
    for c, r in enumerate(cands):
        sizes = tuple(int(np.prod(s[r:], dtype=np.int64)) for s in out_shapes)
        rl, rh = flat([v.lo[2 * c] for v in res]), flat([v.hi[2 * c] for v in res])
        pl, ph = flat([v.lo[2 * c + 1] for v in res]), flat([v.hi[2 * c + 1] for v in res])
        cls = _classify(rl, rh, pl, ph, sum(sizes))
        cost = cls.n_probes * (n_out + sum(n_in))
        if best is None or cost < best[0]:
            best = (cost, r, seeds[c][0], sizes, cls)
    _, r, R, sizes, cls = best
    return _plan(R, r, sizes, in_shapes, cls)


def _plan(R, r, sizes, in_shapes, cls: _Classes) -> Layout:
    """The sparse entries of a chosen split: a single-position element owns its position in
    its row (row-local) or in every row (shared); a wide element its whole probe."""
    a_out = sum(sizes)
    rel = cls.probe - cls.n_dense
    ids_l, ids_s, ids_w = (np.nonzero(m)[0] for m in (cls.lsingle, cls.ssingle, cls.wide))
    ent_l = (rel[ids_l] * R + cls.row[ids_l]) * a_out + cls.pos[ids_l]
    ent_s = (
        (rel[ids_s][:, None] * R + np.arange(R)[None]) * a_out + cls.pos[ids_s][:, None]
    ).reshape(-1)
    ent_w = (rel[ids_w][:, None] * R * a_out + np.arange(R * a_out)[None]).reshape(-1)
    own = np.full(len(cls.probe), -1, np.int64)
    own[ids_l] = ent_l
    splits = np.cumsum([int(np.prod(s, dtype=np.int64)) for s in in_shapes])[:-1]
    unflat = lambda a: [p.reshape(s) for p, s in zip(np.split(a, splits), in_shapes)]
    dense = (cls.probe >= 0) & (cls.probe < cls.n_dense)
    return Layout(
        R,
        r,
        sizes,
        unflat(cls.probe),
        unflat(np.where(dense, cls.row, 0)),
        cls.n_dense,
        cls.n_probes,
        unflat(own),
        np.concatenate([ent_s, ent_w]).astype(np.int64),
        np.concatenate([np.repeat(ids_s, R), np.repeat(ids_w, R * a_out)]).astype(np.int64),
        False,
    )


def narrow_exits(g, env, lay, live) -> list:
    """Per-row statistics whose paths leave through the block's wide variables: inner
    variables with the rows as leading axes, at most NARROW elements per row, every element
    reaching exactly its own row, read by an equation with a wide output (or an output)."""
    out_shapes = [tuple(g.outvars[k].aval.shape) for k in live]
    rows_shape = out_shapes[0][: lay.r]
    cand = [
        v
        for n in g.nodes
        for v in n.outvars
        if is_float(v.aval)
        and len(v.aval.shape) >= lay.r
        and tuple(v.aval.shape[: lay.r]) == rows_shape
        and int(np.prod(v.aval.shape[lay.r :], dtype=np.int64)) <= NARROW
    ]
    if not cand:
        return []
    res = _label_ranges(g, env, live, [_labels(out_shapes, lay.r)[1]], [v.key for v in cand])
    if res is None:
        return []
    narrow = {}
    for v, rng in zip(cand, res):
        own = np.broadcast_to(
            np.arange(lay.rows).reshape(rows_shape + (1,) * (v.aval.ndim - lay.r)), v.aval.shape
        )
        if np.array_equal(rng.lo[0], own) and np.array_equal(rng.hi[0], own):
            narrow[v.key] = v
    exits = {}
    for node in g.nodes:
        if any(is_float(o.aval) and o.key not in narrow for o in node.outvars):
            exits.update({a.key: a for a in node.invars if isinstance(a, Ref) and a.key in narrow})
    exits.update({a.key: a for a in g.outvars if isinstance(a, Ref) and a.key in narrow})
    return list(exits.values())


class LowRank(NamedTuple):
    """A block's dense Jacobian as factors: ``jacobian(first, n)`` gives the entries
    [n, R, a_out] of dense probes first..first+n−1; entry (row r, probe j, output k) is
    Σ_i U[i, r, k]·V[i, r, j] + Σ_c [owner[c, r, k] = j]·G[c, r, k]."""

    jacobian: Callable
    U: Any  # [b, R, a_out]
    V: Any  # [b, R, n_dense]
    G: Any  # [C, R, a_out]
    owner: Any  # [C, R, a_out] int32: the dense probe owning each G entry, −1 for none


def low_rank(g, env, lay, wanted, live, primals_in, per):
    """The block's dense Jacobian built as G_x + U·V (module docstring), a :class:`LowRank`;
    None when the block has no narrow exits, too few dense probes to gain, or G_x is not one
    position per element. ``per``: the largest n asked for."""
    if lay.traced or lay.n_dense <= 4 * NARROW:
        return None
    exits = narrow_exits(g, env, lay, live)
    b = sum(int(np.prod(e.aval.shape[lay.r :], dtype=np.int64)) for e in exits)
    if not exits or 2 * b + 2 >= lay.n_dense:
        return None
    # the cut graph: every exit becomes an input (its producer writes elsewhere)
    keys = {e.key: -1 - j for j, e in enumerate(exits)}
    cut = Graph(
        [
            n._replace(
                outvars=tuple(Ref(keys[o.key], o.aval) if o.key in keys else o for o in n.outvars)
            )
            for n in g.nodes
        ],
        list(g.invars) + exits,
        list(g.outvars),
    )
    n_args = len(primals_in)
    cut_args = list(primals_in) + [env[e.key] for e in exits]
    cut_env = forward(cut, cut_args)
    out_shapes = [tuple(g.outvars[k].aval.shape) for k in live]
    R, rows, pos = _labels(out_shapes, lay.r)
    res = _label_ranges(cut, cut_env, live, [rows, pos], [g.invars[i].key for i in wanted])
    if res is None:
        return None
    flat = lambda xs: np.concatenate([x.reshape(-1) for x in xs])
    cls = _classify(
        flat([v.lo[0] for v in res]),
        flat([v.hi[0] for v in res]),
        flat([v.lo[1] for v in res]),
        flat([v.hi[1] for v in res]),
        sum(lay.sizes),
    )
    orig = flat(lay.probe)
    dense = (orig >= 0) & (orig < lay.n_dense)
    dead = cls.probe < 0
    alive = dense & ~dead
    if not np.all(cls.lsingle[dense] | dead[dense]) or np.any(
        cls.row[alive] != flat(lay.row)[alive]
    ):
        return None
    # G_x probes (one per rank at a position) and the dense probe owning each of their entries
    use = dense & cls.lsingle
    rank = np.where(use, cls.probe - cls.n_dense, -1)
    C = int(rank.max()) + 1
    a_out = sum(lay.sizes)
    owner_pos = np.full((C, R, a_out), -1, np.int64)
    owner_pos[rank[use], cls.row[use], cls.pos[use]] = orig[use]
    xs = [primals_in[i] for i in wanted]
    splits = np.cumsum([x.size for x in xs])[:-1]
    rank_in = [r.reshape(x.shape) for r, x in zip(np.split(rank, splits), xs)]

    def cut_outputs(*vals):
        args = list(cut_args)
        for i, v in zip(wanted, vals):
            args[i] = v
        args[n_args:] = vals[len(wanted) :]
        e = forward(cut, args)
        return [value_of(e, cut.outvars[k]) for k in live]

    def exit_values(*vals):
        args = list(primals_in)
        for i, v in zip(wanted, vals):
            args[i] = v
        e = forward(g, args)
        return [e[x.key] for x in exits]

    # U (and G_x): b + C JVPs of the cut graph; V: b VJPs of the exits
    e_tangents = []  # one-hot at within-row position j of an exit, in every row
    for e in exits:
        m = int(np.prod(e.aval.shape[lay.r :], dtype=np.int64))
        for j in range(m):
            e_tangents.append(
                [
                    np.broadcast_to(
                        (np.arange(m) == j).reshape(e.aval.shape[lay.r :]), e.aval.shape
                    ).astype(e.aval.dtype)
                    if x is e
                    else np.zeros(x.aval.shape, x.aval.dtype)
                    for x in exits
                ]
            )
    x_tan = [
        np.stack([(rk == c).astype(x.dtype) for c in range(C)] + [np.zeros(x.shape, x.dtype)] * b)
        for rk, x in zip(rank_in, xs)
    ]
    n_tan = [
        np.stack([np.zeros(e.aval.shape, e.aval.dtype)] * C + [t[j] for t in e_tangents])
        for j, e in enumerate(exits)
    ]
    _, lin_cut = jax.linearize(cut_outputs, *xs, *cut_args[n_args:])
    Y = jax.vmap(lin_cut)(*x_tan, *n_tan)
    Y = jnp.concatenate([y.reshape(C + b, R, m) for y, m in zip(Y, lay.sizes)], 2)
    Yg, U = Y[:C], Y[C:]
    _, pull = jax.vjp(exit_values, *xs)
    Vx = jax.vmap(pull)([jnp.stack([t[j] for t in e_tangents]) for j in range(len(exits))])
    V = jnp.zeros((b, R * lay.n_dense), Yg.dtype)  # [j, row, dense probe]
    for vx, p, rw in zip(Vx, lay.probe, lay.row):
        sel = ((p >= 0) & (p < lay.n_dense)).reshape(-1)
        V = V.at[:, jnp.asarray((rw * lay.n_dense + p).reshape(-1)[sel])].set(
            vx.reshape(b, -1)[:, sel]
        )
    V_rows = V.reshape(b, R, lay.n_dense)  # [j, row, dense probe]
    owner_pos = jnp.asarray(owner_pos, jnp.int32)
    n_pad = -(-lay.n_dense // per) * per - lay.n_dense  # lax.map's last chunk reads past the end
    V = jnp.pad(jnp.moveaxis(V_rows, 2, 0), ((0, n_pad), (0, 0), (0, 0)))

    def jacobian(first, n):  # one fused elementwise pass: [n, R, a_out]
        p = (first + jnp.arange(n)).reshape(n, 1, 1)
        Jg = sum(jnp.where(owner_pos[c][None] == p, Yg[c][None], 0) for c in range(C))
        Vn = lax.dynamic_slice_in_dim(V, first, n, axis=0)
        return Jg + sum(U[j][None] * Vn[:, j, :, None] for j in range(b))

    return LowRank(jacobian, U, V_rows, Yg, owner_pos)
