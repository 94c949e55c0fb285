"""Paths on attribution graphs (jaxpr_semiring.features.paths): every semiring on the layered
program equals brute-force path enumeration, and the graph-level answers (influence, scores,
top paths, entropy, samples, subgraph mass) equal direct numpy computations on the graph."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from brute_force import path_products
from oracle import check_all_semirings

from jaxpr_semiring.features import FeatureGraph, graph_scores, node_influence
from jaxpr_semiring.features import paths as P


def random_graph(seed, n_layers=1, n_pos=2, per=2, n_logits=2, density=0.7):
    """A random layered attribution graph in circuit-tracer's node order: features only read
    earlier layers (and tokens/errors), logits read everything."""
    rng = np.random.default_rng(seed)
    active = np.array(
        [(lay, p, f) for lay in range(n_layers) for p in range(n_pos) for f in range(per)]
    )
    n_f, n_e, n_t = len(active), n_layers * n_pos, n_pos
    n = n_f + n_e + n_t + n_logits
    A = np.zeros((n, n))
    level = np.r_[active[:, 0] + 1, np.zeros(n_e + n_t), np.full(n_logits, n_layers + 1)]
    err_layer = np.r_[
        np.full(n_f, -9), np.repeat(np.arange(n_layers), n_pos), np.full(n_t + n_logits, -9)
    ]
    for t in range(n):
        for s in range(n):
            src_ok = level[s] < level[t] and level[t] > 0
            if s >= n_f and s < n_f + n_e and t < n_f:
                src_ok = err_layer[s] < active[t, 0]  # an error feeds later layers only
            if src_ok and rng.random() < density:
                A[t, s] = rng.normal() * rng.choice([0.3, 1.0, 3.0])
    probs = rng.random(n_logits)
    return FeatureGraph(
        adjacency=A,
        n_features=n_f,
        n_errors=n_e,
        n_tokens=n_t,
        n_logits=n_logits,
        n_layers=n_layers,
        active_features=active,
        activation_values=rng.uniform(0.5, 2.0, n_f),
        input_tokens=np.arange(n_pos),
        logit_tokens=np.arange(n_logits),
        logit_probabilities=probs / probs.sum(),
    )


def enumerate_graph_paths(W, out_w, start):
    """Every path start → logit in the graph (DFS over non-zero W[target, source]) as
    (product · logit weight, [nodes])."""
    out = []

    def go(node, prod, nodes):
        if out_w[node] != 0:
            out.append((prod * out_w[node], nodes))
        for t in np.nonzero(W[:, node])[0]:
            go(int(t), prod * W[t, node], nodes + [int(t)])

    go(start, 1.0, [start])
    return out


def out_weights(g, logit):
    w = np.zeros(g.n_nodes)
    if logit is None:
        w[g.logit_slice] = g.logit_probabilities
    else:
        w[g.logit_slice.start + logit] = 1.0
    return w


def sources(g):
    return list(range(g.error_slice.start, g.token_slice.stop))


def all_paths(g, weighting, logit):
    W, w = P.edge_weights(g, weighting), out_weights(g, logit)
    return [p for s in sources(g) for p in enumerate_graph_paths(W, w, s)]


G1 = random_graph(0)  # 1 layer: 4 features, 2 errors, 2 tokens, 2 logits
G2 = random_graph(1, n_layers=2, n_pos=3, per=3)


def test_every_semiring_equals_brute_force_on_a_1_layer_graph():
    # signed weights: negative edges and cancelling paths (the harder case for every semiring)
    prog = P.layered_program(G1, "signed", logit=None)
    check_all_semirings(prog.fun, prog.inputs())


@pytest.mark.parametrize("weighting", ["influence", "signed"])
def test_program_paths_are_graph_paths(weighting):
    prog = P.layered_program(G1, weighting, logit=None)
    got = path_products(prog.fun, prog.inputs())
    W, w = P.edge_weights(G1, weighting), out_weights(G1, None)
    for k, ix in enumerate(prog.nodes):
        for i, node in enumerate(ix):
            want = sorted(p for p, _ in enumerate_graph_paths(W, w, int(node)))
            have = sorted(p for p in got[k][i] if p != 0)  # the program's zero-weight edges
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-7)


def power_series_influence(g):
    """circuit-tracer's compute_node_influence in plain numpy: Σ_{k≥1} w A_norm^k."""
    A = np.abs(g.adjacency)
    A = A / np.maximum(A.sum(1, keepdims=True), 1e-10)
    w = out_weights(g, None)
    cur, tot = w @ A, np.zeros(g.n_nodes)
    while np.any(cur):
        tot, cur = tot + cur, cur @ A
    return tot, A, w


@pytest.mark.parametrize("g", [G1, G2], ids=["1-layer", "2-layer"])
def test_influence_and_scores_equal_the_power_series(g):
    infl, A, w = power_series_influence(g)
    np.testing.assert_allclose(node_influence(g), infl, rtol=1e-5, atol=1e-7)
    tok, err = infl[g.token_slice].sum(), infl[g.error_slice].sum()
    non_err = 1 - A[:, g.error_slice].sum(1)
    comp = (non_err * (infl + w)).sum() / (infl + w).sum()
    np.testing.assert_allclose(graph_scores(g), (tok / (tok + err), comp), rtol=1e-5)


