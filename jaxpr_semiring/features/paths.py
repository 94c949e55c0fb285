"""Paths on an attribution graph: the graph written as a layered linear JAX program and run
through the library's semirings.

The program (:func:`layered_program`) has one input vector per level — level 0 the token and
error nodes, level ``l + 1`` the features of layer ``l``, the last level the logits — and
computes ``v_k = z_k + Σ_{k' < k} W[k, k'] @ v_{k'}`` (one ``dot_general`` per non-zero block,
each level a :func:`~jaxpr_semiring.tap`), then ``out = w · v_logits``. A path of the program
from ``z_i`` to ``out`` is a path of the graph from node ``i`` to a logit, with the product of
its edge weights times the logit's weight, so a semiring gradient at ``z`` answers a question
about the graph's paths for every node at once. Two edge weightings:

* ``"influence"``: circuit-tracer's row-normalised ``|A|`` with the logit probabilities as
  output weights: ``Real`` is its node influence (:func:`node_influence`), ``Entropy``/``Log``
  describe the distribution of its backward random walk.
* ``"signed"``: the Jacobian edges (``A`` divided by the source feature's activation, so that
  a path's product is its signed contribution to one logit): ``Real`` at the tokens and error
  nodes is an exact additive decomposition of the logit's graph part
  (:func:`signed_contributions`); ``TopK`` gives the k strongest signed chains
  (:func:`top_paths`).

>>> import numpy as np
>>> from jaxpr_semiring.features.graph import FeatureGraph
>>> A = np.zeros((4, 4)); A[0, 2] = 2.0; A[3, 0] = 1.0; A[3, 1] = 3.0   # token→feature→logit
>>> g = FeatureGraph(A, 1, 1, 1, 1, 1, np.array([[0, 0, 5]]), np.array([2.0]), np.array([7]),
...                  np.array([9]), np.array([1.0]))
>>> node_influence(g).round(3).tolist()      # feature 0.25, error 0.75, token 0.25, logit 0
[0.25, 0.75, 0.25, 0.0]
>>> [round(s, 3) for s in graph_scores(g)]   # (replacement, completeness)
[0.25, 0.667]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..analyses.sampling import sample_paths as _sample_paths
from ..analyses.top_path import top_path as _top_path
from ..api import semiring_grad
from ..markers import tap
from ..semirings import Entropy, Log, Real, TopK
from .graph import FeatureGraph

__all__ = [
    "LayeredProgram",
    "edge_weights",
    "node_levels",
    "layered_program",
    "node_influence",
    "graph_scores",
    "signed_contributions",
    "top_paths",
    "path_entropy",
    "sample_graph_paths",
    "subgraph_mass",
    "WEIGHTINGS",
]

WEIGHTINGS = ("influence", "signed", "indicator")


def _normalize_rows(a: np.ndarray) -> np.ndarray:
    """circuit-tracer's ``normalize_matrix``: ``|A| / Σ_row |A|`` (row sums clamped at 1e-10)."""
    a = np.abs(np.asarray(a, np.float64))
    return a / np.maximum(a.sum(axis=1, keepdims=True), 1e-10)


def edge_weights(graph: FeatureGraph, weighting: str = "influence") -> np.ndarray:
    """``[n, n]`` edge weights ``W[target, source]`` of one weighting (see the module docstring;
    ``"indicator"``: 1 on every edge, 0 elsewhere, for counting paths)."""
    A = np.asarray(graph.adjacency, np.float64)
    if weighting == "influence":
        return _normalize_rows(A)
    if weighting == "signed":
        W = A.copy()
        act = np.asarray(graph.activation_values, np.float64)
        safe = np.where(act != 0, act, 1.0)
        # an edge out of a feature carries its activation; the path product must carry it once
        W[:, : graph.n_features] = W[:, : graph.n_features] / safe[None, :]
        return W
    if weighting == "indicator":
        return (A != 0).astype(np.float64)
    raise ValueError(f"edge weighting {weighting!r} is not one of {WEIGHTINGS}")


