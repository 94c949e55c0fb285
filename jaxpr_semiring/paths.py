"""Recover the top gradient path itself (paper §4.2, App. A).

``top_path(fun, argnums=0, at=None)(*args)`` returns a :class:`Path`: the sequence of edges
from one input element to the scalar output whose product of local derivatives is the
max-product value of that element (``top_pos``; ``chain="top_neg"`` for the most negative).

How: one ``MaxProduct`` backward pass stores every node's (top_pos, top_neg). Then the path is
walked forward from the input element. At a node, each consumer equation's own semiring rule is
re-run with a *pointer* max-product semiring: the consumer's outputs carry their stored values
plus a pointer (output element, chain), and ⊕/⊗ carry the pointer of the winning candidate
along. Read at the current element, this gives the best continuation through that equation —
with exactly the edge structure the rules use (a zero-weight edge is still an edge) — and which
output element and chain (top_pos or top_neg: a negative edge switches them, App. A) it
continues on. The best consumer wins; the edge weight is read from a one-equation JVP
(one-hot tangent). Python post-processing, not jittable; one rule call per consumer per step.

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> f = lambda x, y: jnp.exp(x) + (x - y) * y       # paper Fig. 1
>>> p = js.top_path(f, argnums=1)(1.0, 2.0)
>>> [s.primitive for s in p.steps], p.product
(['mul', 'add'], -1.0)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat, api, interpreter
from .interpreter import Const, Ref
from .rules import Ctx, lookup
from .semirings import (MaxProduct, Semiring, _canonical, chunked_contraction, value_dtype)

__all__ = ["top_path", "Path", "PathStep", "PointerMaxProduct", "PointerValue"]


# --------------------------------------------------------------- pointer max-product semiring

class PointerValue(NamedTuple):
    """(top_pos, top_neg) plus, for each, a pointer to where the winning path continues
    (−1: none). Pointers are stored as floats (exact below 2²⁴ for float32)."""
    top_pos: jax.Array
    top_neg: jax.Array
    pos_ptr: jax.Array
    neg_ptr: jax.Array


def _pick(better, a, b):
    return jnp.where(better, a, b)


class PointerMaxProduct(Semiring):
    """MaxProduct whose ⊕ and ⊗ carry an arg-max pointer payload (used by :func:`top_path`)."""

    name = "PointerMaxProduct"

    def dtype(self, dtype):
        return value_dtype(dtype)

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return PointerValue(jnp.full(shape, -jnp.inf, dt), jnp.full(shape, jnp.inf, dt),
                            jnp.full(shape, -1, dt), jnp.full(shape, -1, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return PointerValue(jnp.ones(shape, dt), jnp.ones(shape, dt), jnp.full(shape, -1, dt),
                            jnp.full(shape, -1, dt))

    def add(self, a, b):
        pa, pb = a.top_pos >= b.top_pos, a.top_neg <= b.top_neg
        return PointerValue(jnp.maximum(a.top_pos, b.top_pos), jnp.minimum(a.top_neg, b.top_neg),
                            _pick(pa, a.pos_ptr, b.pos_ptr), _pick(pb, a.neg_ptr, b.neg_ptr))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        if not axes:
            return v
        nd = v.top_pos.ndim
        kept = tuple(d for d in range(nd) if d not in axes)
        shape = tuple(v.top_pos.shape[d] for d in kept) + (-1,)

        def flat(x):
            return jnp.transpose(x, kept + tuple(axes)).reshape(shape)

        p, n, pp, np_ = map(flat, v)
        if p.shape[-1] == 0:
            return self.zeros(shape[:-1], p.dtype)
        ip = jnp.argmax(p, axis=-1)[..., None]
        in_ = jnp.argmin(n, axis=-1)[..., None]
        take = lambda x, i: jnp.take_along_axis(x, i, -1)[..., 0]
        return PointerValue(take(p, ip), take(n, in_), take(pp, ip), take(np_, in_))

    @staticmethod
    def _lift(w, p, n, pp, np_):
        alive = p > -jnp.inf
        a, b = w * p, w * n
        pos = jnp.where(alive, jnp.maximum(a, b), -jnp.inf)
        neg = jnp.where(alive, jnp.minimum(a, b), jnp.inf)
        pos_ptr = jnp.where(alive, jnp.where(a >= b, pp, np_), -1)
        neg_ptr = jnp.where(alive, jnp.where(a >= b, np_, pp), -1)
        return pos, neg, pos_ptr, neg_ptr

    def scale(self, w, v):
        w = jnp.asarray(w).astype(v.top_pos.dtype)
        return PointerValue(*self._lift(w, *v))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        canon_v, cw, out_shape = _canonical(v.top_pos, w.astype(v.top_pos.dtype), dimension_numbers)

        def chunk(vs, wk):
            pos, neg, pptr, nptr = self._lift(wk, *vs)  # [B, M, N, c]
            pptr = jnp.broadcast_to(pptr, pos.shape)
            nptr = jnp.broadcast_to(nptr, neg.shape)
            ip = jnp.argmax(pos, axis=-1)[..., None]
            in_ = jnp.argmin(neg, axis=-1)[..., None]
            take = lambda x, i: jnp.take_along_axis(x, i, -1)[..., 0]
            return take(pos, ip), take(neg, in_), take(pptr, ip), take(nptr, in_)

        def combine(x, y):
            a = PointerValue(*x)
            b = PointerValue(*y)
            return tuple(self.add(a, b))

        out = chunked_contraction(chunk, combine, [canon_v(x) for x in v], cw,
                                  (-jnp.inf, jnp.inf, -1.0, -1.0))
        return PointerValue(*(x.reshape(out_shape) for x in out))

    def scatter(self, v, index_map):
        p = index_map.max(v.top_pos)
        n = index_map.min(v.top_neg)
        pw = v.top_pos == index_map.back(p)
        nw = v.top_neg == index_map.back(n)
        pp = index_map.max(jnp.where(pw, v.pos_ptr, -1))
        np_ = index_map.max(jnp.where(nw, v.neg_ptr, -1))
        return PointerValue(p, n, jnp.maximum(pp, -1), jnp.maximum(np_, -1))


# ------------------------------------------------------------------------------------- paths

CHAINS = ("top_pos", "top_neg")


class PathStep(NamedTuple):
    """One edge of the path: into element ``index`` of the output of equation ``primitive``.

    ``weight`` is the edge's local derivative, ``product`` the running product from the input
    element through this edge, ``chain`` which max-product chain the path follows from here
    (``top_pos``/``top_neg``), ``remaining`` the stored value of that chain at this node (the
    best product from here to the output): ``product · remaining`` is the path's total.
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
    """A top gradient path: ``steps`` (list of :class:`PathStep`) from the input element
    ``start`` to the output. ``product`` is the product of the edge weights (= ``value``, the
    max-product value of the start element, up to float rounding). ``str()`` is a table."""

    def __init__(self, steps, value, chain, start):
        self.steps = list(steps)
        self.value = float(value)
        self.chain = chain
        self.start = start  # dict: argnum leaf, index, shape

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
        head = (f"top gradient path ({self.chain} = {self.value:.6g}) from input leaf {st['leaf']} "
                f"element {st['index']} of shape {st['shape']}: {len(self.steps)} edges")
        rows = [("#", "primitive", "module path", "index", "weight", "product", "chain")]
        for i, s in enumerate(self.steps, 1):
            rows.append((str(i), s.primitive, s.path or "-", str(s.index), f"{s.weight:.4g}",
                         f"{s.product:.4g}", s.chain))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        widths[2] = min(widths[2], 70)

        def fmt(r):
            path = r[2] if len(r[2]) <= widths[2] else "…" + r[2][-(widths[2] - 1):]
            cells = [r[0].rjust(widths[0]), r[1].ljust(widths[1]), path.ljust(widths[2]),
                     r[3].ljust(widths[3]), r[4].rjust(widths[4]), r[5].rjust(widths[5]), r[6]]
            return "  ".join(cells)

        return "\n".join([head] + [fmt(r) for r in rows])

    def __repr__(self):
        return f"Path({self.chain}={self.value:.6g}, {len(self.steps)} steps)"


