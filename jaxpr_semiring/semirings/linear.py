"""Linear-space semirings: ``Real`` (the gradient), ``Expectation`` (the paper's raw entropy
semiring) and ``Boolean`` (reachability).

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> js.semiring_grad(lambda x: jnp.sum(3.0 * x), js.Boolean())(jnp.ones(2)).tolist()
[True, True]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import kernels
from ..numerics import abs_xlogx, broadcast_to, xlogx
from .base import Semiring

__all__ = ["Real", "Expectation", "ExpectationValue", "Boolean"]


class Real(Semiring):
    """Sum-product: the ordinary gradient. Value: an array.

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.sum(jnp.sin(x) * x)
    >>> x = jnp.arange(3.0)
    >>> bool(jnp.allclose(js.semiring_grad(f, js.Real())(x), jax.grad(f)(x)))
    True
    """

    name = "Real"
    cli_name = "real"
    zero_weight_is_edge = False
    is_gradient = True

    # dtype: Semiring.dtype (at least float32, as every semiring: a bf16 model's gradient is
    # accumulated in float32; docs/semantics.md, "Low-precision models")

    def zeros(self, shape, dtype):
        return jnp.zeros(shape, self.dtype(dtype))

    def ones(self, shape, dtype):
        return jnp.ones(shape, self.dtype(dtype))

    def add(self, a, b):
        return a + b

    def sum(self, v, axes=None):
        return jnp.sum(v, axis=self._axes(v, axes))

    def scale(self, w, v):
        return w.astype(v.dtype) * v

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return lax.dot_general(v, w.astype(v.dtype), dimension_numbers, precision=precision)

    def scatter(self, v, index_map):
        return index_map.add(v)

    def linear_vjp(self, fn, primals, ct):
        # at the value dtype: bf16 operands are exact in float32, their products' sums are not
        primals = [p.astype(self.dtype(p.dtype)) for p in primals]
        out = jax.eval_shape(fn, *primals)
        _, pullback = jax.vjp(fn, *primals)
        grads = pullback(ct.astype(out.dtype))
        return [g.astype(self.dtype(p.dtype)) for g, p in zip(grads, primals)]


class ExpectationValue(NamedTuple):
    """Z = Σ|g(p)| and t = Σ|g(p)| log|g(p)| in raw space."""

    z: jax.Array
    t: jax.Array

    @property
    def entropy(self) -> jax.Array:
        """Path entropy H = log Z − t/Z; −inf where no path has a nonzero product (as for
        :class:`~jaxpr_semiring.semirings.EntropyValue`), not NaN; NaN where a path's product
        is NaN."""
        alive = self.z > 0
        z = jnp.where(alive, self.z, 1)
        h = jnp.where(alive, jnp.log(z) - self.t / z, -jnp.inf)
        return jnp.where(jnp.isnan(self.z) | jnp.isnan(self.t), jnp.nan, h)


class Expectation(Semiring):
    """The paper's expectation semiring in raw space: ⟨Z, t⟩ with lift(w) = ⟨|w|, |w| log|w|⟩.

    ⟨a₁, b₁⟩ ⊗ ⟨a₂, b₂⟩ = ⟨a₁a₂, a₁b₂ + a₂b₁⟩, ⊕ pairwise +. 0̄ = ⟨0, 0⟩ annihilates every
    weight (±inf and NaN included: no 0·NaN); a path of product NaN makes the value NaN.
    Overflows on deep graphs: use :class:`~jaxpr_semiring.Entropy` there.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> float(js.semiring_grad(lambda x: 2.0 * x + 2.0 * x, js.Expectation())(1.0).entropy)
    0.693147...
    """

    name = "Expectation"
    cli_name = "expectation"
    zero_weight_is_edge = False
    fields = ("z", "t")
    default_field = flow_field = "z"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return ExpectationValue(jnp.zeros(shape, dt), jnp.zeros(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return ExpectationValue(jnp.ones(shape, dt), jnp.zeros(shape, dt))

    def add(self, a, b):
        return ExpectationValue(a.z + b.z, a.t + b.t)

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        return ExpectationValue(jnp.sum(v.z, axis=axes), jnp.sum(v.t, axis=axes))

    def scale(self, w, v):
        aw = jnp.abs(w.astype(v.z.dtype))
        dead = v.z == 0  # 0̄ (or only zero products): annihilates w = ±inf, NaN
        zero = jnp.zeros_like(v.z)
        return ExpectationValue(
            jnp.where(dead, zero, aw * v.z), jnp.where(dead, zero, aw * v.t + xlogx(aw) * v.z)
        )

    def dot_general(self, v, w, dimension_numbers, precision=None):
        w = w.astype(v.z.dtype)
        out_z, zt, zlogw = kernels.lifted_dots(
            [(v.z, jnp.abs), (v.t, jnp.abs), (v.z, abs_xlogx)], w, dimension_numbers
        )
        # a row with no path stays 0̄ (the matmul's 0·NaN or 0·inf would make it NaN)
        dead = kernels.lifted.dead_rows(v.z == 0, w.ndim, dimension_numbers)
        zero = jnp.zeros_like(out_z)
        return ExpectationValue(jnp.where(dead, zero, out_z), jnp.where(dead, zero, zt + zlogw))

    def scatter(self, v, index_map):
        return ExpectationValue(index_map.add(v.z), index_map.add(v.t))


class Boolean(Semiring):
    """Reachability: does any path lead from this input to the output?

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: x[0] * 0.0 + jax.lax.stop_gradient(x[1])
    >>> js.semiring_grad(f, js.Boolean())(jnp.ones(2)).tolist()
    [True, False]
    """

    name = "Boolean"
    cli_name = "boolean"
    combine = "max"
    ignores_weights = True

    def dtype(self, dtype):
        return np.dtype(bool)

    def zeros(self, shape, dtype):
        return jnp.zeros(shape, bool)

    def ones(self, shape, dtype):
        return jnp.ones(shape, bool)

    def add(self, a, b):
        return a | b

    def sum(self, v, axes=None):
        return jnp.any(v, axis=self._axes(v, axes))

    def scale(self, w, v):
        return broadcast_to(v, w.shape)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        ones = jnp.ones(w.shape, jnp.float32)
        return lax.dot_general(v.astype(jnp.float32), ones, dimension_numbers) > 0

    def scatter(self, v, index_map):
        return index_map.add(v.astype(jnp.float32)) > 0
