"""Numerics shared by the semirings and the kernels: log-space sums that never produce NaN,
log|w| with log 0 = −inf, 0·log 0 = 0, and the signed / lexicographic max-type products.

NaN (docs/semantics.md, "NaN"): none of these makes a NaN from inputs without one, and every one
passes a NaN on: a NaN operand of a max-type ⊕ wins (it is not ignored, as a comparison would),
a NaN weight times a live value is NaN, and only 0̄ (no path) annihilates it. A NaN value has
every field NaN (a sign included).

Everything here maps arrays to arrays (jax.numpy and lax) and knows nothing about semirings.

>>> import jax.numpy as jnp
>>> float(logaddexp(jnp.float32(-jnp.inf), jnp.float32(-jnp.inf)))
-inf
>>> float(xlogx(jnp.float32(0.0)))
0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "opaque",
    "finite_or_zero",
    "logaddexp",
    "first_share",
    "logsumexp",
    "log_abs",
    "xlogx",
    "abs_xlogx",
    "live",
    "scale_log",
    "sign1",
    "signed_scale",
    "lexmax",
    "lexmax_reduce",
    "max_and_nan",
    "max_nan",
    "min_nan",
    "nan_first_better",
    "first_best",
    "first_best_reduce",
    "broadcast_to",
]


def opaque(x):
    """``x``, but not a compile-time constant to XLA.

    The 1̄ that seeds a backward pass is a constant; so is everything computed from it until it
    meets a function argument. With the token ids closed over, that is a whole [30, 30522]
    logit cotangent, and XLA's constant folder evaluated its max-shift and live-index
    reductions op by op at compile time: seconds per reduction. Semirings seed with an opaque
    1̄ instead."""
    return lax.optimization_barrier(x)


def finite_or_zero(x):
    """``x`` where finite, else 0: a shift that never turns −inf − (−inf) into NaN."""
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _max_and_difference(a, b):
    """(max(a, b), a − b), with a − b = 0 where both are −inf (never −inf − (−inf))."""
    m = jnp.maximum(a, b)
    live = m > -jnp.inf
    zero = jnp.zeros_like(m)
    return m, jnp.where(live, a, zero) - jnp.where(live, b, zero)


@jax.custom_jvp
def logaddexp(a, b):
    """log(eᵃ + eᵇ) that returns −inf (not NaN) when both are −inf. Its derivative is each
    side's share, ½ each when both are −inf (autodiff of the formula would give 0/0 there)."""
    ref = finite_or_zero(jnp.maximum(a, b))
    return ref + jnp.log(jnp.exp(a - ref) + jnp.exp(b - ref))


@logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    a, b = primals
    share = first_share(a, b)
    return logaddexp(a, b), share * tangents[0] + (1 - share) * tangents[1]


def first_share(a, b):
    """eᵃ / (eᵃ + eᵇ), the weight of ``a`` in a log-space ⊕ (½ when both are −inf).

    A logistic of a − b: no intermediate shared with :func:`logaddexp`, so XLA fuses each into
    its own consumer (a shared exp would be a fusion of its own, compile time per ⊕)."""
    return jax.nn.sigmoid(_max_and_difference(a, b)[1])


def logsumexp(a, axes, keepdims=False):
    """⊕-reduce in log space over ``axes``; all −inf gives −inf."""
    axes = tuple(axes)
    m = jnp.max(a, axis=axes, keepdims=True) if a.size else jnp.zeros([1] * a.ndim, a.dtype)
    ref = finite_or_zero(m)
    out = jnp.log(jnp.sum(jnp.exp(a - ref), axis=axes, keepdims=True)) + ref
    return out if keepdims else jnp.squeeze(out, axes)


def log_abs(w):
    """log|w| with log 0 = −inf even under jit (XLA folds log(exp(x)) to x, which turned an
    underflowed weight exp(−3.4e38) = 0 into log-weight −3.4e38 and then overflowed sums)."""
    return jnp.where(w == 0, -jnp.inf, jnp.log(jnp.abs(w)))


