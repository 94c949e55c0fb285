"""Splices and the attribution graph (jaxpr_semiring.features.splice / attribution) on the
paper's tiny Transformer and a tiny HF Flax GPT-2 with initialised transcoders.

The intervention oracle: in the frozen model (attention patterns and norm scales at their
recorded values), scaling one source — a feature's activation, an error vector, a token
embedding — changes every feature pre-activation and target logit by exactly that source's
column of A."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_semiring.features import paths as P
from jaxpr_semiring.features.attribution import attribution_graph, select_logits
from jaxpr_semiring.features.dictionary import Dictionary
from jaxpr_semiring.features.splice import Leaves, ReplacementModel, splice
from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params

TOKENS = jnp.array([1, 2, 3, 4, 5])


def transcoder(key, d, d_sae, site, scale=0.3):
    k1, k2, k3 = jax.random.split(key, 3)
    return Dictionary(
        W_enc=jax.random.normal(k1, (d, d_sae)) / np.sqrt(d),
        b_enc=0.1 * jnp.ones(d_sae),
        W_dec=scale * jax.random.normal(k2, (d_sae, d)),
        b_dec=0.01 * jax.random.normal(k3, (d,)),
        kind="transcoder",
        site=f"{site}:in",
        out_site=f"{site}:out",
    )


@pytest.fixture(scope="module")
def paper():
    m = TransformerClassifier(
        num_layers=2, hidden=8, heads=2, max_len=5, vocab_size=7, num_classes=3
    )
    p = init_params(m)
    ks = jax.random.split(jax.random.PRNGKey(1), 2)
    ds = [transcoder(ks[i], 8, 12, f"layer_{i}/mlp") for i in range(2)]
    rm = ReplacementModel(m, p, TOKENS, ds)
    g = attribution_graph(m, p, TOKENS, ds, target=[1, 2], replacement=rm)
    return m, p, ds, rm, g


@pytest.fixture(scope="module")
def gpt2():
    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=11,
        n_positions=8,
        n_embd=8,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.FlaxGPT2LMHeadModel(cfg, seed=0)
    ks = jax.random.split(jax.random.PRNGKey(2), 2)
    ds = [transcoder(ks[i], 8, 10, f"transformer/h/{i}/mlp") for i in range(2)]
    rm = ReplacementModel(model, model.params, TOKENS, ds)
    g = attribution_graph(model, model.params, TOKENS, ds, target=None, replacement=rm)
    return model, ds, rm, g


def targets(rm, g, leaves):
    """Every row of A computed forward: active pre-activations, then the graph's logits."""
    pres, logits = jax.jit(rm.forward)(leaves)
    f = [pres[lay][p, i] for lay, p, i in g.active_features]
    return np.asarray(jnp.stack(f + [logits[int(t)] for t in g.logit_tokens]), np.float64)


def rows(g):
    return np.r_[np.arange(g.n_features), np.arange(g.logit_slice.start, g.n_nodes)]


def scaled(rm, g, node, alpha):
    lv = Leaves(
        embed=rm.leaves["embed"], acts=list(rm.leaves["acts"]), errors=list(rm.leaves["errors"])
    )
    kind = g.node_kind(node)
    if kind == "feature":
        lay, p, i = g.active_features[node]
        lv["acts"][lay] = lv["acts"][lay].at[p, i].multiply(1 + alpha)
    elif kind == "error":
        lay, p = g.node_layer(node), g.node_position(node)
        lv["errors"][lay] = lv["errors"][lay].at[p].multiply(1 + alpha)
    else:
        lv["embed"] = lv["embed"].at[g.node_position(node)].multiply(1 + alpha)
    return lv


def check_intervention(rm, g, nodes, alpha=0.7):
    base = targets(rm, g, rm.leaves)
    for s in nodes:
        change = targets(rm, g, scaled(rm, g, s, alpha)) - base
        want = alpha * g.adjacency[rows(g), s]
        np.testing.assert_allclose(change, want, rtol=1e-4, atol=2e-5 * (1 + np.abs(want).max()))
        assert np.abs(want).max() > 1e-3  # the oracle is not vacuous


