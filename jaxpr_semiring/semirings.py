"""Semirings: what ⊕ and ⊗ mean, and how values of each are stored.

A semiring value is a pytree of arrays shaped like the primal node it belongs to (``TopK``
adds a trailing axis of size k). A semiring implements a handful of methods; the rules in
:mod:`jaxpr_semiring.rules` only ever call these, so a user-defined semiring is a subclass
implementing the same methods:

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

Example:
    >>> import jax.numpy as jnp
    >>> from jaxpr_semiring import MaxProduct
    >>> S = MaxProduct()
    >>> v = S.scale(jnp.array([2.0, -3.0]), S.ones((2,), jnp.float32))
    >>> S.sum(v, axes=(0,)).top_pos.item(), S.sum(v, axes=(0,)).top_neg.item()
    (2.0, -3.0)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import kernels  # compiled CPU loops / GPU kernels, lifted real matmuls

Value = Any  # a pytree of arrays

__all__ = [
    "Semiring", "IndexMap", "Real", "MaxProduct", "MaxAbs", "Entropy", "Expectation", "Log",
    "Counting", "Boolean", "MaxProductValue", "MaxAbsValue", "EntropyValue", "ExpectationValue",
    "value_dtype",
]

# Budget (elements) of one chunk of candidate products in a tropical contraction.
TROPICAL_CHUNK_ELEMENTS = 1 << 22


def value_dtype(dtype) -> np.dtype:
    """The dtype semiring values use for a primal of ``dtype``: at least float32."""
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        return np.dtype(jnp.float32)
    return dtype


# ---------------------------------------------------------------------------- numerics helpers

def _finite_or_zero(x):
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def logaddexp(a, b):
    """log(eᵃ + eᵇ) that returns −inf (not NaN) when both are −inf."""
    m = jnp.maximum(a, b)
    ref = _finite_or_zero(m)
    return ref + jnp.log(jnp.exp(a - ref) + jnp.exp(b - ref))


def logsumexp(a, axes, keepdims=False):
    """⊕-reduce in log space over ``axes``; all −inf gives −inf."""
    axes = tuple(axes)
    m = jnp.max(a, axis=axes, keepdims=True) if a.size else jnp.zeros([1] * a.ndim, a.dtype)
    ref = _finite_or_zero(m)
    out = jnp.log(jnp.sum(jnp.exp(a - ref), axis=axes, keepdims=True)) + ref
    return out if keepdims else jnp.squeeze(out, axes)


def log_abs(w):
    """log|w| with log 0 = −inf even under jit (XLA folds log(exp(x)) to x, which turned an
    underflowed weight exp(−3.4e38) = 0 into log-weight −3.4e38 and then overflowed sums)."""
    return jnp.where(w == 0, -jnp.inf, jnp.log(jnp.abs(w)))


def xlogx(x):
    """x·log x with 0·log 0 = 0."""
    safe = jnp.where(x > 0, x, jnp.ones_like(x))
    return jnp.where(x > 0, x * jnp.log(safe), jnp.zeros_like(x))


def abs_xlogx(w):
    """|w|·log|w| with 0·log 0 = 0: the entropy term of an edge weight."""
    return xlogx(jnp.abs(w))


def sign1(w):
    """Sign of an edge weight with sign(0) = +1 (a zero product is not negative)."""
    return jnp.where(w < 0, -jnp.ones_like(w), jnp.ones_like(w))


def _broadcast_to(v, shape):
    return jnp.broadcast_to(v, jnp.broadcast_shapes(v.shape, shape))


# ------------------------------------------------------------------ index maps (fan-in scatter)

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
        return self._into(lax.scatter_max, x, -jnp.inf)

    def min(self, x):
        return self._into(lax.scatter_min, x, jnp.inf)

    def back(self, t):
        return self._gather(t)


# ----------------------------------------------------------------------------- contractions

def _canonical(v, w, dimension_numbers):
    """Transpose/reshape a dot_general into v: [B, M, C], w: [B, C, N] and the output shape."""
    (vc, wc), (vb, wb) = dimension_numbers
    vc, wc, vb, wb = map(tuple, (vc, wc, vb, wb))
    v_free = tuple(i for i in range(v.ndim) if i not in vc and i not in vb)
    w_free = tuple(i for i in range(w.ndim) if i not in wc and i not in wb)
    size = lambda x, axes: int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
    B, M, C, N = size(v, vb), size(v, v_free), size(v, vc), size(w, w_free)
    out_shape = tuple(v.shape[i] for i in vb) + tuple(v.shape[i] for i in v_free) + tuple(
        w.shape[i] for i in w_free)

    def canon_v(x):
        return jnp.transpose(x, vb + v_free + vc).reshape(B, M, C)

    canon_w = jnp.transpose(w, wb + wc + w_free).reshape(B, C, N)
    return canon_v, canon_w, out_shape


def _matmul(a, b):
    """[B, M, C] @ [B, C, N] at full float precision."""
    return lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)


def chunked_contraction(chunk_fn: Callable, combine: Callable, vs: Sequence, w, pad_values,
                        chunk_elements: int | None = None):
    """⊕-contract canonical ``vs`` ([B, M, C] each) with ``w`` ([B, C, N]) in chunks over C.

    ``chunk_fn(vs_chunk, w_chunk)`` gets ``vs`` as [B, M, 1, c] and ``w`` as [B, 1, N, c] and
    returns a tuple of [B, M, N] partial results; ``combine(acc, part)`` merges two of them.
    Memory stays at about ``chunk_elements`` candidates whatever C is. C is padded with
    ``pad_values`` (0̄ of each v) and weight 0, which every chunk_fn must treat as no edge.
    """
    B, M, C = vs[0].shape
    N = w.shape[2]
    budget = chunk_elements or TROPICAL_CHUNK_ELEMENTS
    c = int(max(1, min(C, budget // max(1, B * M * N))))
    n_chunks = -(-C // c)
    pad = n_chunks * c - C
    if pad:
        vs = [jnp.pad(v, ((0, 0), (0, 0), (0, pad)), constant_values=p) for v, p in zip(vs, pad_values)]
        w = jnp.pad(w, ((0, 0), (0, pad), (0, 0)))
    wt = jnp.swapaxes(w, 1, 2)  # [B, N, C]

    def piece(vs_k, w_k):
        return chunk_fn([v[:, :, None, :] for v in vs_k], w_k[:, None, :, :])

    if n_chunks == 1:
        return piece(vs, wt)
    vs_chunks = [jnp.moveaxis(v.reshape(B, M, n_chunks, c), 2, 0) for v in vs]
    w_chunks = jnp.moveaxis(wt.reshape(B, N, n_chunks, c), 2, 0)
    first = piece([v[0] for v in vs_chunks], w_chunks[0])

    def body(acc, xs):
        vs_k, w_k = xs
        return combine(acc, piece(vs_k, w_k)), None

    acc, _ = lax.scan(body, first, ([v[1:] for v in vs_chunks], w_chunks[1:]))
    return acc


# ---------------------------------------------------------------------------------- protocol

class Semiring:
    """Base class of semirings. Subclasses implement the methods that raise here.

    Data movement (reshape, transpose, pad with 0̄, select) is generic: ``map`` applies a
    function written for primal-shaped arrays to every leaf of a value.
    """

    name: str = "Semiring"

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

    # --- generic helpers
    def map(self, fn: Callable, *values: Value) -> Value:
        """Apply ``fn`` (written for primal-shaped arrays) to corresponding leaves."""
        return jax.tree.map(fn, *values)

    def where(self, mask, v: Value, other: Value | None = None) -> Value:
        """``v`` where ``mask``, else ``other`` (default 0̄)."""
        if other is None:
            other = self.zeros((), self._leaf_dtype(v))
        return self.map(lambda a, b: jnp.where(mask, a, b), v, other)

    def _leaf_dtype(self, v):
        return jax.tree.leaves(v)[0].dtype

    def _axes(self, v, axes):
        ndim = jax.tree.leaves(v)[0].ndim
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


# ------------------------------------------------------------------------------ the semirings

class Real(Semiring):
    """Sum-product: the ordinary gradient. Value: an array.

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.sum(jnp.sin(x) * x)
    >>> x = jnp.arange(3.0)
    >>> bool(jnp.allclose(js.semiring_grad(f, js.Real())(x), jax.grad(f)(x)))
    True
    """

    name = "Real"

    def dtype(self, dtype):
        dtype = np.dtype(dtype)
        return dtype if jnp.issubdtype(dtype, jnp.floating) else np.dtype(jnp.float32)

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


class MaxProductValue(NamedTuple):
    """Most positive and most negative path product."""
    top_pos: jax.Array
    top_neg: jax.Array


def _signed_scale(w, top_pos, top_neg):
    """lift(w) ⊗ (top_pos, top_neg) (paper App. A): a negative weight swaps the chains.
    0̄ annihilates whatever w is (no inf·0 = NaN, no sign flip of ±inf)."""
    alive = top_pos > -jnp.inf
    pos = w >= 0
    hi = jnp.where(pos, w * top_pos, w * top_neg)
    lo = jnp.where(pos, w * top_neg, w * top_pos)
    return jnp.where(alive, hi, -jnp.inf), jnp.where(alive, lo, jnp.inf)


class MaxProduct(Semiring):
    """Max-product with signs (paper App. A): the most positive and most negative path product.

    ⊕ is (max, min); lift(w) ⊗ (p, n) is (w·p, w·n) for w ≥ 0 and (w·n, w·p) for w < 0.
    0̄ = (−inf, +inf), 1̄ = (1, 1). Linear space: path products can under/overflow on very deep
    graphs — use :class:`MaxAbs` there.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x, y: jnp.exp(x) + (x - y) * y     # paper Fig. 1
    >>> g = js.semiring_grad(f, js.MaxProduct(), argnums=(0, 1))(1.0, 2.0)
    >>> float(g[0].top_pos), float(g[1].top_neg)
    (2.718281..., -2.0)
    """

    name = "MaxProduct"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxProductValue(jnp.full(shape, -jnp.inf, dt), jnp.full(shape, jnp.inf, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxProductValue(jnp.ones(shape, dt), jnp.ones(shape, dt))

    def add(self, a, b):
        return MaxProductValue(jnp.maximum(a.top_pos, b.top_pos), jnp.minimum(a.top_neg, b.top_neg))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        return MaxProductValue(jnp.max(v.top_pos, axis=axes, initial=-jnp.inf),
                               jnp.min(v.top_neg, axis=axes, initial=jnp.inf))

    def scale(self, w, v):
        return MaxProductValue(*_signed_scale(w.astype(v.top_pos.dtype), v.top_pos, v.top_neg))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        canon_v, cw, out_shape = _canonical(v.top_pos, w.astype(v.top_pos.dtype), dimension_numbers)

        def chunk(vs, wk):
            hi, lo = _signed_scale(wk, *vs)
            return jnp.max(hi, axis=-1), jnp.min(lo, axis=-1)

        def combine(x, y):
            return jnp.maximum(x[0], y[0]), jnp.minimum(x[1], y[1])

        def xla(p, n, cw):
            return chunked_contraction(chunk, combine, [p, n], cw, (-jnp.inf, jnp.inf))

        p, n = kernels.maxproduct_contract(canon_v(v.top_pos), canon_v(v.top_neg), cw, xla)
        return MaxProductValue(p.reshape(out_shape), n.reshape(out_shape))

    def scatter(self, v, index_map):
        return MaxProductValue(index_map.max(v.top_pos), index_map.min(v.top_neg))


class MaxAbsValue(NamedTuple):
    """log|g| of the path with the largest |product|, and that product's sign (±1)."""
    log_abs: jax.Array
    sign: jax.Array


