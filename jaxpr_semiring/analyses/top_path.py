"""The top gradient path itself (paper §4.2, App. A): one backward pass, then a forward walk.

``top_path(fun, argnums=0, at=None)(*args)`` returns a :class:`Path`: the edges from one input
element to the scalar output whose product of local derivatives is that element's max-product
value (``top_pos``; ``chain="top_neg"`` for the most negative).

How: one ``MaxProduct`` backward pass leaves at every element k the best products V(k) from k to
the output (``top_pos`` and ``top_neg``). Then a ``lax.while_loop`` walks forward from the start
element (:mod:`.walk`): at element e on a chain, every equation that reads e offers the edges of
its Jacobian row at e (:mod:`.rows`: a few elements for elementwise and data-moving equations,
a slice of the other operand for a ``dot_general``), each worth w·V(k) on the chain App. A's sign
rule continues on; the walk takes the best, which is e's own value. Ties go to the smaller
``2·(global element number) + chain``, and a NaN candidate first: the order of
:class:`~jaxpr_semiring.analyses.pointer.PointerMaxProduct`, whose rule serves the equations
without a sparse row (its outputs' values pointing at their own elements). So the memory is one
MaxProduct pass plus its values (8 bytes per element), and a step costs its row. Jittable and
vmappable: ``jax.vmap`` over sentences gives a batched :class:`Path` (the walks run one after
the other); ``jax.tree.map(lambda a: a[i], paths)`` picks one.

A ``scan`` or ``cond`` is one step of a path (from an operand element to a result element, its
weight the product along the best path inside: the pointer semiring's rule for it).

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
from ..interpreter import backward_jaxpr, value_of
from ..numerics import first_best, nan_first_better, signed_scale
from ..rules import Ctx, lookup
from ..semirings import MaxProduct
from .pointer import PointerMaxProduct, PointerValue
from .rows import Stacked, dense_row, one_edge, row_kind
from .walk import Consumers, Walk

__all__ = ["top_path", "Path", "PathStep", "CHAINS", "start_element"]

CHAINS = ("top_pos", "top_neg")
_BIG = np.int32(np.iinfo(np.int32).max)  # no candidate: loses every pointer comparison
# Operands of repeated equations larger than this (weight matrices) are read through a switch
# over the members rather than stacked: a stack would hold every weight twice.
_STACK_LIMIT = 1 << 20


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
    S = MaxProduct(kernel)

    def path_f(*args, **kwargs) -> Path:
        observer = Consumers()
        b = backprop(fun, S, argnums, has_aux, observer)(*args, **kwargs)
        if isinstance(b.graph.outvars[0], Const):
            raise ValueError("top_path: the output is a constant; no input reaches it.")
        index = GraphIndex(b.graph)
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
        start_vars = list(index.leaf_of)  # every differentiated leaf's variable
        walk = _TopWalk(b, observer.of, index, start_vars, kernel)
        ids, weights = walk.path(jnp.asarray(start, jnp.int32), bit)
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


def _candidates(w, gid, vp, vn, chain, here):
    """(key, pointer) of the edges of weights ``w`` into elements ``gid`` whose best products
    are (``vp``, ``vn``), for a path on ``chain``: the key is the product of the edge and the
    best continuation (negated on top_neg, so that larger is better on both chains), the
    pointer ``2·gid + chain`` continued on; an element with no path is no candidate."""
    hi, lo = signed_scale(w, vp, vn)
    key = jnp.where(chain == 0, hi, -lo)
    nxt = jnp.where(w >= 0, chain, 1 - chain)  # App. A: a negative edge switches chains
    alive = here & (vp != -jnp.inf)
    return jnp.where(alive, key, -jnp.inf), jnp.where(alive, 2 * gid + nxt, _BIG)


def _best(keys, ptrs, ws):
    """The first-best candidate: a NaN key first (a path of product NaN beats every number),
    then the largest key, then the smallest pointer (the pointer semiring's order)."""
    return first_best((keys, ptrs, ws), (0,))


class _TopWalk(Walk):
    """The top path, walked forward over one MaxProduct pass's values: at element e on a chain,
    every consumer offers the edges of its Jacobian row at e (:mod:`.rows`), each worth its
    weight times the best product from where it leads; the walk takes the best (ties to the
    smaller pointer, NaN first: the order of :class:`~.pointer.PointerMaxProduct`). An equation
    without a sparse row (and a ``scan`` or ``cond``: one step, its weight the best path inside)
    offers what the pointer semiring's own rule gives e, with its outputs' values pointing at
    their own elements."""

    def __init__(self, b, consumers, index, start_vars, kernel):
        super().__init__(b.graph, b.env, consumers, index, start_vars)
        self.dtype = next(
            (v.top_pos.dtype for v in b.cotangents.values() if hasattr(v, "top_pos")), jnp.float32
        )
        # V is kept only where the walk chooses: the results of an equation that reads a
        # variable with several consumers, or whose row there has several edges. Where a
        # variable's one consumer has a one-edge row, every path takes that edge: its target's
        # value is never compared (on BERT-6L, 30 tokens: 3.9 M of 8.2 M elements).
        kept = []
        for ts in self.groups:
            node = self.g.nodes[ts[0]]
            slots = [s for s, a in enumerate(node.invars) if self.numbered(a)]
            outs = [i for i, r in enumerate(node.outvars) if r.key in self.var_of]
            forced = self._one_edge(node, slots, outs)
            for t in ts:
                n = self.g.nodes[t]
                if not forced or len(consumers.get(n.invars[slots[0]].key, ())) > 1:
                    kept += [n.outvars[i].key for i in outs]
        kept = sorted(set(kept), key=self.var_of.get)
        sizes = [int(np.prod(index.shapes[self.var_of[k]], dtype=np.int64)) for k in kept]
        self.voff = dict(zip(kept, np.cumsum([0] + sizes)[:-1].tolist()))

        def table(field, fill):
            parts = [
                getattr(b.cotangents[k], field).ravel()
                if k in b.cotangents
                else jnp.full(n, fill, self.dtype)
                for k, n in zip(kept, sizes)
            ]
            return jnp.concatenate(parts + [jnp.full(1, fill, self.dtype)])  # never empty

        self.vp, self.vn = table("top_pos", -jnp.inf), table("top_neg", jnp.inf)
        self.S = PointerMaxProduct(kernel)
        self.stacks: list[Stacked] = []
        # per group, a maker of its step: each trace of the walk makes fresh step functions, so
        # that JAX's cache of traced branches never hands one trace another trace's arrays
        self.makers = [self._step(ts) for ts in self.groups]

    def _one_edge(self, node, slots, outs) -> bool:
        if len(slots) != 1 or len(outs) != 1:
            return False
        return one_edge(row_kind(node, slots, exact_edges=True), node, slots[0])

    def _stack(self, values) -> Stacked:
        st = Stacked(values, limit=_STACK_LIMIT)
        self.stacks.append(st)
        return st

    def _no_key(self):
        return jnp.full((), -jnp.inf, self.dtype), jnp.int32(_BIG)

    def _none(self, m, var, elem, chain):
        z = jnp.int32(0)
        return self._no_key(), jnp.zeros((), self.dtype), z, z, jnp.bool_(False)

    def _step(self, ts):
        """A maker of ``step(member, var, elem, chain) -> ((key, pointer), weight, gid, vid,
        one)``: the best edge from (var, elem) into this equation's outputs, or, where the row
        is one edge (``one``), its weight, target ``gid`` and the target's place in the table
        of values (``vid``, −1 where not kept), weighed after the switch: most steps are one
        edge, and a branch that only finds it compiles to fewer kernels."""
        nodes = [self.g.nodes[t] for t in ts]
        node = nodes[0]
        args = [
            self._stack([value_of(self.env, n.invars[s]) for n in nodes])
            for s in range(len(node.invars))
        ]
        slots = [s for s, a in enumerate(node.invars) if self.numbered(a)]
        outs = [i for i, r in enumerate(node.outvars) if r.key in self.var_of]
        slot_var = {
            s: jnp.asarray([self.var_of[n.invars[s].key] for n in nodes], jnp.int32) for s in slots
        }
        out_off = {
            i: jnp.asarray([self.index.offset_of[n.outvars[i].key] for n in nodes], jnp.int32)
            for i in outs
        }
        v_off = {  # where each member's result sits in the table of values (−1: not kept)
            i: jnp.asarray([self.voff.get(n.outvars[i].key, -1) for n in nodes], jnp.int32)
            for i in outs
        }
        row = row_kind(node, slots, exact_edges=True)
        if row is dense_row:
            return self._rule_step(nodes, args, slots, outs, slot_var, out_off, v_off)

        def step(m, var, elem, chain):
            keys, ptrs, ws, edges = [], [], [], []
            for s in slots:
                here = var == slot_var[s][m]
                rows = row(node, args, m, s, elem, here)
                for i in outs:
                    w, idx = rows[i]
                    gid, vid = out_off[i][m] + idx, v_off[i][m] + idx
                    edges.append((w.astype(self.dtype), gid, vid, here))
            if len(edges) == 1 and edges[0][0].size == 1:  # one edge: weighed after the switch
                w, gid, vid, here = edges[0]
                return (
                    self._no_key(),
                    w[0],
                    gid[0],
                    jnp.where(v_off[outs[0]][m] < 0, -1, vid[0]),
                    here,
                )
            for w, gid, vid, here in edges:
                k, p = _candidates(w, gid, self.vp[vid], self.vn[vid], chain, here)
                keys.append(k)
                ptrs.append(p)
                ws.append(w)
            key, ptr, w = _best(*(jnp.concatenate(x) for x in (keys, ptrs, ws)))
            return (key, ptr), w, jnp.int32(0), jnp.int32(0), jnp.bool_(False)

        return lambda: lambda *a: step(*a)  # a new function object per trace

    def _rule_step(self, nodes, args, slots, outs, slot_var, out_off, v_off):
        node = nodes[0]
        results = [
            self._stack([self.env[n.outvars[i].key] for n in nodes])
            for i in range(len(node.outvars))
        ]
        rule = lookup(node.primitive, node.path)
        wanted = tuple(s in slots for s in range(len(node.invars)))
        ctx = Ctx(self.S, wanted, node.path, node.primitive, backward_jaxpr)

        def pointing(i, m):
            """Output i's values, each element pointing at itself with an edge weight 1."""
            shape = tuple(node.outvars[i].aval.shape)
            n = int(np.prod(shape, dtype=np.int64))
            off = out_off[i][m]
            at = lambda t: lax.dynamic_slice(t, (v_off[i][m],), (n,)).reshape(shape)
            ids = (2 * (off + jnp.arange(n, dtype=jnp.int32))).reshape(shape)
            one = jnp.ones(shape, self.dtype)
            return PointerValue(at(self.vp), at(self.vn), ids, ids + 1, one, one)

        def step(m, var, elem, chain):
            cts = [pointing(i, m) if i in outs else None for i in range(len(node.outvars))]
            cts_in = rule(ctx, [a(m) for a in args], [r(m) for r in results], cts, **node.params)
            keys, ptrs, ws = [], [], []
            for s in slots:
                c = cts_in[s]
                if c is None:
                    continue
                e = jnp.clip(elem, 0, max(0, int(np.prod(args[s].shape, dtype=np.int64)) - 1))
                on = lambda a, b: jnp.where(chain == 0, a.reshape(-1)[e], b.reshape(-1)[e])
                val, ptr = on(c.top_pos, c.top_neg), on(c.pos_ptr, c.neg_ptr)
                w = on(c.pos_w, c.neg_w)
                alive = (var == slot_var[s][m]) & (ptr >= 0)
                keys.append(jnp.where(alive, jnp.where(chain == 0, val, -val), -jnp.inf))
                ptrs.append(jnp.where(alive, ptr, _BIG))
                ws.append(w.astype(self.dtype))
            if not keys:
                return self._none(m, var, elem, chain)
            key, ptr, w = _best(*(jnp.stack(x) for x in (keys, ptrs, ws)))
            return (key, ptr), w, jnp.int32(0), jnp.int32(0), jnp.bool_(False)

        return lambda: lambda *a: step(*a)  # a new function object per trace

    def move(self, var, elem, chain):
        """The best edge out of (var, elem) on ``chain`` over all its consumers (the output's
        stop: the seed 1, pointer −1): (key, pointer, weight)."""

        def over(i, acc):
            j, is_stop = self.consumer_at(var, i)
            (key, ptr), w, gid, vid, one = self.enter(j, is_stop, var, elem, chain)
            at = jnp.maximum(vid, 0)
            k1, p1 = _candidates(w, gid, self.vp[at], self.vn[at], chain, one)
            forced = vid < 0  # the only edge out of e: no value to compare
            k1 = jnp.where(forced, jnp.zeros((), self.dtype), k1)
            p1 = jnp.where(forced, 2 * gid + jnp.where(w >= 0, chain, 1 - chain), p1)
            key, ptr = jnp.where(one, k1, key), jnp.where(one, p1, ptr)
            key = jnp.where(is_stop, jnp.where(chain == 0, 1, -1).astype(self.dtype), key)
            ptr = jnp.where(is_stop, -1, ptr)
            w = jnp.where(is_stop, jnp.ones((), self.dtype), w)
            better = nan_first_better(acc[0], acc[1], key, ptr, True)
            return tuple(jnp.where(better, new, old) for new, old in zip((key, ptr, w), acc))

        init = self._no_key() + (jnp.zeros((), self.dtype),)
        return lax.fori_loop(0, self.count[var], over, init)

    def path(self, start_gid, chain: int):
        """(ids, weights) of the top path from global element ``start_gid`` on ``chain``, in
        :class:`Path`'s form: −1 past the end. Under ``jax.vmap`` the walks run one after the
        other (``lax.map``): a batched ``lax.switch`` would run every equation's step at every
        step of every walk."""
        held = [self.vp, self.vn] + [a for st in self.stacks for a in st.arrays]

        @jax.custom_batching.custom_vmap
        def walk(arrays, start):
            self._bind(arrays)
            try:
                return self._walk(start, chain)
            finally:
                self._bind(held)

        @walk.def_vmap
        def one_at_a_time(axis_size, in_batched, arrays, start):
            batched, start_batched = in_batched

            def one(xs):
                it = iter(xs[0])
                return walk([next(it) if b else a for a, b in zip(arrays, batched)], xs[1])

            starts = start if start_batched else jnp.broadcast_to(start, (axis_size,))
            out = lax.map(one, ([a for a, b in zip(arrays, batched) if b], starts))
            return out, (True, True)

        return walk(held, start_gid)

    def _bind(self, arrays):
        self.vp, self.vn = arrays[:2]
        at = 2
        for st in self.stacks:
            n = len(st.arrays)
            st.rebind(arrays[at : at + n])
            at += n

    def _walk(self, start_gid, chain: int):
        self.steps = [make() for make in self.makers] + [self._none]
        var, elem = self.locate(start_gid)
        n = self.n_steps
        state = (
            var,
            elem,
            jnp.int32(chain),
            jnp.int32(0),
            jnp.full((n,), -1, jnp.int32),
            jnp.zeros((n,), self.dtype),
            jnp.bool_(True),
        )

        def body(state):
            var, elem, chain, k, ids, ws, _ = state
            _, ptr, w = self.move(var, elem, chain)
            go = (ptr >= 0) & (ptr != _BIG)  # −1: the output; none: no path on (not reached)
            nv, ne = self.locate(jnp.maximum(ptr, 0) // 2)
            ids = ids.at[k].set(jnp.where(go, ptr, -1))
            ws = ws.at[k].set(jnp.where(go, w, 0))
            return nv, ne, ptr % 2, k + 1, ids, ws, go

        state = lax.while_loop(lambda s: s[6] & (s[3] < n), body, state)
        return state[4], state[5]
