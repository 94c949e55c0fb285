"""Max-type semirings: ``MaxProduct`` (the most positive / most negative path product, linear
space, paper App. A) and ``MaxAbs`` (the largest |path product|, log space). Their contraction
has no BLAS equivalent; which kernel computes it is the ``kernel=`` setting
(:mod:`jaxpr_semiring.kernels.dispatch`).

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> js.MaxProduct(kernel="xla")
MaxProduct(kernel='xla')
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..kernels import dispatch, lowrank
from ..numerics import (
    lexmax,
    lexmax_reduce,
    log_abs,
    max_nan,
    min_nan,
    opaque,
    scale_log,
    sign1,
    signed_scale,
)
from .base import Semiring

__all__ = ["Tropical", "MaxProduct", "MaxProductValue", "MaxAbs", "MaxAbsValue"]


class Tropical(Semiring):
    """Base of the max-type semirings: a ``kernel`` setting chooses their contraction kernel
    (:mod:`jaxpr_semiring.kernels.dispatch`)."""

    def __init__(self, kernel: str = "auto"):
        self.kernel = dispatch.check_kernel(kernel)

    def __repr__(self):
        return (
            f"{type(self).__name__}()"
            if self.kernel == "auto"
            else f"{type(self).__name__}(kernel={self.kernel!r})"
        )


class MaxProductValue(NamedTuple):
    """Most positive and most negative path product."""

    top_pos: jax.Array
    top_neg: jax.Array


class MaxProduct(Tropical):
    """Max-product with signs (paper App. A): the most positive and most negative path product.

    ⊕ is (max, min); lift(w) ⊗ (p, n) is (w·p, w·n) for w ≥ 0 and (w·n, w·p) for w < 0.
    0̄ = (−inf, +inf), 1̄ = (1, 1). A path of product NaN makes both chains NaN (⊕ propagates
    NaN, as ``jnp.maximum`` does). Linear space: path products can under/overflow on very deep
    graphs — use :class:`MaxAbs` there. ``kernel`` chooses the contraction kernel
    (``"auto"``, ``"xla"``, ``"numba"``, ``"pallas"``; see :mod:`jaxpr_semiring.kernels`).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x, y: jnp.exp(x) + (x - y) * y     # paper Fig. 1
    >>> g = js.semiring_grad(f, js.MaxProduct(), argnums=(0, 1))(1.0, 2.0)
    >>> float(g[0].top_pos), float(g[1].top_neg)
    (2.718281..., -2.0)
    """

    name = "MaxProduct"
    cli_name = "max-product"
    fields = ("top_pos", "top_neg")
    default_field = flow_field = "top_pos"
    combine = "max"
    zero_weight_is_edge = True

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxProductValue(jnp.full(shape, -jnp.inf, dt), jnp.full(shape, jnp.inf, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxProductValue(*opaque((jnp.ones(shape, dt), jnp.ones(shape, dt))))

    def add(self, a, b):
        return MaxProductValue(jnp.maximum(a.top_pos, b.top_pos), jnp.minimum(a.top_neg, b.top_neg))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        return MaxProductValue(max_nan(v.top_pos, axes), min_nan(v.top_neg, axes))

    def scale(self, w, v):
        return MaxProductValue(*signed_scale(w.astype(v.top_pos.dtype), v.top_pos, v.top_neg))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return MaxProductValue(
            *dispatch.maxproduct_dot(v.top_pos, v.top_neg, w, dimension_numbers, self.kernel)
        )

    def low_rank_dot(self, v, U, V, G, owner):
        out = lowrank.maxproduct(v.top_pos, v.top_neg, U, V, G, owner, self.kernel)
        return None if out is None else MaxProductValue(*out)

    def scatter(self, v, index_map):
        return MaxProductValue(index_map.max(v.top_pos), index_map.min(v.top_neg))


class MaxAbsValue(NamedTuple):
    """log|g| of the path with the largest |product|, and that product's sign (±1)."""

    log_abs: jax.Array
    sign: jax.Array


class MaxAbs(Tropical):
    """The path with the largest |product|, in log space (never under/overflows).

    ⊕ keeps the larger log|g| (ties: the positive one); lift(w) ⊗ v adds log|w| and multiplies
    signs. 0̄ = (−inf, +1), 1̄ = (0, +1). A path of product NaN makes the value (NaN, NaN).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> g = js.semiring_grad(lambda x: jnp.sum(-3.0 * x), js.MaxAbs())(jnp.ones(2))
    >>> [round(v, 4) for v in g.log_abs.tolist()], g.sign.tolist()
    ([1.0986, 1.0986], [-1.0, -1.0])
    """

    name = "MaxAbs"
    cli_name = "max-abs"
    fields = ("log_abs", "sign")
    default_field = flow_field = "log_abs"
    combine = "max"
    log_fields = ("log_abs",)
    zero_weight_is_edge = False

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxAbsValue(jnp.full(shape, -jnp.inf, dt), jnp.ones(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxAbsValue(*opaque((jnp.zeros(shape, dt), jnp.ones(shape, dt))))

    def add(self, a, b):
        return MaxAbsValue(*lexmax(a.log_abs, a.sign, b.log_abs, b.sign))

    def sum(self, v, axes=None):
        return MaxAbsValue(*lexmax_reduce(v.log_abs, v.sign, self._axes(v, axes)))

    def scale(self, w, v):
        w = w.astype(v.log_abs.dtype)
        la = scale_log(v.log_abs, log_abs(w))  # 0̄ annihilates any w (±inf, NaN)
        return MaxAbsValue(la, jnp.where(la == -jnp.inf, jnp.ones_like(la), v.sign * sign1(w)))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return MaxAbsValue(
            *dispatch.maxabs_dot(v.log_abs, v.sign, w, dimension_numbers, self.kernel)
        )

    def scatter(self, v, index_map):
        la = index_map.max(v.log_abs)
        winner = v.log_abs == index_map.back(la)
        s = index_map.max(jnp.where(winner, v.sign, -jnp.ones_like(v.sign)))
        s = jnp.where(s == -jnp.inf, jnp.ones_like(s), s)
        return MaxAbsValue(la, jnp.where(jnp.isnan(la) | jnp.isnan(s), jnp.nan, s))
