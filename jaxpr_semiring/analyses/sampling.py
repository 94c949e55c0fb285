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

from ..api import backprop, normalize_argnums
from ..graph import Const, GraphIndex, unravel
from ..interpreter import value_of
from ..numerics import log_abs
from ..semirings import Log
from .flows import OUTPUT_LABEL, consumer_label
from .rows import Stacked, row_kind
from .top_path import Path, start_element
from .walk import Consumers, Walk

__all__ = ["sample_paths", "SampledPaths", "BranchShare", "NOT_CROSSABLE"]

NOT_CROSSABLE = ("scan", "cond", "while")


def draw(u: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index i of flat ``logits`` drawn with probability ∝ exp(logits[i]), by inverting the
    cumulative distribution in two levels at the two uniform numbers ``u``: a block of about
    √size elements ∝ its mass, then an element of that block ∝ its own.
    ``jax.random.categorical`` draws a Gumbel per element, and most of a sample's time was
    that; two short cumulative sums also beat one long one. An
    element of probability 0 is never returned (rounding that would pick one falls back to the
    largest); all −inf gives an arbitrary index. Returns the index and log Σ exp(logits)."""
    n = int(logits.size)
    # in at least float32: bfloat16's 8-bit mantissa would coarsen the inversion
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
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


class _Sampler(Walk):
    """One sample: a ``while_loop`` that follows the path, one crossing step per equation on it
    (see the module docstring and :class:`~.walk.Walk`)."""

    def __init__(self, b, consumers, index, start_vars, dtype):
        super().__init__(b.graph, b.env, consumers, index, start_vars, _crossable)
        self.dtype = dtype
        self.logz = {k: b.cotangents[k] for k in index.keys if k in b.cotangents}
        self.steps = [self._step(ts) for ts in self.groups] + [self._dead]

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
            Stacked([value_of(self.env, n.invars[s]) for n in nodes])
            for s in range(len(node.invars))
        ]
        slots = [s for s, a in enumerate(node.invars) if self.numbered(a)]
        outs = [i for i, r in enumerate(node.outvars) if r.key in self.var_of]
        slot_var = {
            s: jnp.asarray([self.var_of[n.invars[s].key] for n in nodes], jnp.int32) for s in slots
        }
        out_var = jnp.asarray(
            [[self.var_of[n.outvars[i].key] for n in nodes] for i in outs], jnp.int32
        )  # [outputs, members]
        logz = [
            Stacked(
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

        row = row_kind(node, slots)

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
            j, is_stop = self.consumer_at(var, i)
            v, e, w, mass = self.enter(j, is_stop, var, elem, u[i, :2])  # the stop: no mass
            mass = jnp.where(is_stop, jnp.zeros((), self.dtype), mass)  # log of the seed 1
            new = jnp.logaddexp(total, mass)
            take = (mass > -jnp.inf) & (jnp.log(u[i, 2]) < mass - new)
            pick = lambda a, b: jnp.where(take, a, b)
            return new, pick(v, nv), pick(e, ne), pick(w, nw), pick(is_stop, stop)

        init = (none, var, elem, jnp.zeros((), self.dtype), jnp.bool_(False))
        total, var, elem, w, stop = lax.fori_loop(0, self.count[var], over, init)
        return var, elem, w, stop, total

    def one(self, rng, start_gid):
        offs = self.offsets
        var, elem = self.locate(start_gid)
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


def _crossable(node):
    if node.primitive.name in NOT_CROSSABLE:
        where = f" at module path '{node.path}'" if node.path else ""
        raise ValueError(
            f"sample_paths cannot cross a '{node.primitive.name}'{where}: its JVP sums "
            f"signed paths inside, and sampling needs each inner path's |product|. Make it "
            f"one step with jaxpr_semiring.atomic (its total derivative as the edge "
            f"weights), or unroll it."
        )


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
