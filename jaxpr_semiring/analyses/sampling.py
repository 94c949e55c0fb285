"""Path sampling: the distribution behind the top path.

``sample_paths(fun, argnums, at, n=, key=)(*args)`` draws ``n`` independent paths from input
element ``at`` to the scalar output, each with probability |product| / Σ_paths |product| (the
distribution whose entropy the ``Entropy`` semiring computes). The result,
:class:`SampledPaths`, holds them in :func:`~jaxpr_semiring.top_path`'s form (one
:class:`~jaxpr_semiring.Path` each: primitive, module path, element index and weight per
step), their signed ``products``, a Monte-Carlo estimate of the path entropy
(:meth:`SampledPaths.entropy`) and the share of paths taking each consumer at every branch
point (:meth:`SampledPaths.branch_shares`).

Exact, in two parts:

1. One ``Log`` backward pass (the one walk of :func:`jaxpr_semiring.api.backprop`) gives
   Z(v) = Σ_paths v→out |product| at every element; a :class:`Consumers` observer records
   which equations consume each variable (the output's seed as the "stop").
2. At element e, the path enters consumer j with probability c_j(e) / Σ_j c_j(e), where
   c_j(e) = Σ_k |w_ek|·Z(k) (the stop's is the seed, 1), and inside it goes to output element
   k (and, for an equation that reads e in several operand slots, the slot) ∝ |w_ek|·Z(k).
   Both come from j's Jacobian row at e: a step evaluates the row of every consumer of e's
   variable and keeps consumer j with probability c_j(e) / Σ_{i ≤ j} c_i(e) (streaming
   selection). The product of the choices along a path is |product|/Z(start): the sampled
   distribution is the path distribution exactly.

A sample follows its path in a ``lax.while_loop``, through a ``lax.switch`` with one branch
per distinct equation signature (repeated layers share theirs: compile time follows the
distinct equations); ``lax.map`` runs the ``n`` samples (``batch_size`` vmaps them in groups,
where the switch evaluates every branch). A step reads only the Jacobian row it needs, at the
cost of the elements the row reaches: one element for elementwise equations, reshapes,
transposes, slices and sums, the copies for a broadcast, a slice of the other operand for a
``dot_general``; other equations take a JVP with a one-hot tangent. Each draw inverts the
cumulative distribution at uniform numbers drawn once per sample. On MiniLM (14 tokens) a
path is about 240 steps and 1,000 paths take about 1.5 s on 2 CPU cores. Jittable and
vmappable. Zero-weight edges have probability 0. A ``scan``/``cond`` cannot be crossed (its
JVP sums signed inner paths): make it :func:`~jaxpr_semiring.atomic` (then it is one step with
its total derivative) or unroll it.

>>> import jax, jax.numpy as jnp, jaxpr_semiring as js
>>> f = lambda x: 3.0 * x + x * x                  # at x = 1: paths of weight 3, 1 and 1
>>> s = js.sample_paths(f, n=1000, key=jax.random.PRNGKey(0))(1.0)
>>> sorted(set(s.products.tolist()))
[1.0, 3.0]
>>> round(float(jnp.mean(s.products == 3.0)), 1)    # P(weight-3 path) = 3 / 5
0.6
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _compat
from ..api import backprop, normalize_argnums
from ..graph import Const, GraphIndex, Ref, reachable, unravel
from ..interpreter import Observer, value_of
from ..numerics import log_abs
from ..rules import RULES
from ..rules.elementwise import elementwise
from ..semirings import Log
from .flows import OUTPUT_LABEL, consumer_label
from .top_path import Path, start_element

__all__ = [
    "sample_paths",
    "SampledPaths",
    "BranchShare",
    "Consumers",
    "node_jvp",
    "NOT_CROSSABLE",
]

NOT_CROSSABLE = ("scan", "cond", "while")
_STOP = -1  # the output's "consumer": the path ends there


class Consumers(Observer):
    """Records, per variable, the equations whose ⊕-contributions reach it (by position in the
    graph, its operand slots counted once; the output's seed as −1). Structure only: it keeps
    no values, so the Log pass compiles as without it."""

    def __init__(self):
        self.order: dict = {}
        self.of: dict = {}

    def start(self, graph, env):
        self.order = {id(node): i for i, node in enumerate(graph.nodes)}
        return ()

    def contribution(self, ref, value, consumer):
        j = _STOP if consumer is None else self.order[id(consumer)]
        self.of.setdefault(ref.key, set()).add(j)


def node_jvp(node, args: Sequence, slot: int, tangent) -> list:
    """Output tangents of one equation for a tangent in operand ``slot`` alone."""

    def along(x):
        a = list(args)
        a[slot] = x
        return _compat.bind(node.primitive, a, node.params)

    return jax.jvp(along, (args[slot],), (tangent,))[1]


def draw(u: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index i of flat ``logits`` drawn with probability ∝ exp(logits[i]), by inverting the
    cumulative distribution in two levels at the two uniform numbers ``u``: a block of about
    √size elements ∝ its mass, then an element of that block ∝ its own.
    ``jax.random.categorical`` draws a Gumbel per element, and most of a sample's time was
    that; two short cumulative sums also beat one long one. An
    element of probability 0 is never returned (rounding that would pick one falls back to the
    largest); all −inf gives an arbitrary index. Returns the index and log Σ exp(logits)."""
    n = int(logits.size)
    top = jnp.max(logits)
    shift = jnp.where(top > -jnp.inf, top, 0)
    if n == 1:
        return jnp.int32(0), logits.reshape(())
    if n <= 64:  # one level
        mass = jnp.exp(logits - shift)
        return _invert(mass, u[0]).astype(jnp.int32), jnp.log(jnp.sum(mass)) + shift
    width = 1 << max(0, int(np.ceil(np.log2(np.sqrt(n)))))
    rows = -(-n // width)
    flat = jnp.pad(logits.reshape(-1), (0, rows * width - n), constant_values=-jnp.inf)
    mass = jnp.exp(flat - shift).reshape(rows, width)
    u = u.astype(mass.dtype)
    per_row = mass.sum(axis=1)
    r = _invert(per_row, u[0])
    i = (r * width + _invert(mass[r], u[1])).astype(jnp.int32)
    return i, jnp.log(jnp.sum(per_row)) + shift


def _invert(mass, u):
    """The first index whose cumulative mass exceeds u · total (u in [0, 1))."""
    cdf = jnp.cumsum(mass)
    k = jnp.minimum(jnp.sum(cdf <= u * cdf[-1]), mass.size - 1)
    return jnp.where(mass[k] > 0, k, jnp.argmax(mass))


class _Stacked:
    """One operand of the equations of one signature: their values stacked once, outside the
    loop, read per member inside it: whole (``__call__``), some elements (``take``) or a slice
    (``slice``), so that a step never copies a whole weight matrix out of the stack."""

    def __init__(self, values):
        one_literal = np.ndim(values[0]) == 0 and not any(isinstance(v, jax.Array) for v in values)
        self.single = one_literal or all(v is values[0] for v in values)
        if self.single:  # one member, or one literal
            self.value = values[0]
        else:
            self.value = jnp.stack([jnp.asarray(v, jnp.result_type(values[0])) for v in values])

    @property
    def shape(self) -> tuple:
        """One member's shape."""
        return tuple(np.shape(self.value)[0 if self.single else 1 :])

    def __call__(self, m):
        return self.value if self.single else self.value[m]

    def take(self, m, flat):
        """Member m's elements at flat indices ``flat``."""
        x = jnp.asarray(self.value)
        return x.reshape(-1)[flat] if self.single else x.reshape(x.shape[0], -1)[m, flat]

    def slice(self, m, starts: dict) -> jax.Array:
        """Member m's value, size 1 along each dimension d of ``starts`` at ``starts[d]``."""
        x = jnp.asarray(self.value)
        lead = 0 if self.single else 1
        idx = [jnp.int32(0)] * x.ndim
        sizes = list(x.shape)
        if not self.single:
            idx[0], sizes[0] = jnp.asarray(m, jnp.int32), 1
        for d, c in starts.items():
            idx[d + lead], sizes[d + lead] = jnp.asarray(c, jnp.int32), 1
        out = lax.dynamic_slice(x, idx, sizes)
        return out[0] if lead else out


def _onehot(shape, flat, here, dtype):
    size = int(np.prod(shape, dtype=np.int64))
    return ((jnp.arange(size) == flat) & here).reshape(shape).astype(dtype)


# A row of an equation's Jacobian, for one element e of one operand: ``(weights, outputs)``
# per result of the equation, the flat indices of the result's elements the row may reach and
# their weights. Most equations reach few elements, so most rows cost what they reach rather
# than a JVP of the whole equation: a step of a sample costs its row, not the equation.


def _dense_row(node, args, m, slot, elem, here) -> list:
    """Any equation: one JVP with a one-hot tangent at e (zero where ``here`` is false)."""
    vals = [a(m) for a in args]
    x = vals[slot]
    t = node_jvp(node, vals, slot, _onehot(np.shape(x), elem, here, jnp.result_type(x)))
    return [(w.reshape(-1), jnp.arange(w.size, dtype=jnp.int32)) for w in t]


def _pointwise_row(node, args, m, slot, elem, here) -> list:
    """Elementwise equations: e reaches the output elements at its coordinates (all of them
    along the axes where its operand has size 1, or rank 0, and the output does not); the
    weights are the equation's JVP on the operands' elements there."""
    out_shape = tuple(node.outvars[0].aval.shape)
    mine = args[slot].shape
    if all(a.shape in (out_shape, ()) for a in args) and mine == out_shape:  # the common case
        vals = [a.take(m, elem) if a.shape else a(m) for a in args]
        (w,) = node_jvp(node, vals, slot, here.astype(jnp.result_type(vals[slot])))
        return [(jnp.reshape(w, 1), jnp.reshape(elem, 1).astype(jnp.int32))]
    coords = jnp.unravel_index(elem, mine) if mine else ()
    fixed = {d: coords[d] for d in range(len(mine)) if mine[d] == out_shape[d]}
    vals = [a(m) if not a.shape else a.take(m, _slab(out_shape, fixed, a.shape)) for a in args]
    t = jnp.broadcast_to(here.astype(jnp.result_type(vals[slot])), np.shape(vals[slot]))
    (w,) = node_jvp(node, vals, slot, t)
    idx = _slab(out_shape, fixed)
    return [(jnp.broadcast_to(w, idx.shape), idx)]


def _slice_row(node, args, m, slot, elem, here) -> list:
    """``slice``: e reaches the one output element it becomes, if the slice keeps it."""
    in_shape, out_shape = args[0].shape, tuple(node.outvars[0].aval.shape)
    coords = jnp.unravel_index(elem, in_shape)
    start = node.params["start_indices"]
    strides = node.params["strides"] or (1,) * len(in_shape)
    kept, at = here, []
    for c, lo, st, n in zip(coords, start, strides, out_shape):
        q, r = jnp.divmod(c - lo, st)
        kept = kept & (c >= lo) & (r == 0) & (q < n)
        at.append(jnp.clip(q, 0, n - 1))
    flat = jnp.ravel_multi_index(tuple(at), out_shape, mode="clip")
    w = kept.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(flat, 1).astype(jnp.int32))]