def node_levels(graph: FeatureGraph) -> np.ndarray:
    """``[n]`` each node's level in the layered program: tokens and errors 0, features of
    layer ``l`` at ``l + 1``, logits ``n_layers + 1``. Raises if an edge does not climb."""
    lv = np.zeros(graph.n_nodes, np.int64)
    lv[graph.feature_slice] = np.asarray(graph.active_features, np.int64)[:, 0] + 1
    lv[graph.logit_slice] = graph.n_layers + 1
    t, s = np.nonzero(np.asarray(graph.adjacency))
    bad = lv[s] >= lv[t]
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"FeatureGraph: edge {graph.node_label(int(s[i]))} → {graph.node_label(int(t[i]))} "
            "does not go from an earlier layer to a later one; the graph is not layered"
        )
    return lv


@dataclasses.dataclass
class LayeredProgram:
    """A graph as a JAX program: ``fun(zs)`` with ``zs`` one vector per level (``inputs()``);
    ``nodes[k]`` the graph's node ids of level ``k``; ``to_nodes(per_level)`` scatters per-level
    arrays (leading axis = the level's nodes) back into graph node order."""

    fun: Callable
    nodes: list
    n_nodes: int

    def inputs(self, dtype=None) -> list:
        dtype = dtype or jnp.zeros(()).dtype
        return [jnp.zeros(len(ix), dtype) for ix in self.nodes]

    def to_nodes(self, per_level: Sequence[Any], fill=0.0) -> np.ndarray:
        first = np.asarray(per_level[0])
        out = np.full((self.n_nodes,) + first.shape[1:], fill, np.float64)
        for ix, v in zip(self.nodes, per_level):
            out[ix] = np.asarray(v, np.float64)
        return out


def layered_program(
    graph: FeatureGraph,
    weighting: str = "influence",
    *,
    logit: int | None = None,
    weights: np.ndarray | None = None,
    logit_weights: np.ndarray | None = None,
) -> LayeredProgram:
    """The graph as a layered linear program (see the module docstring).

    Args:
      weighting: ``"influence"``, ``"signed"`` or ``"indicator"`` (:func:`edge_weights`).
      logit: which logit is the output (index among the logits); ``None``: all of them
        weighted by ``logit_probabilities``.
      weights: an explicit ``[n, n]`` edge-weight matrix instead of ``weighting``'s.
      logit_weights: explicit output weights ``[n_logits]`` (instead of ``logit``'s).
    """
    W = edge_weights(graph, weighting) if weights is None else np.asarray(weights, np.float64)
    lv = node_levels(graph)
    n_levels = graph.n_layers + 2
    nodes = [np.nonzero(lv == k)[0] for k in range(n_levels)]
    blocks = {}
    for k in range(1, n_levels):
        for kp in range(k):
            blk = W[np.ix_(nodes[k], nodes[kp])]
            if blk.size and np.any(blk != 0):
                blocks[k, kp] = blk
    n_logits = graph.n_logits
    if logit_weights is not None:
        w_out = np.asarray(logit_weights, np.float64)
    elif logit is None:
        w_out = np.asarray(graph.logit_probabilities, np.float64)
    else:
        if not 0 <= logit < n_logits:
            raise ValueError(f"logit {logit} is out of range: the graph has {n_logits} logits")
        w_out = np.zeros(n_logits)
        w_out[logit] = 1.0

    def fun(zs):
        dt = zs[0].dtype
        vals = []
        for k in range(n_levels):
            with jax.named_scope(f"level{k}"):
                v = zs[k]
                for kp in range(k):
                    if (k, kp) in blocks:
                        v = v + jnp.asarray(blocks[k, kp], dt) @ vals[kp]
                v = tap(v, f"level{k}")
            vals.append(v)
        return jnp.dot(jnp.asarray(w_out, dt), vals[-1])

    return LayeredProgram(fun, nodes, graph.n_nodes)


def _grad(prog: LayeredProgram, semiring):
    # one compiled program (op-by-op, every small operation would compile on its own)
    return jax.jit(semiring_grad(prog.fun, semiring))(prog.inputs())


def node_influence(graph: FeatureGraph) -> np.ndarray:
    """circuit-tracer's ``compute_node_influence``: for every node, Σ over paths of length ≥ 1
    to a logit of the product of row-normalised ``|A|`` weights times the logit's probability;
    the ``Real`` semiring gradient of the ``"influence"`` program (logits: 0)."""
    prog = layered_program(graph, "influence")
    infl = prog.to_nodes(_grad(prog, Real()))
    infl[graph.logit_slice] = 0.0  # paths of length 0 do not count
    return infl


