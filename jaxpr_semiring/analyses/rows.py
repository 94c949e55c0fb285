"""Rows of an equation's Jacobian at one element: what a walk along one path reads.

A forward walk along a path (:func:`~jaxpr_semiring.sample_paths`, :func:`~jaxpr_semiring.top_path`)
stands at one element e of one variable and needs, for each equation that reads it, the row of
that equation's Jacobian at e: the elements of its results that e reaches, and the weights of
those edges. A row is ``[(weights, outputs)]``, one pair per result of the equation: the flat
indices of the result's elements the row may reach and their weights. Most equations reach few
elements, so most rows cost what they reach rather than a JVP of the whole equation: a step of a
walk costs its row, not the equation. :func:`row_kind` picks the cheapest exact row for an
equation; :func:`dense_row` (a JVP with a one-hot tangent) serves every other equation.

Equations of one :func:`signature` (a transformer's layers repeat theirs) share one compiled row
over their operands :class:`Stacked` once: compile time follows the distinct equations.

>>> import jax.numpy as jnp
>>> slab((2, 3), {0: jnp.int32(1)}).tolist()    # the elements of row 1 of a 2×3 result
[3, 4, 5]
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _compat
from ..graph import Const, aval_of
from ..rules import RULES
from ..rules.elementwise import elementwise

__all__ = [
    "Stacked",
    "node_jvp",
    "row_kind",
    "dense_row",
    "pointwise_row",
    "slice_row",
    "moved_row",
    "dot_row",
    "broadcast_row",
    "reduce_sum_row",
    "slab",
    "signature",
    "one_edge",
]


def node_jvp(node, args: Sequence, slot: int, tangent) -> list:
    """Output tangents of one equation for a tangent in operand ``slot`` alone."""

    def along(x):
        a = list(args)
        a[slot] = x
        return _compat.bind(node.primitive, a, node.params)

    return jax.jvp(along, (args[slot],), (tangent,))[1]


class Stacked:
    """One operand of the equations of one signature, read per member inside a walk's loop:
    whole (``__call__``), some elements (``take``) or a slice (``slice``), so that a step never
    copies a whole weight matrix. The members' values are stacked once, outside the loop; past
    ``limit`` bytes (weight matrices) they are kept apart and a read is a ``lax.switch`` over the
    members, one small kernel each, so that no weight is held twice. ``arrays``/``rebind``
    expose the traced arrays, for a walk that runs as a function of them."""

    def __init__(self, values, limit: int | None = None):
        one_literal = np.ndim(values[0]) == 0 and not any(isinstance(v, jax.Array) for v in values)
        self.single = one_literal or all(v is values[0] for v in values)
        dt = jnp.result_type(values[0])
        size = int(np.prod(np.shape(values[0]), dtype=np.int64)) * np.dtype(dt).itemsize
        self.apart = not self.single and limit is not None and size * len(values) > limit
        if self.single:  # one member, or one literal
            self.parts = [values[0]]
        elif self.apart:
            self.parts = [jnp.asarray(v, dt) for v in values]
        else:
            self.parts = [jnp.stack([jnp.asarray(v, dt) for v in values])]
        self.dtype = dt

    @property
    def shape(self) -> tuple:
        """One member's shape."""
        return tuple(np.shape(self.parts[0])[0 if self.single or self.apart else 1 :])

    @property
    def arrays(self) -> list:
        return [p for p in self.parts if isinstance(p, jax.Array)]

    def rebind(self, arrays: list) -> None:
        it = iter(arrays)
        self.parts = [next(it) if isinstance(p, jax.Array) else p for p in self.parts]

    def _read(self, m, f):
        """f(member's array, its index in the stack or None)."""
        if self.single:
            return f(self.parts[0], None)
        if self.apart:
            return lax.switch(m, [lambda p=p: f(p, None) for p in self.parts])
        return f(self.parts[0], m)

    def __call__(self, m):
        return self._read(m, lambda x, i: x if i is None else x[i])

    def take(self, m, flat):
        """Member m's elements at flat indices ``flat``."""

        def f(x, i):
            x = jnp.asarray(x)
            return x.reshape(-1)[flat] if i is None else x.reshape(x.shape[0], -1)[i, flat]

        return self._read(m, f)

    def slice(self, m, starts: dict) -> jax.Array:
        """Member m's value, size 1 along each dimension d of ``starts`` at ``starts[d]``."""

        def f(x, i):
            x = jnp.asarray(x)
            lead = 0 if i is None else 1
            idx = [jnp.int32(0)] * x.ndim
            sizes = list(x.shape)
            if i is not None:
                idx[0], sizes[0] = jnp.asarray(i, jnp.int32), 1
            for d, c in starts.items():
                idx[d + lead], sizes[d + lead] = jnp.asarray(c, jnp.int32), 1
            out = lax.dynamic_slice(x, idx, sizes)
            return out[0] if lead else out

        return self._read(m, f)


