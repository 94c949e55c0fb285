"""The top gradient path itself (paper §4.2, App. A): one backward pass, then pointer chasing.

``top_path(fun, argnums=0, at=None)(*args)`` returns a :class:`Path`: the edges from one input
element to the scalar output whose product of local derivatives is that element's max-product
value (``top_pos``; ``chain="top_neg"`` for the most negative).

How: the one backward walk runs with :class:`~jaxpr_semiring.analyses.pointer.PointerMaxProduct`,
whose values carry, per chain, a pointer to the next node of the best path and the weight of
the edge to it. A :class:`PointerObserver` gives every element of every reachable variable a
global number and, just before a node's rule reads its outputs' values, re-points them to those
outputs' own elements; so after the walk every node points to the next node of its best path.
Following the pointers from the start element is a ``lax.while_loop`` over one table: the
whole thing is jittable and vmappable (``jax.vmap`` over sentences gives a batched
:class:`Path`; ``jax.tree.map(lambda a: a[i], paths)`` picks one).

A ``scan`` or ``cond`` is one step of a path (from an operand element to a result element, its
weight the product along the best path inside).

NaN: a path of product NaN beats every number (docs/semantics.md, "NaN"), so on a graph with a
NaN weight the top path of an element whose value is NaN is a path of product NaN, and
:attr:`Path.nan_step` names its first edge where the running product turns NaN (the NaN edge:
its primitive, module path and element); ``str(path)`` says so in its first line.

>>> import jax, jax.numpy as jnp, jaxpr_semiring as js
>>> f = lambda x, y: jnp.exp(x) + (x - y) * y       # paper Fig. 1
>>> p = jax.jit(js.top_path(f, argnums=1))(1.0, 2.0)
>>> [s.primitive for s in p.steps], p.product
(['mul', 'add'], -1.0)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..api import backprop, normalize_argnums
from ..graph import Const, GraphIndex, unravel
from ..interpreter import Observer
from .pointer import PointerMaxProduct, PointerValue

__all__ = [
    "top_path",
    "Path",
    "PathStep",
    "GraphIndex",
    "PointerObserver",
    "CHAINS",
    "start_element",
    "unravel",
]

CHAINS = ("top_pos", "top_neg")


class PointerObserver(Observer):
    """Numbers every element of every reachable float variable and re-points each node's output
    values to those numbers before the node's rule reads them (see the module docstring)."""

    def __init__(self):
        self.index: GraphIndex | None = None

    def start(self, graph, env):
        self.index = GraphIndex(graph)
        return ()

    def cotangent(self, ref, value, producer):
        off = self.index.offset_of.get(ref.key)
        if off is None:
            return value
        shape = ref.aval.shape
        ids = 2 * (
            off + jnp.arange(int(np.prod(shape, dtype=np.int64)), dtype=jnp.int32).reshape(shape)
        )
        one = jnp.ones(shape, value.top_pos.dtype)
        return PointerValue(value.top_pos, value.top_neg, ids, ids + 1, one, one)


def _no_path(value) -> bool:
    """Whether a start value means "no path": 0̄ (±inf), not NaN (a path of product NaN)."""
    return bool(np.isinf(value))


class PathStep(NamedTuple):
    """One edge of the path: into element ``index`` of the output of equation ``primitive``.

    ``weight`` is the edge's local derivative, ``product`` the running product from the input
    element through this edge, ``chain`` which max-product chain the path follows from here
    (``top_pos``/``top_neg``), ``remaining`` the product of the rest of the path (the best
    product from here to the output): ``product · remaining`` is the path's total.
    """

    primitive: str
    path: str
    shape: tuple
    index: tuple
    weight: float
    product: float
    chain: str
    remaining: float