def graph_scores(graph: FeatureGraph, influence: np.ndarray | None = None) -> tuple[float, float]:
    """circuit-tracer's ``compute_graph_scores``: ``(replacement_score, completeness_score)``.

    Replacement: the tokens' share of the influence of tokens and error nodes; completeness:
    the influence-weighted (influence + logit weight) share of each node's normalised input
    that does not come from error nodes. ``influence``: :func:`node_influence` if computed."""
    infl = node_influence(graph) if influence is None else np.asarray(influence, np.float64)
    tok = infl[graph.token_slice].sum()
    err = infl[graph.error_slice].sum()
    replacement = tok / (tok + err) if tok + err > 0 else float("nan")
    norm = _normalize_rows(graph.adjacency)
    non_error = 1.0 - norm[:, graph.error_slice].sum(axis=1)
    w = np.zeros(graph.n_nodes)
    w[graph.logit_slice] = graph.logit_probabilities
    out_infl = infl + w
    completeness = (non_error * out_infl).sum() / out_infl.sum()
    return float(replacement), float(completeness)


def signed_contributions(graph: FeatureGraph, logit: int = 0) -> np.ndarray:
    """``[n]`` the ``Real`` gradient of the ``"signed"`` program for one logit: at token and error
    nodes, each node's total (all-path) contribution to the logit; their sum is the logit minus
    what is not in the graph (biases). At a feature: the logit's derivative w.r.t. the feature's
    pre-activation through the graph."""
    prog = layered_program(graph, "signed", logit=logit)
    return prog.to_nodes(_grad(prog, Real()))


def _sources(graph: FeatureGraph) -> np.ndarray:
    return np.r_[
        np.arange(graph.error_slice.start, graph.error_slice.stop),
        np.arange(graph.token_slice.start, graph.token_slice.stop),
    ]


def top_paths(
    graph: FeatureGraph,
    k: int = 10,
    *,
    weighting: str = "signed",
    logit: int | None = 0,
    sources: Sequence[int] | None = None,
) -> list[tuple[float, list[int]]]:
    """The ``k`` paths with the largest |product| from the source nodes (tokens and error nodes;
    or ``sources``) to the output, best first, as ``(product, [node ids, source first])``.

    The values are the ``TopK(k)`` semiring gradient of the layered program at every node; the
    node lists are read back from those per-node tables (a path's next node is the successor
    whose edge weight times one of its own k best products gives the product).
    """
    prog = layered_program(graph, weighting, logit=logit)
    g = _grad(prog, TopK(k))
    la = prog.to_nodes([v.log_abs for v in g], -np.inf)  # [n, k]
    sg = prog.to_nodes([v.sign for v in g], 1.0)
    vals = np.where(np.isfinite(la), sg * np.exp(la), 0.0)  # [n, k]
    W = edge_weights(graph, weighting)
    src = _sources(graph) if sources is None else np.asarray(sources)
    cand = [(vals[s, r], int(s), r) for s in src for r in range(k) if np.isfinite(la[s, r])]
    cand.sort(key=lambda c: -abs(c[0]))
    out = []
    for value, s, r in cand[:k]:
        out.append((float(value), _read_path(s, r, vals, la, W)))
    return out


def _read_path(node, rank, vals, la, W):
    """Follow rank ``rank`` at ``node`` down the per-node top-k tables to a logit: the next node
    is the successor ``t`` (and its rank ``r``) with ``W[t, node] · vals[t, r]`` the product."""
    path = [node]
    target = vals[node, rank]
    while True:
        succ = np.nonzero(W[:, node])[0]
        if succ.size == 0:  # a logit (only logits have no successors in a layered graph)
            return path
        cands = W[succ, node][:, None] * vals[succ]  # [n_succ, k]
        err = np.abs(cands - target)
        err[~np.isfinite(la[succ])] = np.inf
        j, r = np.unravel_index(np.argmin(err), err.shape)
        node, target = int(succ[j]), vals[succ[j], r]
        path.append(node)