def test_splice_preserves_the_model(paper):
    m, p, ds, rm, _ = paper
    want = m.apply(p, TOKENS[None])
    with splice(ds):
        got = m.apply(p, TOKENS[None])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rm.forward(rm.leaves)[1], want[0], rtol=1e-5, atol=1e-5)
    # the errors are real: the dictionaries do not reconstruct the MLPs
    assert all(float(jnp.abs(e).max()) > 1e-2 for e in rm.leaves["errors"])


def test_intervention_oracle(paper):
    _, _, _, rm, g = paper
    layers = g.active_features[:, 0]
    strength = np.abs(g.adjacency).sum(0)
    nodes = [
        int(np.argmax(np.where(layers == lay, strength[: g.n_features], -1))) for lay in (0, 1)
    ]
    nodes += [g.error_slice.start, g.token_slice.start + 2]
    check_intervention(rm, g, nodes)
    # features do not feed their own layer; errors have no inputs
    A = g.adjacency
    same = layers[:, None] == layers[None, :]
    assert np.all(A[: g.n_features, : g.n_features][same] == 0)
    assert np.all(A[g.error_slice] == 0) and np.all(A[g.token_slice] == 0)


def test_edges_and_paths_decompose_the_logit(paper):
    _, _, _, rm, g = paper
    zero = Leaves(
        embed=jnp.zeros_like(rm.leaves["embed"]),
        acts=[jnp.zeros_like(a) for a in rm.leaves["acts"]],
        errors=[jnp.zeros_like(e) for e in rm.leaves["errors"]],
    )
    _, l0 = jax.jit(rm.forward)(zero)
    for j, t in enumerate(g.logit_tokens):
        # one hop: the direct effects into a logit sum to the logit minus the biases' part
        row = g.adjacency[g.logit_slice.start + j]
        np.testing.assert_allclose(row.sum(), rm.logits[t] - l0[t], rtol=1e-4, atol=1e-5)
        # all paths (signed Jacobian edges, Real): tokens + errors = logit − linear(0)
        _, lin = jax.jit(rm.linear)(rm.leaves["embed"], rm.leaves["errors"])
        _, lin0 = jax.jit(rm.linear)(zero["embed"], zero["errors"])
        np.testing.assert_allclose(lin[t], rm.logits[t], rtol=1e-5, atol=1e-5)
        sc = P.signed_contributions(g, logit=j)
        total = sc[g.error_slice].sum() + sc[g.token_slice].sum()
        np.testing.assert_allclose(total, lin[t] - lin0[t], rtol=1e-4, atol=1e-5)


def test_max_features_folds_the_rest_into_error_nodes(paper):
    m, p, ds, rm, g = paper
    small = attribution_graph(m, p, TOKENS, ds, target=[1, 2], max_features=5, replacement=rm)
    assert small.n_features == 5
    keep = [
        int(np.nonzero((g.active_features == row).all(1))[0][0]) for row in small.active_features
    ]
    assert set(np.abs(g.activation_values[keep])) >= set(np.sort(np.abs(g.activation_values))[-5:])
    # every logit row still sums to the same total
    np.testing.assert_allclose(
        small.adjacency[small.logit_slice].sum(1), g.adjacency[g.logit_slice].sum(1), rtol=1e-5
    )