def _consumers(graph) -> dict:
    out: dict = {}
    for i, node in enumerate(graph.nodes):
        for a in node.invars:
            if isinstance(a, Ref):
                lst = out.setdefault(a.key, [])
                if not lst or lst[-1] != i:
                    lst.append(i)
    return out


def _edge_weights(node, env, slot, elem):
    """Column of the local Jacobian: ∂out/∂in_slot[elem] for every output (one JVP)."""
    vals = [interpreter._value(env, a) for a in node.invars]
    x = vals[slot]

    def along(xj):
        args = list(vals)
        args[slot] = xj
        return _compat.bind(node.primitive, args, node.params)

    t = jnp.zeros(x.size, x.dtype).at[elem].set(1).reshape(x.shape)
    _, touts = jax.jvp(along, (x,), (t,))
    return touts


def _recurse(S_, jaxpr, consts, args, wanted, cts_out_, prefix):
    return interpreter.backward_jaxpr(S_, jaxpr, consts, args, wanted, cts_out_, prefix)


def _continuations(node, cts, env, key, elem, chain):
    """Best continuation of ``chain`` at element ``elem`` of variable ``key`` through ``node``:
    a list of (value, slot, pointer) per operand slot holding that variable."""
    P = PointerMaxProduct()
    cts_out, offset = [], 0
    for r in node.outvars:
        size = int(np.prod(r.aval.shape, dtype=np.int64))
        v = cts.get(r.key) if isinstance(r, Ref) else None
        if v is None:
            cts_out.append(None)
        else:
            dt = v.top_pos.dtype
            if 2 * (offset + size) >= (1 << 24) and dt == np.float32:
                raise ValueError(f"top_path: equation '{node.primitive.name}' at '{node.path}' has "
                                 f"too many output elements for float32 pointers; enable x64.")
            ids = (offset + jnp.arange(size, dtype=dt)).reshape(r.aval.shape) * 2
            cts_out.append(PointerValue(v.top_pos, v.top_neg, ids, ids + 1))
        offset += size
    if all(c is None for c in cts_out):
        return []
    wanted = tuple(isinstance(a, Ref) and a.key == key for a in node.invars)
    rule = lookup(node.primitive, node.path)
    ctx = Ctx(P, wanted, node.path, node.primitive, _recurse)
    primals_in = [interpreter._value(env, a) for a in node.invars]
    primals_out = [env[r.key] for r in node.outvars]
    cts_in = rule(ctx, primals_in, primals_out, cts_out, **node.params)
    found = []
    for slot, (w, ct) in enumerate(zip(wanted, cts_in)):
        if not w or ct is None:
            continue
        if chain == "top_pos":
            val, ptr = ct.top_pos, ct.pos_ptr
        else:
            val, ptr = ct.top_neg, ct.neg_ptr
        val = float(np.asarray(val).reshape(-1)[elem])
        ptr = int(np.asarray(ptr).reshape(-1)[elem])
        if ptr >= 0:
            found.append((val, slot, ptr))
    return found


