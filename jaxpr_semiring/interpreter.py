"""The semiring backward pass over a jaxpr.

1. ``flatten``: inline every call-like equation (``jit``, ``closed_call``, ``remat``,
   ``custom_jvp_call``, ``custom_vjp_call``, ``name``) so the graph is one list of nodes, each
   labelled with its module path (the parent's name stack prefixed to the child's relative one),
   then apply the registered path-preserving rewrites (``rules.REWRITES``).
2. ``forward``: evaluate the nodes, storing every primal.
3. ``backward``: seed 1̄ at the output and walk the nodes in reverse; each node's rule turns the
   semiring cotangents of its outputs into ⊕-contributions to its inputs.

Nothing here knows about particular primitives: rules come from :mod:`jaxpr_semiring.rules`.
Higher-order rules (scan, cond) call :func:`backward_jaxpr` on their bodies through
``ctx.backward``.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from . import _compat
from .rules import REWRITES, Ctx, lookup
from .semirings import Semiring

TAP_PREFIX = "jaxpr_semiring.tap:"


class Ref(NamedTuple):
    """A graph variable (all elements of one jaxpr variable)."""
    key: int
    aval: Any


class Const(NamedTuple):
    """A literal or closed-over constant: no node, no edges."""
    value: Any


class Node(NamedTuple):
    primitive: Any
    params: dict
    invars: tuple
    outvars: tuple
    path: str


class Graph(NamedTuple):
    nodes: list
    invars: list   # Refs of the jaxpr's inputs
    outvars: list  # Refs or Consts


_fresh = itertools.count()


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def flatten(jaxpr: jcore.Jaxpr, consts: Sequence, prefix: str = "",
            in_atoms: Sequence | None = None) -> Graph:
    """Inline call-like equations into one list of nodes with fresh variables."""
    if in_atoms is None:
        in_atoms = [Ref(next(_fresh), v.aval) for v in jaxpr.invars]
    nodes: list[Node] = []
    out_atoms = _inline(jaxpr, consts, list(in_atoms), prefix, nodes)
    for rewrite in REWRITES:
        nodes = rewrite(nodes)
    return Graph(nodes, list(in_atoms), out_atoms)


def _inline(jaxpr, consts, in_atoms, prefix, nodes):
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
        if body is not None:
            outs = _inline(body.jaxpr, body.consts, ins[len(ins) - len(body.jaxpr.invars):], path, nodes)
        elif eqn.primitive.name == "name" and not str(eqn.params.get("name", "")).startswith(TAP_PREFIX):
            outs = ins  # checkpoint_name is the identity
        else:
            outs = [Ref(next(_fresh), v.aval) for v in eqn.outvars]
            nodes.append(Node(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs), path))
        for v, a in zip(eqn.outvars, outs):
            env[v] = a
    return [read(v) for v in jaxpr.outvars]


def forward(graph: Graph, args: Sequence) -> dict:
    """Evaluate the graph; returns the primal of every Ref (by key)."""
    env = {r.key: a for r, a in zip(graph.invars, args)}
    for node in graph.nodes:
        vals = [_value(env, a) for a in node.invars]
        outs = _compat.bind(node.primitive, vals, node.params)
        for r, o in zip(node.outvars, outs):
            env[r.key] = o
    return env


def _value(env, atom):
    if isinstance(atom, Const):
        return jnp.asarray(atom.value)
    return env[atom.key]


def reachable(graph: Graph, sources: Sequence[Ref]) -> set:
    """Keys of float variables that some source reaches (only these need cotangents)."""
    reach = {r.key for r in sources if _is_float(r.aval)}
    for node in graph.nodes:
        if any(isinstance(a, Ref) and a.key in reach for a in node.invars):
            reach.update(r.key for r in node.outvars if _is_float(r.aval))
    return reach


class Recorder:
    """Hook for observers of the backward pass (taps): called on every ⊕-contribution."""

    def contribution(self, key: int, value: Any, consumer: Node) -> None:  # pragma: no cover
        pass


def backward(S: Semiring, graph: Graph, env: dict, cts_out: Sequence, wanted_keys: set,
             recorder: Recorder | None = None) -> dict:
    """Reverse walk. ``cts_out`` holds one semiring value (or None) per graph output.

    Returns the accumulated cotangent of every wanted variable that received one.
    """
    cts: dict = {}

    def accumulate(key, value, consumer):
        if recorder is not None:
            recorder.contribution(key, value, consumer)
        cts[key] = value if key not in cts else S.add(cts[key], value)

    for atom, ct in zip(graph.outvars, cts_out):
        if isinstance(atom, Ref) and ct is not None and atom.key in wanted_keys:
            accumulate(atom.key, ct, None)

    def recurse(S_, jaxpr, consts, args, wanted, cts_out_, prefix):
        return backward_jaxpr(S_, jaxpr, consts, args, wanted, cts_out_, prefix, recorder)

    for node in reversed(graph.nodes):
        node_cts = [cts.get(r.key) for r in node.outvars]
        if all(c is None for c in node_cts):
            continue
        wanted = tuple(isinstance(a, Ref) and a.key in wanted_keys for a in node.invars)
        if not any(wanted):
            continue
        rule = lookup(node.primitive, node.path)
        ctx = Ctx(S, wanted, node.path, node.primitive, recurse)
        primals_in = [_value(env, a) for a in node.invars]
        primals_out = [env[r.key] for r in node.outvars]
        cts_in = rule(ctx, primals_in, primals_out, node_cts, **node.params)
        for atom, ct, w in zip(node.invars, cts_in, wanted):
            if w and ct is not None:
                _check_shape(ct, atom.aval, node)
                accumulate(atom.key, ct, node)
    return cts


def _check_shape(ct, aval, node):
    for leaf in _leaves(ct):
        if tuple(leaf.shape[:len(aval.shape)]) != tuple(aval.shape):
            raise ValueError(
                f"The semiring rule for '{node.primitive.name}' (module path '{node.path}') "
                f"returned a cotangent of shape {leaf.shape} for an operand of shape "
                f"{aval.shape}; a rule must return values shaped like its operands.")


def _leaves(v):
    import jax
    return jax.tree.leaves(v)


def backward_jaxpr(S: Semiring, jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence,
                   wanted: Sequence[bool], cts_out: Sequence, prefix: str = "",
                   recorder: Recorder | None = None) -> list:
    """Semiring cotangents of a jaxpr's inputs given those of its outputs.

    ``wanted[i]`` says whether input i needs one; inputs that get no path hold ``None`` (0̄).
    This is what higher-order rules (scan bodies, cond branches) recurse with.
    """
    graph = flatten(jaxpr, consts, prefix)
    env = forward(graph, args)
    sources = [r for r, w in zip(graph.invars, wanted) if w]
    reach = reachable(graph, sources)
    cts = backward(S, graph, env, cts_out, reach, recorder)
    return [cts.get(r.key) if w else None for r, w in zip(graph.invars, wanted)]