def test_signed_real_is_the_sum_of_path_contributions():
    W, w = P.edge_weights(G2, "signed"), out_weights(G2, 1)
    sc = P.signed_contributions(G2, logit=1)
    for s in sources(G2):
        want = sum(p for p, _ in enumerate_graph_paths(W, w, s))
        np.testing.assert_allclose(sc[s], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("logit", [0, None])
def test_top_paths_are_the_best_enumerated_chains(logit):
    paths = all_paths(G2, "signed", logit)
    paths.sort(key=lambda p: -abs(p[0]))
    got = P.top_paths(G2, 6, logit=logit)
    np.testing.assert_allclose([v for v, _ in got], [v for v, _ in paths[:6]], rtol=1e-4)
    W, w = P.edge_weights(G2, "signed"), out_weights(G2, logit)
    for value, nodes in got:
        # the read-back node list is a real path with that product
        prod = np.prod([W[b, a] for a, b in zip(nodes, nodes[1:])]) * w[nodes[-1]]
        np.testing.assert_allclose(prod, value, rtol=1e-4)
        assert nodes[0] in sources(G2) and G2.node_kind(nodes[-1]) == "logit"


def test_entropy_log_paths_and_the_log_bound():
    paths = all_paths(G2, "influence", None)
    p = np.abs([v for v, _ in paths])
    q = p / p.sum()
    e = P.path_entropy(G2)
    np.testing.assert_allclose(e["entropy"], -(q * np.log(q)).sum(), rtol=1e-4)
    np.testing.assert_allclose(e["log_z"], np.log(p.sum()), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e["log_n_paths"], math.log(len(paths)), rtol=1e-5)
    assert e["entropy"] <= e["log_n_paths"] + 1e-6
    # signed paths: Real can cancel, Log cannot: |any path product| ≤ exp(Log) ≥ |Real|
    signed = P.path_entropy(G2, "signed", logit=0)
    biggest = max(abs(v) for v, _ in all_paths(G2, "signed", 0))
    assert biggest <= math.exp(signed["log_z"]) * (1 + 1e-5)


def test_samples_follow_the_path_distribution():
    n = 600
    paths = all_paths(G1, "influence", None)
    probs = np.abs([v for v, _ in paths])
    probs = probs / probs.sum()
    index = {tuple(nodes): i for i, (_, nodes) in enumerate(paths)}
    got = P.sample_graph_paths(G1, n, jax.random.PRNGKey(0))
    counts = np.zeros(len(paths))
    for value, nodes in got:
        i = index[tuple(nodes)]  # every sample reads back as a real path of the graph
        np.testing.assert_allclose(value, paths[i][0], rtol=1e-4)
        counts[i] += 1
    expected = n * probs
    big = expected >= 5
    obs, exp = (
        np.append(counts[big], counts[~big].sum()),
        np.append(expected[big], expected[~big].sum()),
    )
    keep = exp > 0
    assert stats.chisquare(obs[keep], exp[keep]).pvalue > 1e-3
    uniform = np.full(len(paths), n / len(paths))
    assert stats.chisquare(counts, uniform).pvalue < 1e-3  # the test can fail


def test_subgraph_mass_equals_enumeration():
    paths = all_paths(G2, "influence", None)
    pinned = [0, 3, 4, 10]
    allowed = set(pinned) | set(sources(G2)) | set(range(G2.logit_slice.start, G2.n_nodes))
    inside = sum(abs(v) for v, nodes in paths if set(nodes) <= allowed)
    total = sum(abs(v) for v, _ in paths)
    np.testing.assert_allclose(P.subgraph_mass(G2, pinned), inside / total, rtol=1e-4)
    assert P.subgraph_mass(G2, range(G2.n_features)) == pytest.approx(1.0, rel=1e-5)


def test_best_chain_is_the_top_positive_path():
    value, nodes = P.best_chain(G2, logit=0)
    best = max(all_paths(G2, "signed", 0), key=lambda p: p[0])
    np.testing.assert_allclose(value, best[0], rtol=1e-4)
    assert nodes == best[1]


def test_jit_and_float64():
    prog = P.layered_program(G1, "influence")
    g = jax.jit(lambda zs: __import__("jaxpr_semiring").semiring_grad(prog.fun)(zs))(prog.inputs())
    np.testing.assert_allclose(
        prog.to_nodes(g)[: G1.logit_slice.start],
        node_influence(G1)[: G1.logit_slice.start],
        rtol=1e-5,
    )
    from conftest import x64

    with x64():
        infl = node_influence(G2)
        assert P.layered_program(G2).inputs()[0].dtype == jnp.float64
    np.testing.assert_allclose(infl, power_series_influence(G2)[0], rtol=1e-12)


def test_a_graph_that_is_not_layered_is_refused():
    A = G1.adjacency.copy()
    A[0, 1] = 1.0  # feature → feature of the same layer
    bad = FeatureGraph(**{**G1.__dict__, "adjacency": A})
    with pytest.raises(ValueError, match="not layered"):
        node_influence(bad)
    with pytest.raises(ValueError, match="weighting"):
        P.edge_weights(G1, "nope")
