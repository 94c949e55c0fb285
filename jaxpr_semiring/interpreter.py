"""The semiring backward pass over a jaxpr: the one backward walk of the library.

1. :func:`flatten`: inline every call-like equation (``jit``, ``closed_call``, ``remat``,
   ``custom_jvp_call``, ``custom_vjp_call``) so the graph is one list of nodes, each labelled
   with its module path (the parent's name stack prefixed to the child's relative one), then
   apply the registered path-preserving rewrites (``rules.REWRITES``).
2. :func:`forward`: evaluate the nodes, storing every primal.
3. :func:`backward`: seed 1̄ at the output and walk the nodes in reverse; each node's rule turns
   the semiring cotangents of its outputs into ⊕-contributions to its inputs.

:func:`run` does all three. Rules come from :mod:`jaxpr_semiring.rules`; nothing here knows a
primitive. Whoever needs to watch the walk (flow reports, top paths) passes an
:class:`Observer`. Higher-order rules (scan, cond) walk their bodies with
:func:`backward_jaxpr` through ``ctx.backward``.

>>> import jax, jax.numpy as jnp
>>> from jaxpr_semiring import Real
>>> closed = jax.make_jaxpr(lambda x: jnp.sum(x * x))(jnp.ones(2))
>>> out, cts, graph, env = run(Real(), closed, [jnp.array([1.0, 2.0])])
>>> cts[graph.invars[0].key].tolist()
[2.0, 4.0]
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import jax
from jax import lax
from jax.extend import core as jcore

from . import _compat
from .graph import Const, Graph, Node, Ref, aval_of, is_float, new_ref, reachable
from .repeats import MIN_PERIOD, Repeat, find_repeat
from .rules import REWRITES, Ctx, lookup
from .semirings import Semiring

__all__ = [
    "Observer",
    "scan_repeats",
    "flatten",
    "forward",
    "value_of",
    "backward",
    "backward_jaxpr",
    "run",
]


class Observer:
    """Watches the backward walk. Subclasses override what they need; the defaults do nothing.

    The walk calls ``start`` once, then ``contribution`` for every ⊕-contribution, and
    ``cotangent`` for every node output whose cotangent is final, just before the node's rule
    reads it. Only the top-level graph is observed (not the bodies of ``scan``/``cond``).
    """

    def start(self, graph: Graph, env: dict) -> Sequence[Ref]:
        """Before the walk: returns extra variables to differentiate at (besides the inputs)."""
        return ()

    def contribution(self, ref: Ref, value: Any, consumer: Node | None) -> None:
        """``value`` is ⊕-added into ``ref``'s cotangent by ``consumer`` (None: the output seed)."""

    def cotangent(self, ref: Ref, value: Any, producer: Node) -> Any:
        """``ref``'s final cotangent; returns what ``producer``'s rule sees instead."""
        return value


# Whether run() walks repeated blocks as one lax.scan: True, False, or None (automatic: from
# AUTO_SCAN_BLOCKS blocks on). See scan_repeats.
_SCAN_REPEATS = [
    {"1": True, "0": False}.get(os.environ.get("JAXPR_SEMIRING_SCAN_REPEATS", ""), None)
]
# Measured on BERT (benchmarks/RESULTS.md, issue 23): at 12 layers the scanned walk compiles
# 30-40% faster for Log, Entropy and MaxProduct at no measurable runtime cost; at 6 it compiles
# slower for Real and MaxProduct.
AUTO_SCAN_BLOCKS = 12


@contextlib.contextmanager
def scan_repeats(enabled: bool | None = True) -> Iterator[None]:
    """Within this context, :func:`run` (so every ``semiring_grad`` traced in it) walks the
    longest run of repeated blocks of the graph — a transformer's layers — backward as one
    ``lax.scan``: compile time flat in depth. ``enabled=False`` never scans; ``None`` is the
    default outside any context: scan when the run has at least ``AUTO_SCAN_BLOCKS`` (12)
    blocks. ``JAXPR_SEMIRING_SCAN_REPEATS=1`` / ``0`` sets the default to always / never.
    Walks with an observer never scan. Each block's primals and per-block inputs (weights)
    are stacked per call.

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> def f(x):
    ...     for _ in range(4):
    ...         x = x + 0.5 * jnp.tanh(2.0 * x + 1.0)
    ...     return jnp.sum(x)
    >>> with scan_repeats():
    ...     g = js.semiring_grad(f, js.Real())(jnp.ones(3))
    >>> bool(jnp.allclose(g, jax.grad(f)(jnp.ones(3))))
    True
    """
    old = _SCAN_REPEATS[0]
    _SCAN_REPEATS[0] = enabled
    try:
        yield
    finally:
        _SCAN_REPEATS[0] = old