def xlogx(x):
    """x·log x with 0·log 0 = 0 (NaN stays NaN)."""
    safe = jnp.where(x > 0, x, jnp.ones_like(x))
    return jnp.where(x > 0, x * jnp.log(safe), jnp.where(jnp.isnan(x), x, jnp.zeros_like(x)))


def live(lv):
    """Where a log-space value is not 0̄ (−inf): a NaN is live (it is a path)."""
    return lv != -jnp.inf


def scale_log(lv, lw):
    """lift(w) ⊗ v in log space, ``lv + lw``, with 0̄ annihilating any ``lw`` (+inf, NaN): no
    −inf + inf = NaN."""
    return jnp.where(live(lv), lv + lw, -jnp.inf)


def abs_xlogx(w):
    """|w|·log|w| with 0·log 0 = 0: the entropy term of an edge weight."""
    return xlogx(jnp.abs(w))


def sign1(w):
    """Sign of an edge weight with sign(0) = +1 (a zero product is not negative); NaN for NaN."""
    return jnp.where(w < 0, -jnp.ones_like(w), jnp.where(jnp.isnan(w), w, jnp.ones_like(w)))


def broadcast_to(v, shape):
    """``v`` broadcast against ``shape`` (numpy rules, keeping v's own larger axes)."""
    return jnp.broadcast_to(v, jnp.broadcast_shapes(v.shape, shape))


def signed_scale(w, top_pos, top_neg):
    """w ⊗ (top_pos, top_neg) of max-product with signs (paper App. A): a negative weight swaps
    the chains. 0̄ = (−inf, +inf) annihilates whatever w is (no inf·0 = NaN, no sign flip, NaN
    included); a NaN value or a NaN weight on a live value gives NaN in both chains."""
    alive = top_pos != -jnp.inf  # a NaN value is alive: it is a path
    pos = w >= 0
    hi = jnp.where(pos, w * top_pos, w * top_neg)
    lo = jnp.where(pos, w * top_neg, w * top_pos)
    return jnp.where(alive, hi, -jnp.inf), jnp.where(alive, lo, jnp.inf)


def lexmax(a_la, a_s, b_la, b_s):
    """The larger of two (log|g|, sign) pairs; equal log|g| keeps the larger sign. A NaN on
    either side wins: (NaN, NaN) (a NaN pair has a NaN sign; elementwise max propagates NaN)."""
    la = jnp.maximum(a_la, b_la)
    s = jnp.where(a_la > b_la, a_s, jnp.where(b_la > a_la, b_s, jnp.maximum(a_s, b_s)))
    return la, s


def _reduce_nan(x, axes, larger: bool, keepdims: bool = False):
    """(max or min of ``x`` over ``axes`` from ∓inf, whether some entry is NaN) in one
    variadic reduce: XLA CPU's vectorized max/min reduction drops NaN on some releases
    (jaxlib 0.10: over 1000 elements), and a second reduction for the flag costs a second pass
    over a fused producer (this one measured no slower than ``jnp.max`` alone on XLA CPU)."""
    axes = tuple(a % x.ndim for a in axes) if x.ndim else ()
    op = jnp.maximum if larger else jnp.minimum
    init = jnp.array(-jnp.inf if larger else jnp.inf, x.dtype)
    out, nan = lax.reduce(
        (x, jnp.isnan(x)),
        (init, jnp.array(False)),
        lambda a, b: (op(a[0], b[0]), a[1] | b[1]),
        axes,
    )
    if keepdims:
        out, nan = (jnp.expand_dims(a, axes) for a in (out, nan))
    return out, nan


def max_and_nan(x, axes, keepdims: bool = False):
    """(max of ``x`` over ``axes`` from −inf, whether some reduced entry is NaN): one pass."""
    return _reduce_nan(x, tuple(axes), True, keepdims)


def max_nan(x, axes, keepdims: bool = False):
    """``jnp.max(x, axes, initial=-inf)``, NaN where some reduced entry is NaN (on every XLA)."""
    out, nan = _reduce_nan(x, axes, True, keepdims)
    return jnp.where(nan, jnp.nan, out)


