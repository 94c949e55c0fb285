"""Repeated blocks in a flattened graph: the layers of a transformer, found from the graph alone.

A *repeat* is ``count`` consecutive runs of ``period`` nodes that are the same computation with
other operands: node for node the same primitive, parameters and shapes, wired the same way
relative to the run's start. Whatever a block reads from outside itself is an *external input*
(numbered in order of first use), of one of three kinds, the same in every block:

- *carry*: an output of the previous block (block 0 reads it from before the repeat), at the
  same position in every block: the residual stream;
- *shared*: the same atom in every block (an attention mask, a literal);
- *per-block*: anything else made before the repeat (each layer's weights).

Outside the repeat, only the next block (and, for the last block, what follows the repeat) may
read a block's values, and only its carries. Nodes with no float output (masks, indices) are
never walked: only their primals count, so their operands and parameters may differ.
:func:`find_repeat` returns the longest such repeat, or None; the interpreter walks its blocks
backward as one ``lax.scan`` (compile time flat in depth), and nothing here knows a semiring.

>>> import jax, jax.numpy as jnp
>>> from jaxpr_semiring import interpreter
>>> def f(x):
...     for _ in range(4):
...         x = x + 0.5 * jnp.tanh(2.0 * x + 1.0)
...     return jnp.sum(x)
>>> g = interpreter.flatten(jax.make_jaxpr(f)(jnp.ones(3)).jaxpr, [])
>>> r = find_repeat(g, {a.key for n in g.nodes for a in n.outvars} | {g.invars[0].key})
>>> r.count, r.period, r.kinds
(4, 5, ('shared', 'carry', 'shared', 'shared'))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .graph import Const, Graph, Ref, is_float

__all__ = ["Repeat", "find_repeat", "MIN_PERIOD"]

MIN_PERIOD = 4  # shorter blocks save too little compile time to pay for a scan


class Repeat(NamedTuple):
    """``count`` blocks of ``period`` nodes from node ``start`` (see the module docstring)."""

    start: int
    period: int
    count: int
    kinds: tuple  # per external input: "carry", "shared" or "block"
    externals: tuple  # per block: the tuple of its external atoms (Refs or Consts)
    carry_out: tuple  # per external input: (node offset, output index) feeding it; else None


def _param_key(params: dict):
    items = []
    for k in sorted(params):
        v = params[k]
        try:
            hash(v)
            items.append((k, v))
        except TypeError:
            items.append((k, repr(v)))
    return tuple(items)


def _aval_key(aval):
    return (tuple(aval.shape), str(aval.dtype))


def _outs_key(node):
    return tuple(_aval_key(r.aval) for r in node.outvars)


def _structure(node) -> bool:
    """A node with no float output (a mask, an index: ``slice`` of the layer number): never
    walked, so only its primal matters, which the forward pass computed for every block. Its
    operands and parameters may differ between blocks."""
    return not any(is_float(r.aval) for r in node.outvars)


def _signatures(graph: Graph) -> np.ndarray:
    """One integer per node: equal when primitive, parameters and operand shapes are."""
    table: dict = {}
    out = []
    for node in graph.nodes:
        if _structure(node):
            out.append(table.setdefault(("structure", _outs_key(node)), len(table)))
            continue
        ins = tuple(
            ("c", np.shape(a.value), str(getattr(a.value, "dtype", type(a.value))))
            if isinstance(a, Const)
            else _aval_key(a.aval)
            for a in node.invars
        )
        try:
            key = (
                node.primitive.name,
                _param_key(node.params),
                ins,
                _outs_key(node),
            )
            out.append(table.setdefault(key, len(table)))
        except TypeError:  # an unhashable parameter repr: never part of a repeat
            out.append(-1 - len(out))
    return np.asarray(out, dtype=np.int64)


def _candidates(sig: np.ndarray, limit: int = 4) -> list:
    """(saved nodes, period, run start, run length) of the best periodic runs of signatures."""
    n = len(sig)
    best = []
    for p in range(MIN_PERIOD, n // 2 + 1):
        match = np.concatenate([[False], sig[:-p] == sig[p:], [False]])
        edges = np.flatnonzero(np.diff(match.astype(np.int8)))
        starts, ends = edges[::2], edges[1::2]
        if not len(starts):
            continue
        lengths = ends - starts
        i = int(np.argmax(lengths))
        count = int(lengths[i]) // p + 1
        if count >= 2:
            best.append(((count - 1) * p, p, int(starts[i]), int(lengths[i])))
    best.sort(key=lambda c: (-c[0], c[1]))
    return best[:limit]


def _same_const(a: Const, b: Const) -> bool:
    if a.value is b.value:
        return True
    try:
        x, y = np.asarray(a.value), np.asarray(b.value)
    except Exception:  # a tracer closed over from an outer jit
        return False
    return x.size <= 4096 and x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)


def _check(graph, reach, producer, users, start, period, count):
    """The Repeat of these blocks, or None if they are not one (module docstring)."""
    nodes = graph.nodes
    wiring, externals = [], []
    for b in range(count):
        lo = start + b * period
        local, ext, ext_pos, wire = {}, [], {}, []
        for j in range(period):
            node = nodes[lo + j]
            row = []
            for a in () if _structure(node) else node.invars:
                if isinstance(a, Ref) and a.key in local:
                    row.append(("i",) + local[a.key] + (a.key in reach,))
                    continue
                ident = ("r", a.key) if isinstance(a, Ref) else ("c", id(a.value))
                if ident not in ext_pos:
                    ext_pos[ident] = len(ext)
                    ext.append(a)
                wanted = isinstance(a, Ref) and a.key in reach
                row.append(("e", ext_pos[ident], wanted))
            row.append(tuple(r.key in reach for r in node.outvars))
            wire.append(tuple(row))
            for k, r in enumerate(node.outvars):
                local[r.key] = (j, k)
        if wiring and wire != wiring[0]:
            return None
        wiring.append(wire)
        externals.append(tuple(ext))
    n_ext = len(externals[0])
    kinds, carry_out = [], []
    end = start + count * period
    for i in range(n_ext):
        col = [e[i] for e in externals]
        if all(
            (isinstance(a, Ref) and isinstance(col[0], Ref) and a.key == col[0].key)
            or (isinstance(a, Const) and isinstance(col[0], Const) and _same_const(a, col[0]))
            for a in col[1:]
        ):
            kinds.append("shared")
            carry_out.append(None)
            continue
        srcs = set()
        for b, a in enumerate(col[1:], start=1):
            p = producer.get(a.key) if isinstance(a, Ref) else None
            lo = start + (b - 1) * period
            if p is None or not lo <= p < lo + period:
                srcs = None
                break
            srcs.add((p - lo, nodes[p].outvars.index(a)))
        if srcs is not None and len(srcs) == 1:
            kinds.append("carry")
            carry_out.append(srcs.pop())
        else:
            kinds.append("block")
            carry_out.append(None)
        # block 0's atom (and every per-block one) must come from before the repeat
        firsts = col if kinds[-1] == "block" else col[:1]
        for a in firsts:
            if isinstance(a, Ref) and producer.get(a.key, -1) >= start:
                return None
    carries = {c for c in carry_out if c is not None}
    # outside its block, a value is read only as a carry: by the next block, or after the repeat
    for b in range(count):
        lo = start + b * period
        for j in range(period):
            for k, r in enumerate(nodes[lo + j].outvars):
                for u in users.get(r.key, ()):
                    if u < len(nodes) and _structure(nodes[u]):
                        continue
                    inside = lo <= u < lo + period
                    if not inside and ((j, k) not in carries or (b < count - 1 and u >= end)):
                        return None
    return Repeat(start, period, count, tuple(kinds), tuple(externals), tuple(carry_out))


def find_repeat(graph: Graph, reach: set) -> Repeat | None:
    """The repeat covering the most nodes (module docstring), or None. ``reach``: the keys of
    the variables that need cotangents (their pattern must be the same in every block)."""
    if len(graph.nodes) < 2 * MIN_PERIOD:
        return None
    producer, users = {}, {}
    for i, node in enumerate(graph.nodes):
        for r in node.outvars:
            producer[r.key] = i
        for a in node.invars:
            if isinstance(a, Ref):
                users.setdefault(a.key, []).append(i)
    for a in graph.outvars:
        if isinstance(a, Ref):
            users.setdefault(a.key, []).append(len(graph.nodes))
    for _, period, run_start, run_len in _candidates(_signatures(graph)):
        count = run_len // period + 1
        # drop up to one block at either end (a partial first or last layer), any phase
        for c in range(count, max(count - 2, 1), -1):
            for start in range(run_start, run_start + (count - c) * period + period):
                if start + c * period > run_start + run_len + period:
                    break
                r = _check(graph, reach, producer, users, start, period, c)
                if r is not None:
                    return r
    return None