def flatten(
    jaxpr: jcore.Jaxpr, consts: Sequence, prefix: str = "", gradient: bool = False
) -> Graph:
    """Inline call-like equations into one list of nodes with fresh variables. ``gradient``:
    the walk must give jax.grad's numbers (``Semiring.is_gradient``), so rewrites that drop
    multiplications by a zero cotangent are skipped."""
    in_atoms = [new_ref(v.aval) for v in jaxpr.invars]
    nodes: list[Node] = []
    out_atoms = _inline(jaxpr, consts, in_atoms, prefix, nodes)
    keep = frozenset(a.key for a in out_atoms if isinstance(a, Ref))
    for rewrite in REWRITES:
        if not (gradient and getattr(rewrite, "drops_zero_products", False)):
            nodes = rewrite(nodes, keep)
    return Graph(nodes, in_atoms, out_atoms)


def _inline(jaxpr, consts, in_atoms, prefix, nodes, shift=()):
    """``shift``: primitives whose outputs are a stability shift in this body (a constant, as if
    wrapped in ``stop_gradient``: see ``_compat.SHIFT_INVARIANT_BODIES``)."""
    env: dict = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = Const(c)
    for v, a in zip(jaxpr.invars, in_atoms):
        env[v] = a

    def read(x):
        return Const(x.val) if isinstance(x, jcore.Literal) else env[x]

    for eqn in jaxpr.eqns:
        ins = [read(x) for x in eqn.invars]
        path = _compat.join_path(prefix, _compat.name_stack(eqn))
        body = _compat.call_body(eqn)
        if body is not None and not _opaque_elementwise(eqn, body):
            outs = _inline(
                body.jaxpr,
                body.consts,
                ins[len(ins) - len(body.jaxpr.invars) :],
                path,
                nodes,
                shift + _compat.shift_primitives(eqn),
            )
        else:
            outs = [new_ref(v.aval) for v in eqn.outvars]
            nodes.append(Node(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs), path))
            if eqn.primitive.name in shift:
                outs = [_stop_gradient(o, path, nodes) for o in outs]
        for v, a in zip(eqn.outvars, outs):
            env[v] = a
    return [read(v) for v in jaxpr.outvars]