def onehot(shape, flat, here, dtype):
    size = int(np.prod(shape, dtype=np.int64))
    return ((jnp.arange(size) == flat) & here).reshape(shape).astype(dtype)


def dense_row(node, args, m, slot, elem, here) -> list:
    """Any equation: one JVP with a one-hot tangent at e (zero where ``here`` is false)."""
    vals = [a(m) for a in args]
    x = vals[slot]
    t = node_jvp(node, vals, slot, onehot(np.shape(x), elem, here, jnp.result_type(x)))
    return [(w.reshape(-1), jnp.arange(w.size, dtype=jnp.int32)) for w in t]


def pointwise_row(node, args, m, slot, elem, here) -> list:
    """Elementwise equations: e reaches the output elements at its coordinates (all of them
    along the axes where its operand has size 1, or rank 0, and the output does not); the
    weights are the equation's JVP on the operands' elements there."""
    out_shape = tuple(node.outvars[0].aval.shape)
    mine = args[slot].shape
    if all(a.shape in (out_shape, ()) for a in args) and mine == out_shape:  # the common case
        vals = [a.take(m, elem) if a.shape else a(m) for a in args]
        (w,) = node_jvp(node, vals, slot, here.astype(jnp.result_type(vals[slot])))
        return [(jnp.reshape(w, 1), jnp.reshape(elem, 1).astype(jnp.int32))]
    coords = jnp.unravel_index(elem, mine) if mine else ()
    fixed = {d: coords[d] for d in range(len(mine)) if mine[d] == out_shape[d]}
    vals = [a(m) if not a.shape else a.take(m, slab(out_shape, fixed, a.shape)) for a in args]
    t = jnp.broadcast_to(here.astype(jnp.result_type(vals[slot])), np.shape(vals[slot]))
    (w,) = node_jvp(node, vals, slot, t)
    idx = slab(out_shape, fixed)
    return [(jnp.broadcast_to(w, idx.shape), idx)]


def slice_row(node, args, m, slot, elem, here) -> list:
    """``slice``: e reaches the one output element it becomes, if the slice keeps it."""
    in_shape, out_shape = args[0].shape, tuple(node.outvars[0].aval.shape)
    coords = jnp.unravel_index(elem, in_shape)
    start = node.params["start_indices"]
    strides = node.params["strides"] or (1,) * len(in_shape)
    kept, at = here, []
    for c, lo, st, n in zip(coords, start, strides, out_shape):
        q, r = jnp.divmod(c - lo, st)
        kept = kept & (c >= lo) & (r == 0) & (q < n)
        at.append(jnp.clip(q, 0, n - 1))
    flat = jnp.ravel_multi_index(tuple(at), out_shape, mode="clip")
    w = kept.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(flat, 1).astype(jnp.int32))]


