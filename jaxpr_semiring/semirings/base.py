"""The semiring protocol, and the index maps through which semirings ⊕-scatter.

A semiring value is a pytree of arrays shaped like the primal node it belongs to (a semiring
may add trailing axes, e.g. ``TopK``'s k). The rules in :mod:`jaxpr_semiring.rules` only ever
call the methods below, so a user-defined semiring is a subclass implementing them:

=====================================  =========================================================
``zeros(shape, dtype)``                0̄ (no path), for a primal of that shape and dtype
``ones(shape, dtype)``                 1̄ (the empty path), seeds the output
``add(a, b)``                          a ⊕ b
``sum(v, axes)``                       ⊕-reduce over ``axes`` (the aggregated derivative, Eq. 3)
``scale(w, v)``                        lift(w) ⊗ v for real edge weights ``w``, broadcasting
``dot_general(v, w, dims)``            ⊕_c lift(w[..c..]) ⊗ v[..c..], ``lax.dot_general`` layout
``scatter(v, index_map)``              ⊕ of ``v``'s elements into the elements they map to
=====================================  =========================================================

and inherits ``map`` (apply a primal-shaped array function to every leaf) and ``where``
(select, 0̄ elsewhere) for data movement.

>>> import jax.numpy as jnp
>>> from jaxpr_semiring import MaxProduct
>>> S = MaxProduct()
>>> v = S.scale(jnp.array([2.0, -3.0]), S.ones((2,), jnp.float32))
>>> S.sum(v, axes=(0,)).top_pos.item(), S.sum(v, axes=(0,)).top_neg.item()
(2.0, -3.0)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import registry

__all__ = ["Value", "Semiring", "IndexMap", "value_dtype"]

Value = Any  # a pytree of arrays


def value_dtype(dtype) -> np.dtype:
    """The dtype semiring values use for a primal of ``dtype``: at least float32."""
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        return np.dtype(jnp.float32)
    return dtype


def _lowest(dtype):
    return -jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).min


def _highest(dtype):
    return jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).max


class IndexMap:
    """A many-to-one map from update elements to target elements (a gather read backwards).

    ``add``/``max``/``min`` scatter an update-shaped array into a target-shaped one, combining
    colliding elements and filling untouched ones with the reducer's identity; ``back`` reads a
    target-shaped array at every update's position. Semirings build their ⊕-scatter from these.
    """

    def __init__(self, target_shape: Sequence[int], scatter_fn: Callable, gather_fn: Callable):
        self.target_shape = tuple(target_shape)
        self._scatter = scatter_fn  # (lax.scatter_xxx, operand, updates) -> operand
        self._gather = gather_fn

    def _into(self, op, x, fill):
        return self._scatter(op, jnp.full(self.target_shape, fill, x.dtype), x)

    def add(self, x):
        return self._into(lax.scatter_add, x, 0)

    def max(self, x):
        return self._into(lax.scatter_max, x, _lowest(x.dtype))

    def min(self, x):
        return self._into(lax.scatter_min, x, _highest(x.dtype))

    def back(self, t):
        return self._gather(t)


class Semiring:
    """Base class of semirings. Subclasses implement the methods that raise here.

    Data movement (reshape, transpose, pad with 0̄, select) is generic: ``map`` applies a
    function written for primal-shaped arrays to every leaf of a value. A semiring whose leaves
    carry trailing axes beyond the primal's sets ``extra_axes`` and overrides ``map``.
    """

    name: str = "Semiring"
    extra_axes: int = 0  # trailing axes of every leaf beyond the primal's shape

    # --- the one description of the semiring outside the backward pass: the command line,
    # the reports and data-set runs read only these (a subclass setting ``cli_name`` is
    # registered by name, :mod:`.registry`, and works there with no other edit)
    cli_name: str | None = None  # "max-product": ``--semiring`` and documents' "semiring"
    cli_arg: str | None = None  # the name of the argument after ":" ("K" in "top-k:K")
    fields: tuple[str, ...] = ("value",)  # a value's fields in documents, in order
    default_field: str = "value"  # what renderers show unless told otherwise
    flow_field: str = "value"  # the field that measures how much flows (summary lines)
    combine: str = "sum"  # ⊕ of ``flow_field`` in summaries: "sum", "logsumexp", "max"
    log_fields: tuple[str, ...] = ()  # fields holding logarithms (colour scales)
    # lift(0) ⊗ v ≠ 0̄: a weight-0 edge is still a path (True, the safe default, costs atomic
    # blocks a reachability mask; tests/test_semiring_description.py checks every semiring)
    zero_weight_is_edge: bool = True
    ignores_weights: bool = False  # values count paths whatever they weigh
    # values are jax.grad's, 0·NaN at elements no path reaches included: graph rewrites that
    # drop multiplications by a zero cotangent (``rules.slices``) are not applied
    is_gradient: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("cli_name"):
            registry.register(cls)

    @classmethod
    def from_cli(cls, arg: str | None) -> "Semiring":
        """The instance ``"<cli_name>:<arg>"`` names (``arg`` None: no argument given)."""
        if arg is not None:
            raise ValueError(f"semiring {cls.cli_name!r} takes no argument (got {arg!r}).")
        return cls()

    @property
    def label(self) -> str:
        """How documents and the command line name this instance (``"top-k:3"``)."""
        return self.cli_name or type(self).__name__

    def field_values(self, value: Value) -> dict[str, np.ndarray]:
        """A value as ``{field: array}`` for documents, in :attr:`fields` order."""
        if len(self.fields) == 1 and not hasattr(value, "_fields"):
            return {self.fields[0]: np.asarray(value)}
        return {f: np.asarray(getattr(value, f)) for f in self.fields}

    def dtype(self, dtype) -> np.dtype:
        return value_dtype(dtype)

    def zeros(self, shape: Sequence[int], dtype) -> Value:
        raise NotImplementedError

    def ones(self, shape: Sequence[int], dtype) -> Value:
        raise NotImplementedError

    def add(self, a: Value, b: Value) -> Value:
        raise NotImplementedError

    def sum(self, v: Value, axes: Sequence[int] | int | None = None) -> Value:
        raise NotImplementedError

    def scale(self, w: jax.Array, v: Value) -> Value:
        raise NotImplementedError

    def dot_general(self, v: Value, w: jax.Array, dimension_numbers, precision=None) -> Value:
        raise NotImplementedError

    def scatter(self, v: Value, index_map: IndexMap) -> Value:
        raise NotImplementedError

    def linear_vjp(self, fn: Callable, primals: Sequence, ct: Value) -> list | None:
        """Cotangents of ``fn``'s operands, for a ``fn`` linear in each operand, when this
        semiring's ⊕/⊗ are the real field's (JAX's own transpose rules apply); None otherwise,
        and the caller builds them from the methods above."""
        return None

    def low_rank_dot(self, v: Value, U, V, G, owner) -> Value | None:
        """⊕_k lift(J[r, j, k]) ⊗ v[r, k] → [R, N] for v [R, A] and weights given by factors,
        J[r, j, k] = Σ_i U[i, r, k]·V[i, r, j] + Σ_c [owner[c, r, k] = j]·G[c, r, k] (an atomic
        block's Jacobian), when a kernel does it without storing J; None otherwise, and the
        caller stores J in chunks for :meth:`dot_general`."""
        return None

    # --- generic helpers
    def map(self, fn: Callable, *values: Value) -> Value:
        """Apply ``fn`` (written for primal-shaped arrays) to corresponding leaves."""
        return jax.tree.map(fn, *values)

    def where(self, mask, v: Value, other: Value | None = None) -> Value:
        """``v`` where ``mask``, else ``other`` (default 0̄)."""
        if other is None:
            other = self.zeros((), jax.tree.leaves(v)[0].dtype)
        return self.map(lambda a, b: jnp.where(mask, a, b), v, other)

    def _axes(self, v, axes) -> tuple[int, ...]:
        """``axes`` of the primal-shaped part of ``v``, normalized (None: all of them)."""
        ndim = jax.tree.leaves(v)[0].ndim - self.extra_axes
        if axes is None:
            return tuple(range(ndim))
        if isinstance(axes, int):
            axes = (axes,)
        return tuple(a % ndim for a in axes)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))