def _reinterprets_bits(jaxpr) -> bool:
    """Whether a body computes floats from the bits of values (``bitcast_convert_type``), in it
    or in a nested call: its equations then hide the real dependency (integers carry no path)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "bitcast_convert_type" and is_float(eqn.outvars[0].aval):
            return True
        inner = _compat.call_body(eqn)
        if inner is not None and _reinterprets_bits(inner.jaxpr):
            return True
    return False


def _opaque_elementwise(eqn, body) -> bool:
    """A ``custom_jvp`` function computed by bit manipulation (jax 0.12's ``gamma``) is one
    elementwise node whose edge weights come from its own JVP rule, as ``jax.grad``'s do; its
    body has no path structure (docs/semantics.md, "Library functions")."""
    if eqn.primitive.name != "custom_jvp_call" or not _reinterprets_bits(body.jaxpr):
        return False
    shape = eqn.outvars[0].aval.shape
    return all(v.aval.shape == shape for v in eqn.outvars) and all(
        len(v.aval.shape) in (0, len(shape)) for v in eqn.invars
    )


def _stop_gradient(ref, path, nodes):
    out = new_ref(ref.aval)
    nodes.append(Node(lax.stop_gradient_p, {}, (ref,), (out,), path))
    return out


def value_of(env: dict, atom) -> Any:
    """The primal of a graph atom: a constant's value or a variable's stored primal."""
    if isinstance(atom, Const):
        return jax.numpy.asarray(atom.value)
    return env[atom.key]


def forward(graph: Graph, args: Sequence) -> dict:
    """Evaluate the graph; returns the primal of every Ref (by key)."""
    env = {r.key: a for r, a in zip(graph.invars, args)}
    for node in graph.nodes:
        outs = _compat.bind(node.primitive, [value_of(env, a) for a in node.invars], node.params)
        for r, o in zip(node.outvars, outs):
            env[r.key] = o
    return env


def backward(
    S: Semiring,
    graph: Graph,
    env: dict,
    cts_out: Sequence,
    wanted_keys: set,
    observer: Observer | None = None,
    repeat: bool | None = False,
) -> dict:
    """The reverse walk. ``cts_out`` holds one semiring value (or None) per graph output.

    Returns the accumulated cotangent of every wanted variable that received one. With
    ``repeat`` (and no observer), the longest run of repeated blocks (:mod:`.repeats`) is
    walked as one ``lax.scan``; its inner variables then hold no cotangent in the result.
    ``repeat=None``: only a run of at least ``AUTO_SCAN_BLOCKS`` blocks.
    """
    cts: dict = {}

    def accumulate(ref, value, consumer):
        if observer is not None:
            observer.contribution(ref, value, consumer)
        cts[ref.key] = value if ref.key not in cts else S.add(cts[ref.key], value)

    for atom, ct in zip(graph.outvars, cts_out):
        if isinstance(atom, Ref) and ct is not None and atom.key in wanted_keys:
            accumulate(atom, ct, None)

    rep = None
    auto = repeat is None
    long_enough = len(graph.nodes) >= AUTO_SCAN_BLOCKS * MIN_PERIOD
    if observer is None and (repeat or (auto and long_enough)):
        rep = find_repeat(graph, wanted_keys)
        if auto and rep is not None and rep.count < AUTO_SCAN_BLOCKS:
            rep = None
    i = len(graph.nodes)
    while i > 0:
        i -= 1
        if rep is not None and i == rep.start + rep.count * rep.period - 1:
            _scan_repeat(S, graph, env, rep, cts, wanted_keys, accumulate)
            i = rep.start
            continue
        node = graph.nodes[i]
        wanted = tuple(isinstance(a, Ref) and a.key in wanted_keys for a in node.invars)
        if not any(wanted) or all(r.key not in cts for r in node.outvars):
            continue
        node_cts = [cts.get(r.key) for r in node.outvars]
        if observer is not None:
            node_cts = [
                None if c is None else observer.cotangent(r, c, node)
                for r, c in zip(node.outvars, node_cts)
            ]
        rule = lookup(node.primitive, node.path)
        ctx = Ctx(S, wanted, node.path, node.primitive, backward_jaxpr)
        primals_in = [value_of(env, a) for a in node.invars]
        primals_out = [env[r.key] for r in node.outvars]
        cts_in = rule(ctx, primals_in, primals_out, node_cts, **node.params)
        for atom, ct, w in zip(node.invars, cts_in, wanted):
            if w and ct is not None:
                _check_shape(ct, atom.aval, node)
                accumulate(atom, ct, node)
    return cts


def _scan_repeat(S, graph, env, rep: Repeat, cts, wanted, accumulate):
    """Walk the blocks of ``rep`` backward as one ``lax.scan`` over a template (block 0 with a
    fresh variable per external input), stacking each block's primals; the carry holds the
    carries' cotangents and the shared inputs' sums, the scan's outputs the per-block inputs'."""
    lo, period, count = rep.start, rep.period, rep.count
    ext0 = rep.externals[0]
    ident = lambda a: ("r", a.key) if isinstance(a, Ref) else ("c", id(a.value))
    slot_of, slots = {}, []
    for kind, a in zip(rep.kinds, ext0):
        if kind == "shared" and isinstance(a, Const):
            slot = a
        else:
            slot = new_ref(aval_of(a))
        slot_of[ident(a)] = slot
        slots.append(slot)
    block0 = graph.nodes[lo : lo + period]
    inner = {r.key: (j, k) for j, n in enumerate(block0) for k, r in enumerate(n.outvars)}
    template = [
        n._replace(
            invars=tuple(
                a if isinstance(a, Ref) and a.key in inner else slot_of.get(ident(a), a)
                for a in n.invars
            )
        )
        for n in block0
    ]
    slot_wanted = [isinstance(a, Ref) and a.key in wanted for a in ext0]
    t_wanted = {k for k in inner if k in wanted}
    t_wanted |= {s.key for s, w in zip(slots, slot_wanted) if w}
    needed = set()
    for n in template:
        if any(isinstance(a, Ref) and a.key in t_wanted for a in n.invars):
            needed |= {a.key for a in n.invars if isinstance(a, Ref)}
            needed |= {r.key for r in n.outvars}
    in_pos = sorted(inner[k] for k in needed if k in inner)
    blk_pos = [
        i
        for i, (kind, s) in enumerate(zip(rep.kinds, slots))
        if kind != "shared" and isinstance(s, Ref) and s.key in needed
    ]
    shared_pos = [i for i, (kind, s) in enumerate(zip(rep.kinds, slots)) if kind == "shared"]
    stack = lambda vals: jax.numpy.stack(vals)
    xs_inner = [
        stack([env[graph.nodes[lo + b * period + j].outvars[k].key] for b in range(count)])
        for j, k in in_pos
    ]
    xs_blk = [stack([value_of(env, rep.externals[b][i]) for b in range(count)]) for i in blk_pos]
    carry_pos = [i for i, k in enumerate(rep.kinds) if k == "carry" and slot_wanted[i]]
    acc_pos = [i for i in shared_pos if slot_wanted[i]]
    out_pos = [i for i, k in enumerate(rep.kinds) if k == "block" and slot_wanted[i]]

    def proto(aval):
        return S.zeros(tuple(aval.shape), aval.dtype)

    def like(value, aval):
        p = proto(aval)
        if value is None:
            return p
        return jax.tree.map(lambda v, q: jax.numpy.asarray(v, q.dtype), value, p)

    last = lo + (count - 1) * period
    carry_refs = [
        graph.nodes[last + rep.carry_out[i][0]].outvars[rep.carry_out[i][1]] for i in carry_pos
    ]
    t_carry_refs = [block0[rep.carry_out[i][0]].outvars[rep.carry_out[i][1]] for i in carry_pos]
    init = (
        [like(cts.get(r.key), r.aval) for r in carry_refs],
        [proto(slots[i].aval) for i in acc_pos],
    )

    def body(carry, xs):
        carry_cts, acc = carry
        vals_inner, vals_blk = xs
        env_b = {}
        for (j, k), v in zip(in_pos, vals_inner):
            env_b[block0[j].outvars[k].key] = v
        for i, v in zip(blk_pos, vals_blk):
            env_b[slots[i].key] = v
        for i in shared_pos:
            if isinstance(slots[i], Ref):
                env_b[slots[i].key] = value_of(env, ext0[i])
        sub = Graph(template, [s for s in slots if isinstance(s, Ref)], t_carry_refs)
        res = backward(S, sub, env_b, carry_cts, t_wanted)
        new_carry = [like(res.get(slots[i].key), slots[i].aval) for i in carry_pos]
        new_acc = [
            S.add(a, like(res[slots[i].key], slots[i].aval)) if slots[i].key in res else a
            for a, i in zip(acc, acc_pos)
        ]
        ys = [like(res.get(slots[i].key), slots[i].aval) for i in out_pos]
        return (new_carry, new_acc), ys

    (carry_cts, acc), ys = lax.scan(body, init, (xs_inner, xs_blk), reverse=True)
    for i, v in zip(carry_pos, carry_cts):
        accumulate(ext0[i], v, None)
    for i, v in zip(acc_pos, acc):
        accumulate(ext0[i], v, None)
    for i, v in zip(out_pos, ys):
        for b in range(count):
            accumulate(rep.externals[b][i], jax.tree.map(lambda y: y[b], v), None)


def _check_shape(ct, aval, node):
    for leaf in jax.tree.leaves(ct):
        if tuple(leaf.shape[: len(aval.shape)]) != tuple(aval.shape):
            raise ValueError(
                f"The semiring rule for '{node.primitive.name}' (module path '{node.path}') "
                f"returned a cotangent of shape {leaf.shape} for an operand of shape "
                f"{aval.shape}; a rule must return values shaped like its operands."
            )


def run(
    S: Semiring,
    closed: jcore.ClosedJaxpr,
    args: Sequence,
    observer: Observer | None = None,
    auto_scan: bool = False,
):
    """Flatten, evaluate and walk backward from 1̄ at the first output of ``closed``.

    Returns ``(outs, cts, graph, env)``: the outputs' primals, the cotangent of every variable
    that received one (by key; the inputs' are ``cts[graph.invars[i].key]``), the graph and
    every primal. Repeated blocks are walked as one scan inside :func:`scan_repeats` and, with
    ``auto_scan`` (callers that read only the inputs' cotangents), from ``AUTO_SCAN_BLOCKS``
    blocks on unless ``scan_repeats(False)``.
    """
    graph = flatten(closed.jaxpr, closed.consts, gradient=S.is_gradient)
    env = forward(graph, args)
    outs = [value_of(env, a) for a in graph.outvars]
    sources = list(graph.invars)
    if observer is not None:
        sources += list(observer.start(graph, env))
    seed = S.ones((), outs[0].dtype)
    repeat = _SCAN_REPEATS[0]  # True / False (scan_repeats, or the environment), else automatic
    if repeat is None and not auto_scan:
        repeat = False
    cts = backward(
        S,
        graph,
        env,
        [seed] + [None] * (len(outs) - 1),
        reachable(graph, sources),
        observer,
        repeat=repeat,
    )
    return outs, cts, graph, env


def backward_jaxpr(
    S: Semiring,
    jaxpr: jcore.Jaxpr,
    consts: Sequence,
    args: Sequence,
    wanted: Sequence[bool],
    cts_out: Sequence,
    prefix: str = "",
) -> list:
    """Semiring cotangents of a jaxpr's inputs given those of its outputs.

    ``wanted[i]`` says whether input i needs one; inputs that get no path hold ``None`` (0̄).
    This is what higher-order rules (scan bodies, cond branches) recurse with.
    """
    graph = flatten(jaxpr, consts, prefix, gradient=S.is_gradient)
    env = forward(graph, args)
    reach = reachable(graph, [r for r, w in zip(graph.invars, wanted) if w])
    cts = backward(S, graph, env, cts_out, reach)
    return [cts.get(r.key) if w else None for r, w in zip(graph.invars, wanted)]
