"""Slices sunk below what they slice: ``dynamic_slice(dot_general(x, w))`` →
``dot_general(dynamic_slice(x), dynamic_slice(w))``, and through ``add``, ``sub`` and ``mul``;
the same for ``slice`` (static bounds, unit strides).

A target that reads one position of a model's output (``logits[0, position]``, a masked-LM or
next-token prediction, ``logits[0, -1]``) otherwise computes, and walks backward through,
every position: the vocabulary projection of all tokens, and in the semiring pass its lifted
and tropical contractions, though only one row of it reaches the output. Sinking the slice to the
projection's operands computes that row only (BERT-6L at 30 tokens: 1/30 of the projection, which
is 2.8 GFLOP per sentence forward and again per lifted matmul of the entropy pass).

The paths are the same: an element of ``x`` reaches the selected outputs through the same
weights, one slicing edge now standing before the contraction instead of after it, and the
elements the slice dropped reached nothing. Applied only where the sliced value has no other
reader and is not an output of the graph, and never across an atomic block's markers.

>>> import jax, jax.numpy as jnp
>>> from jaxpr_semiring.interpreter import flatten
>>> f = lambda h, w, b, i: (h @ w + b)[i]
>>> closed = jax.make_jaxpr(f)(jnp.ones((30, 8)), jnp.ones((8, 50)), jnp.ones(50), 3)
>>> dot = next(n for n in flatten(closed.jaxpr, closed.consts).nodes
...            if n.primitive.name == "dot_general")
>>> dot.outvars[0].aval.shape  # one row, not 30
(1, 50)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from jax import lax

from ..graph import Const, Node, Ref, aval_of, new_ref
from . import register_rewrite

ELEMENTWISE = ("add", "sub", "mul")


@register_rewrite
def sink_slices(nodes: list, keep: frozenset) -> list:
    """Move each ``slice`` (unit strides) or ``dynamic_slice`` whose operand is read by it
    alone below that operand's ``dot_general`` or elementwise ``add``/``sub``/``mul``,
    repeatedly (a slice of ``dot + bias`` reaches the contraction)."""
    while True:
        producer = {r.key: i for i, n in enumerate(nodes) for r in n.outvars}
        reads = Counter(a.key for n in nodes for a in n.invars if isinstance(a, Ref))
        for i, node in enumerate(nodes):
            src = node.invars[0] if _box(node) is not None else None
            if not isinstance(src, Ref) or src.key in keep or reads[src.key] != 1:
                continue
            j = producer.get(src.key)
            if j is None or any(n.primitive.name == "name" for n in nodes[j + 1 : i]):
                continue
            sunk = _sink(nodes[j], node)
            if sunk is not None:
                nodes = nodes[:j] + nodes[j + 1 : i] + sunk + nodes[i + 1 :]
                break
        else:
            return nodes


# rows no path reaches are never multiplied by the contraction's weights: not applied where the
# values must be jax.grad's, whose 0·NaN there is NaN (Semiring.is_gradient)
sink_slices.drops_zero_products = True


def _box(node):
    """(starts, sizes) of a slice node, starts as graph atoms (dynamic) or ints; else None."""
    if node.primitive.name == "dynamic_slice":
        return node.invars[1:], tuple(node.params["slice_sizes"])
    if node.primitive.name == "slice" and not any(s != 1 for s in node.params.get("strides") or ()):
        start, limit = node.params["start_indices"], node.params["limit_indices"]
        return tuple(start), tuple(b - a for a, b in zip(start, limit))
    return None


def _sink(inner: Node, sl: Node) -> list | None:
    """The nodes replacing ``sl`` = slice(``inner``), or None where it does not sink."""
    if inner.primitive.name in ELEMENTWISE:
        ndim = inner.outvars[0].aval.ndim
        return _sliced(inner, sl, [[[d] for d in range(ndim)]] * len(inner.invars))
    if inner.primitive.name == "dot_general":
        (lc, rc), (lb, rb) = inner.params["dimension_numbers"]
        x, y = (aval_of(a) for a in inner.invars)
        xfree = [d for d in range(x.ndim) if d not in lc and d not in lb]
        yfree = [d for d in range(y.ndim) if d not in rc and d not in rb]
        # output axis k → its axis in x, in y (None: not there): batch, x's free, y's free
        to = list(zip(lb, rb)) + [(d, None) for d in xfree] + [(None, d) for d in yfree]
        maps = []
        for side, operand in ((0, x), (1, y)):
            axes = [[] for _ in range(operand.ndim)]
            for k, pair in enumerate(to):
                if pair[side] is not None:
                    axes[pair[side]].append(k)
            maps.append(axes)
        return _sliced(inner, sl, maps)
    return None


def _sliced(inner, sl, maps):
    """Slice each operand of ``inner`` as ``sl`` slices the output, where ``maps[i][d]`` names
    the output axis that operand i's axis d follows (none: kept whole; a size-1 axis against a
    longer output axis: broadcast, kept), then ``inner`` on the slices, writing ``sl``'s
    output."""
    starts, sizes = _box(sl)
    dynamic = sl.primitive.name == "dynamic_slice"
    full = inner.outvars[0].aval.shape
    zero = Const(np.zeros((), _index_dtype(starts))) if dynamic else 0
    new, invars = [], []
    for a, axes in zip(inner.invars, maps):
        aval = aval_of(a)
        if aval.ndim == 0:  # a scalar operand (elementwise)
            invars.append(a)
            continue
        if aval.ndim != len(axes):
            return None
        st, sz = [], []
        for d, ks in enumerate(axes):
            dim = aval.shape[d]
            if not ks or (dim == 1 and full[ks[0]] != 1):
                st.append(zero)
                sz.append(dim)
            else:
                st.append(starts[ks[0]])
                sz.append(sizes[ks[0]])
        if tuple(sz) == aval.shape:
            invars.append(a)
            continue
        out = new_ref(aval.update(shape=tuple(sz)))
        if dynamic:
            node = Node(
                lax.dynamic_slice_p,
                dict(sl.params, slice_sizes=tuple(sz)),
                (a, *st),
                (out,),
                inner.path,
            )
        else:
            limit = tuple(b + n for b, n in zip(st, sz))
            params = dict(sl.params, start_indices=tuple(st), limit_indices=limit, strides=None)
            node = Node(lax.slice_p, params, (a,), (out,), inner.path)
        new.append(node)
        invars.append(out)
    return new + [inner._replace(invars=tuple(invars), outvars=sl.outvars)]


def _index_dtype(starts):
    for s in starts:
        if isinstance(s, Ref):
            return s.aval.dtype
    return np.asarray(starts[0].value).dtype if starts else np.int32
