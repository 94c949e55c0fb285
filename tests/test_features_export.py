"""The Neuronpedia export (jaxpr_semiring.features.export): pruning against a dense
re-derivation of circuit-tracer's ``prune_graph`` (written here from its definition, influence
by a matrix inverse instead of the library's semiring), documents valid against the shipped
JSON schema and internally consistent, top paths kept and pinned, one-line errors."""

import json
import os

import numpy as np
import pytest

from jaxpr_semiring.features import graph_scores
from jaxpr_semiring.features.export import (
    check_document,
    prune,
    schema,
    to_neuronpedia,
    write_neuronpedia,
)
from jaxpr_semiring.features.graph import FeatureGraph
from jaxpr_semiring.outputs import OutputError

try:
    import jsonschema
except ImportError:  # the test extra installs it; the consistency checks run without it
    jsonschema = None


def random_graph(seed, n_layers=2, n_pos=3, d_sae=6, n_logits=2, density=0.5):
    """A random layered graph in FeatureGraph's node order: edges only climb levels."""
    rng = np.random.default_rng(seed)
    feats = [
        (l, p, f)
        for l in range(n_layers)
        for p in range(n_pos)
        for f in range(d_sae)
        if rng.random() < 0.4
    ]
    nf, ne = len(feats), n_layers * n_pos
    n = nf + ne + n_pos + n_logits
    level = np.r_[[l + 1 for l, _, _ in feats], np.zeros(ne + n_pos), np.full(n_logits, 1e9)]
    A = rng.normal(size=(n, n)) * (rng.random((n, n)) < density)
    A[level[:, None] <= level[None, :]] = 0.0  # target level must exceed the source's
    probs = rng.dirichlet(np.ones(n_logits)) * 0.9
    return FeatureGraph(
        adjacency=A,
        n_features=nf,
        n_errors=ne,
        n_tokens=n_pos,
        n_logits=n_logits,
        n_layers=n_layers,
        active_features=np.array(feats, np.int64).reshape(-1, 3),
        activation_values=rng.uniform(0.5, 2.0, nf),
        input_tokens=rng.integers(0, 50, n_pos),
        logit_tokens=np.arange(n_logits) + 60,
        logit_probabilities=probs,
        input_strings=[f" t{i}" for i in range(n_pos)],
        logit_strings=[f" y{i}" for i in range(n_logits)],
    )


def dense_prune(g, node_threshold, edge_threshold):
    """circuit-tracer's prune_graph, re-derived densely: influence = w ((I - N)^-1 - I)."""
    n = g.n_nodes
    w = np.zeros(n)
    w[g.logit_slice] = g.logit_probabilities

    def influence(A):
        N = np.abs(A) / np.maximum(np.abs(A).sum(1, keepdims=True), 1e-10)
        return w @ (np.linalg.inv(np.eye(n) - N) - np.eye(n)), N

    def threshold(s, frac):
        s = np.sort(s)[::-1]
        c = np.cumsum(s) / s.sum()
        return s[min(np.searchsorted(c, frac), len(s) - 1)]

    infl, _ = influence(g.adjacency)
    keep = infl >= threshold(infl, node_threshold)
    keep[g.token_slice] = keep[g.logit_slice] = True
    P = g.adjacency * keep[:, None] * keep[None, :]
    pinfl, N = influence(P)
    E = N * (pinfl + w)[:, None]
    edges = (E >= threshold(E.ravel(), edge_threshold)) & (P != 0)
    inner = np.arange(n) < g.token_slice.start
    feat = np.arange(n) < g.n_features
    while True:
        live = edges & keep[:, None] & keep[None, :]
        new = keep & ~(inner & ~live.any(0)) & ~(feat & ~live.any(1))
        if (new == keep).all():
            break
        keep = new
    live = edges & keep[:, None] & keep[None, :]
    order = np.argsort(-infl, kind="stable")
    cum = np.empty(n)
    cum[order] = np.cumsum(infl[order]) / infl.sum()
    return keep, set(zip(*np.nonzero(live))), cum