def moved_row(node, args, m, slot, elem, here) -> list:
    """Reshapes and copies keep e's flat index; a transpose permutes its coordinates. The
    weight is 1 (their JVP is the identity)."""
    if node.primitive.name == "transpose":
        coords = jnp.unravel_index(elem, args[0].shape)
        perm = node.params["permutation"]
        out_shape = tuple(node.outvars[0].aval.shape)
        elem = jnp.ravel_multi_index(tuple(coords[d] for d in perm), out_shape, mode="clip")
    w = here.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(elem, 1).astype(jnp.int32))]


def dot_row(node, args, m, slot, elem, here) -> list:
    """``dot_general``: e = x[batch b, contracting c, free f] reaches the outputs [b, f, :]
    (the other operand's free dimensions), with weights y[b, c, :]: the other operand sliced
    at e's batch and contracting coordinates, contracted with e's tangent alone."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    mine, other = (lc, rc) if slot == 0 else (rc, lc)
    mb, ob = (lb, rb) if slot == 0 else (rb, lb)
    x_shape = args[slot].shape
    coords = jnp.unravel_index(elem, x_shape)
    y = args[1 - slot].slice(
        m, {do: coords[dm] for dm, do in zip(tuple(mine) + tuple(mb), tuple(other) + tuple(ob))}
    )
    t = jnp.broadcast_to(here.astype(args[slot].dtype), (1,) * len(x_shape))
    ops = [t, y] if slot == 0 else [y, t]
    out = _compat.bind(node.primitive, ops, node.params)
    w = (out[0] if isinstance(out, (list, tuple)) else out).reshape(-1)
    # output layout: batch, lhs free, rhs free; the slab fixes all but the other's free dims
    out_shape = tuple(node.outvars[0].aval.shape)
    lfree = [d for d in range(len(args[0].shape)) if d not in lc and d not in lb]
    rfree = [d for d in range(len(args[1].shape)) if d not in rc and d not in rb]
    fixed = [coords[d] for d in mb] + [coords[d] for d in (lfree if slot == 0 else rfree)]
    n_batch, n_lfree = len(lb), len(lfree)
    free_pos = (
        range(n_batch + n_lfree, len(out_shape)) if slot == 0 else range(n_batch, n_batch + n_lfree)
    )
    fixed_pos = [d for d in range(len(out_shape)) if d not in free_pos]
    return [(w, slab(out_shape, dict(zip(fixed_pos, fixed))))]


def slab(out_shape, fixed: dict, shape=None) -> jax.Array:
    """Flat indices (row-major) of the elements of ``out_shape`` whose coordinate along each
    dimension d of ``fixed`` is ``fixed[d]``, the other dimensions running over their range;
    with ``shape``, of the elements of an operand of that shape (its size-1 axes broadcast)
    that those elements read."""
    shape = tuple(out_shape) if shape is None else tuple(shape)
    strides = np.cumprod((1,) + shape[::-1])[::-1][1:].astype(np.int64)
    stride = [int(st) if n > 1 else 0 for st, n in zip(strides, shape)]
    base = sum((c * stride[d] for d, c in fixed.items()), jnp.int32(0))
    free = [d for d in range(len(out_shape)) if d not in fixed]
    offs = np.zeros([out_shape[d] for d in free], np.int64)
    for k, d in enumerate(free):
        sh = [1] * len(free)
        sh[k] = out_shape[d]
        offs = offs + np.arange(out_shape[d]).reshape(sh) * stride[d]
    return (base + jnp.asarray(offs.reshape(-1), jnp.int32)).astype(jnp.int32)


def broadcast_row(node, args, m, slot, elem, here) -> list:
    """``broadcast_in_dim``: e reaches every copy of itself, each with weight 1."""
    in_shape, out_shape = args[0].shape, tuple(node.params["shape"])
    coords = jnp.unravel_index(elem, in_shape) if in_shape else ()
    fixed = {
        d: coords[i]
        for i, d in enumerate(node.params["broadcast_dimensions"])
        if in_shape[i] == out_shape[d]
    }
    idx = slab(out_shape, fixed)
    return [(jnp.broadcast_to(here.astype(node.outvars[0].aval.dtype), idx.shape), idx)]


def reduce_sum_row(node, args, m, slot, elem, here) -> list:
    """``reduce_sum``: e reaches the one sum it is in, with weight 1."""
    in_shape = args[0].shape
    coords = jnp.unravel_index(elem, in_shape) if in_shape else ()
    axes = set(node.params["axes"])
    out_shape = tuple(node.outvars[0].aval.shape)
    kept = tuple(c for d, c in enumerate(coords) if d not in axes)
    flat = jnp.ravel_multi_index(kept, out_shape, mode="clip") if kept else jnp.int32(0)
    w = here.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(flat, 1).astype(jnp.int32))]


MOVED = {"reshape", "squeeze", "expand_dims", "copy", "copy_p", "transpose"}
POINTWISE_EXTRA = {"convert_element_type", "select_n"}
# Their JVP weighs 0 where the graph has no edge (the case select_n does not take; nextafter's
# second operand): a walk that tells a weight-0 edge from none (top_path) reads their rule.
ZERO_IS_NO_EDGE = {"select_n", "nextafter"}


def row_kind(node, slots, exact_edges: bool = False):
    """The cheapest exact row for this equation (static: primitive and shapes). With
    ``exact_edges``, a row whose zero weights may not all be edges is :func:`dense_row`."""
    name = node.primitive.name
    if exact_edges and name in ZERO_IS_NO_EDGE:
        return dense_row
    out = [tuple(r.aval.shape) for r in node.outvars]
    ins = [tuple(aval_of(a).shape) for a in node.invars]
    if name == "dot_general" and len(node.invars) == 2:
        return dot_row
    if len(out) != 1:
        return dense_row
    if name == "broadcast_in_dim" and len(node.invars) == 1:
        return broadcast_row
    if name == "reduce_sum" and len(node.invars) == 1:
        return reduce_sum_row
    if (
        name in MOVED
        and len(node.invars) == 1
        and (name != "reshape" or node.params.get("dimensions") is None)
    ):
        return moved_row
    if name == "slice" and len(node.invars) == 1:
        return slice_row
    pointwise = name in POINTWISE_EXTRA or (
        RULES.get(name) is elementwise and name != "custom_jvp_call"
    )
    if pointwise and all(
        len(i) == 0 or (len(i) == len(out[0]) and all(a in (b, 1) for a, b in zip(i, out[0])))
        for i in ins
    ):
        return pointwise_row
    return dense_row


def one_edge(row, node, slot: int) -> bool:
    """Whether ``row`` (of :func:`row_kind`) reaches at most one element of the equation's one
    result from any element of operand ``slot``."""
    if row in (moved_row, slice_row, reduce_sum_row):
        return True
    if row is pointwise_row:
        return tuple(node.invars[slot].aval.shape) == tuple(node.outvars[0].aval.shape)
    return False


def _type(x):
    a = getattr(x, "aval", None) or jax.typeof(x)
    return tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False))


def _const_key(v):
    """Scalar literals must be equal to share a step; arrays, and values traced under the
    caller's ``jit`` (stacked like arrays), only typed alike."""
    if np.ndim(v) == 0:
        try:
            return (_type(v), np.asarray(v).item())
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            pass
    return (_type(v), None)


def signature(node, numbered_in, numbered_out):
    """Equations with equal signatures (primitive, parameters, operand and result types, which
    slots are path variables) share one compiled crossing step; unhashable parameters make an
    equation its own group."""
    key = (
        node.primitive,
        tuple(sorted(node.params.items())),
        tuple(_const_key(a.value) if isinstance(a, Const) else _type(a) for a in node.invars),
        tuple(_type(r) for r in node.outvars),
        tuple(numbered_in),
        tuple(numbered_out),
    )
    try:
        hash(key)
        return key
    except TypeError:
        return id(node)