def test_hf_gpt2(gpt2):
    model, ds, rm, g = gpt2
    want = model(TOKENS[None]).logits[0, -1]
    with splice(ds):
        got = model(TOKENS[None]).logits[0, -1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert g.n_logits >= 1 and g.logit_probabilities.sum() <= 1 + 1e-6
    f0 = int(np.nonzero(g.active_features[:, 0] == 0)[0][0])
    check_intervention(rm, g, [f0, g.token_slice.start + 4])
    assert rm.site_paths == ["transformer/h/0/mlp", "transformer/h/1/mlp"]


def test_select_logits():
    logits = jnp.array([0.0, 3.0, 2.9, -5.0])
    ids, probs = select_logits(logits, prob=0.6)
    assert ids.tolist() == [1, 2]
    assert select_logits(logits, 3)[0].tolist() == [3]
    with pytest.raises(ValueError, match="out of range"):
        select_logits(logits, 9)


def test_bad_sites_are_refused(paper):
    m, p, ds, _, _ = paper
    bad = Dictionary(ds[0].W_enc, ds[0].b_enc, ds[0].W_dec, ds[0].b_dec, site="layer_0/mlp")
    with pytest.raises(ValueError, match="is not '<module path>:in'"):
        ReplacementModel(m, p, TOKENS, [bad])
    nowhere = Dictionary(ds[0].W_enc, ds[0].b_enc, ds[0].W_dec, ds[0].b_dec, site="nope:out")
    with pytest.raises(ValueError, match="no module at"):
        ReplacementModel(m, p, TOKENS, [nowhere])
    with pytest.raises(ValueError, match="freeze"):
        ReplacementModel(m, p, TOKENS, ds, freeze=("mlp",))


def test_sae_splices_in_and_out(paper):
    m, p, ds, _, _ = paper
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    sae = lambda site: Dictionary(  # noqa: E731
        jax.random.normal(k1, (8, 6)),
        jnp.zeros(6),
        jax.random.normal(k2, (6, 8)),
        jnp.zeros(8),
        apply_b_dec_to_input=True,
        site=site,
    )
    want = m.apply(p, TOKENS[None])
    for site in ("layer_0/attention:out", "layer_1/attention:in"):
        with splice([sae(site)]):
            got = m.apply(p, TOKENS[None])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # a transcoder and an SAE together; the replay reproduces the model too
    rm = ReplacementModel(m, p, TOKENS, [sae("layer_0/attention:out"), ds[1]])
    assert rm.site_paths == ["layer_0/attention", "layer_1/mlp"]
    np.testing.assert_allclose(jax.jit(rm.forward)(rm.leaves)[1], want[0], rtol=1e-5, atol=1e-5)


def test_unfrozen_attention_gives_first_order_edges(paper):
    """freeze=("norm",): attention scores stay live, so edges are the Jacobian (QK terms
    included), checked against a forward-mode JVP in each source's own direction."""
    m, p, ds, _, g = paper
    rm = ReplacementModel(m, p, TOKENS, ds, freeze=("norm",))
    g2 = attribution_graph(m, p, TOKENS, ds, target=[1, 2], replacement=rm)
    assert (g2.active_features == g.active_features).all()

    def rows_of(lv):
        pres, logits = rm.forward(lv)
        f = [pres[lay][q, i] for lay, q, i in g2.active_features]
        return jnp.stack(f + [logits[int(t)] for t in g2.logit_tokens])

    for s in (
        g2.token_slice.start + 1,
        int(np.argmax(np.abs(g2.adjacency).sum(0)[: g2.n_features])),
    ):
        tangent = jax.tree.map(jnp.zeros_like, rm.leaves)
        if g2.node_kind(s) == "token":
            q = g2.node_position(s)
            tangent["embed"] = tangent["embed"].at[q].set(rm.leaves["embed"][q])
        else:
            lay, q, i = g2.active_features[s]
            tangent["acts"][lay] = tangent["acts"][lay].at[q, i].set(rm.leaves["acts"][lay][q, i])
        _, dt = jax.jit(lambda t: jax.jvp(rows_of, (rm.leaves,), (t,)))(tangent)
        np.testing.assert_allclose(g2.adjacency[rows(g2), s], dt, rtol=1e-4, atol=1e-5)
    assert not np.allclose(g2.adjacency, g.adjacency, atol=1e-4)  # the QK terms are there
