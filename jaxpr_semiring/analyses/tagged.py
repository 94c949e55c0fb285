"""``Tagged(S)``: any semiring's values split into channels, one per *component* of a model.

A tagged value is a tuple of ``S`` values, one per channel, with the channels' ids as static
data. Every operation is ``S``'s operation channel by channel, so a path's contribution stays in
the channel it is in; ⊕ over the channels of a value is the plain ``S`` value (:meth:`merge`).
An observer of the backward walk moves contributions between channels where a path crosses a
labelled equation (:meth:`tag`, :meth:`split`; see :mod:`jaxpr_semiring.models.components`):
then a branch point's channels hold the flows of the paths by their first labelled step.

Channels are *sparse*: a value stores only the channels that can be non-0̄, which the walk
knows statically. Away from branch points a value has one channel, so a tagged pass costs about
what an untagged one does, however many components there are. A value that is statically 0̄
keeps its shape in the pseudo-channel :data:`ZERO`, dropped as soon as a real channel joins.
A channel made by :meth:`split` also knows statically where along its axis it can be non-0̄:
a contraction over that axis reads only those elements (a fused q/k/v projection split into
three channels costs one contraction's work, not three).

Tagged values cannot be the loop-carried cotangents of a ``scan`` or the branch results of a
``cond`` whose channels differ between iterations or branches (those need one fixed pytree).

>>> import jax.numpy as jnp
>>> from jaxpr_semiring.semirings import Real
>>> T = Tagged(Real())
>>> v = T.add(T.tag(jnp.array([1.0, 2.0]), 1), T.tag(jnp.array([10.0, 20.0]), 2))
>>> v.channels, T.merge(v).tolist(), T.channel(T.scale(jnp.array(3.0), v), 2).tolist()
((1, 2), [11.0, 22.0], [30.0, 60.0])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..semirings.base import Semiring

__all__ = ["Tagged", "TaggedValue", "ZERO"]

ZERO = -1  # pseudo-channel of a statically 0̄ value: carries the shape, holds no path


class TaggedValue:
    """One ``S`` value per channel (``values``), the channel ids (``channels``, static) and,
    per channel, where it can be non-0̄ (``support``, static): None (anywhere) or
    ``(axis, indices)`` (only at those indices of that primal axis)."""

    __slots__ = ("values", "channels", "support")

    def __init__(self, values: Sequence[Any], channels: Sequence[int], support=None):
        self.values = tuple(values)
        self.channels = tuple(int(c) for c in channels)
        self.support = tuple(support) if support is not None else (None,) * len(self.values)

    def __repr__(self):
        return f"TaggedValue(channels={self.channels})"


jax.tree_util.register_pytree_node(
    TaggedValue,
    lambda t: (t.values, (t.channels, t.support)),
    lambda aux, vs: TaggedValue(vs, *aux),
)


class Tagged(Semiring):
    """``S`` with values split into channels (see the module docstring). ``seed``: the channel
    of 1̄ at the output.

    >>> import jax.numpy as jnp
    >>> from jaxpr_semiring.semirings import MaxProduct
    >>> T = Tagged(MaxProduct())
    >>> v = T.split(MaxProduct().ones((4,), jnp.float32), np.array([5, 5, 6, 6]))
    >>> v.channels, T.channel(v, 6).top_pos.tolist(), T.merge(v).top_pos.tolist()
    ((5, 6), [-inf, -inf, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, semiring: Semiring, seed: int = 0):
        self.semiring = semiring
        self.seed = int(seed)
        self.extra_axes = semiring.extra_axes
        self.name = f"Tagged({semiring.name})"
        self.zero_weight_is_edge = semiring.zero_weight_is_edge
        self.is_gradient = semiring.is_gradient

    def __repr__(self):
        return f"Tagged({self.semiring!r})"

    def dtype(self, dtype):
        return self.semiring.dtype(dtype)

    # ------------------------------------------------------------------- channel operations

    def tag(self, v, channel: int) -> TaggedValue:
        """The ``S`` value ``v`` as the only channel ``channel``."""
        return TaggedValue((v,), (channel,))

    def split(self, v, channel_of: np.ndarray, axis: int = -1) -> TaggedValue:
        """``v`` spread over channels along primal axis ``axis``: element i goes to channel
        ``channel_of[i]`` (e.g. a fused q/k/v projection's output columns)."""
        S = self.semiring
        channel_of = np.asarray(channel_of)
        ndim = jax.tree.leaves(v)[0].ndim - self.extra_axes
        axis %= ndim
        shape = [1] * ndim
        shape[axis] = channel_of.size
        ids = list(dict.fromkeys(channel_of.tolist()))
        return TaggedValue(
            [S.where(jnp.asarray(channel_of == c).reshape(shape), v) for c in ids],
            ids,
            [(axis, tuple(np.flatnonzero(channel_of == c).tolist())) for c in ids],
        )

    def merge(self, t: TaggedValue):
        """⊕ over all channels: the plain ``S`` value."""
        out = t.values[0]
        for v in t.values[1:]:
            out = self.semiring.add(out, v)
        return out

    def channel(self, t: TaggedValue, channel: int):
        """Channel ``channel`` of ``t`` as an ``S`` value (0̄ if ``t`` has none)."""
        if channel in t.channels:
            return t.values[t.channels.index(channel)]
        return self._zero_like(t.values[0])

    def _zero_like(self, v):
        return self.semiring.where(jnp.zeros((), bool), v)

    def _primal_shape(self, v) -> tuple:
        leaf = jax.tree.leaves(v)[0]
        return tuple(leaf.shape[: leaf.ndim - self.extra_axes])

    def _align(self, values: Sequence[TaggedValue]):
        """The real channels of any of ``values`` and, per channel, each value's entry there
        (0̄ shaped like that value where it has none). Only-0̄ inputs give [ZERO]."""
        ids = sorted({c for t in values for c in t.channels if c != ZERO}) or [ZERO]
        rows = []
        for c in ids:
            rows.append(
                [
                    t.values[t.channels.index(c)]
                    if c in t.channels
                    else self._zero_like(t.values[0])
                    for t in values
                ]
            )
        return ids, rows

    def _per_channel(self, fn: Callable, t: TaggedValue) -> TaggedValue:
        return TaggedValue([fn(v) for v in t.values], t.channels)

    # ------------------------------------------------------------------------ the protocol

    def zeros(self, shape, dtype):
        return TaggedValue((self.semiring.zeros(shape, dtype),), (ZERO,))

    def ones(self, shape, dtype):
        return TaggedValue((self.semiring.ones(shape, dtype),), (self.seed,))

    def add(self, a, b):
        S = self.semiring
        if a.channels == (ZERO,) or b.channels == (ZERO,):
            keep, drop = (b, a) if a.channels == (ZERO,) else (a, b)
            if self._primal_shape(keep.values[0]) == self._primal_shape(drop.values[0]):
                return keep
        ids, rows = self._align([a, b])
        same = self._primal_shape(a.values[0]) == self._primal_shape(b.values[0])
        out = []
        for c, (x, y) in zip(ids, rows):
            if same and c not in a.channels:
                out.append(y)
            elif same and c not in b.channels:
                out.append(x)
            else:
                out.append(S.add(x, y))
        return TaggedValue(out, ids)

    def sum(self, v, axes=None):
        return self._per_channel(lambda x: self.semiring.sum(x, axes), v)

    def scale(self, w, v):
        return self._per_channel(lambda x: self.semiring.scale(w, x), v)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        S = self.semiring
        if v.channels == (ZERO,):  # no contraction for a known 0̄: only its shape
            x = jax.tree.leaves(v.values[0])[0]
            out = jax.eval_shape(
                lambda a, b: lax.dot_general(a, b, dimension_numbers),
                jax.ShapeDtypeStruct(self._primal_shape(v.values[0]), x.dtype),
                jax.ShapeDtypeStruct(w.shape, w.dtype),
            )
            return self.zeros(out.shape, x.dtype)
        (contract, w_contract), _ = dimension_numbers
        if any(s is not None and s[0] in contract for s in v.support):
            # channels non-0̄ only at some indices of a contracted axis: contract those alone
            return TaggedValue(
                [
                    self._contract_support(x, s, w, dimension_numbers, precision)
                    for x, s in zip(v.values, v.support)
                ],
                v.channels,
            )
        if len(v.values) == 1:
            return self._per_channel(lambda x: S.dot_general(x, w, dimension_numbers, precision), v)
        # one contraction for all channels: they are one more free axis of v, after its primal
        # axes, which lax.dot_general puts after v's other free axes in the output
        nd = len(self._primal_shape(v.values[0]))
        at = nd - len(contract)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs, axis=nd), *v.values)
        out = S.dot_general(stacked, w, dimension_numbers, precision)
        return TaggedValue(
            [jax.tree.map(lambda a: jnp.take(a, i, axis=at), out) for i in range(len(v.values))],
            v.channels,
        )

    def _contract_support(self, x, support, w, dimension_numbers, precision):
        S = self.semiring
        (contract, w_contract), _ = dimension_numbers
        if support is not None and support[0] in contract:
            axis, idx = support
            w_axis = w_contract[list(contract).index(axis)]
            lo, hi = idx[0], idx[-1] + 1
            if hi - lo == len(idx):  # contiguous: a slice
                x = S.map(lambda a: lax.slice_in_dim(a, lo, hi, axis=axis), x)
                w = lax.slice_in_dim(w, lo, hi, axis=w_axis)
            else:
                x = S.map(lambda a: jnp.take(a, np.asarray(idx), axis=axis), x)
                w = jnp.take(w, np.asarray(idx), axis=w_axis)
        return S.dot_general(x, w, dimension_numbers, precision)

    def scatter(self, v, index_map):
        return self._per_channel(lambda x: self.semiring.scatter(x, index_map), v)

    def map(self, fn, *values):
        ids, rows = self._align(values)
        return TaggedValue([self.semiring.map(fn, *row) for row in rows], ids)

    def linear_vjp(self, fn, primals, ct):
        per = [self.semiring.linear_vjp(fn, primals, v) for v in ct.values]
        if any(p is None for p in per):
            return None
        return [TaggedValue([p[i] for p in per], ct.channels) for i in range(len(primals))]