class Path:
    """A path from one input element to the output: a top gradient path, or a sampled one
    (:func:`jaxpr_semiring.sample_paths`, ``chain="sampled"``).

    A pytree of arrays (so ``jax.jit`` / ``jax.vmap`` return it): ``ids`` (2 × the global number
    of each element reached + its max-product chain, −1 past the end), ``weights`` (each edge's
    local derivative), ``start`` (the start element's global number), ``value`` (its
    max-product value; a sampled path's product). Read it with
    ``steps`` (a list of :class:`PathStep`), ``product`` (of the weights; equals ``value`` up to
    float rounding), ``len()``, iteration, ``str()`` (a table), ``to_dicts()``.
    """

    def __init__(self, ids, weights, start, value, index: GraphIndex, chain: str):
        self.ids, self.weights_array, self.start_id, self.value_array = ids, weights, start, value
        self.index, self.chain = index, chain

    def _concrete(self):
        try:
            return (
                np.asarray(self.ids),
                np.asarray(self.weights_array),
                int(self.start_id),
                float(self.value_array),
            )
        except (
            jax.errors.TracerArrayConversionError,
            jax.errors.ConcretizationTypeError,
            TypeError,
        ) as e:
            raise TypeError(
                "A Path is read on concrete values: return it from the jitted "
                "function and read it outside (a batched Path: pick one with "
                "jax.tree.map(lambda a: a[i], path))."
            ) from e

    @property
    def value(self) -> float:
        return self._concrete()[3]

    @property
    def start(self) -> dict:
        """``{"leaf": differentiated leaf, "index": index tuple, "shape": its shape}``."""
        v, idx = self.index.locate(self._concrete()[2])
        return {"leaf": self.index.leaf_of[v], "index": idx, "shape": self.index.shapes[v]}

    @property
    def steps(self) -> list[PathStep]:
        ids, weights, _, value = self._concrete()
        if _no_path(value):
            raise ValueError(
                f"top_path: input element {self.start['index']} has no path to the output."
            )
        n = int(np.sum(ids >= 0))
        w = [float(x) for x in weights[:n]]
        products = np.cumprod(w) if n else []
        steps = []
        for k in range(n):
            v, idx = self.index.locate(int(ids[k]) // 2)
            prim, path = self.index.labels[v]
            remaining = float(np.prod(w[k + 1 :])) if k + 1 < n else 1.0
            chain = CHAINS[int(ids[k]) % 2] if self.chain in CHAINS else self.chain
            steps.append(
                PathStep(
                    prim,
                    path,
                    self.index.shapes[v],
                    idx,
                    w[k],
                    float(products[k]),
                    chain,
                    remaining,
                )
            )
        return steps

    @property
    def nan_step(self) -> int | None:
        """Index into :attr:`steps` of the edge where the running product first turns NaN (a
        NaN weight, or 0·inf), None when the product is a number."""
        for k, step in enumerate(self.steps):
            if np.isnan(step.product):
                return k
        return None

    @property
    def nan_edge(self) -> PathStep | None:
        """The step of :attr:`nan_step` (the NaN edge), or None."""
        k = self.nan_step
        return None if k is None else self.steps[k]

    @property
    def product(self) -> float:
        return float(np.prod([s.weight for s in self.steps])) if self.steps else 1.0

    @property
    def weights(self) -> list:
        return [s.weight for s in self.steps]

    def __len__(self):
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, i):
        return self.steps[i]

    def to_dicts(self) -> list:
        return [s._asdict() for s in self.steps]

    def __str__(self):
        st = self.start
        kind, what = (
            ("top gradient path", self.chain)
            if self.chain in CHAINS
            else (f"{self.chain} path", "product")
        )
        head = (
            f"{kind} ({what} = {self.value:.6g}) from input leaf {st['leaf']} "
            f"element {st['index']} of shape {st['shape']}: {len(self)} edges"
        )
        k = self.nan_step
        if k is not None:
            e = self.steps[k]
            head += (
                f"; NaN from edge {k + 1}: {e.primitive} at {e.path or '-'} element {e.index} "
                f"(weight {e.weight:.4g})"
            )
        rows = [("#", "primitive", "module path", "index", "weight", "product", "chain")]
        for i, s in enumerate(self.steps, 1):
            rows.append(
                (
                    str(i),
                    s.primitive,
                    s.path or "-",
                    str(s.index),
                    f"{s.weight:.4g}",
                    f"{s.product:.4g}",
                    s.chain,
                )
            )
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        widths[2] = min(widths[2], 70)

        def fmt(r):
            path = r[2] if len(r[2]) <= widths[2] else "…" + r[2][-(widths[2] - 1) :]
            cells = [
                r[0].rjust(widths[0]),
                r[1].ljust(widths[1]),
                path.ljust(widths[2]),
                r[3].ljust(widths[3]),
                r[4].rjust(widths[4]),
                r[5].rjust(widths[5]),
                r[6],
            ]
            return "  ".join(cells)

        return "\n".join([head] + [fmt(r) for r in rows])

    def __repr__(self):
        try:
            return f"Path({self.chain}={self.value:.6g}, {len(self)} steps)"
        except (TypeError, ValueError):
            return f"Path({self.chain}, traced)"


jax.tree_util.register_pytree_node(
    Path,
    lambda p: ((p.ids, p.weights_array, p.start_id, p.value_array), (p.index, p.chain)),
    lambda aux, ch: Path(*ch, *aux),
)


def start_element(graph, at, leaf: int | None, who: str) -> tuple[int, int]:
    """(differentiated leaf, flat element) that ``at`` (a flat int or an index tuple) and
    ``leaf`` name, checked: a one-line error for a missing ``leaf=`` or an index out of range."""
    if leaf is None and len(graph.invars) != 1:
        raise ValueError(
            f"{who}: {len(graph.invars)} differentiated leaves; say which one `at` "
            f"refers to with leaf=."
        )
    li = 0 if leaf is None else int(leaf)
    shape = tuple(graph.invars[li].aval.shape)
    elem = int(at) if np.ndim(at) == 0 else int(np.ravel_multi_index(tuple(at), shape))
    if not 0 <= elem < max(1, int(np.prod(shape))):
        raise IndexError(f"{who}: element {at} out of range for shape {shape}")
    return li, elem


