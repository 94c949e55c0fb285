"""``Product``: several semirings in one backward pass.

The product of semirings S₁ × … × Sₖ is a semiring whose value is the tuple of the components'
values and whose operations act componentwise; its gradient is the tuple of the components'
gradients. Running it is one trace, one forward pass, one walk and one XLA program for all of
them, instead of one each: ``semiring_grad(f, (MaxProduct(), Entropy()))`` uses it.

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> S = Product(js.Real(), js.MaxProduct())
>>> g = js.semiring_grad(lambda x: jnp.sum(3.0 * x * x), S)(jnp.ones(2))
>>> g[0].tolist(), g[1].top_pos.tolist()
([6.0, 6.0], [3.0, 3.0])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import Semiring, value_dtype

__all__ = ["Product", "as_semiring", "split"]


class Product(Semiring):
    """The componentwise product of semirings: values are tuples, one entry per component.

    Every operation of the protocol is the components' own, so each entry of the result equals
    that semiring's :func:`~jaxpr_semiring.semiring_grad` alone. Values are at least float32
    (a ``Real`` component of a bfloat16 function computes in float32 here).

    >>> import jaxpr_semiring as js
    >>> Product(js.Log(), js.Entropy())
    Product(Log(), Entropy())
    """

    def __init__(self, *semirings: Semiring):
        if not semirings or not all(isinstance(s, Semiring) for s in semirings):
            raise TypeError(
                f"Product needs one or more semirings, got {semirings!r}: pass "
                "semiring objects, e.g. (js.MaxProduct(), js.Entropy())."
            )
        self.semirings = tuple(semirings)
        self.zero_weight_is_edge = any(s.zero_weight_is_edge for s in self.semirings)
        self.ignores_weights = any(s.ignores_weights for s in self.semirings)
        self.is_gradient = any(s.is_gradient for s in self.semirings)
        self.name = "Product(" + ", ".join(s.name for s in self.semirings) + ")"

    def dtype(self, dtype) -> np.dtype:
        return value_dtype(dtype)

    def _each(self, method, *args):
        return tuple(getattr(s, method)(*args) for s in self.semirings)

    def _zip(self, method, values, *args):
        """``method`` of each component on that component's entry of every value in ``values``."""
        return tuple(
            getattr(s, method)(*[v[i] for v in values], *args) for i, s in enumerate(self.semirings)
        )

    def zeros(self, shape, dtype):
        return self._each("zeros", shape, dtype)

    def ones(self, shape, dtype):
        return self._each("ones", shape, dtype)

    def add(self, a, b):
        return self._zip("add", (a, b))

    def sum(self, v, axes=None):
        return self._zip("sum", (v,), axes)

    def scale(self, w, v):
        return tuple(s.scale(w, x) for s, x in zip(self.semirings, v))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return tuple(
            s.dot_general(x, w, dimension_numbers, precision) for s, x in zip(self.semirings, v)
        )

    def scatter(self, v, index_map):
        return tuple(s.scatter(x, index_map) for s, x in zip(self.semirings, v))

    def linear_vjp(self, fn, primals, ct):
        parts = [s.linear_vjp(fn, primals, x) for s, x in zip(self.semirings, ct)]
        if any(p is None for p in parts):
            return None
        return [tuple(p[i] for p in parts) for i in range(len(primals))]

    def map(self, fn, *values):
        return tuple(s.map(fn, *[v[i] for v in values]) for i, s in enumerate(self.semirings))

    def where(self, mask, v, other=None):
        others = other if other is not None else (None,) * len(self.semirings)
        return tuple(s.where(mask, x, o) for s, x, o in zip(self.semirings, v, others))

    def _axes(self, v, axes):
        return self.semirings[0]._axes(v[0], axes)

    def __repr__(self):
        return "Product(" + ", ".join(map(repr, self.semirings)) + ")"

    def __eq__(self, other):
        return type(self) is type(other) and self.semirings == other.semirings

    def __hash__(self):
        return hash((Product, self.semirings))


def as_semiring(semiring) -> Semiring | None:
    """``semiring``, or a :class:`Product` of a tuple/list of semirings."""
    if isinstance(semiring, (tuple, list)):
        return Product(*semiring)
    return semiring


def split(values: Sequence, n: int) -> tuple:
    """Per-leaf tuples of component values → a tuple of ``n`` per-component lists."""
    return tuple([v[i] for v in values] for i in range(n))
