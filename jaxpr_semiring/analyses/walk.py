"""A forward walk along one path, after one backward pass: what sampling and the top path share.

After one backward walk has left a value at every element (``Log``'s Z for
:func:`~jaxpr_semiring.sample_paths`, ``MaxProduct``'s best products for
:func:`~jaxpr_semiring.top_path`), a path is found going forward from its start element: at
element e, each equation that reads e's variable (a *consumer*; the output's seed is the
*stop*) offers the elements its Jacobian row at e reaches (:mod:`.rows`), and the walk picks
one. A :class:`Walk` holds what every such walk needs: the equations grouped by
:func:`~.rows.signature` (one branch of a ``lax.switch`` per group, its members' operands
stacked once, so compile time follows the distinct equations, not their count) and, per
variable, its consumers in one flat table. A subclass gives each group its step
(``self.steps``, one per group, then one for "no consumer").

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> from jaxpr_semiring.api import backprop
>>> seen = Consumers()
>>> b = backprop(lambda x: jnp.sin(x) * x, js.Log(), 0, False, seen)(1.0)
>>> sorted(map(sorted, seen.of.values()))     # x: sin (0), mul (1); sin: mul; the output: stop
[[-1], [0, 1], [1]]
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..graph import Ref, reachable
from ..interpreter import Observer
from .rows import signature

__all__ = ["Consumers", "Walk", "STOP"]

STOP = -1  # the output's "consumer": the path ends there


class Consumers(Observer):
    """Records, per variable, the equations whose ⊕-contributions reach it (by position in the
    graph, its operand slots counted once; the output's seed as :data:`STOP`). Structure only:
    it keeps no values, so the backward pass compiles as without it."""

    def __init__(self):
        self.order: dict = {}
        self.of: dict = {}

    def start(self, graph, env):
        self.order = {id(node): i for i, node in enumerate(graph.nodes)}
        return ()

    def contribution(self, ref, value, consumer):
        j = STOP if consumer is None else self.order[id(consumer)]
        self.of.setdefault(ref.key, set()).add(j)


class Walk:
    """The groups, the branch table and the consumer table of a walk over ``graph`` from the
    variables ``start_vars`` (numbers in ``index``); ``check(node)`` may refuse an equation a
    path could cross."""

    def __init__(self, graph, env, consumers: dict, index, start_vars, check=None):
        self.g, self.env, self.index = graph, env, index
        self.var_of = {k: v for v, k in enumerate(index.keys)}
        self.n_steps = max(1, len(graph.nodes))
        live = reachable(graph, [graph.invars[index.leaf_of[v]] for v in start_vars])
        groups: dict = {}
        for t, node in enumerate(graph.nodes):
            if not any(self.numbered(a) and a.key in live for a in node.invars):
                continue
            if check is not None:
                check(node)
            numbered_in = [self.numbered(a) for a in node.invars]
            numbered_out = [r.key in self.var_of for r in node.outvars]
            if any(numbered_out):  # else no path continues through it: never chosen
                groups.setdefault(signature(node, numbered_in, numbered_out), []).append(t)
        self.groups = list(groups.values())
        # equations off every path, and the output's stop, go to a last branch (no path)
        group_of = np.full(len(graph.nodes) + 1, len(self.groups), np.int32)
        member_of = np.zeros(len(graph.nodes) + 1, np.int32)
        for gi, ts in enumerate(self.groups):
            group_of[ts], member_of[ts] = gi, np.arange(len(ts))
        self.group_of, self.member_of = jnp.asarray(group_of), jnp.asarray(member_of)
        # per variable, its consumer equations (the output's stop as −1), in one flat table
        lists = [sorted(consumers.get(k, ())) for k in index.keys]
        self.count = jnp.asarray([len(c) for c in lists], jnp.int32)
        self.first = jnp.asarray(np.cumsum([0] + [len(c) for c in lists])[:-1], jnp.int32)
        flat = [j for c in lists for j in c] or [STOP]  # a filler no count ever reaches
        self.consumer = jnp.asarray(flat, jnp.int32)
        self.m_max = max([1] + [len(c) for c in lists])
        self.offsets = jnp.asarray(index.offsets, jnp.int32)
        self.steps: list = []

    def numbered(self, a) -> bool:
        return isinstance(a, Ref) and a.key in self.var_of

    def consumer_at(self, var, i):
        """(consumer equation i of ``var``, whether it is the stop)."""
        j = self.consumer[self.first[var] + i]
        return j, j == STOP

    def enter(self, j, is_stop, *operands):
        """Run equation j's step (the stop: the last branch, which finds no path)."""
        at = jnp.where(is_stop, self.n_steps, j)
        return lax.switch(self.group_of[at], self.steps, self.member_of[at], *operands)

    def locate(self, gid):
        """(variable, flat element) of a global element number, traced."""
        var = (jnp.searchsorted(self.offsets, gid, side="right") - 1).astype(jnp.int32)
        return var, (gid - self.offsets[var]).astype(jnp.int32)