def _moved_row(node, args, m, slot, elem, here) -> list:
    """Reshapes and copies keep e's flat index; a transpose permutes its coordinates. The
    weight is 1 (their JVP is the identity)."""
    if node.primitive.name == "transpose":
        coords = jnp.unravel_index(elem, args[0].shape)
        perm = node.params["permutation"]
        out_shape = tuple(node.outvars[0].aval.shape)
        elem = jnp.ravel_multi_index(tuple(coords[d] for d in perm), out_shape, mode="clip")
    w = here.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(elem, 1).astype(jnp.int32))]


def _dot_row(node, args, m, slot, elem, here) -> list:
    """``dot_general``: e = x[batch b, contracting c, free f] reaches the outputs [b, f, :]
    (the other operand's free dimensions), with weights y[b, c, :]: the other operand sliced
    at e's batch and contracting coordinates, contracted with e's tangent alone."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    mine, other = (lc, rc) if slot == 0 else (rc, lc)
    mb, ob = (lb, rb) if slot == 0 else (rb, lb)
    x_shape = args[slot].shape
    coords = jnp.unravel_index(elem, x_shape)
    y = args[1 - slot].slice(
        m, {do: coords[dm] for dm, do in zip(tuple(mine) + tuple(mb), tuple(other) + tuple(ob))}
    )
    t = jnp.broadcast_to(here.astype(jnp.result_type(args[slot].value)), (1,) * len(x_shape))
    ops = [t, y] if slot == 0 else [y, t]
    out = _compat.bind(node.primitive, ops, node.params)
    w = (out[0] if isinstance(out, (list, tuple)) else out).reshape(-1)
    # output layout: batch, lhs free, rhs free; the slab fixes all but the other's free dims
    out_shape = tuple(node.outvars[0].aval.shape)
    lfree = [d for d in range(len(args[0].shape)) if d not in lc and d not in lb]
    rfree = [d for d in range(len(args[1].shape)) if d not in rc and d not in rb]
    fixed = [coords[d] for d in mb] + [coords[d] for d in (lfree if slot == 0 else rfree)]
    n_batch, n_lfree = len(lb), len(lfree)
    free_pos = (
        range(n_batch + n_lfree, len(out_shape)) if slot == 0 else range(n_batch, n_batch + n_lfree)
    )
    fixed_pos = [d for d in range(len(out_shape)) if d not in free_pos]
    return [(w, _slab(out_shape, dict(zip(fixed_pos, fixed))))]


def _slab(out_shape, fixed: dict, shape=None) -> jax.Array:
    """Flat indices (row-major) of the elements of ``out_shape`` whose coordinate along each
    dimension d of ``fixed`` is ``fixed[d]``, the other dimensions running over their range;
    with ``shape``, of the elements of an operand of that shape (its size-1 axes broadcast)
    that those elements read."""
    shape = tuple(out_shape) if shape is None else tuple(shape)
    strides = np.cumprod((1,) + shape[::-1])[::-1][1:].astype(np.int64)
    stride = [int(st) if n > 1 else 0 for st, n in zip(strides, shape)]
    base = sum((c * stride[d] for d, c in fixed.items()), jnp.int32(0))
    free = [d for d in range(len(out_shape)) if d not in fixed]
    offs = np.zeros([out_shape[d] for d in free], np.int64)
    for k, d in enumerate(free):
        sh = [1] * len(free)
        sh[k] = out_shape[d]
        offs = offs + np.arange(out_shape[d]).reshape(sh) * stride[d]
    return (base + jnp.asarray(offs.reshape(-1), jnp.int32)).astype(jnp.int32)


def _broadcast_row(node, args, m, slot, elem, here) -> list:
    """``broadcast_in_dim``: e reaches every copy of itself, each with weight 1."""
    in_shape, out_shape = args[0].shape, tuple(node.params["shape"])
    coords = jnp.unravel_index(elem, in_shape) if in_shape else ()
    fixed = {
        d: coords[i]
        for i, d in enumerate(node.params["broadcast_dimensions"])
        if in_shape[i] == out_shape[d]
    }
    idx = _slab(out_shape, fixed)
    return [(jnp.broadcast_to(here.astype(node.outvars[0].aval.dtype), idx.shape), idx)]


def _reduce_sum_row(node, args, m, slot, elem, here) -> list:
    """``reduce_sum``: e reaches the one sum it is in, with weight 1."""
    in_shape = args[0].shape
    coords = jnp.unravel_index(elem, in_shape) if in_shape else ()
    axes = set(node.params["axes"])
    out_shape = tuple(node.outvars[0].aval.shape)
    kept = tuple(c for d, c in enumerate(coords) if d not in axes)
    flat = jnp.ravel_multi_index(kept, out_shape, mode="clip") if kept else jnp.int32(0)
    w = here.astype(node.outvars[0].aval.dtype)
    return [(jnp.reshape(w, 1), jnp.reshape(flat, 1).astype(jnp.int32))]


_MOVED = {"reshape", "squeeze", "expand_dims", "copy", "copy_p", "transpose"}
_POINTWISE_EXTRA = {"convert_element_type", "select_n"}


def _row_kind(node, slots):
    """The cheapest exact row for this equation (static: primitive and shapes)."""
    name = node.primitive.name
    out = [tuple(r.aval.shape) for r in node.outvars]
    ins = [
        tuple(np.shape(a.value)) if isinstance(a, Const) else tuple(a.aval.shape)
        for a in node.invars
    ]
    if name == "dot_general" and len(node.invars) == 2:
        return _dot_row
    if len(out) != 1:
        return _dense_row
    if name == "broadcast_in_dim" and len(node.invars) == 1:
        return _broadcast_row
    if name == "reduce_sum" and len(node.invars) == 1:
        return _reduce_sum_row
    if (
        name in _MOVED
        and len(node.invars) == 1
        and (name != "reshape" or node.params.get("dimensions") is None)
    ):
        return _moved_row
    if name == "slice" and len(node.invars) == 1:
        return _slice_row
    pointwise = name in _POINTWISE_EXTRA or (
        RULES.get(name) is elementwise and name != "custom_jvp_call"
    )
    if pointwise and all(
        len(i) == 0 or (len(i) == len(out[0]) and all(a in (b, 1) for a, b in zip(i, out[0])))
        for i in ins
    ):
        return _pointwise_row
    return _dense_row


class BranchShare(NamedTuple):
    """At one branch point: how many sampled paths went through it (``n``) and the share of
    them that took each consumer (label → fraction)."""

    n: int
    shares: dict


class _Meta(NamedTuple):
    index: GraphIndex
    var_labels: list  # per numbered variable: a readable label, unique
    producers: list  # per numbered variable: its producer's consumer label
    n_consumers: list  # per numbered variable: its consumer equations (the stop included)


class SampledPaths:
    """``n`` paths sampled ∝ |product| from one input element (see :func:`sample_paths`).

    A pytree of arrays (``ids``/``weights`` [n, max_steps], ``start``, ``products`` [n],
    ``log_z``: log Σ_paths |product| at the start element), so ``jax.jit``/``jax.vmap`` return
    it. ``paths`` (or ``s[i]``) gives :class:`~jaxpr_semiring.Path` objects; ``products[i]``
    is the signed product of path i's edge weights; on deep models it under/overflows
    float32, ``log_abs`` (Σ log|weight|) and ``signs`` do not.
    """

    def __init__(self, ids, weights, start, products, log_z, meta: _Meta):
        self.ids, self.weights, self.start = ids, weights, start
        self.products, self.log_z = products, log_z
        self.meta = meta

    def __len__(self):
        return int(np.shape(self.products)[0])

    def _check(self):
        try:
            lz = float(self.log_z)
        except (jax.errors.ConcretizationTypeError, TypeError) as e:
            raise TypeError(
                "SampledPaths are read on concrete values: return them from the "
                "jitted function and read them outside (batched: pick one with "
                "jax.tree.map(lambda a: a[i], samples))."
            ) from e
        if not np.isfinite(lz):
            v, idx = self.meta.index.locate(int(self.start))
            raise ValueError(
                f"sample_paths: input element {idx} has no path with a nonzero "
                f"product to the output (no path, or only paths of product 0): "
                f"there is nothing to sample."
            )

    def __getitem__(self, i) -> Path:
        self._check()
        return Path(
            self.ids[i], self.weights[i], self.start, self.products[i], self.meta.index, "sampled"
        )

    @property
    def log_abs(self) -> jax.Array:
        """log|product| of every path, summed in log space (finite where products are not)."""
        return jnp.sum(jnp.where(self.ids >= 0, jnp.log(jnp.abs(self.weights)), 0), axis=-1)

    @property
    def signs(self) -> jax.Array:
        return jnp.prod(jnp.where((self.ids >= 0) & (self.weights < 0), -1, 1), axis=-1)

    @property
    def paths(self) -> list[Path]:
        return [self[i] for i in range(len(self))]

    def entropy(self) -> tuple[float, float]:
        """Monte-Carlo path entropy log Z − mean(log|product|) and its standard error (it
        estimates what ``semiring_grad(fun, Entropy())`` computes exactly)."""
        self._check()
        la = np.asarray(self.log_abs, np.float64)
        err = float(la.std(ddof=1) / np.sqrt(len(la))) if len(la) > 1 else float("nan")
        return float(self.log_z) - float(la.mean()), err

    def branch_shares(self, min_consumers: int = 2) -> dict[str, BranchShare]:
        """Per branch point (a variable read by at least ``min_consumers`` equations on paths
        to the output, the output's stop counted), the share of the sampled paths through it that
        continued into each consumer (labelled ``"<module path> [<primitive>]"`` like the
        consumers of a :class:`~jaxpr_semiring.FlowReport`). With a tap on a variable, its
        shares estimate, for the elements the paths cross, the normalized Log flows of
        ``flows(fun, Log())``'s report."""
        self._check()
        index, labels, n_cons = self.meta.index, self.meta.var_labels, self.meta.n_consumers
        producers = self.meta.producers
        counts: dict = {}
        ids = np.asarray(self.ids)
        for row in ids:
            seq = [int(self.start)] + [int(x) // 2 for x in row if x >= 0]
            for a, b in zip(seq, seq[1:] + [None]):
                va = index.locate(a)[0]
                if n_cons[va] < min_consumers:
                    continue
                took = OUTPUT_LABEL if b is None else producers[index.locate(b)[0]]
                d = counts.setdefault(labels[va], {})
                d[took] = d.get(took, 0) + 1
        out = {}
        for label, d in counts.items():
            total = sum(d.values())
            ranked = sorted(d.items(), key=lambda kv: -kv[1])
            out[label] = BranchShare(total, {k: v / total for k, v in ranked})
        return out

    def __repr__(self):
        return f"SampledPaths(n={np.shape(self.products)[0]})"


jax.tree_util.register_pytree_node(
    SampledPaths,
    lambda s: ((s.ids, s.weights, s.start, s.products, s.log_z), s.meta),
    lambda meta, ch: SampledPaths(*ch, meta),
)


def _var_labels(graph, index) -> tuple[list, list]:
    """Per numbered variable: a unique label ('<producer label>', '… → out i' for one of
    several outputs, '<input j>'; repeats get '#2', '#3', …) and its producer's label."""
    by_key, producer = {}, {}
    for j, r in enumerate(graph.invars):
        by_key[r.key] = producer[r.key] = f"<input {j}>"
    for node in graph.nodes:
        base = consumer_label(node)
        for i, r in enumerate(node.outvars):
            producer[r.key] = base
            by_key[r.key] = base if len(node.outvars) == 1 else f"{base} → out {i}"
    labels = [by_key[k] for k in index.keys]
    seen: dict = {}
    for v, lab in enumerate(labels):  # equal labels (a module called twice) get #2, #3, …
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[v] = f"{lab} #{seen[lab]}"
    return labels, [producer[k] for k in index.keys]


def _type(x):
    a = getattr(x, "aval", None) or jax.typeof(x)
    return tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False))


