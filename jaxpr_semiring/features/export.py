"""A :class:`~jaxpr_semiring.features.graph.FeatureGraph` as the graph JSON that Neuronpedia's
attribution-graph viewer reads (the document circuit-tracer's ``create_graph_files`` writes),
pruned the way circuit-tracer prunes, with the semiring results in an extra ``semiring`` block
and the top paths pinned.

The document: ``metadata`` (slug, scan, prompt, prompt_tokens, node_threshold,
schema_version, …), ``qParams`` (pinnedIds, supernodes, linkType, clickedId, sg_pos),
``nodes`` (node_id, feature, layer, ctx_idx, feature_type, token_prob, is_target_logit,
run_idx, reverse_ctx_idx, jsNodeId, clerp, influence, activation), ``links`` (source, target,
weight) and ``semiring``. Its JSON schema (draft 2020-12) ships beside this module:
:func:`schema`; :func:`check_document` checks a document against it and for consistency.

>>> import numpy as np
>>> from jaxpr_semiring.features.graph import FeatureGraph
>>> A = np.zeros((4, 4)); A[0, 2] = 2.0; A[3, 0] = 1.0; A[3, 1] = 3.0  # token→feature→logit
>>> g = FeatureGraph(A, 1, 1, 1, 1, 1, np.array([[0, 0, 5]]), np.array([2.0]), np.array([7]),
...                  np.array([9]), np.array([1.0]), ["cat"], ["dog"])
>>> doc = to_neuronpedia(g, slug="demo", semiring={"paths": [(2.0, [2, 0, 3])]},
...                      node_threshold=1.0, edge_threshold=1.0)
>>> [n["node_id"] for n in doc["nodes"]], doc["qParams"]["pinnedIds"]
(['0_5_0', '0_0_0', 'E_7_0', '2_9_0'], ['E_7_0', '0_5_0', '2_9_0'])
>>> [(l["source"], l["target"], l["weight"]) for l in doc["links"]]
[('E_7_0', '0_5_0', 2.0), ('0_5_0', '2_9_0', 1.0), ('0_0_0', '2_9_0', 3.0)]
>>> doc["semiring"]["paths"][0]["node_ids"], check_document(doc)
(['E_7_0', '0_5_0', '2_9_0'], None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from importlib import metadata, resources
from typing import Any, Mapping, Sequence

import numpy as np

from ..outputs import write_output
from .graph import FeatureGraph

__all__ = [
    "SCHEMA_VERSION",
    "Pruned",
    "to_neuronpedia",
    "prune",
    "schema",
    "check_document",
    "write_neuronpedia",
]

# circuit-tracer 0.5.0's Metadata.schema_version
SCHEMA_VERSION = 1
_FEATURE_TYPES = {
    "feature": "cross layer transcoder",
    "error": "mlp reconstruction error",
    "token": "embedding",
    "logit": "logit",
}


@dataclasses.dataclass
class Pruned:
    """What :func:`prune` keeps: ``node_mask`` ``[n]``; the kept edges as index arrays
    ``targets``/``sources`` (the adjacency's row/column); ``cumulative`` ``[n]`` each node's
    cumulative influence fraction (circuit-tracer's ``cumulative_scores``: the share of the
    total influence carried by the nodes at least as influential as it)."""

    node_mask: np.ndarray
    targets: np.ndarray
    sources: np.ndarray
    cumulative: np.ndarray


def _threshold(scores: np.ndarray, fraction: float) -> float:
    """circuit-tracer's ``find_threshold``: the smallest score among the fewest top scores
    whose sum reaches ``fraction`` of the total."""
    s = np.sort(scores)[::-1]
    cum = np.cumsum(s) / np.sum(s)
    return s[min(int(np.searchsorted(cum, fraction)), len(s) - 1)]


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value!r} is not a fraction: pass a number in [0, 1]")


def prune(
    graph: FeatureGraph,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    influence: np.ndarray | None = None,
) -> Pruned:
    """circuit-tracer's ``prune_graph``: keep the most influential nodes that carry
    ``node_threshold`` of the total node influence (tokens and logits always), then the most
    influential edges of that subgraph that carry ``edge_threshold`` of its edge influence
    (edge score = row-normalised ``|A|`` times the target's influence plus logit weight, on the
    node-pruned graph), then drop feature and error nodes left without an outgoing edge and
    features left without an incoming one, until nothing changes. Edges of weight 0 are never
    kept (circuit-tracer keeps them only at ``edge_threshold`` ≈ 1, a rounding artefact).

    ``influence``: the graph's node influence, if already computed
    (:func:`~jaxpr_semiring.features.paths.node_influence`).
    """
    from .paths import node_influence  # same layer; lazy: paths pulls in the semirings

    _check_fraction("node_threshold", node_threshold)
    _check_fraction("edge_threshold", edge_threshold)
    n = graph.n_nodes
    A = np.asarray(graph.adjacency)
    if A.shape != (n, n):
        raise ValueError(
            f"FeatureGraph: adjacency has shape {A.shape}, but the node counts add "
            f"up to {n}: pass an [{n}, {n}] matrix"
        )
    infl = node_influence(graph) if influence is None else np.asarray(influence, np.float64)
    if infl.shape != (n,):
        raise ValueError(f"influence has shape {infl.shape}: pass one value per node ({n},)")
    if not np.all(np.isfinite(infl)) or not infl.sum() > 0:
        raise ValueError(
            "FeatureGraph: the node influence is 0 or not finite (no path reaches a logit with "
            "positive probability): check the adjacency and logit_probabilities"
        )
    always = np.zeros(n, bool)
    always[graph.token_slice] = True
    always[graph.logit_slice] = True
    node_mask = (infl >= _threshold(infl, node_threshold)) | always

    pruned = np.where(node_mask[:, None] & node_mask[None, :], A, 0.0)
    logit_w = np.zeros(n)
    logit_w[graph.logit_slice] = np.asarray(graph.logit_probabilities, np.float64)
    pruned_infl = node_influence(dataclasses.replace(graph, adjacency=pruned))
    t, s = np.nonzero(pruned)
    absw = np.abs(pruned[t, s])
    row_sum = np.zeros(n)
    np.add.at(row_sum, t, absw)
    score = absw / np.maximum(row_sum[t], 1e-10) * (pruned_infl + logit_w)[t]
    keep = score >= _threshold(score, edge_threshold) if score.size else score.astype(bool)
    t, s = t[keep], s[keep]

    inner = ~always  # features and error nodes
    feat = np.zeros(n, bool)
    feat[graph.feature_slice] = True
    while True:
        live = node_mask[t] & node_mask[s]
        has_out = np.bincount(s[live], minlength=n) > 0
        has_in = np.bincount(t[live], minlength=n) > 0
        new = node_mask & ~(inner & ~has_out) & ~(feat & ~has_in)
        if np.array_equal(new, node_mask):
            break
        node_mask = new
    live = node_mask[t] & node_mask[s]

    order = np.argsort(-infl, kind="stable")
    cumulative = np.empty(n)
    cumulative[order] = np.cumsum(infl[order]) / np.sum(infl)
    return Pruned(node_mask, t[live], s[live], cumulative)


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _token_text(strings, ids, i) -> str:
    return str(strings[i]) if strings is not None else str(int(ids[i]))


def _node(graph: FeatureGraph, i: int, cumulative: float) -> dict:
    """One node as circuit-tracer's ``Node.*_node`` constructors write it."""
    kind = graph.node_kind(i)
    layer, pos = graph.node_layer(i), graph.node_position(i)
    node = {
        "node_id": "",
        "feature": 0,
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": _FEATURE_TYPES[kind],
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": "",
        "clerp": "",
        "influence": float(cumulative),
        "activation": None,
    }
    if kind == "feature":
        f = int(graph.active_features[i, 2])
        node.update(node_id=f"{layer}_{f}_{pos}", feature=_cantor(layer, f))
        node.update(jsNodeId=f"{layer}_{f}-0", activation=float(graph.activation_values[i]))
    elif kind == "error":
        node.update(node_id=f"0_{layer}_{pos}", feature=-1, jsNodeId=f"{layer}_{pos}-0")
    elif kind == "token":
        v = int(graph.input_tokens[pos])
        node.update(node_id=f"E_{v}_{pos}", feature=pos, layer="E", jsNodeId=f"E_{v}-{pos}")
    else:
        j = i - graph.logit_slice.start
        v = int(graph.logit_tokens[j])
        p = float(graph.logit_probabilities[j])
        text = _token_text(graph.logit_strings, graph.logit_tokens, j)
        node.update(node_id=f"{graph.n_layers + 1}_{v}_{pos}", feature=v, token_prob=p)
        node.update(is_target_logit=j == 0, jsNodeId=f"L_{v}-{pos}", influence=None)
        node["layer"] = str(graph.n_layers + 1)
        node["clerp"] = f'Output "{text}" (p={p:.3f})'
    return node


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars and arrays converted); a one-line error
    naming ``where`` for anything JSON cannot hold (NaN and infinities included)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(
                f"{where} is {float(value)}: JSON has no NaN or infinity; pass a "
                "finite number or None"
            )
        return float(value)
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and hasattr(value, "shape"):
        return _jsonable(np.asarray(value).tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has the key {k!r}: JSON keys are strings; use str keys")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(
        f"{where} is a {type(value).__name__}: the semiring block holds JSON values "
        "only (numbers, strings, lists, dicts, numpy arrays)"
    )


