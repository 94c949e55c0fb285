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

import itertools
from typing import Any, Sequence

import jax
from jax import lax
from jax.extend import core as jcore

from . import _compat
from .graph import Const, Graph, Node, Ref, is_float, reachable
from .rules import REWRITES, Ctx, lookup
from .semirings import Semiring

__all__ = ["Observer", "flatten", "forward", "value_of", "backward", "backward_jaxpr", "run"]


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


_fresh = itertools.count()


def flatten(jaxpr: jcore.Jaxpr, consts: Sequence, prefix: str = "") -> Graph:
    """Inline call-like equations into one list of nodes with fresh variables."""
    in_atoms = [Ref(next(_fresh), v.aval) for v in jaxpr.invars]
    nodes: list[Node] = []
    out_atoms = _inline(jaxpr, consts, in_atoms, prefix, nodes)
    for rewrite in REWRITES:
        nodes = rewrite(nodes)
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
            outs = [Ref(next(_fresh), v.aval) for v in eqn.outvars]
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
    out = Ref(next(_fresh), ref.aval)
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
) -> dict:
    """The reverse walk. ``cts_out`` holds one semiring value (or None) per graph output.

    Returns the accumulated cotangent of every wanted variable that received one.
    """
    cts: dict = {}

    def accumulate(ref, value, consumer):
        if observer is not None:
            observer.contribution(ref, value, consumer)
        cts[ref.key] = value if ref.key not in cts else S.add(cts[ref.key], value)

    for atom, ct in zip(graph.outvars, cts_out):
        if isinstance(atom, Ref) and ct is not None and atom.key in wanted_keys:
            accumulate(atom, ct, None)

    for node in reversed(graph.nodes):
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


def _check_shape(ct, aval, node):
    for leaf in jax.tree.leaves(ct):
        if tuple(leaf.shape[: len(aval.shape)]) != tuple(aval.shape):
            raise ValueError(
                f"The semiring rule for '{node.primitive.name}' (module path '{node.path}') "
                f"returned a cotangent of shape {leaf.shape} for an operand of shape "
                f"{aval.shape}; a rule must return values shaped like its operands."
            )


def run(S: Semiring, closed: jcore.ClosedJaxpr, args: Sequence, observer: Observer | None = None):
    """Flatten, evaluate and walk backward from 1̄ at the first output of ``closed``.

    Returns ``(outs, cts, graph, env)``: the outputs' primals, the cotangent of every variable
    that received one (by key; the inputs' are ``cts[graph.invars[i].key]``), the graph and
    every primal.
    """
    graph = flatten(closed.jaxpr, closed.consts)
    env = forward(graph, args)
    outs = [value_of(env, a) for a in graph.outvars]
    sources = list(graph.invars)
    if observer is not None:
        sources += list(observer.start(graph, env))
    seed = S.ones((), outs[0].dtype)
    cts = backward(
        S, graph, env, [seed] + [None] * (len(outs) - 1), reachable(graph, sources), observer
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
    graph = flatten(jaxpr, consts, prefix)
    env = forward(graph, args)
    reach = reachable(graph, [r for r, w in zip(graph.invars, wanted) if w])
    cts = backward(S, graph, env, cts_out, reach)
    return [cts.get(r.key) if w else None for r, w in zip(graph.invars, wanted)]