def _locate(node, flat_out):
    """Output variable number and element for a flat index over the node's outputs."""
    offset = 0
    for o, r in enumerate(node.outvars):
        size = int(np.prod(r.aval.shape, dtype=np.int64))
        if flat_out < offset + size:
            return o, flat_out - offset
        offset += size
    raise IndexError(flat_out)


def _primals_and_values(closed, flat, graph):
    """Every variable's primal and stored MaxProduct value, computed in one jitted program
    (the graph is re-flattened inside; variables are matched by position)."""
    def refs_of(g):
        out = list(g.invars)
        for node in g.nodes:
            out.extend(r for r in node.outvars if isinstance(r, Ref))
        return out

    def inner(consts, flat):
        g = interpreter.flatten(closed.jaxpr, consts)
        env = interpreter.forward(g, flat)
        S = MaxProduct()
        wanted = interpreter.reachable(g, g.invars)
        out_dtype = interpreter._value(env, g.outvars[0]).dtype
        cts = interpreter.backward(S, g, env, [S.ones((), out_dtype)]
                                   + [None] * (len(g.outvars) - 1), wanted)
        refs = refs_of(g)
        return [env.get(r.key) for r in refs], [cts.get(r.key) for r in refs]

    envs, vals = jax.jit(inner)(list(closed.consts), flat)
    refs = refs_of(graph)
    env = {r.key: e for r, e in zip(refs, envs) if e is not None}
    cts = {r.key: v for r, v in zip(refs, vals) if v is not None}
    return env, cts