def _lexmax(a_la, a_s, b_la, b_s):
    la = jnp.maximum(a_la, b_la)
    s = jnp.where(a_la > b_la, a_s, jnp.where(b_la > a_la, b_s, jnp.maximum(a_s, b_s)))
    return la, s


def _lexmax_reduce(la, s, axes):
    best = jnp.max(la, axis=axes, keepdims=True, initial=-jnp.inf)
    sign = jnp.max(jnp.where(la == best, s, -jnp.ones_like(s)), axis=axes, initial=-1.0)
    return jnp.squeeze(best, axes), sign


class MaxAbs(Semiring):
    """The path with the largest |product|, in log space (never under/overflows).

    ⊕ keeps the larger log|g| (ties: the positive one); lift(w) ⊗ v adds log|w| and multiplies
    signs. 0̄ = (−inf, +1), 1̄ = (0, +1).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> g = js.semiring_grad(lambda x: jnp.sum(-3.0 * x), js.MaxAbs())(jnp.ones(2))
    >>> [round(v, 4) for v in g.log_abs.tolist()], g.sign.tolist()
    ([1.0986, 1.0986], [-1.0, -1.0])
    """

    name = "MaxAbs"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxAbsValue(jnp.full(shape, -jnp.inf, dt), jnp.ones(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return MaxAbsValue(jnp.zeros(shape, dt), jnp.ones(shape, dt))

    def add(self, a, b):
        return MaxAbsValue(*_lexmax(a.log_abs, a.sign, b.log_abs, b.sign))

    def sum(self, v, axes=None):
        return MaxAbsValue(*_lexmax_reduce(v.log_abs, v.sign, self._axes(v, axes)))

    def scale(self, w, v):
        w = w.astype(v.log_abs.dtype)
        return MaxAbsValue(v.log_abs + log_abs(w), v.sign * sign1(w))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        w = w.astype(v.log_abs.dtype)
        canon_v, cw, out_shape = _canonical(v.log_abs, w, dimension_numbers)
        lw, sw = log_abs(cw), sign1(cw)

        def chunk(vs, wk):
            la, s = vs
            lwk, swk = wk
            return _lexmax_reduce(la + lwk, s * swk, (-1,))

        def combine(x, y):
            return _lexmax(x[0], x[1], y[0], y[1])

        # log|w| and sign(w) travel as one [B, C, 2N] array through the chunking.
        N = cw.shape[2]

        def xla(la, s, lw, sw):
            la, s = chunked_contraction(
                lambda vs, wk: chunk(vs, (wk[:, :, :N], wk[:, :, N:])), combine,
                [la, s], jnp.concatenate([lw, sw], axis=2),
                (-jnp.inf, 1.0), chunk_elements=TROPICAL_CHUNK_ELEMENTS // 2)
            return la, jnp.where(la == -jnp.inf, jnp.ones_like(s), s)  # 0̄ = (−inf, +1)

        la, s = kernels.maxabs_contract(canon_v(v.log_abs), canon_v(v.sign), lw, sw, xla)
        return MaxAbsValue(la.reshape(out_shape), s.reshape(out_shape))

    def scatter(self, v, index_map):
        la = index_map.max(v.log_abs)
        winner = v.log_abs == index_map.back(la)
        s = index_map.max(jnp.where(winner, v.sign, -jnp.ones_like(v.sign)))
        return MaxAbsValue(la, jnp.where(s == -jnp.inf, jnp.ones_like(s), s))


def _log_scatter(lv, index_map):
    """Log-space ⊕-scatter: (log Σ e^v per target, the shift at each update, Σ-scatter fn)."""
    m = index_map.max(lv)
    m_at_update = _finite_or_zero(index_map.back(m))
    shift = _finite_or_zero(m)
    weights = jnp.exp(lv - m_at_update)
    return shift, weights


class Log(Semiring):
    """Log-sum-|product|: log Σ_paths |g(p)|, the total absolute gradient flow (log space).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x            # paths e^x, x, x
    >>> float(js.semiring_grad(f, js.Log())(1.0))    # log(e + 1 + 1)
    1.551444...
    """

    name = "Log"

    def zeros(self, shape, dtype):
        return jnp.full(shape, -jnp.inf, self.dtype(dtype))

    def ones(self, shape, dtype):
        return jnp.zeros(shape, self.dtype(dtype))

    def add(self, a, b):
        return logaddexp(a, b)

    def sum(self, v, axes=None):
        return logsumexp(v, self._axes(v, axes))

    def scale(self, w, v):
        return v + log_abs(w.astype(v.dtype))

    _lift = staticmethod(jnp.abs)  # edge weight → its entry in the real matmul

    def dot_general(self, v, w, dimension_numbers, precision=None):
        # max-shifted exp → one real matmul in the operands' own layouts (no transposed copy of
        # the weights) → log
        w = w.astype(v.dtype)
        shift_v, shift_out = kernels.log_shift(v, w.ndim, dimension_numbers)
        z, = kernels.lifted_dots([(jnp.exp(v - shift_v), self._lift)], w, dimension_numbers)
        return jnp.log(z) + shift_out

    def scatter(self, v, index_map):
        shift, weights = _log_scatter(v, index_map)
        return jnp.log(index_map.add(weights)) + shift


class Counting(Log):
    """log of the number of paths (every edge lifts to 1̄ whatever its weight).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x            # three paths
    >>> float(jnp.exp(js.semiring_grad(f, js.Counting())(1.0)))
    3.0...
    """

    name = "Counting"

    def scale(self, w, v):
        return _broadcast_to(v, w.shape)

    _lift = staticmethod(jnp.ones_like)


class Boolean(Semiring):
    """Reachability: does any path lead from this input to the output?

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: x[0] * 0.0 + jax.lax.stop_gradient(x[1])
    >>> js.semiring_grad(f, js.Boolean())(jnp.ones(2)).tolist()
    [True, False]
    """

    name = "Boolean"

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
        return _broadcast_to(v, w.shape)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        ones = jnp.ones(w.shape, jnp.float32)
        return lax.dot_general(v.astype(jnp.float32), ones, dimension_numbers) > 0

    def scatter(self, v, index_map):
        return index_map.add(v.astype(jnp.float32)) > 0


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

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        return EntropyValue(jnp.full(shape, -jnp.inf, dt), jnp.zeros(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        return EntropyValue(jnp.zeros(shape, dt), jnp.zeros(shape, dt))

    def add(self, a, b):
        # one shared shift: the weights of the two means are the exps inside the logaddexp
        ref = _finite_or_zero(jnp.maximum(a.log_z, b.log_z))
        wa, wb = jnp.exp(a.log_z - ref), jnp.exp(b.log_z - ref)
        total = wa + wb
        mean = (wa * a.mean_log_abs + wb * b.mean_log_abs) / jnp.where(total > 0, total, 1)
        return EntropyValue(jnp.log(total) + ref, mean)

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        m = jnp.max(v.log_z, axis=axes, keepdims=True, initial=-jnp.inf)
        ref = _finite_or_zero(m)
        wts = jnp.exp(v.log_z - ref)
        total = jnp.sum(wts, axis=axes, keepdims=True)
        mean = jnp.sum(wts * v.mean_log_abs, axis=axes, keepdims=True) / jnp.where(total > 0, total, 1)
        return EntropyValue(jnp.squeeze(jnp.log(total) + ref, axes), jnp.squeeze(mean, axes))

    def scale(self, w, v):
        lw = log_abs(w.astype(v.log_z.dtype))
        lz = v.log_z + lw
        return EntropyValue(lz, jnp.where(lz > -jnp.inf, v.mean_log_abs + lw, 0))

    def dot_general(self, v, w, dimension_numbers, precision=None):
        w = w.astype(v.log_z.dtype)
        shift_v, shift_out = kernels.log_shift(v.log_z, w.ndim, dimension_numbers)
        e = jnp.exp(v.log_z - shift_v)
        # Z and Σ e·mean share |w| (one matmul over the stacked rows); weights in their own
        # layout (no transposed copy), lifted chunk by chunk when large.
        z, z_mean, z_logw = kernels.lifted_dots(
            [(e, jnp.abs), (e * v.mean_log_abs, jnp.abs), (e, abs_xlogx)], w,
            dimension_numbers)
        alive = z > 0
        out_lz = jnp.log(z) + shift_out
        out_mean = jnp.where(alive, (z_mean + z_logw) / jnp.where(alive, z, 1), 0)
        return EntropyValue(out_lz, out_mean)

    def scatter(self, v, index_map):
        shift, weights = _log_scatter(v.log_z, index_map)
        z = index_map.add(weights)
        z_mean = index_map.add(weights * v.mean_log_abs)
        alive = z > 0
        return EntropyValue(jnp.log(z) + shift, jnp.where(alive, z_mean / jnp.where(alive, z, 1), 0))


class ExpectationValue(NamedTuple):
    """Z = Σ|g(p)| and t = Σ|g(p)| log|g(p)| in raw space."""
    z: jax.Array
    t: jax.Array

    @property
    def entropy(self) -> jax.Array:
        """Path entropy H = log Z − t/Z."""
        return jnp.log(self.z) - self.t / self.z


class Expectation(Semiring):
    """The paper's expectation semiring in raw space: ⟨Z, t⟩ with lift(w) = ⟨|w|, |w| log|w|⟩.

    ⟨a₁, b₁⟩ ⊗ ⟨a₂, b₂⟩ = ⟨a₁a₂, a₁b₂ + a₂b₁⟩, ⊕ pairwise +. Overflows on deep graphs: use
    :class:`Entropy` there.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> float(js.semiring_grad(lambda x: 2.0 * x + 2.0 * x, js.Expectation())(1.0).entropy)
    0.693147...
    """

    name = "Expectation"

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
        return ExpectationValue(aw * v.z, aw * v.t + xlogx(aw) * v.z)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        w = w.astype(v.z.dtype)
        out_z, zt, zlogw = kernels.lifted_dots(
            [(v.z, jnp.abs), (v.t, jnp.abs), (v.z, abs_xlogx)], w, dimension_numbers)
        out_t = zt + zlogw
        return ExpectationValue(out_z, out_t)

    def scatter(self, v, index_map):
        return ExpectationValue(index_map.add(v.z), index_map.add(v.t))


# ------------------------------------------------------------------------------------ TopK

class TopKValue(NamedTuple):
    """The k largest |path products| as log|g| and sign (±1), trailing axis k, best first.

    Slots with no path hold log|g| = −inf and sign +1. Among equal log|g|, +1 comes first.
    """
    log_abs: jax.Array
    sign: jax.Array


def _topk_select(la, s, k):
    """The k best (log|g|, sign) along the last axis, best first (ties: positive first).

    k rounds of a lexicographic arg-max (no sort): exact, vectorized, O(k·n).
    """
    n = la.shape[-1]
    if n < k:
        pad = [(0, 0)] * (la.ndim - 1) + [(0, k - n)]
        la = jnp.pad(la, pad, constant_values=-jnp.inf)
        s = jnp.pad(s, pad, constant_values=1.0)
        n = k
    out_la, out_s = [], []
    pos = lax.broadcasted_iota(jnp.int32, la.shape, la.ndim - 1)
    for r in range(k):
        best = jnp.max(la, axis=-1, keepdims=True)
        at_best = la == best
        sbest = jnp.max(jnp.where(at_best, s, -2.0), axis=-1, keepdims=True)
        chosen = at_best & (s == sbest)
        first = jnp.min(jnp.where(chosen, pos, n), axis=-1, keepdims=True)
        dead = best == -jnp.inf
        out_la.append(best[..., 0])
        out_s.append(jnp.where(dead, 1.0, sbest)[..., 0].astype(s.dtype))
        if r + 1 < k:
            la = jnp.where(pos == first, -jnp.inf, la)
    return jnp.stack(out_la, axis=-1), jnp.stack(out_s, axis=-1)


class TopK(Semiring):
    """The k best paths: the k largest |path products| per node, log space, with signs.

    Value :class:`TopKValue` ``(log_abs, sign)``, each shaped like the primal plus a trailing
    axis of size ``k``, best first. ⊕ merges two top-k lists; lift(w) ⊗ v adds log|w| to every
    slot and multiplies the signs. 0̄ = all slots (−inf, +1); 1̄ = (0, +1) then (−inf, +1)….
    ``TopK(1)`` equals :class:`MaxAbs`. Data movement works on the primal-shaped axes
    (``map`` vmaps over the trailing k axis).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jnp.exp(x) + x * x           # paths e^x, x, x at x = 1
    >>> g = js.semiring_grad(f, js.TopK(3))(1.0)
    >>> [round(float(v), 4) for v in jnp.exp(g.log_abs)], g.sign.tolist()
    ([2.7183, 1.0, 1.0], [1.0, 1.0, 1.0])
    """

    name = "TopK"

    def __init__(self, k: int = 2):
        if int(k) < 1:
            raise ValueError(f"TopK needs k >= 1, got {k}")
        self.k = int(k)

    def __repr__(self):
        return f"TopK({self.k})"

    def zeros(self, shape, dtype):
        dt = self.dtype(dtype)
        shape = tuple(shape) + (self.k,)
        return TopKValue(jnp.full(shape, -jnp.inf, dt), jnp.ones(shape, dt))

    def ones(self, shape, dtype):
        dt = self.dtype(dtype)
        first = jnp.arange(self.k) == 0
        la = jnp.broadcast_to(jnp.where(first, 0.0, -jnp.inf).astype(dt), tuple(shape) + (self.k,))
        return TopKValue(la, jnp.ones(tuple(shape) + (self.k,), dt))

    # primal-shaped functions act on every slot
    def map(self, fn, *values):
        def leafwise(*leaves):
            return jax.vmap(fn, in_axes=-1, out_axes=-1)(*leaves)
        return jax.tree.map(leafwise, *values)

    def _axes(self, v, axes):
        ndim = jax.tree.leaves(v)[0].ndim - 1
        if axes is None:
            return tuple(range(ndim))
        if isinstance(axes, int):
            axes = (axes,)
        return tuple(a % ndim for a in axes)

    def add(self, a, b):
        la = jnp.concatenate(jnp.broadcast_arrays(a.log_abs, b.log_abs), axis=-1)
        s = jnp.concatenate(jnp.broadcast_arrays(a.sign, b.sign), axis=-1)
        return TopKValue(*_topk_select(la, s, self.k))

    def sum(self, v, axes=None):
        axes = self._axes(v, axes)
        if not axes:
            return v
        nd = v.log_abs.ndim - 1
        kept = tuple(d for d in range(nd) if d not in axes)
        perm = kept + tuple(axes) + (nd,)
        shape = tuple(v.log_abs.shape[d] for d in kept) + (-1,)
        la = jnp.transpose(v.log_abs, perm).reshape(shape)
        s = jnp.transpose(v.sign, perm).reshape(shape)
        return TopKValue(*_topk_select(la, s, self.k))

    def scale(self, w, v):
        w = jnp.asarray(w).astype(v.log_abs.dtype)[..., None]
        alive = v.log_abs > -jnp.inf  # 0̄ annihilates whatever w is (also w = ±inf)
        la = jnp.where(alive, v.log_abs + log_abs(w), -jnp.inf)
        s = jnp.where(la > -jnp.inf, v.sign * sign1(w), 1.0).astype(v.sign.dtype)
        return TopKValue(la, s)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        k = self.k
        w = w.astype(v.log_abs.dtype)
        canon_v, cw, out_shape = _canonical(v.log_abs[..., 0], w, dimension_numbers)
        B, C, N = cw.shape

        def canon_k(x):  # [..primal.., k] -> [B, M, C·k], c-major
            y = jax.vmap(canon_v, in_axes=-1, out_axes=-1)(x)  # [B, M, C, k]
            return y.reshape(y.shape[0], y.shape[1], -1)

        lw = jnp.repeat(log_abs(cw), k, axis=1)   # [B, C·k, N]
        sw = jnp.repeat(sign1(cw), k, axis=1)

        def chunk(vs, wk):
            la, s = vs                      # [B, M, 1, c]
            lwk, swk = wk[..., :N, :], wk[..., N:, :]  # [B, 1, N, c]
            cand = jnp.where(la > -jnp.inf, la + lwk, -jnp.inf)
            return _topk_select(cand, s * swk, k)

        def combine(x, y):
            return _topk_select(jnp.concatenate([x[0], y[0]], -1), jnp.concatenate([x[1], y[1]], -1), k)

        la, s = chunked_contraction(chunk, combine, [canon_k(v.log_abs), canon_k(v.sign)],
                                    jnp.concatenate([lw, sw], axis=2), (-jnp.inf, 1.0),
                                    chunk_elements=TROPICAL_CHUNK_ELEMENTS // 4)
        return TopKValue(la.reshape(out_shape + (k,)), s.reshape(out_shape + (k,)))

    def scatter(self, v, index_map):
        """⊕-scatter with duplicate targets: k rounds, each moving every target's best
        remaining candidate (over all updates mapping to it) into its next slot."""
        k = self.k
        la, s = v.log_abs, v.sign
        ushape = la.shape[:-1]
        dt = la.dtype
        ids = jnp.arange(int(np.prod(ushape, dtype=np.int64)), dtype=dt).reshape(ushape)
        ptr = jnp.zeros(ushape, jnp.int32)  # next unconsumed slot of each update (sorted lists)
        out_la, out_s = [], []
        for r in range(k):
            cur_la = jnp.where(ptr < k, jnp.take_along_axis(la, jnp.minimum(ptr, k - 1)[..., None], -1)[..., 0], -jnp.inf)
            cur_s = jnp.take_along_axis(s, jnp.minimum(ptr, k - 1)[..., None], -1)[..., 0]
            best = index_map.max(cur_la)
            at_best = (cur_la == index_map.back(best)) & (cur_la > -jnp.inf)
            sbest = index_map.max(jnp.where(at_best, cur_s, -2.0))
            chosen = at_best & (cur_s == index_map.back(sbest))
            first = index_map.min(jnp.where(chosen, ids, jnp.inf))
            advance = chosen & (ids == index_map.back(first))
            dead = best == -jnp.inf
            out_la.append(best)
            out_s.append(jnp.where(dead, 1.0, sbest).astype(dt))
            ptr = ptr + advance.astype(jnp.int32)
        return TopKValue(jnp.stack(out_la, -1), jnp.stack(out_s, -1))


__all__ += ["TopK", "TopKValue"]
