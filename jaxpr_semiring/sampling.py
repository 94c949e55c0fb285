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
   Z(v) = Σ_paths v→out |product| at every element, and a :class:`ConsumerFlows` observer keeps
   every ⊕-contribution: c_j(e), the mass of the paths from element e whose first edge enters
   consumer equation j. At e the path continues into consumer j with probability c_j(e)/Z(e)
   (the output itself "consumes" its seed: the path stops there).
2. Inside the chosen equation, the output element k (and, for an equation that reads e in
   several operand slots, the slot) is drawn ∝ |w_ek|·Z(k), with w_ek from one JVP of that one
   equation with a one-hot tangent at e. The product of these choices along a path is
   |product|/Z(start): the sampled distribution is the path distribution exactly.

A sample sweeps the graph's equations in order (a static loop of ``lax.cond``: a sample only
evaluates the equations on its path, about one forward pass); ``lax.map`` runs the ``n``
samples (``batch_size`` vmaps them in groups, where conds become selects). Jittable and
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

from . import _compat
from .api import backprop, normalize_argnums
from .interpreter import Const, Observer, Ref, reachable, value_of
from .numerics import log_abs
from .paths import GraphIndex, Path, start_element, unravel
from .semirings import Log
from .taps import OUTPUT_LABEL, consumer_label

__all__ = ["sample_paths", "SampledPaths", "BranchShare", "ConsumerFlows", "node_jvp",
           "NOT_CROSSABLE"]

NOT_CROSSABLE = ("scan", "cond", "while")
_STOP, _DEAD = -1, -2   # "next equation" codes: the path ends at the output / has no mass


class ConsumerFlows(Observer):
    """Keeps, per variable, the ⊕-contributions arriving from each consumer equation (by
    position in the graph, its operand slots ⊕-combined; the output's seed under −1)."""

    def __init__(self, semiring):
        self.semiring = semiring
        self.order: dict = {}
        self.flows: dict = {}

    def start(self, graph, env):
        self.order = {id(node): i for i, node in enumerate(graph.nodes)}
        return ()

    def contribution(self, ref, value, consumer):
        j = _STOP if consumer is None else self.order[id(consumer)]
        d = self.flows.setdefault(ref.key, {})
        d[j] = value if j not in d else self.semiring.add(d[j], value)


def node_jvp(node, args: Sequence, slot: int, tangent) -> list:
    """Output tangents of one equation for a tangent in operand ``slot`` alone."""
    def along(x):
        a = list(args)
        a[slot] = x
        return _compat.bind(node.primitive, a, node.params)

    return jax.jvp(along, (args[slot],), (tangent,))[1]


class BranchShare(NamedTuple):
    """At one branch point: how many sampled paths went through it (``n``) and the share of
    them that took each consumer (label → fraction)."""
    n: int
    shares: dict


class _Meta(NamedTuple):
    index: GraphIndex
    var_labels: list     # per numbered variable: a readable label, unique
    producers: list      # per numbered variable: its producer's consumer label
    n_consumers: list    # per numbered variable: its consumer equations (the stop included)


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
            raise TypeError("SampledPaths are read on concrete values: return them from the "
                            "jitted function and read them outside (batched: pick one with "
                            "jax.tree.map(lambda a: a[i], samples)).") from e
        if not np.isfinite(lz):
            v, idx = self.meta.index.locate(int(self.start))
            raise ValueError(f"sample_paths: input element {idx} has no path with a nonzero "
                             f"product to the output (no path, or only paths of product 0): "
                             f"there is nothing to sample.")

    def __getitem__(self, i) -> Path:
        self._check()
        return Path(self.ids[i], self.weights[i], self.start, self.products[i], self.meta.index,
                    "sampled")

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
    lambda meta, ch: SampledPaths(*ch, meta))


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