def chase(ptr_table, w_table, first: int | jax.Array, max_steps: int):
    """Follow pointers from table entry ``first`` until −1: (ids [max_steps], weights)."""
    ids0 = jnp.full((max_steps,), -1, jnp.int32)
    w0 = jnp.zeros((max_steps,), w_table.dtype)

    def cond(state):
        k, cur, _, _ = state
        return (k < max_steps) & (cur >= 0) & (ptr_table[jnp.maximum(cur, 0)] >= 0)

    def body(state):
        k, cur, ids, ws = state
        nxt = ptr_table[cur]
        return k + 1, nxt, ids.at[k].set(nxt), ws.at[k].set(w_table[cur])

    _, _, ids, ws = lax.while_loop(
        cond, body, (jnp.int32(0), jnp.asarray(first, jnp.int32), ids0, w0)
    )
    return ids, ws


def top_path(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    at: Any = None,
    *,
    leaf: int | None = None,
    chain: str = "top_pos",
    has_aux: bool = False,
    kernel: str = "auto",
) -> Callable:
    """The top gradient path of scalar ``fun`` (paper App. A), as a function of ``fun``'s
    arguments returning a :class:`Path`. Jittable and vmappable.

    Args:
      argnums: differentiated arguments, as in :func:`jaxpr_semiring.semiring_grad`.
      at: the input element the path starts from: an int (flat index) or a tuple (array
        index) into the flattened differentiated leaf ``leaf``. Default: the element with the
        largest ``top_pos`` over all differentiated leaves (smallest ``top_neg`` for
        ``chain="top_neg"``); a NaN value counts as the largest (and smallest), so on a graph
        with a NaN path the default path is one of product NaN (:attr:`Path.nan_edge`).
      leaf: which leaf of the flattened differentiated arguments ``at`` refers to (needed when
        there are several).
      chain: ``"top_pos"`` (most positive path) or ``"top_neg"`` (most negative path).
      kernel: the max-product contraction kernel (see :mod:`jaxpr_semiring.kernels`).
    """
    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
    bit = CHAINS.index(chain)
    normalize_argnums(argnums)
    S = PointerMaxProduct(kernel)

    def path_f(*args, **kwargs) -> Path:
        observer = PointerObserver()
        b = backprop(fun, S, argnums, has_aux, observer)(*args, **kwargs)
        if isinstance(b.graph.outvars[0], Const):
            raise ValueError("top_path: the output is a constant; no input reaches it.")
        index = observer.index
        leaves = [b.cotangents.get(r.key) for r in b.graph.invars]
        # the start element's global number and value
        if at is None:
            cands = []
            for r, v in zip(b.graph.invars, leaves):
                if v is None or r.key not in index.offset_of or not v.top_pos.size:
                    continue
                vals = getattr(v, chain).ravel()
                cands.append(
                    (vals, index.offset_of[r.key] + jnp.arange(vals.size, dtype=jnp.int32))
                )
            if not cands:
                raise ValueError("top_path: no differentiated input element reaches the output.")
            vals = jnp.concatenate([c[0] for c in cands])
            gids = jnp.concatenate([c[1] for c in cands])
            best = jnp.argmax(vals) if chain == "top_pos" else jnp.argmin(vals)  # NaN first
            start, value = gids[best], vals[best]
        else:
            li, elem = start_element(b.graph, at, leaf, "top_path")
            ref, v = b.graph.invars[li], leaves[li]
            shape = tuple(ref.aval.shape)
            if v is None or ref.key not in index.offset_of:
                raise ValueError(
                    f"top_path: input element {unravel(elem, shape)} has no path to the output."
                )
            start = index.offset_of[ref.key] + elem
            value = getattr(v, chain).ravel()[elem]
        ptr_table, w_table = _tables(index, b.cotangents)
        ids, weights = chase(ptr_table, w_table, 2 * start + bit, index.max_steps)
        path = Path(ids, weights, jnp.asarray(start, jnp.int32), value, index, chain)
        try:
            dead = _no_path(float(value))
        except jax.errors.ConcretizationTypeError:  # traced: Path.steps says so when read
            dead = False
        if dead:
            raise ValueError(
                f"top_path: input element {path.start['index']} has no path to the output."
            )
        return path

    return path_f


def _tables(index: GraphIndex, cotangents: dict):
    """The pointer and edge-weight tables, entry 2·id + chain for every numbered element."""
    ptrs, ws = [], []
    dt = None
    for key, shape in zip(index.keys, index.shapes):
        v = cotangents.get(key)
        if v is not None:
            dt = v.pos_w.dtype
            break
    dt = dt or jnp.float32
    for key, shape in zip(index.keys, index.shapes):
        v = cotangents.get(key)
        n = int(np.prod(shape, dtype=np.int64))
        if v is None:
            ptrs.append(jnp.full((2 * n,), -1, jnp.int32))
            ws.append(jnp.zeros((2 * n,), dt))
        else:
            ptrs.append(jnp.stack([v.pos_ptr.ravel(), v.neg_ptr.ravel()], -1).ravel())
            ws.append(jnp.stack([v.pos_w.ravel(), v.neg_w.ravel()], -1).ravel().astype(dt))
    return jnp.concatenate(ptrs), jnp.concatenate(ws)