def top_path(fun: Callable, argnums: int | Sequence[int] = 0, at: Any = None, *,
             leaf: int | None = None, chain: str = "top_pos", has_aux: bool = False) -> Callable:
    """Recover the top gradient path of scalar ``fun`` (paper App. A).

    Args:
      argnums: differentiated arguments, as in :func:`jaxpr_semiring.semiring_grad`.
      at: the input element the path starts from: an int (flat index) or a tuple (array
        index) into the flattened differentiated leaf ``leaf``. Default: the element with the
        largest ``top_pos`` over all differentiated leaves (smallest ``top_neg`` for
        ``chain="top_neg"``).
      leaf: which leaf of the flattened differentiated arguments ``at`` refers to (needed when
        there are several).
      chain: ``"top_pos"`` (most positive path) or ``"top_neg"`` (most negative path).

    Returns a function of ``fun``'s arguments returning a :class:`Path`. Not jittable (it is
    post-processing with Python loops); run it on concrete values.
    """
    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
    argnums_t, _ = api._normalize_argnums(argnums)

    def path_f(*args, **kwargs) -> Path:
        closed, flat, treedef, aux_def = api.trace(fun, args, kwargs, argnums_t, has_aux)
        flat = [jnp.asarray(x) for x in flat]
        graph = interpreter.flatten(closed.jaxpr, closed.consts)
        out_atom = graph.outvars[0]
        env, cts = _primals_and_values(closed, flat, graph)
        if isinstance(out_atom, Const):
            raise ValueError("top_path: the output is a constant; no input reaches it.")

        # ---- the start element
        vals = []
        for r, x in zip(graph.invars, flat):
            v = cts.get(r.key)
            vals.append(None if v is None else np.asarray(getattr(v, chain)))
        if at is None:
            best = None
            for i, v in enumerate(vals):
                if v is None or v.size == 0:
                    continue
                j = int(np.argmax(v) if chain == "top_pos" else np.argmin(v))
                cand = v.reshape(-1)[j]
                if best is None or (cand > best[0] if chain == "top_pos" else cand < best[0]):
                    best = (cand, i, j)
            if best is None or not np.isfinite(best[0]):
                raise ValueError("top_path: no differentiated input element reaches the output.")
            _, li, elem = best
        else:
            if leaf is None and len(flat) != 1:
                raise ValueError(f"top_path: {len(flat)} differentiated leaves; say which one "
                                 f"`at` refers to with leaf=.")
            li = 0 if leaf is None else int(leaf)
            shape = flat[li].shape
            elem = int(at) if np.ndim(at) == 0 else int(np.ravel_multi_index(tuple(at), shape))
            if not 0 <= elem < max(1, int(np.prod(shape))):
                raise IndexError(f"top_path: element {at} out of range for shape {shape}")
        start_ref = graph.invars[li]
        v0 = vals[li]
        value = float(v0.reshape(-1)[elem]) if v0 is not None else (-np.inf if chain == "top_pos" else np.inf)
        start = {"leaf": li, "index": _unravel(elem, start_ref.aval.shape),
                 "shape": tuple(start_ref.aval.shape)}
        if v0 is None or value == (-np.inf if chain == "top_pos" else np.inf):
            raise ValueError(f"top_path: input element {start['index']} has no path to the output.")

        # ---- walk forward
        consumers = _consumers(graph)
        key, cur_chain, product = start_ref.key, chain, 1.0
        steps: list[PathStep] = []
        limit = len(graph.nodes) + 1
        while not (isinstance(out_atom, Ref) and key == out_atom.key):
            best = None
            for ni in consumers.get(key, []):
                node = graph.nodes[ni]
                for val, slot, ptr in _continuations(node, cts, env, key, elem, cur_chain):
                    if best is None or (val > best[0] if cur_chain == "top_pos" else val < best[0]):
                        best = (val, ni, slot, ptr)
            if best is None:
                raise RuntimeError(f"top_path: lost the path at variable {key} element {elem}; "
                                   f"this is a bug.")
            _, ni, slot, ptr = best
            node = graph.nodes[ni]
            o, k = _locate(node, ptr // 2)
            next_chain = CHAINS[ptr % 2]
            touts = _edge_weights(node, env, slot, elem)
            w = float(np.asarray(touts[o]).reshape(-1)[k])
            product *= w
            out_ref = node.outvars[o]
            stored = cts[out_ref.key]
            p_k = float(np.asarray(stored.top_pos).reshape(-1)[k])
            n_k = float(np.asarray(stored.top_neg).reshape(-1)[k])
            if p_k == n_k:  # both chains coincide here: report App. A's sign rule
                next_chain = cur_chain if w >= 0 else CHAINS[1 - CHAINS.index(cur_chain)]
            remaining = p_k if next_chain == "top_pos" else n_k
            steps.append(PathStep(node.primitive.name, node.path, tuple(out_ref.aval.shape),
                                  _unravel(k, out_ref.aval.shape), w, product, next_chain,
                                  remaining))
            key, elem, cur_chain = out_ref.key, k, next_chain
            if len(steps) > limit:
                raise RuntimeError("top_path: path longer than the graph; this is a bug.")
        return Path(steps, value, chain, start)

    return path_f


def _unravel(elem, shape):
    shape = tuple(shape)
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(elem, shape))