@pytest.fixture(scope="module")
def graph():
    return random_graph(0)


def chain(g, source):
    """The path from ``source`` to a logit that always takes the strongest edge that can still
    reach one, as ``(product, [nodes])`` — the form of ``features.paths.top_paths``."""
    reach = np.zeros(g.n_nodes, bool)
    reach[g.logit_slice] = True
    for _ in range(g.n_nodes):
        reach |= (g.adjacency[reach] != 0).any(0)
    nodes, product = [source], 1.0
    while g.node_kind(nodes[-1]) != "logit":
        col = np.where(reach, np.abs(g.adjacency[:, nodes[-1]]), 0.0)
        nxt = int(np.argmax(col))
        assert col[nxt] != 0, "a dead end: pick another source"
        product *= g.adjacency[nxt, nodes[-1]]
        nodes.append(nxt)
    return float(product), nodes


@pytest.fixture(scope="module")
def paths(graph):
    return [chain(graph, s) for s in range(graph.token_slice.start, graph.token_slice.stop)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("nt,et", [(0.8, 0.98), (0.5, 0.7), (1.0, 1.0)])
def test_prune_matches_dense_definition(seed, nt, et):
    g = random_graph(seed)
    pr = prune(g, nt, et)
    keep, edges, cum = dense_prune(g, nt, et)
    np.testing.assert_array_equal(pr.node_mask, keep)
    assert set(zip(pr.targets.tolist(), pr.sources.tolist())) == {
        (int(t), int(s)) for t, s in edges
    }
    np.testing.assert_allclose(pr.cumulative, cum, atol=1e-6)
    if nt < 1.0:  # the thresholds bite: something is pruned, and something kept
        assert 0 < keep[: g.n_features].sum() < g.n_features
    else:  # nothing is dropped at 1.0 except nodes without an edge to keep them
        assert len(edges) == np.count_nonzero(g.adjacency * keep[:, None] * keep[None, :])


def _validate(doc):
    check_document(doc)
    if jsonschema is not None:
        jsonschema.Draft202012Validator(schema()).validate(doc)
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN


def test_document_fields_and_consistency(graph, paths):
    scores = graph_scores(graph)
    block = {
        "paths": paths,
        "entropy": {"entropy": np.float32(1.5), "log_n_paths": 2.0},
        "scores": {"replacement": scores[0], "completeness": scores[1]},
        "per_node": np.arange(3.0),
    }
    feature = paths[0][1][1]  # a feature on a path: kept whatever the pruning
    assert graph.node_kind(feature) == "feature"
    doc = to_neuronpedia(graph, slug="demo", scan="tiny", semiring=block, clerps={feature: "f"})
    _validate(doc)
    md = doc["metadata"]
    assert md["prompt_tokens"] == graph.input_strings and md["prompt"] == " t0 t1 t2"
    assert md["schema_version"] == 1 and md["node_threshold"] == 0.8
    assert set(doc["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    kinds = {n["feature_type"] for n in doc["nodes"]}
    assert kinds <= {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
    assert [n["is_target_logit"] for n in logits] == [True, False]
    assert logits[0]["clerp"] == f'Output " y0" (p={graph.logit_probabilities[0]:.3f})'
    assert all(n["layer"] == str(graph.n_layers + 1) for n in logits)
    embeds = [n for n in doc["nodes"] if n["feature_type"] == "embedding"]
    assert len(embeds) == graph.n_tokens  # tokens and logits are always kept
    # every link is an edge of the graph with its weight; ids unique and found by their fields
    index = {n["node_id"]: _index_of(graph, n) for n in doc["nodes"]}
    assert len(index) == len(doc["nodes"])
    assert any(k.endswith("_error") for k in index)  # this graph has a clash (see below)
    for lk in doc["links"]:
        t, s = index[lk["target"]], index[lk["source"]]
        assert lk["weight"] == graph.adjacency[t, s] != 0
    # the semiring block: numpy converted, paths as node ids, pinned
    sr = doc["semiring"]
    assert sr["per_node"] == [0.0, 1.0, 2.0] and sr["entropy"] == {
        "entropy": 1.5,
        "log_n_paths": 2.0,
    }
    for (product, nodes), p in zip(paths, sr["paths"]):
        assert p["product"] == product and p["nodes"] == nodes
        assert [index[i] for i in p["node_ids"]] == nodes
    pinned = list(dict.fromkeys(i for p in sr["paths"] for i in p["node_ids"]))
    assert doc["qParams"]["pinnedIds"] == pinned
    labelled = next(n for n in doc["nodes"] if n["node_id"] == _id_of(graph, feature))
    assert labelled["clerp"] == "f"
    assert sum(n["clerp"] != "" for n in doc["nodes"]) == 1 + graph.n_logits


def _id_of(g, i):
    """circuit-tracer's node id of node ``i`` (features and tokens)."""
    layer, pos = g.node_layer(i), g.node_position(i)
    if g.node_kind(i) == "feature":
        return f"{layer}_{int(g.active_features[i, 2])}_{pos}"
    assert g.node_kind(i) == "token"
    return f"E_{int(g.input_tokens[pos])}_{pos}"


def _index_of(g, node):
    """The graph index of a document node, found from its fields (not its id)."""
    kind = node["feature_type"]
    pos = node["ctx_idx"]
    if kind == "cross layer transcoder":
        layer, f = int(node["layer"]), node["node_id"].split("_")[1]
        rows = np.nonzero((g.active_features == [layer, pos, int(f)]).all(1))[0]
        return int(rows[0])
    if kind == "mlp reconstruction error":
        return g.error_slice.start + int(node["layer"]) * g.n_pos + pos
    if kind == "embedding":
        assert node["layer"] == "E" and node["feature"] == pos
        return g.token_slice.start + pos
    j = int(np.nonzero(g.logit_tokens == node["feature"])[0][0])
    return g.logit_slice.start + j


def test_top_paths_survive_any_pruning(graph, paths):
    doc = to_neuronpedia(
        graph, slug="s", semiring={"paths": paths}, node_threshold=0.0, edge_threshold=0.0
    )
    _validate(doc)
    links = {(lk["source"], lk["target"]) for lk in doc["links"]}
    for p in doc["semiring"]["paths"]:
        assert set(zip(p["node_ids"], p["node_ids"][1:])) <= links
    bare = to_neuronpedia(graph, slug="s", node_threshold=0.0, edge_threshold=0.0)
    assert len(bare["nodes"]) < len(doc["nodes"])  # the paths' nodes were kept on purpose
    assert bare["qParams"]["pinnedIds"] == [] and "semiring" not in bare


def test_pinned_ids_supernodes_and_scan_list(graph):
    doc = to_neuronpedia(
        graph,
        slug="s",
        scan=["tc-layer0", "tc-layer1"],
        pinned_ids=[0, "E_" + str(int(graph.input_tokens[0])) + "_0"],
        supernodes=[["group", _id_of(graph, 0)]],
    )
    _validate(doc)
    assert doc["qParams"]["pinnedIds"][0] == _id_of(graph, 0)
    assert doc["metadata"]["transcoder_list"] == ["tc-layer0", "tc-layer1"]
    again = to_neuronpedia(graph, slug="s", scan=["tc-layer0", "tc-layer1"])
    assert doc["metadata"]["scan"] == again["metadata"]["scan"]  # stable, not hash()
    assert doc["metadata"]["scan"].startswith("custom-")


def test_error_ids_never_clash_with_feature_ids():
    # a layer-0 feature with index 1 at position 0 and the layer-1 error at position 0 share
    # circuit-tracer's id "0_1_0"
    A = np.zeros((5, 5))  # feature, error(0, 0), error(1, 0), token, logit
    A[0, 3] = 1.0
    A[4, :3] = 1.0
    g = FeatureGraph(
        A,
        1,
        2,
        1,
        1,
        2,
        np.array([[0, 0, 1]]),
        np.ones(1),
        np.array([4]),
        np.array([9]),
        np.ones(1),
    )
    doc = to_neuronpedia(g, slug="s", node_threshold=1.0, edge_threshold=1.0)
    _validate(doc)
    ids = [n["node_id"] for n in doc["nodes"]]
    assert ids[0] == "0_1_0" and "0_1_0_error" in ids and len(set(ids)) == len(ids) == 5


def test_check_document_rejects_broken_documents(graph):
    doc = to_neuronpedia(graph, slug="s")
    bad = json.loads(json.dumps(doc))
    bad["links"].append({"source": "nope", "target": bad["nodes"][0]["node_id"], "weight": 1.0})
    with pytest.raises(ValueError, match="links.*'nope' is no node"):
        check_document(bad)
    bad = json.loads(json.dumps(doc))
    bad["nodes"].append(dict(bad["nodes"][0]))
    with pytest.raises(ValueError, match="appears twice"):
        check_document(bad)
    bad = json.loads(json.dumps(doc))
    bad["qParams"]["pinnedIds"] = ["ghost"]
    with pytest.raises(ValueError, match="pinned id 'ghost'"):
        check_document(bad)
    if jsonschema is not None:
        bad = json.loads(json.dumps(doc))
        del bad["nodes"][0]["jsNodeId"]
        with pytest.raises(ValueError, match="nodes/0.*jsNodeId"):
            check_document(bad)


def test_schema_ships_and_is_draft_2020_12():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(s["required"]) == {"metadata", "qParams", "nodes", "links"}
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(s)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(semiring={"entropy": float("nan")}), r"semiring\['entropy'\] is nan: JSON has"),
        (dict(semiring={"x": {1: 2}}), r"semiring\['x'\] has the key 1: JSON keys are strings"),
        (dict(semiring={"x": object()}), r"semiring\['x'\] is a object: the semiring block"),
        (dict(semiring={"paths": [(1.0, [0, 10_000])]}), r"paths'\]\[0\] names a node outside"),
        (dict(semiring={"paths": [(1.0, [0, 0])]}), r"is not an edge of the graph"),
        (dict(node_threshold=1.5), r"node_threshold=1.5 is not a fraction"),
        (dict(edge_threshold=-0.1), r"edge_threshold=-0.1 is not a fraction"),
        (dict(pinned_ids=["ghost"]), r"pinned_ids names 'ghost'"),
        (dict(pinned_ids=[-1]), r"pinned_ids names a node outside 0\.\."),
        (dict(clerps={"ghost": "x"}), r"clerps names node 'ghost'"),
        (dict(slug=""), r"slug='': pass a non-empty name"),
    ],
)
def test_errors_are_one_line(graph, kwargs, message):
    kwargs = {"slug": "s", **kwargs}
    with pytest.raises(ValueError, match=message) as e:
        to_neuronpedia(graph, **kwargs)
    assert "\n" not in str(e.value)


def test_write_goes_through_outputs(graph, tmp_path):
    doc = to_neuronpedia(graph, slug="s", semiring={"n": np.int64(3)})
    out = tmp_path / "g.json"
    write_neuronpedia(doc, out)
    assert json.loads(out.read_text()) == doc
    assert os.listdir(tmp_path) == ["g.json"]
    with pytest.raises(OutputError, match=r"--out .*missing/g.json: cannot write"):
        write_neuronpedia(doc, tmp_path / "missing" / "g.json", option="--out")


def test_adjacency_shape_is_checked(graph):
    import dataclasses

    bad = dataclasses.replace(graph, adjacency=graph.adjacency[:-1, :-1])
    with pytest.raises(ValueError, match=r"adjacency has shape .* pass an \[\d+, \d+\] matrix"):
        to_neuronpedia(bad, slug="s")


def test_graph_without_influence_is_refused(graph):
    import dataclasses

    dead = dataclasses.replace(graph, adjacency=np.zeros_like(graph.adjacency))
    with pytest.raises(ValueError, match="node influence is 0 or not finite"):
        to_neuronpedia(dead, slug="s")
