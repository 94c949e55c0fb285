"""Slices sunk below what they slice: ``dynamic_slice(dot_general(x, w))`` →
``dot_general(dynamic_slice(x), dynamic_slice(w))``, and through ``add``, ``sub`` and ``mul``.

A target that reads one position of a model's output (``logits[0, position]``, a masked-LM or
next-token prediction) otherwise computes, and walks backward through, every position: the
vocabulary projection of all tokens, and in the semiring pass its lifted and tropical
contractions, though only one row of it reaches the output. Sinking the slice to the
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

from ..graph import Const, Node, Ref, new_ref
from . import register_rewrite

ELEMENTWISE = ("add", "sub", "mul")


@register_rewrite
def sink_dynamic_slices(nodes: list, keep: frozenset) -> list:
    """Move each ``dynamic_slice`` whose operand is read by it alone below that operand's
    ``dot_general`` or elementwise ``add``/``sub``/``mul``, repeatedly (a slice of
    ``dot + bias`` reaches the contraction)."""
    while True:
        producer = {r.key: i for i, n in enumerate(nodes) for r in n.outvars}
        reads = Counter(a.key for n in nodes for a in n.invars if isinstance(a, Ref))
        for i, node in enumerate(nodes):
            src = node.invars[0] if node.primitive.name == "dynamic_slice" else None
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


def _sink(inner: Node, ds: Node) -> list | None:
    """The nodes replacing ``ds`` = dynamic_slice(``inner``), or None where it does not sink."""
    starts, sizes = ds.invars[1:], ds.params["slice_sizes"]
    out = ds.outvars[0]
    if inner.primitive.name in ELEMENTWISE:
        shape = inner.outvars[0].aval.shape
        axes = [[k] for k in range(len(shape))]
        return _operands(inner, ds, [axes] * len(inner.invars), out)
    if inner.primitive.name == "dot_general":
        (lc, rc), (lb, rb) = inner.params["dimension_numbers"]
        x, y = inner.invars
        if not (isinstance(x, Ref) and isinstance(y, Ref)):
            return None
        xfree = [d for d in range(x.aval.ndim) if d not in lc and d not in lb]
        yfree = [d for d in range(y.aval.ndim) if d not in rc and d not in rb]
        # output axis k → (operand axis in x or None, in y or None): batch, x's free, y's free
        to = [(a, b) for a, b in zip(lb, rb)]
        to += [(a, None) for a in xfree] + [(None, b) for b in yfree]
        maps = []
        for side, operand in ((0, x), (1, y)):
            axes = [[] for _ in range(operand.aval.ndim)]
            for k, pair in enumerate(to):
                if pair[side] is not None:
                    axes[pair[side]].append(k)
            maps.append(axes)
        return _operands(inner, ds, maps, out, starts, sizes)
    return None


def _operands(inner, ds, maps, out, starts=None, sizes=None):
    """Slice each operand of ``inner`` where ``maps[i][d]`` names the output axis that its
    axis d follows (none: kept whole; a size-1 axis against a longer output axis: broadcast,
    kept), then ``inner`` on the slices, writing ``ds``'s output."""
    starts = ds.invars[1:] if starts is None else starts
    sizes = ds.params["slice_sizes"] if sizes is None else sizes
    full = inner.outvars[0].aval.shape
    zero = Const(np.zeros((), _index_dtype(starts)))
    new, invars = [], []
    for a, axes in zip(inner.invars, maps):
        if isinstance(a, Const) and np.ndim(a.value) == 0:
            invars.append(a)
            continue
        if not isinstance(a, Ref) or a.aval.ndim != len(axes):
            return None
        st, sz = [], []
        for d, ks in enumerate(axes):
            dim = a.aval.shape[d]
            if not ks or (dim == 1 and full[ks[0]] != 1):
                st.append(zero)
                sz.append(dim)
            else:
                st.append(starts[ks[0]])
                sz.append(sizes[ks[0]])
        if tuple(sz) == a.aval.shape:
            invars.append(a)
            continue
        sliced = new_ref(a.aval.update(shape=tuple(sz)))
        params = dict(ds.params, slice_sizes=tuple(sz))
        new.append(Node(lax.dynamic_slice_p, params, (a, *st), (sliced,), inner.path))
        invars.append(sliced)
    return new + [inner._replace(invars=tuple(invars), outvars=(out,))]


def _index_dtype(starts):
    for s in starts:
        if isinstance(s, Ref):
            return s.aval.dtype
    return np.asarray(starts[0].value).dtype if starts else np.int32