def _paths(paths: Any, n: int) -> list[dict]:
    """``semiring["paths"]`` as ``[{"product", "nodes", …}]``: entries ``(product, [nodes])`` (as
    :func:`~jaxpr_semiring.features.paths.top_paths` returns them) or dicts with ``nodes``."""
    if not isinstance(paths, (list, tuple)):
        raise ValueError("semiring['paths'] is not a list: pass [(product, [node, …]), …]")
    out = []
    for k, p in enumerate(paths):
        if isinstance(p, Mapping) and "nodes" in p:
            entry = dict(p)
        elif isinstance(p, (list, tuple)) and len(p) == 2:
            entry = {"product": p[0], "nodes": p[1]}
        else:
            raise ValueError(
                f"semiring['paths'][{k}] is {p!r}: pass (product, [node, …]) or "
                "{'nodes': [node, …], …}"
            )
        nodes = [int(v) for v in entry["nodes"]]
        if any(not 0 <= v < n for v in nodes):
            raise ValueError(
                f"semiring['paths'][{k}] names a node outside 0..{n - 1}: pass "
                "the graph's node indices"
            )
        entry["nodes"] = nodes
        out.append(entry)
    return out


def to_neuronpedia(
    graph: FeatureGraph,
    *,
    slug: str,
    scan: str | Sequence[str] | None = None,
    semiring: Mapping[str, Any] | None = None,
    pinned_ids: Sequence[int | str] | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    influence: np.ndarray | None = None,
    clerps: Mapping[int | str, str] | None = None,
    supernodes: Sequence[Sequence[str]] | None = None,
    prompt: str | None = None,
) -> dict:
    """The Neuronpedia graph document of ``graph`` (see the module docstring), as a dict ready
    for ``json.dumps``.

    Args:
      slug: the graph's name in the viewer.
      scan: the model id Neuronpedia shows (``"gemma-2-2b"``), or a list of transcoder names:
        then ``metadata.transcoder_list`` and ``scan = "custom-<hash>"`` as circuit-tracer writes
        it (a stable hash here); ``None``: ``"custom"``.
      semiring: any JSON-able dict (numpy values converted), written as the top-level
        ``semiring`` block. Its ``paths``, if any — ``(product, [node indices])`` pairs as
        :func:`~jaxpr_semiring.features.paths.top_paths` returns them, or dicts with ``nodes``
        — gain ``node_ids``; their nodes and edges are kept whatever the pruning, and pinned.
      pinned_ids: what ``qParams.pinnedIds`` pins instead of the paths' nodes: node indices
        (kept whatever the pruning) or node ids of the document.
      node_threshold, edge_threshold: circuit-tracer's pruning fractions (:func:`prune`).
      influence: the graph's node influence if already computed.
      clerps: labels by node index or node id (logits have ``Output "tok" (p=…)``).
      supernodes: ``qParams.supernodes``: lists ``[name, node_id, …]``.
      prompt: ``metadata.prompt``; default: the input strings joined (or the token ids).

    Node ids are circuit-tracer's, except where its error id ``0_<layer>_<pos>`` would repeat a
    kept layer-0 feature's (feature index ``<layer>`` at ``<pos>``): the error node is then
    ``0_<layer>_<pos>_error``.
    """
    if not isinstance(slug, str) or not slug:
        raise ValueError(f"slug={slug!r}: pass a non-empty name for the graph")
    n = graph.n_nodes
    block = None if semiring is None else _jsonable(dict(semiring), "semiring")
    paths = _paths(semiring["paths"], n) if semiring and "paths" in semiring else []
    pr = prune(graph, node_threshold, edge_threshold, influence=influence)
    node_mask = pr.node_mask.copy()
    edges = set(zip(pr.targets.tolist(), pr.sources.tolist()))
    A = np.asarray(graph.adjacency)
    for k, p in enumerate(paths):
        node_mask[p["nodes"]] = True
        for s, t in zip(p["nodes"], p["nodes"][1:]):
            if A[t, s] == 0:
                raise ValueError(
                    f"semiring['paths'][{k}]: {graph.node_label(s)} → "
                    f"{graph.node_label(t)} is not an edge of the graph"
                )
            edges.add((t, s))
    pinned_idx = [int(p) for p in pinned_ids or () if not isinstance(p, str)]
    if any(not 0 <= p < n for p in pinned_idx):
        raise ValueError(
            f"pinned_ids names a node outside 0..{n - 1}: pin node indices of the "
            "graph or node ids of the document"
        )
    node_mask[np.asarray(pinned_idx, np.int64)] = True

    nodes = {i: _node(graph, i, pr.cumulative[i]) for i in np.nonzero(node_mask)[0].tolist()}
    # circuit-tracer's error id 0_<layer>_<pos> is also layer-0 feature <layer>'s id there
    feature_ids = {
        nd["node_id"] for nd in nodes.values() if nd["feature_type"] == _FEATURE_TYPES["feature"]
    }
    for nd in nodes.values():
        if nd["feature"] == -1 and nd["node_id"] in feature_ids:
            nd["node_id"] += "_error"
    links = [
        {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": float(A[t, s])}
        for t, s in sorted(edges)
        if t in nodes and s in nodes
    ]
    connected = {x for lk in links for x in (lk["source"], lk["target"])}
    forced = set(pinned_idx) | {v for p in paths for v in p["nodes"]}
    used = [
        nd
        for i, nd in nodes.items()
        if nd["node_id"] in connected or nd["feature_type"] in ("embedding", "logit") or i in forced
    ]
    ids = {nd["node_id"]: nd for nd in used}
    for key, text in (clerps or {}).items():
        nid = key if isinstance(key, str) else nodes.get(int(key), {}).get("node_id")
        if nid not in ids:
            raise ValueError(
                f"clerps names node {key!r}, which is not in the exported graph: "
                "label kept nodes only (or lower the thresholds)"
            )
        ids[nid]["clerp"] = str(text)

    if pinned_ids is None:
        pinned = list(dict.fromkeys(nodes[v]["node_id"] for p in paths for v in p["nodes"]))
    else:
        pinned = [p if isinstance(p, str) else nodes[int(p)]["node_id"] for p in pinned_ids]
        missing = [p for p in pinned if p not in ids]
        if missing:
            raise ValueError(
                f"pinned_ids names {missing[0]!r}, which is not in the exported "
                "graph: pin node indices or ids of kept nodes"
            )
    if block is not None and paths:
        block["paths"] = [
            {**b, "nodes": p["nodes"], "node_ids": [nodes[v]["node_id"] for v in p["nodes"]]}
            for b, p in zip(
                (b if isinstance(b, dict) else {"product": b[0]} for b in block["paths"]), paths
            )
        ]

    if isinstance(scan, (list, tuple)):
        transcoders = [str(s) for s in scan]
        digest = hashlib.sha1("-".join(transcoders).encode()).hexdigest()[:16]
        scan_id = f"custom-{digest}"
    else:
        transcoders, scan_id = [], "custom" if scan is None else str(scan)
    tokens = [_token_text(graph.input_strings, graph.input_tokens, i) for i in range(graph.n_pos)]
    if prompt is None:
        prompt = "".join(tokens) if graph.input_strings is not None else " ".join(tokens)
    doc = {
        "metadata": {
            "slug": slug,
            "scan": scan_id,
            "transcoder_list": transcoders,
            "prompt_tokens": tokens,
            "prompt": prompt,
            "node_threshold": float(node_threshold),
            "schema_version": SCHEMA_VERSION,
            "info": {"generator": {"name": "jaxpr_semiring", "version": _version()}},
            "pruning_settings": {
                "node_threshold": float(node_threshold),
                "edge_threshold": float(edge_threshold),
            },
        },
        "qParams": {
            "pinnedIds": pinned,
            "supernodes": [[str(x) for x in sn] for sn in supernodes or ()],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": used,
        "links": links,
    }
    if block is not None:
        doc["semiring"] = block
    return doc


def _version() -> str:
    # the installed distribution's version: importing the top package would import upwards
    try:
        return metadata.version("jaxpr_semiring")
    except metadata.PackageNotFoundError:
        return "unknown"


def schema() -> dict:
    """The JSON schema (draft 2020-12) of the document :func:`to_neuronpedia` writes."""
    text = resources.files(__package__).joinpath("neuronpedia_graph.schema.json").read_text()
    return json.loads(text)


def check_document(doc: Mapping) -> None:
    """Raise ``ValueError`` (one line) unless ``doc`` is a consistent graph document: node ids
    unique, every link and pinned id naming a node, supernode members naming nodes, and — where
    the ``jsonschema`` package is installed — valid against :func:`schema`."""
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        err = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema()).iter_errors(doc)
        )
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "(top)"
            raise ValueError(f"graph document at {where}: {err.message}")
    ids = [nd["node_id"] for nd in doc["nodes"]]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"graph document: node id {dup!r} appears twice; node ids must be unique")
    known = set(ids)
    for k, lk in enumerate(doc["links"]):
        for end in ("source", "target"):
            if lk[end] not in known:
                raise ValueError(f"graph document: links[{k}].{end} = {lk[end]!r} is no node")
    q = doc["qParams"]
    for p in q.get("pinnedIds", ()):
        if p not in known:
            raise ValueError(f"graph document: pinned id {p!r} is no node")
    for sn in q.get("supernodes", ()):
        for p in sn[1:]:
            if p not in known:
                raise ValueError(f"graph document: supernode {sn[0]!r} names {p!r}, no node")


def write_neuronpedia(doc: Mapping, path, option: str | None = None) -> None:
    """Write ``doc`` as compact JSON to ``path`` through :func:`jaxpr_semiring.outputs.write_output`
    (atomic replace; ``-`` is standard output); ``option`` names the path in errors."""
    write_output(path, json.dumps(doc, separators=(",", ":"), allow_nan=False), option=option)
