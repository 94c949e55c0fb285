"""The graph the backward walk runs on: variables (:class:`Ref`), constants, nodes (one
equation each, with its module path), which variables a source reaches, and a global numbering
of their elements (:class:`GraphIndex`, for reading a path back as primitives and indices).

Integer and boolean values are structure (they choose edges), never nodes: :func:`is_float`.

>>> import jax.numpy as jnp
>>> is_float(jnp.zeros(2)), is_float(jnp.zeros(2, jnp.int32))
(True, False)
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Ref",
    "Const",
    "Node",
    "Graph",
    "new_ref",
    "aval_of",
    "is_float",
    "reachable",
    "GraphIndex",
    "unravel",
]


def is_float(x) -> bool:
    """Whether ``x`` (an array, aval or dtype) holds real numbers: a node of the graph. Integer
    and boolean values are structure (they choose edges), never nodes."""
    return jnp.issubdtype(getattr(x, "dtype", x), jnp.inexact)


class Ref(NamedTuple):
    """A graph variable (all elements of one jaxpr variable)."""

    key: int
    aval: Any


_keys = itertools.count()


def new_ref(aval) -> Ref:
    """A variable whose key no other variable has (every graph draws its keys here)."""
    return Ref(next(_keys), aval)


def aval_of(atom) -> Any:
    """A variable's aval, or a constant's (closed-over weights and literals are constants)."""
    return atom.aval if isinstance(atom, Ref) else jax.typeof(atom.value)


class Const(NamedTuple):
    """A literal or closed-over constant: no node, no edges."""

    value: Any


class Node(NamedTuple):
    """One equation: ``outvars = primitive(*invars, **params)``, at module path ``path``."""

    primitive: Any
    params: dict
    invars: tuple
    outvars: tuple
    path: str


class Graph(NamedTuple):
    nodes: list
    invars: list  # Refs of the jaxpr's inputs
    outvars: list  # Refs or Consts


def reachable(graph: Graph, sources: Sequence[Ref]) -> set:
    """Keys of float variables that some source reaches (only these need cotangents)."""
    reach = {r.key for r in sources if is_float(r.aval)}
    for node in graph.nodes:
        if any(isinstance(a, Ref) and a.key in reach for a in node.invars):
            reach.update(r.key for r in node.outvars if is_float(r.aval))
    return reach


class GraphIndex:
    """Global element numbers of a graph's reachable float variables, and what produced each
    variable (for reading a path back as primitives, module paths and indices)."""

    def __init__(self, graph):
        refs, labels = [], []
        for r in graph.invars:
            refs.append(r)
            labels.append(("<input>", ""))
        leaf_keys = {r.key: i for i, r in enumerate(graph.invars)}
        for node in graph.nodes:
            for r in node.outvars:
                refs.append(r)
                labels.append((node.primitive.name, node.path))
        reach = reachable(graph, graph.invars)
        keep = [i for i, r in enumerate(refs) if r.key in reach and is_float(r.aval)]
        self.keys = [refs[i].key for i in keep]
        self.shapes = [tuple(refs[i].aval.shape) for i in keep]
        self.labels = [labels[i] for i in keep]
        self.leaf_of = {v: leaf_keys[k] for v, k in enumerate(self.keys) if k in leaf_keys}
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.offset_of = {k: int(o) for k, o in zip(self.keys, self.offsets)}
        self.size = int(self.offsets[-1])
        self.max_steps = len(graph.nodes)
        if 2 * self.size + 1 >= 2**31:
            raise ValueError(
                f"top_path: the graph has {self.size} reachable elements, too many for "
                f"int32 pointers."
            )

    def locate(self, element: int) -> tuple[int, tuple]:
        """(variable number, index tuple) of a global element number."""
        v = int(np.searchsorted(self.offsets, element, side="right") - 1)
        return v, unravel(element - int(self.offsets[v]), self.shapes[v])


def unravel(elem, shape) -> tuple:
    """The index tuple of flat element ``elem`` in ``shape`` (``()`` for a scalar)."""
    shape = tuple(shape)
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(elem, shape))