def min_nan(x, axes, keepdims: bool = False):
    """``jnp.min(x, axes, initial=inf)``, NaN where some reduced entry is NaN (on every XLA)."""
    out, nan = _reduce_nan(x, axes, False, keepdims)
    return jnp.where(nan, jnp.nan, out)


def lexmax_reduce(la, s, axes):
    """:func:`lexmax` over ``axes``; an empty or all −inf reduction has sign −1 (callers map
    dead entries to their 0̄ sign); a NaN log|g| or sign makes (NaN, NaN)."""
    axes = tuple(axes)
    best, nan = _reduce_nan(la, axes, True, keepdims=True)
    sign = jnp.max(jnp.where(la == best, s, -jnp.ones_like(s)), axis=axes, initial=-1.0)
    best = jnp.squeeze(best, axes)
    nan = jnp.squeeze(nan, axes) | jnp.isnan(sign)
    return jnp.where(nan, jnp.nan, best), jnp.where(nan, jnp.nan, sign)


def nan_first_better(val_a, code_a, val_b, code_b, larger: bool):
    """Whether candidate b beats a in a first-best order: a NaN value first (it is absorbing),
    then the larger (``larger``) or smaller value, then the smaller code."""
    na, nb = jnp.isnan(val_a), jnp.isnan(val_b)
    strictly = (val_b > val_a) if larger else (val_b < val_a)
    tie = (val_b == val_a) | (na & nb)
    return (nb & ~na) | strictly | (tie & (code_b < code_a))


def first_best(chain, axes, larger: bool = True):
    """Reduce one chain of (value, int code, payload) over ``axes`` in one variadic reduce: the
    first-best candidate in :func:`nan_first_better`'s order (NaN first, then the larger
    (``larger``) or smaller value, then the smaller code). With nothing to reduce:
    (∓inf, the code dtype's max, 0). :func:`first_best_reduce` does two chains at once.

    >>> import jax.numpy as jnp
    >>> v, c, w = first_best((jnp.array([1.0, 3.0, 3.0]), jnp.array([5, 9, 2]),
    ...                       jnp.array([10.0, 20.0, 30.0])), (0,))
    >>> float(v), int(c), float(w)
    (3.0, 2, 30.0)
    """
    value, code, payload = chain

    def better(a, b):
        take = nan_first_better(a[0], a[1], b[0], b[1], larger)
        return tuple(jnp.where(take, y, x) for x, y in zip(a, b))

    init = (
        jnp.array(-jnp.inf if larger else jnp.inf, value.dtype),
        jnp.array(jnp.iinfo(code.dtype).max, code.dtype),
        jnp.array(0, payload.dtype),
    )
    return lax.reduce((value, code, payload), init, better, tuple(axes))


def first_best_reduce(pos, neg, axes):
    """Reduce two chains of (value, int32 code, payload) over ``axes`` in one variadic reduce:
    ``pos`` keeps its largest value, ``neg`` its smallest, ties going to the smaller code
    (the first candidate); a NaN value beats every number in both chains (NaN is absorbing:
    the first NaN candidate wins). A lexicographic order, so the reduction order does not
    matter; argmax + gathers compile several times slower on XLA CPU. With nothing to reduce a
    chain is (∓inf, int32 max, 0)."""

    def better(a, b):
        bp = nan_first_better(a[0], a[1], b[0], b[1], True)
        bn = nan_first_better(a[3], a[4], b[3], b[4], False)
        return tuple(jnp.where(bp if i < 3 else bn, y, x) for i, (x, y) in enumerate(zip(a, b)))

    dt = pos[0].dtype
    big = jnp.int32(jnp.iinfo(jnp.int32).max)
    init = (
        jnp.array(-jnp.inf, dt),
        big,
        jnp.array(0, pos[2].dtype),
        jnp.array(jnp.inf, dt),
        big,
        jnp.array(0, neg[2].dtype),
    )
    return lax.reduce(tuple(pos) + tuple(neg), init, better, tuple(axes))