class _Sampler:
    """One sample: a static sweep over the equations (see the module docstring)."""

    def __init__(self, b, flows, index, start_vars):
        self.g, self.env, self.index = b.graph, b.env, index
        self.var_of = {k: v for v, k in enumerate(index.keys)}
        self.out_key = self.g.outvars[0].key
        self.logz = {k: b.cotangents[k] for k in index.keys if k in b.cotangents}
        self.flows = flows
        self.n_steps = max(1, len(self.g.nodes))
        live = reachable(self.g, [self.g.invars[index.leaf_of[v]] for v in start_vars])
        self.crossable = []
        for t, node in enumerate(self.g.nodes):
            ins = [a for a in node.invars
                   if isinstance(a, Ref) and a.key in self.var_of and a.key in live]
            if not ins:
                continue
            if node.primitive.name in NOT_CROSSABLE:
                where = f" at module path '{node.path}'" if node.path else ""
                raise ValueError(
                    f"sample_paths cannot cross a '{node.primitive.name}'{where}: its JVP sums "
                    f"signed paths inside, and sampling needs each inner path's |product|. Make it "
                    f"one step with jaxpr_semiring.atomic (its total derivative as the edge "
                    f"weights), or unroll it.")
            self.crossable.append(t)

    def consumers(self, key):
        """(node indices, Log masses) of a variable's consumers, the output's stop included."""
        d = self.flows.get(key, {})
        js_ = sorted(d)
        return js_, [d[j] for j in js_]

    def choose_next(self, rng, var, elem, candidates):
        """The equation the path enters next from (var, elem): ∝ its consumers' masses."""
        nxt = jnp.int32(_DEAD)
        for v in candidates:
            js_, masses = self.consumers(self.index.keys[v])
            if not js_:
                continue
            logits = jnp.stack([m.reshape(-1)[jnp.clip(elem, 0, m.size - 1)] for m in masses])
            pick = jnp.asarray(js_, jnp.int32)[jax.random.categorical(rng, logits)]
            pick = jnp.where(jnp.max(logits) > -jnp.inf, pick, _DEAD)
            nxt = jnp.where(var == v, pick, nxt)
        return nxt

    def cross(self, t, state):
        nxt, var, elem, k, ids, ws, rng = state
        node = self.g.nodes[t]
        args = [value_of(self.env, a) for a in node.invars]
        outs = [(i, r) for i, r in enumerate(node.outvars) if r.key in self.var_of]
        logits, weights, seg_var, seg_off = [], [], [], []
        for s, a in enumerate(node.invars):
            if not (isinstance(a, Ref) and a.key in self.var_of):
                continue
            here = var == self.var_of[a.key]
            x = args[s]
            onehot = ((jnp.arange(x.size) == elem) & here).reshape(x.shape).astype(x.dtype)
            tangents = node_jvp(node, args, s, onehot)
            for i, r in outs:
                w = tangents[i].reshape(-1)
                lz = self.logz.get(r.key)
                lz = (jnp.full(w.shape, -jnp.inf, w.dtype) if lz is None
                      else lz.reshape(-1).astype(w.dtype))
                seg_off.append(sum(int(u.size) for u in weights))
                seg_var.append(self.var_of[r.key])
                logits.append(jnp.where(here, log_abs(w) + lz, -jnp.inf))
                weights.append(w)
        rng, r1, r2 = jax.random.split(rng, 3)
        logits, weights = jnp.concatenate(logits), jnp.concatenate(weights)
        c = jax.random.categorical(r1, logits)
        seg = jnp.searchsorted(jnp.asarray(seg_off), c, side="right") - 1
        new_var = jnp.asarray(seg_var, jnp.int32)[seg]
        new_elem = (c - jnp.asarray(seg_off)[seg]).astype(jnp.int32)
        alive = jnp.max(logits) > -jnp.inf
        gid = jnp.asarray(self.index.offsets[:-1], jnp.int32)[new_var] + new_elem
        ids = ids.at[k].set(jnp.where(alive, 2 * gid, -1))
        ws = ws.at[k].set(jnp.where(alive, weights[c], jnp.nan))
        nxt = self.choose_next(r2, new_var, new_elem, sorted(set(seg_var)))
        return jnp.where(alive, nxt, _DEAD), new_var, new_elem, k + 1, ids, ws, rng

    def one(self, rng, start_gid, start_vars, dtype):
        offs = jnp.asarray(self.index.offsets, jnp.int32)
        var = (jnp.searchsorted(offs, start_gid, side="right") - 1).astype(jnp.int32)
        elem = (start_gid - offs[var]).astype(jnp.int32)
        rng, r0 = jax.random.split(rng)
        nxt = self.choose_next(r0, var, elem, start_vars)
        state = (nxt, var, elem, jnp.int32(0), jnp.full((self.n_steps,), -1, jnp.int32),
                 jnp.ones((self.n_steps,), dtype), rng)
        for t in self.crossable:
            state = lax.cond(state[0] == t, lambda s, t=t: self.cross(t, s), lambda s: s, state)
        nxt, _, _, _, ids, ws, _ = state
        # a path that hit an inconsistency (no mass where the Log pass saw some) is marked NaN
        ws = jnp.where(nxt == _DEAD, jnp.nan, ws)
        return ids, ws


def sample_paths(fun: Callable, argnums: int | Sequence[int] = 0, at: Any = None, *, n: int,
                 key: jax.Array, leaf: int | None = None, has_aux: bool = False,
                 batch_size: int | None = None) -> Callable[..., SampledPaths]:
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
        observer = ConsumerFlows(S)
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
                raise ValueError("sample_paths: no differentiated input element reaches the output.")
            vals = jnp.concatenate([leaves[li].ravel() for li in lis])
            gids = jnp.concatenate([index.offset_of[g.invars[li].key] + jnp.arange(leaves[li].size)
                                    for li in lis])
            start, log_z = gids[jnp.argmax(vals)].astype(jnp.int32), jnp.max(vals)
        else:
            li, elem = start_element(g, at, leaf, "sample_paths")
            ref = g.invars[li]
            if leaves[li] is None or ref.key not in index.offset_of:
                raise ValueError(f"sample_paths: input element {unravel(elem, ref.aval.shape)} "
                                 f"has no path to the output: there is nothing to sample.")
            lis = [li]
            start, log_z = jnp.int32(index.offset_of[ref.key] + elem), leaves[li].ravel()[elem]
        start_vars = [index.keys.index(g.invars[li].key) for li in lis]
        try:
            dead = not np.isfinite(float(log_z))
        except jax.errors.ConcretizationTypeError:  # traced: reading the samples says so
            dead = False
        meta = _Meta(index, *_var_labels(g, index),
                     [len(observer.flows.get(k, {})) for k in index.keys])
        if dead:
            SampledPaths(None, None, start, None, log_z, meta)._check()
        sampler = _Sampler(b, observer.flows, index, start_vars)
        dtype = jnp.result_type(log_z)
        ids, ws = lax.map(lambda r: sampler.one(r, start, start_vars, dtype),
                          jax.random.split(key, int(n)), batch_size=batch_size)
        products = jnp.prod(jnp.where(ids >= 0, ws, 1), axis=1) * jnp.where(
            jnp.any(jnp.isnan(ws), axis=1), jnp.nan, 1)
        return SampledPaths(ids, ws, start, products, log_z, meta)

    return sample_f
