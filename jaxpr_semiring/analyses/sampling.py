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

A sample follows its path in a ``lax.while_loop``: each step evaluates the one equation on the
path (about one forward pass per sample), through a ``lax.switch`` with one branch per distinct
equation signature (repeated layers share theirs: compile time follows the distinct
equations); ``lax.map`` runs the ``n`` samples (``batch_size`` vmaps them in groups, where the
switch evaluates every branch). Jittable and
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
from ..semirings import Log
from .flows import OUTPUT_LABEL, consumer_label
from .top_path import Path, start_element

__all__ = [
    "sample_paths",
    "SampledPaths",
    "BranchShare",
    "ConsumerFlows",
    "node_jvp",
    "NOT_CROSSABLE",
]

NOT_CROSSABLE = ("scan", "cond", "while")
_STOP, _DEAD = -1, -2  # "next equation" codes: the path ends at the output / has no mass


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

    def __init__(self, b, flows, index, start_vars, dtype):
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
        # equations off every path go to a last branch that ends the path as dead
        group_of = np.full(len(self.g.nodes) or 1, len(self.groups), np.int32)
        member_of = np.zeros(len(self.g.nodes) or 1, np.int32)
        for gi, ts in enumerate(self.groups):
            group_of[ts], member_of[ts] = gi, np.arange(len(ts))
        self.group_of, self.member_of = jnp.asarray(group_of), jnp.asarray(member_of)
        self.steps = [self._step(ts) for ts in self.groups] + [self._dead]
        self._consumer_tables(flows)

    def _numbered(self, a) -> bool:
        return isinstance(a, Ref) and a.key in self.var_of

    def _dead(self, m, var, elem, rng):
        return jnp.bool_(False), var, elem, jnp.zeros((), self.dtype)

    def _step(self, ts):
        """``step(member, var, elem, rng) -> (alive, var, elem, weight)``: the next element,
        drawn ∝ |w_ek|·Z(k) over the equation's outputs (its members' operands stacked)."""
        nodes = [self.g.nodes[t] for t in ts]
        node = nodes[0]

        def stacked(values):  # built once, outside the loop; read per member inside it
            one_literal = np.ndim(values[0]) == 0 and not any(
                isinstance(v, jax.Array) for v in values
            )
            if one_literal or all(v is values[0] for v in values):
                return lambda m: values[0]  # one member, or one literal
            st = jnp.stack([jnp.asarray(v, jnp.result_type(values[0])) for v in values])
            return lambda m: st[m]

        args = [
            stacked([value_of(self.env, n.invars[s]) for n in nodes])
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
            stacked(
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
        sizes = [int(np.prod(node.outvars[outs[j]].aval.shape, dtype=np.int64)) for j in seg_out]
        seg_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)

        def step(m, var, elem, rng):
            vals = [a(m) for a in args]
            logits, weights = [], []
            for s in slots:
                here = var == slot_var[s][m]
                x = vals[s]
                onehot = ((jnp.arange(x.size) == elem) & here).reshape(x.shape).astype(x.dtype)
                tangents = node_jvp(node, vals, s, onehot)
                for j, i in enumerate(outs):
                    w = tangents[i].reshape(-1)
                    lz = logz[j](m).reshape(-1).astype(w.dtype)
                    logits.append(jnp.where(here, log_abs(w) + lz, -jnp.inf))
                    weights.append(w.astype(self.dtype))
            logits, weights = jnp.concatenate(logits), jnp.concatenate(weights)
            c = jax.random.categorical(rng, logits)
            seg = jnp.searchsorted(jnp.asarray(seg_off[:-1]), c, side="right") - 1
            new_var = out_var[jnp.asarray(seg_out, jnp.int32)[seg], m]
            new_elem = (c - jnp.asarray(seg_off)[seg]).astype(jnp.int32)
            return jnp.max(logits) > -jnp.inf, new_var, new_elem, weights[c]

        return step

    def _consumer_tables(self, flows):
        """Flat tables of every variable's consumers (equation numbers, the output's stop
        included) and their Log masses per element, so one piece of code picks the next
        equation from any variable."""
        count, node, node_base, mass_base, masses = [], [], [], [], []
        off = 0
        for k in self.index.keys:
            d = flows.get(k, {})
            js_ = sorted(d)
            node_base.append(len(node))
            mass_base.append(off)
            count.append(len(js_))
            node.extend(js_)
            for j in js_:
                masses.append(jnp.asarray(d[j], self.dtype).reshape(-1))
                off += masses[-1].size
        self.m_max = max([1] + count)
        self.count, self.node = (
            jnp.asarray(count, jnp.int32),
            jnp.asarray(node or [_DEAD], jnp.int32),
        )
        self.node_base, self.mass_base = (
            jnp.asarray(node_base, jnp.int32),
            jnp.asarray(mass_base, jnp.int32),
        )
        self.masses = jnp.concatenate(masses) if masses else jnp.full((1,), -jnp.inf, self.dtype)
        self.sizes = jnp.asarray(np.diff(self.index.offsets), jnp.int32)

    def choose_next(self, rng, var, elem):
        """The equation the path enters next from (var, elem): ∝ its consumers' masses."""
        slot = jnp.arange(self.m_max, dtype=jnp.int32)
        pos = self.mass_base[var] + slot * self.sizes[var] + elem
        logits = jnp.where(
            slot < self.count[var], self.masses[jnp.clip(pos, 0, self.masses.size - 1)], -jnp.inf
        )
        pick = jax.random.categorical(rng, logits)
        nxt = self.node[jnp.clip(self.node_base[var] + pick, 0, self.node.size - 1)]
        return jnp.where(jnp.max(logits) > -jnp.inf, nxt, _DEAD)

    def one(self, rng, start_gid):
        offs = jnp.asarray(self.index.offsets, jnp.int32)
        var = (jnp.searchsorted(offs, start_gid, side="right") - 1).astype(jnp.int32)
        elem = (start_gid - offs[var]).astype(jnp.int32)
        rng, r0 = jax.random.split(rng)
        state = (
            self.choose_next(r0, var, elem),
            var,
            elem,
            jnp.int32(0),
            jnp.full((self.n_steps,), -1, jnp.int32),
            jnp.ones((self.n_steps,), self.dtype),
            rng,
        )

        def body(state):
            nxt, var, elem, k, ids, ws, rng = state
            rng, r1, r2 = jax.random.split(rng, 3)
            alive, var, elem, w = lax.switch(
                self.group_of[nxt], self.steps, self.member_of[nxt], var, elem, r1
            )
            ids = ids.at[k].set(jnp.where(alive, 2 * (offs[var] + elem), -1))
            ws = ws.at[k].set(jnp.where(alive, w, jnp.nan))
            nxt = jnp.where(alive, self.choose_next(r2, var, elem), _DEAD)
            return nxt, var, elem, k + 1, ids, ws, rng

        state = lax.while_loop(lambda s: (s[0] >= 0) & (s[3] < self.n_steps), body, state)
        nxt, _, _, _, ids, ws, _ = state
        # a path that hit an inconsistency (no mass where the Log pass saw some) is marked NaN
        ws = jnp.where(nxt == _DEAD, jnp.nan, ws)
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
            index, *_var_labels(g, index), [len(observer.flows.get(k, {})) for k in index.keys]
        )
        if dead:
            SampledPaths(None, None, start, None, log_z, meta)._check()
        sampler = _Sampler(b, observer.flows, index, start_vars, jnp.result_type(log_z))
        ids, ws = lax.map(
            lambda r: sampler.one(r, start), jax.random.split(key, int(n)), batch_size=batch_size
        )
        products = jnp.prod(jnp.where(ids >= 0, ws, 1), axis=1) * jnp.where(
            jnp.any(jnp.isnan(ws), axis=1), jnp.nan, 1
        )
        return SampledPaths(ids, ws, start, products, log_z, meta)

    return sample_f