def _const_key(v):
    """Scalar constants (literals) must be equal to share a step; arrays only typed alike."""
    return (_type(v), np.asarray(v).item() if np.ndim(v) == 0 else None)


def _signature(node, numbered_in, numbered_out):
    """Equations with equal signatures (primitive, parameters, operand and result types, which
    slots are path variables) share one compiled crossing step; unhashable parameters make an
    equation its own group."""
    key = (
        node.primitive,
        tuple(sorted(node.params.items())),
        tuple(_const_key(a.value) if isinstance(a, Const) else _type(a) for a in node.invars),
        tuple(_type(r) for r in node.outvars),
        tuple(numbered_in),
        tuple(numbered_out),
    )
    try:
        hash(key)
        return key
    except TypeError:
        return id(node)


class _Sampler:
    """One sample: a ``while_loop`` that follows the path, one crossing step per equation on it
    (see the module docstring). Equations of one signature (a transformer's layers repeat
    theirs) share one branch of a ``lax.switch`` over their stacked operands, so compile time
    follows the number of distinct equations, not their count."""

    def __init__(self, b, consumers, index, start_vars, dtype):
        self.g, self.env, self.index, self.dtype = b.graph, b.env, index, dtype
        self.var_of = {k: v for v, k in enumerate(index.keys)}
        self.logz = {k: b.cotangents[k] for k in index.keys if k in b.cotangents}
        self.n_steps = max(1, len(self.g.nodes))
        live = reachable(self.g, [self.g.invars[index.leaf_of[v]] for v in start_vars])
        groups: dict = {}
        for t, node in enumerate(self.g.nodes):
            ins = [
                a
                for a in node.invars
                if isinstance(a, Ref) and a.key in self.var_of and a.key in live
            ]
            if not ins:
                continue
            if node.primitive.name in NOT_CROSSABLE:
                where = f" at module path '{node.path}'" if node.path else ""
                raise ValueError(
                    f"sample_paths cannot cross a '{node.primitive.name}'{where}: its JVP sums "
                    f"signed paths inside, and sampling needs each inner path's |product|. Make it "
                    f"one step with jaxpr_semiring.atomic (its total derivative as the edge "
                    f"weights), or unroll it."
                )
            numbered_in = [self._numbered(a) for a in node.invars]
            numbered_out = [r.key in self.var_of for r in node.outvars]
            if any(numbered_out):  # else no path continues through it: never chosen
                groups.setdefault(_signature(node, numbered_in, numbered_out), []).append(t)
        self.groups = list(groups.values())
        # equations off every path, and the output's stop, go to a last branch of no mass
        group_of = np.full(len(self.g.nodes) + 1, len(self.groups), np.int32)
        member_of = np.zeros(len(self.g.nodes) + 1, np.int32)
        for gi, ts in enumerate(self.groups):
            group_of[ts], member_of[ts] = gi, np.arange(len(ts))
        self.group_of, self.member_of = jnp.asarray(group_of), jnp.asarray(member_of)
        self.steps = [self._step(ts) for ts in self.groups] + [self._dead]
        # per variable, its consumer equations (the output's stop as −1), in one flat table
        lists = [sorted(consumers.get(k, ())) for k in index.keys]
        self.count = jnp.asarray([len(c) for c in lists], jnp.int32)
        self.first = jnp.asarray(np.cumsum([0] + [len(c) for c in lists])[:-1], jnp.int32)
        flat = [j for c in lists for j in c] or [_STOP]  # a filler no count ever reaches
        self.consumer = jnp.asarray(flat, jnp.int32)
        self.m_max = max([1] + [len(c) for c in lists])

    def _numbered(self, a) -> bool:
        return isinstance(a, Ref) and a.key in self.var_of

    def _dead(self, m, var, elem, u):
        z = jnp.zeros((), self.dtype)
        return var, elem, z, jnp.full((), -jnp.inf, self.dtype)

    def _step(self, ts):
        """``step(member, var, elem, u) -> (var, elem, weight, log mass)``: the next element,
        drawn ∝ |w_ek|·Z(k) over the equation's outputs (its members' operands stacked), and
        log Σ_k |w_ek|·Z(k), the mass of the paths from e that enter this equation."""
        nodes = [self.g.nodes[t] for t in ts]
        node = nodes[0]

        args = [
            _Stacked([value_of(self.env, n.invars[s]) for n in nodes])
            for s in range(len(node.invars))
        ]
        slots = [s for s, a in enumerate(node.invars) if self._numbered(a)]
        outs = [i for i, r in enumerate(node.outvars) if r.key in self.var_of]
        slot_var = {
            s: jnp.asarray([self.var_of[n.invars[s].key] for n in nodes], jnp.int32) for s in slots
        }
        out_var = jnp.asarray(
            [[self.var_of[n.outvars[i].key] for n in nodes] for i in outs], jnp.int32
        )  # [outputs, members]
        logz = [
            _Stacked(
                [
                    self.logz.get(
                        n.outvars[i].key,
                        jnp.full(n.outvars[i].aval.shape, -jnp.inf, n.outvars[i].aval.dtype),
                    )
                    for n in nodes
                ]
            )
            for i in outs
        ]
        seg_out = [j for _ in slots for j in range(len(outs))]

        row = _row_kind(node, slots)

        def step(m, var, elem, u):
            logits, weights, reached, sizes = [], [], [], []
            for s in slots:
                here = var == slot_var[s][m]
                rows = row(node, args, m, s, elem, here)
                for j, i in enumerate(outs):
                    w, idx = rows[i]
                    lz = logz[j].take(m, idx).astype(w.dtype)
                    logits.append(jnp.where(here, log_abs(w) + lz, -jnp.inf))
                    weights.append(w.astype(self.dtype))
                    reached.append(idx)
                    sizes.append(int(idx.size))
            logits, weights = jnp.concatenate(logits), jnp.concatenate(weights)
            reached = jnp.concatenate(reached)
            c, mass = draw(u, logits)
            seg_off = np.cumsum([0] + sizes)
            seg = jnp.searchsorted(jnp.asarray(seg_off[:-1]), c, side="right") - 1
            new_var = out_var[jnp.asarray(seg_out, jnp.int32)[seg], m]
            return new_var, reached[c], weights[c], mass.astype(self.dtype)

        return step

    def move(self, u, var, elem):
        """One step from (var, elem): a consumer equation j ∝ c_j(e) (the mass of the paths
        from e that enter j, or the output's seed for the stop) and, inside it, the next element
        ∝ |w_ek|·Z(k). One pass over the consumers: each one's row gives c_j(e) and a drawn
        element, and replaces the choice so far with probability c_j(e) / Σ_{i ≤ j} c_i(e).
        Returns (var, elem, weight, stopped, log Σ_j c_j(e))."""
        none = jnp.full((), -jnp.inf, self.dtype)

        def over(i, acc):
            total, nv, ne, nw, stop = acc
            j = self.consumer[self.first[var] + i]
            is_stop = j == _STOP
            at = jnp.where(is_stop, self.n_steps, j)  # the stop: the last branch, no mass
            v, e, w, mass = lax.switch(
                self.group_of[at], self.steps, self.member_of[at], var, elem, u[i, :2]
            )
            mass = jnp.where(is_stop, jnp.zeros((), self.dtype), mass)  # log of the seed 1
            new = jnp.logaddexp(total, mass)
            take = (mass > -jnp.inf) & (jnp.log(u[i, 2]) < mass - new)
            pick = lambda a, b: jnp.where(take, a, b)
            return new, pick(v, nv), pick(e, ne), pick(w, nw), pick(is_stop, stop)

        init = (none, var, elem, jnp.zeros((), self.dtype), jnp.bool_(False))
        total, var, elem, w, stop = lax.fori_loop(0, self.count[var], over, init)
        return var, elem, w, stop, total

    def one(self, rng, start_gid):
        offs = jnp.asarray(self.index.offsets, jnp.int32)
        var = (jnp.searchsorted(offs, start_gid, side="right") - 1).astype(jnp.int32)
        elem = (start_gid - offs[var]).astype(jnp.int32)
        # every uniform number the sample may use, drawn at once (per step and consumer: two
        # for the element, one for the consumer); one threefry call instead of one per step
        u = jax.random.uniform(rng, (self.n_steps + 1, self.m_max, 3))
        running, stopped, dead = 0, 1, 2
        state = (
            var,
            elem,
            jnp.int32(0),
            jnp.full((self.n_steps,), -1, jnp.int32),
            jnp.ones((self.n_steps,), self.dtype),
            jnp.int32(running),
        )

        def body(state):
            var, elem, k, ids, ws, status = state
            nv, ne, w, stop, total = self.move(u[k], var, elem)
            status = jnp.where(total == -jnp.inf, dead, jnp.where(stop, stopped, running))
            moved = status == running
            ids = ids.at[k].set(jnp.where(moved, 2 * (offs[nv] + ne), -1))
            ws = ws.at[k].set(jnp.where(moved, w, jnp.where(status == stopped, 1, jnp.nan)))
            return nv, ne, k + 1, ids, ws, status

        state = lax.while_loop(lambda s: (s[5] == running) & (s[2] <= self.n_steps), body, state)
        ids, ws, status = state[3], state[4], state[5]
        # a path that hit an inconsistency (no mass where the Log pass saw some) is marked NaN
        ws = jnp.where(status != stopped, jnp.nan, ws)
        return ids, ws