def _source_program(graph: FeatureGraph, weighting: str, logit: int | None, **kw):
    """A program of one scalar ``u`` feeding every source node: its paths are the graph's
    source→logit paths, so a semiring at ``u`` describes all of them together."""
    prog = layered_program(graph, weighting, logit=logit, **kw)
    src = _sources(graph)
    mask = np.zeros(len(prog.nodes[0]))
    mask[np.isin(prog.nodes[0], src)] = 1.0

    def fun(u):
        zs = prog.inputs(jnp.result_type(u))
        zs[0] = u * jnp.asarray(mask, zs[0].dtype)
        return prog.fun(zs)

    return prog, fun


def path_entropy(
    graph: FeatureGraph, weighting: str = "influence", logit: int | None = None
) -> dict:
    """Over all source→logit paths weighted by |product|: ``entropy`` (nats), ``log_z``
    (log Σ|product|) and ``log_n_paths`` (log of the number of paths; ``Log`` on the indicator
    weights). ``entropy ≤ log_n_paths``."""
    _, fun = _source_program(graph, weighting, logit)
    e = jax.jit(semiring_grad(fun, Entropy()))(jnp.zeros(()))
    w_count = (np.asarray(graph.logit_probabilities) != 0).astype(np.float64)
    if logit is not None:
        w_count = np.eye(graph.n_logits)[logit]
    _, count = _source_program(graph, "indicator", None, logit_weights=w_count)
    n = jax.jit(semiring_grad(count, Log()))(jnp.zeros(()))
    return {
        "entropy": float(e.entropy),
        "log_z": float(e.log_z),
        "log_n_paths": float(n),
    }


def _path_nodes(path, prog: LayeredProgram) -> list[int]:
    """A library :class:`~jaxpr_semiring.Path` of the layered program read as graph node ids:
    every step inside ``levelK`` on a vector of that level's length names node ``nodes[K][i]``."""
    out = []
    for st in path.steps:
        for k, ix in enumerate(prog.nodes):
            if f"level{k}" in st.path.split("/") and tuple(st.shape) == (len(ix),):
                node = int(ix[st.index[0]])
                if not out or out[-1] != node:
                    out.append(node)
                break
    return out


def sample_graph_paths(
    graph: FeatureGraph,
    n: int,
    key: jax.Array,
    *,
    weighting: str = "influence",
    logit: int | None = None,
) -> list[tuple[float, list[int]]]:
    """``n`` exact samples (:func:`jaxpr_semiring.sample_paths`) of source→logit paths, each
    with probability |product| / Σ|product|, as ``(product, [node ids])`` (the logit last)."""
    prog, fun = _source_program(graph, weighting, logit)
    s = jax.jit(_sample_paths(fun, n=n, key=key))(jnp.zeros(()))
    prods = np.asarray(s.products, np.float64)
    return [(float(prods[i]), _path_nodes(s[i], prog)) for i in range(n)]


def best_chain(graph: FeatureGraph, *, weighting: str = "signed", logit: int | None = 0):
    """The single most positive chain (:func:`jaxpr_semiring.top_path`) as ``(product, nodes)``."""
    prog, fun = _source_program(graph, weighting, logit)
    p = jax.jit(_top_path(fun))(jnp.zeros(()))
    return float(p.product), _path_nodes(p, prog)


def subgraph_mass(
    graph: FeatureGraph,
    pinned: Sequence[int],
    *,
    weighting: str = "influence",
    logit: int | None = None,
) -> float:
    """The share of Σ|product| over source→logit paths carried by paths that stay inside the
    pinned nodes (sources and logits always allowed): ``Log`` on the graph restricted to them
    against ``Log`` on the whole graph."""
    keep = np.zeros(graph.n_nodes, bool)
    keep[np.asarray(pinned, np.int64)] = True
    keep[_sources(graph)] = True
    keep[graph.logit_slice] = True
    W = np.abs(edge_weights(graph, weighting))
    Wp = np.where(keep[:, None] & keep[None, :], W, 0.0)
    tot = _log_mass(graph, W, logit)
    return float(np.exp(_log_mass(graph, Wp, logit) - tot))


def _log_mass(graph, W, logit):
    prog = layered_program(graph, weights=W, logit=logit)
    src = _sources(graph)
    mask = np.isin(prog.nodes[0], src).astype(np.float64)

    def fun(u):
        zs = prog.inputs(jnp.result_type(u))
        zs[0] = u * jnp.asarray(mask, zs[0].dtype)
        return prog.fun(zs)

    return float(jax.jit(semiring_grad(fun, Log()))(jnp.zeros(())))
