"""This library against circuit-tracer itself, without installing it: the fixture
tests/data/circuit_tracer_fixture.npz was written by circuit-tracer 0.5.0
(tests/data/make_circuit_tracer_fixture.py: a tiny random Llama-style model with random
transcoders, attributed offline on the CPU) with its node influence, graph scores, pruning and
the Neuronpedia JSON of its ``create_graph_files``."""

import json
import os

import numpy as np
import pytest

from jaxpr_semiring.features import graph_scores, node_influence
from jaxpr_semiring.features.export import check_document, prune, to_neuronpedia
from jaxpr_semiring.features.graph import FeatureGraph

PATH = os.path.join(os.path.dirname(__file__), "data", "circuit_tracer_fixture.npz")
THRESHOLDS = {"default": (0.8, 0.98), "tight": (0.5, 0.9)}


@pytest.fixture(scope="module")
def data():
    with np.load(PATH) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def graph(data):
    return FeatureGraph(
        adjacency=data["adjacency"],
        n_features=int(data["n_features"]),
        n_errors=int(data["n_errors"]),
        n_tokens=int(data["n_tokens"]),
        n_logits=int(data["n_logits"]),
        n_layers=int(data["n_layers"]),
        active_features=data["active_features"],
        activation_values=data["activation_values"],
        input_tokens=data["input_tokens"],
        logit_tokens=data["logit_tokens"],
        logit_probabilities=data["logit_probabilities"],
        input_strings=[str(s) for s in data["input_strings"]],
        logit_strings=[str(s) for s in data["logit_strings"]],
    )


@pytest.fixture(scope="module")
def influence(graph):
    return node_influence(graph)


def test_fixture_is_small_and_from_circuit_tracer(data, graph):
    assert os.path.getsize(PATH) < 200_000
    assert "circuit-tracer 0.5.0" in [str(v) for v in data["versions"]]
    # a real graph: features on both layers, several logits, edges between features
    assert graph.n_features > 100 and graph.n_logits > 1
    assert set(np.unique(graph.active_features[:, 0])) == {0, 1}
    F = graph.feature_slice
    assert np.count_nonzero(graph.adjacency[F, F]) > 0


def test_node_influence_matches_circuit_tracer(data, influence):
    ct = data["ct_node_influence"]
    nz = ct != 0
    assert nz.sum() > 100
    np.testing.assert_array_equal(influence[~nz], 0.0)
    rel = np.abs(influence[nz] - ct[nz]) / np.abs(ct[nz])
    assert rel.max() <= 1e-6, rel.max()


def test_graph_scores_match_circuit_tracer(data, graph):
    replacement, completeness = graph_scores(graph)
    assert abs(replacement - float(data["ct_replacement_score"])) <= 1e-6
    assert abs(completeness - float(data["ct_completeness_score"])) <= 1e-6
    assert 0.1 < replacement < 0.9  # errors and tokens both carry influence: not a trivial case


@pytest.mark.parametrize("tag", sorted(THRESHOLDS))
def test_pruning_matches_circuit_tracer(data, graph, influence, tag):
    pr = prune(graph, *THRESHOLDS[tag], influence=influence)
    np.testing.assert_array_equal(pr.node_mask, data[f"ct_node_mask_{tag}"])
    ours = set(zip(pr.targets.tolist(), pr.sources.tolist()))
    theirs = set(map(tuple, data[f"ct_edge_mask_{tag}"].tolist()))
    # circuit-tracer's edge mask may hold edges of dropped nodes; the kept ones must agree
    keep = pr.node_mask
    theirs = {(t, s) for t, s in theirs if keep[t] and keep[s]}
    assert ours == theirs and len(ours) > 5
    np.testing.assert_allclose(pr.cumulative, data[f"ct_cumulative_{tag}"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("tag", sorted(THRESHOLDS))
def test_export_matches_create_graph_files(data, graph, influence, tag):
    ref = json.loads(str(data[f"ct_json_{tag}"]))
    nt, et = THRESHOLDS[tag]
    doc = to_neuronpedia(
        graph,
        slug=ref["metadata"]["slug"],
        scan=ref["metadata"]["scan"],
        node_threshold=nt,
        edge_threshold=et,
        influence=influence,
        prompt=ref["metadata"]["prompt"],
    )
    check_document(doc)
    for key, value in ref["metadata"].items():
        assert doc["metadata"][key] == value, key
    assert doc["qParams"] == ref["qParams"]
    assert [n["node_id"] for n in doc["nodes"]] == [n["node_id"] for n in ref["nodes"]]
    for ours, theirs in zip(doc["nodes"], ref["nodes"]):
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            if isinstance(value, float):
                assert ours[key] == pytest.approx(value, rel=0, abs=1e-6), (theirs["node_id"], key)
            else:
                assert ours[key] == value, (theirs["node_id"], key)
    assert [(lk["source"], lk["target"]) for lk in doc["links"]] == [
        (lk["source"], lk["target"]) for lk in ref["links"]
    ]
    np.testing.assert_allclose(
        [lk["weight"] for lk in doc["links"]], [lk["weight"] for lk in ref["links"]], rtol=1e-6
    )
