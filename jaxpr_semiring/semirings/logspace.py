"""Log-space sum-type semirings: ``Log`` (log Σ|path product|), ``Counting`` (log #paths) and
``Entropy`` (path entropy). Their contractions are max-shifted real matmuls against lifted
weights (:mod:`jaxpr_semiring.kernels.lifted`).

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> round(float(js.semiring_grad(lambda x: jnp.exp(x) + x * x, js.Log())(0.0)), 4)  # log(1 + 0 + 0)
0.0
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import kernels
from ..numerics import (
    abs_xlogx,
    broadcast_to,
    finite_or_zero,
    first_share,
    log_abs,
    logaddexp,
    logsumexp,
    opaque,
    scale_log,
)
from .base import Semiring

__all__ = ["Log", "Counting", "Entropy", "EntropyValue"]


def _log_scatter(lv, index_map):
    """Log-space ⊕-scatter, shifted: (the shift per target, e^(v − shift) per update)."""
    m = index_map.max(lv)
    m_at_update = finite_or_zero(index_map.back(m))
    return finite_or_zero(m), jnp.exp(lv - m_at_update)


class Log(Semiring):
    """Log-sum-|product|: log Σ_paths |g(p)|, the total absolute gradient flow (log space).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x            # paths e^x, x, x
    >>> float(js.semiring_grad(f, js.Log())(1.0))    # log(e + 1 + 1)
    1.551444...
    """

    name = "Log"
    cli_name = "log"
    combine = "logsumexp"
    log_fields = ("value",)
    zero_weight_is_edge = False

    def zeros(self, shape, dtype):
        return jnp.full(shape, -jnp.inf, self.dtype(dtype))

    def ones(self, shape, dtype):
        return opaque(jnp.zeros(shape, self.dtype(dtype)))

    def add(self, a, b):
        return logaddexp(a, b)

    def sum(self, v, axes=None):
        return logsumexp(v, self._axes(v, axes))

    def scale(self, w, v):
        return scale_log(v, log_abs(w.astype(v.dtype)))  # 0̄ annihilates w = ±inf, NaN

    _lift = staticmethod(jnp.abs)  # edge weight → its entry in the real matmul

    def dot_general(self, v, w, dimension_numbers, precision=None):
        # max-shifted exp → one real matmul in the operands' own layouts (no transposed copy of
        # the weights) → log
        w = w.astype(v.dtype)
        shift_v, shift_out, dead = kernels.log_shift(v, w.ndim, dimension_numbers, with_dead=True)
        (z,) = kernels.lifted_dots([(jnp.exp(v - shift_v), self._lift)], w, dimension_numbers)
        # a row with no path stays 0̄ (the matmul's 0·NaN or 0·inf would make it NaN)
        return jnp.where(dead, -jnp.inf, jnp.log(z) + shift_out)

    def scatter(self, v, index_map):
        shift, weights = _log_scatter(v, index_map)
        return jnp.log(index_map.add(weights)) + shift


class Counting(Log):
    """Log of the number of paths: every edge lifts to 1̄ whatever its weight, so the value is
    **log #paths** (a count would overflow float32 on any deep model).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x            # three paths
    >>> float(jnp.exp(js.semiring_grad(f, js.Counting())(1.0)))
    3.0...
    """

    name = "Counting"
    cli_name = "counting"
    zero_weight_is_edge = ignores_weights = True

    def scale(self, w, v):
        return broadcast_to(v, w.shape)

    _lift = staticmethod(jnp.ones_like)


class EntropyValue(NamedTuple):
    """log Z = log Σ|g(p)| and the |g|-weighted mean of log|g(p)| over paths."""

    log_z: jax.Array
    mean_log_abs: jax.Array

    @property
    def entropy(self) -> jax.Array:
        """Path entropy H = log Z − E[log|g|] (paper §4.3)."""
        return self.log_z - self.mean_log_abs


class Entropy(Semiring):
    """Path entropy in log space (paper §4.3, stable in float32 on deep models).

    Paths are weighted ∝ |g(p)|; the value holds log Z and E[log|g(p)|], so H = log Z − E[log|g|].
    ⊕ is a weighted log-add; lift(w) adds log|w| to both. 0̄ = (−inf, 0), 1̄ = (0, 0).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: 2.0 * x + 2.0 * x             # two equal paths: H = log 2
    >>> float(js.semiring_grad(f, js.Entropy())(1.0).entropy)
    0.693147...
    """

    name = "Entropy"
    cli_name = "entropy"
    fields = ("log_z", "mean_log_abs", "entropy")
    default_field, flow_field, combine = "entropy", "log_z", "logsumexp"
    log_fields = ("log_z", "mean_log_abs")
    zero_weight_is_edge = False

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return EntropyValue(jnp.full(shape, -jnp.inf, dt), jnp.zeros(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return EntropyValue(*opaque((jnp.zeros(shape, dt), jnp.zeros(shape, dt))))

    def add(self, a, b):
        # the mean moves towards a's by a's share of Z; each field from the inputs alone (one
        # fusion each, no shared intermediate)
        share = first_share(a.log_z, b.log_z)
        mean = b.mean_log_abs + (a.mean_log_abs - b.mean_log_abs) * share
        lz = logaddexp(a.log_z, b.log_z)
        return EntropyValue(lz, jnp.where(jnp.isnan(lz), lz, mean))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        m = jnp.max(v.log_z, axis=axes, keepdims=True, initial=-jnp.inf)
        ref = finite_or_zero(m)
        wts = jnp.exp(v.log_z - ref)
        total = jnp.sum(wts, axis=axes, keepdims=True)
        mean = jnp.sum(wts * v.mean_log_abs, axis=axes, keepdims=True) / jnp.where(
            total > 0, total, 1
        )
        lz = jnp.squeeze(jnp.log(total) + ref, axes)
        return EntropyValue(lz, jnp.where(jnp.isnan(lz), lz, jnp.squeeze(mean, axes)))

    def scale(self, w, v):
        lw = log_abs(w.astype(v.log_z.dtype))
        lz = scale_log(v.log_z, lw)  # 0̄ annihilates w = ±inf, NaN
        mean = jnp.where(lz == -jnp.inf, 0, v.mean_log_abs + lw)
        return EntropyValue(lz, jnp.where(jnp.isnan(lz), lz, mean))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        w = w.astype(v.log_z.dtype)
        shift_v, shift_out, dead = kernels.log_shift(
            v.log_z, w.ndim, dimension_numbers, with_dead=True
        )
        e = jnp.exp(v.log_z - shift_v)
        # Z and Σ e·mean share |w| (one matmul over the stacked rows); weights in their own
        # layout (no transposed copy), lifted chunk by chunk when large.
        z, z_mean, z_logw = kernels.lifted_dots(
            [(e, jnp.abs), (e * v.mean_log_abs, jnp.abs), (e, abs_xlogx)], w, dimension_numbers
        )
        alive = z > 0
        out_lz = jnp.where(dead, -jnp.inf, jnp.log(z) + shift_out)  # no path: 0̄ (see Log)
        out_mean = jnp.where(alive & ~dead, (z_mean + z_logw) / jnp.where(alive, z, 1), 0)
        return EntropyValue(out_lz, jnp.where(jnp.isnan(out_lz), out_lz, out_mean))

    def scatter(self, v, index_map):
        shift, weights = _log_scatter(v.log_z, index_map)
        z = index_map.add(weights)
        z_mean = index_map.add(weights * v.mean_log_abs)
        alive = z > 0
        lz = jnp.log(z) + shift
        mean = jnp.where(alive, z_mean / jnp.where(alive, z, 1), 0)
        return EntropyValue(lz, jnp.where(jnp.isnan(lz), lz, mean))