def sample_paths(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    at: Any = None,
    *,
    n: int,
    key: jax.Array,
    leaf: int | None = None,
    has_aux: bool = False,
    batch_size: int | None = None,
) -> Callable[..., SampledPaths]:
    """Draw ``n`` paths of scalar ``fun`` from one input element, each with probability
    |product| / Σ_paths |product|; returns a function of ``fun``'s arguments giving
    :class:`SampledPaths`. Jittable and vmappable (see the module docstring).

    Args:
      argnums: differentiated arguments, as in :func:`jaxpr_semiring.semiring_grad`.
      at: the start element, an int (flat index) or an index tuple (``()`` for a scalar) into
        the differentiated leaf ``leaf``. Default: the element with the largest total flow
        (``Log`` value) over all differentiated leaves.
      n: number of paths; key: a ``jax.random`` key.
      batch_size: samples vmapped together (``lax.map``'s); default one at a time.
    """
    normalize_argnums(argnums)
    if int(n) < 1:
        raise ValueError(f"sample_paths: n must be a positive number of paths, got {n}")
    S = Log()

    def sample_f(*args, **kwargs) -> SampledPaths:
        observer = Consumers()
        b = backprop(fun, S, argnums, has_aux, observer)(*args, **kwargs)
        g = b.graph
        if isinstance(g.outvars[0], Const):
            raise ValueError("sample_paths: the output is a constant; no input reaches it.")
        index = GraphIndex(g)
        leaves = [b.cotangents.get(r.key) for r in g.invars]
        numbered = [li for li, r in enumerate(g.invars) if r.key in index.offset_of]
        if at is None:
            lis = [li for li in numbered if leaves[li] is not None and leaves[li].size]
            if not lis:
                raise ValueError(
                    "sample_paths: no differentiated input element reaches the output."
                )
            vals = jnp.concatenate([leaves[li].ravel() for li in lis])
            gids = jnp.concatenate(
                [index.offset_of[g.invars[li].key] + jnp.arange(leaves[li].size) for li in lis]
            )
            start, log_z = gids[jnp.argmax(vals)].astype(jnp.int32), jnp.max(vals)
        else:
            li, elem = start_element(g, at, leaf, "sample_paths")
            ref = g.invars[li]
            if leaves[li] is None or ref.key not in index.offset_of:
                raise ValueError(
                    f"sample_paths: input element {unravel(elem, ref.aval.shape)} "
                    f"has no path to the output: there is nothing to sample."
                )
            lis = [li]
            start, log_z = jnp.int32(index.offset_of[ref.key] + elem), leaves[li].ravel()[elem]
        start_vars = [index.keys.index(g.invars[li].key) for li in lis]
        try:
            dead = not np.isfinite(float(log_z))
        except jax.errors.ConcretizationTypeError:  # traced: reading the samples says so
            dead = False
        meta = _Meta(
            index, *_var_labels(g, index), [len(observer.of.get(k, ())) for k in index.keys]
        )
        if dead:
            SampledPaths(None, None, start, None, log_z, meta)._check()
        sampler = _Sampler(b, observer.of, index, start_vars, jnp.result_type(log_z))
        ids, ws = lax.map(
            lambda r: sampler.one(r, start), jax.random.split(key, int(n)), batch_size=batch_size
        )
        products = jnp.prod(jnp.where(ids >= 0, ws, 1), axis=1) * jnp.where(
            jnp.any(jnp.isnan(ws), axis=1), jnp.nan, 1
        )
        return SampledPaths(ids, ws, start, products, log_z, meta)

    return sample_f
