"""Component flows (jaxpr_semiring.models.components) and the tagged semiring, against two
independent oracles: ``jax.grad`` and brute-force path enumeration of a *cut* model, in which
every first use of the branch point but one component's is ``stop_gradient``-ed; the paths
left are exactly those whose first step is that component."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js
from brute_force import fold, path_products
from jaxpr_semiring.api import backprop
from jaxpr_semiring.models import components, presets, targets
from jaxpr_semiring.models.presets import Branch, Component, Point, Preset
from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params
from jaxpr_semiring.analyses.tagged import ZERO, Tagged
from oracle import assert_matches

ALL = [js.Real(), js.MaxProduct(), js.MaxAbs(), js.Log(), js.Entropy(), js.Counting(), js.TopK(2)]


# ------------------------------------------------------------------------- the tagged semiring


def _mixed(x, W):
    h = jnp.tanh(x @ W)
    g = jnp.take(h, jnp.array([0, 2, 2]), axis=0)
    return (
        jnp.sum(jax.nn.softmax(g, -1) * g)
        + jnp.max(h)
        + jnp.cumsum(h, 0)[1, 0]
        + jnp.pad(h, 1)[2, 3]
    )


@pytest.mark.parametrize("S", ALL, ids=repr)
def test_tagged_pass_merges_to_the_plain_pass(S):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    W = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    T = Tagged(S)
    want = backprop(_mixed, S, argnums=(0, 1))(x, W).grads
    got = jax.jit(
        lambda x, W: jax.tree.map(
            T.merge,
            backprop(_mixed, T, argnums=(0, 1))(x, W).grads,
            is_leaf=lambda v: hasattr(v, "channels"),
        )
    )(x, W)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_tagged_channel_operations():
    T = Tagged(js.MaxProduct())
    v = T.split(js.MaxProduct().ones((2, 4), jnp.float32), np.array([3, 3, 5, 5]))
    assert v.channels == (3, 5)
    assert np.asarray(T.channel(v, 5).top_pos).tolist() == [[-np.inf, -np.inf, 1, 1]] * 2
    assert np.all(np.asarray(T.channel(v, 7).top_pos) == -np.inf)  # absent: 0̄
    w = T.add(v, T.zeros((2, 4), jnp.float32))  # 0̄ adds nothing
    assert w.channels == (3, 5)
    z = T.add(T.zeros((2, 4), jnp.float32), T.zeros((2, 4), jnp.float32))
    assert z.channels == (ZERO,)
    moved = T.tag(T.merge(v), 9)
    assert moved.channels == (9,) and np.all(np.asarray(T.merge(moved).top_pos) == 1)
    s = T.sum(T.scale(jnp.full((2, 4), -2.0), v), axes=1)
    np.testing.assert_array_equal(np.asarray(T.channel(s, 3).top_neg), [-2.0, -2.0])
    # a known 0̄ contracts to 0̄ without computing
    d = T.dot_general(T.zeros((2, 4), jnp.float32), jnp.ones((4, 6)), (((1,), (0,)), ((), ())))
    assert d.channels == (ZERO,) and d.values[0].top_pos.shape == (2, 6)


# ------------------------------------------------------- a model with an independent oracle


class Tanh(nn.Module):
    def __call__(self, x):
        return jnp.tanh(x)


class CutBlock(nn.Module):
    """A pre-LN block with a fused q/k/v projection. ``cut``: components whose first use of the
    branch point is stop_gradient-ed ("skip", "query", "key", "value", "query.0", …, "mlp",
    "mlp_skip"); with ``cut=()`` it is the plain block. ``norm=False``: tanh instead of the
    LayerNorms (still a shared first step before the projections; far fewer paths)."""

    d: int
    heads: int = 1
    cut: tuple = ()
    norm: bool = True

    def setup(self):
        norm = nn.LayerNorm if self.norm else Tanh
        self.ln1, self.ln2 = norm(name="ln1"), norm(name="ln2")
        self.qkv = nn.Dense(3 * self.d, name="qkv")
        self.out = nn.Dense(self.d, name="out")
        self.fc, self.fc2 = nn.Dense(2 * self.d, name="fc"), nn.Dense(self.d, name="fc2")

    def _live(self, y, name):
        return lax.stop_gradient(y) if name in self.cut else y

    def attend(self, x):
        q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
        hd = self.d // self.heads
        parts = []
        for name, t in (("query", q), ("key", k), ("value", v)):
            t = self._live(t, name)
            parts.append(
                jnp.concatenate(
                    [
                        self._live(t[:, i * hd : (i + 1) * hd], f"{name}.{i}")
                        for i in range(self.heads)
                    ],
                    axis=-1,
                )
            )
        q, k, v = parts
        a = jax.nn.softmax(q @ k.T / np.sqrt(self.d), axis=-1) @ v
        return self._live(x, "skip") + self.out(a)

    def mlp(self, x2):
        m = self.fc2(jnp.tanh(self.fc(self._live(self.ln2(x2), "mlp"))))
        return self._live(x2, "mlp_skip") + m

    def __call__(self, x):
        return self.mlp(self.attend(x))


class CutModel(nn.Module):
    d: int
    heads: int = 1
    n_blocks: int = 2
    cut_at: int = -1
    cut: tuple = ()
    norm: bool = True

    def setup(self):
        self.embed = nn.Embed(7, self.d, name="embed")
        self.blocks = [
            CutBlock(
                self.d,
                self.heads,
                self.cut if i == self.cut_at else (),
                self.norm,
                name=f"block_{i}",
            )
            for i in range(self.n_blocks)
        ]

    def __call__(self, tokens):
        return self.from_block(self.embed(tokens), 0)

    def from_block(self, x, start):
        for b in self.blocks[start:]:
            x = b(x)
        return x

    def from_mid(self, x2, i):  # block i's MLP half, then the rest
        return self.from_block(self.blocks[i].mlp(x2), i + 1)


TINY = Preset(
    "tiny",
    r"block_\d+",
    r"embed",
    (
        Point(
            "attention",
            (Branch(),),
            (Component("skip", "", "add"), Component("qkv", "qkv", fused="qkv")),
        ),
        Point("mlp", (Branch("ln2"),), (Component("skip", "", "add"), Component("mlp", "fc"))),
    ),
)
CUTS = {
    "attention": {"skip": ["skip"], "query": ["query"], "key": ["key"], "value": ["value"]},
    "mlp": {"skip": ["mlp_skip"], "mlp": ["mlp"]},
}


def _setup(d, heads, n_blocks, T=3, norm=True):
    tokens = jnp.arange(T) % 7
    model = CutModel(d, heads, n_blocks, norm=norm)
    params = model.init(jax.random.PRNGKey(0), tokens)
    w = jax.random.normal(jax.random.PRNGKey(1), (d,))
    return model, params, tokens, w


def _oracle_fn(d, heads, n_blocks, params, w, block, point, keep, all_names, norm=True):
    """The cut model as a function of block ``block``'s branch variable at ``point``, with
    every component in ``all_names`` but ``keep`` cut."""
    cut = tuple(n for name in all_names if name != keep for n in CUTS[point].get(name, [name]))
    m = CutModel(d, heads, n_blocks, cut_at=block, cut=cut, norm=norm)
    if point == "attention":
        return lambda x: jnp.dot(
            jnp.sum(m.apply(params, x, block, method=CutModel.from_block), 0), w
        )
    return lambda x2: jnp.dot(jnp.sum(m.apply(params, x2, block, method=CutModel.from_mid), 0), w)


def _branch_values(model, params, tokens, block):
    """(x, x2): block ``block``'s input and its mid-block residual, computed directly."""
    x = model.apply(params, tokens, method=lambda m, t: m.embed(t))
    for b in range(block):
        x = model.apply(params, x, b, method=lambda m, x, b: m.blocks[b](x))
    x2 = model.apply(params, x, block, method=lambda m, x, b: m.blocks[b].attend(x))
    return x, x2


def _check_against_cut_models(S, flows_of_cut, d, nh, n_blocks, norm, heads=False):
    """Every component's flows at every branch point == ``flows_of_cut(f, at)`` (⊕ over
    hidden dims) of the model cut down to that component."""
    model, params, tokens, w = _setup(d, nh, n_blocks, norm=norm)
    target = lambda out: jnp.dot(jnp.sum(out, 0), w)
    cf = components.component_flows(
        model, params, tokens, target, semiring=S, preset=TINY, heads=heads, head_dim=d // nh
    )
    assert [(p.layer, p.point) for p in cf.points] == [
        (0, "attention"),
        (0, "mlp"),
        (1, "attention"),
        (1, "mlp"),
    ]
    for pt in cf.points:
        x, x2 = _branch_values(model, params, tokens, pt.layer)
        at = x if pt.point == "attention" else x2
        names = [c for c in pt.components if c != "other"]
        for name in names + [None]:
            f = _oracle_fn(
                d, nh, n_blocks, params, w, pt.layer, pt.point, name, names if name else [], norm
            )
            got = pt.component(name, S) if name else pt.total
            assert_matches(
                S,
                got,
                flows_of_cut(f, at),
                rtol=1e-4,
                atol=1e-6,
                where=f"layer {pt.layer} {pt.point} {name}",
            )
        assert np.all(
            np.asarray(jax.tree.leaves(pt.component("other", S))[0])
            == np.asarray(jax.tree.leaves(S.zeros((), jnp.float32))[0])
        )  # nothing else
    return cf


@pytest.mark.parametrize("heads", [False, True])
def test_real_component_flows_equal_jax_grad_of_the_cut_model(heads):
    # tanh instead of LayerNorm: a LayerNorm's Jacobian sums to 0 over the hidden dims, so Real
    # flows through it aggregate to exactly 0 and could not tell the components apart
    d, nh = 4, 2
    cf = _check_against_cut_models(
        js.Real(),
        lambda f, at: {"value": jax.grad(f)(at).sum(-1)},
        d,
        nh,
        2,
        norm=False,
        heads=heads,
    )
    assert np.abs(np.asarray(cf.points[2].flows)[:, 1:-1]).min() > 1e-6  # q/k/v do carry flow
    if heads:
        assert cf.points[0].components == (
            "skip",
            "query.0",
            "query.1",
            "key.0",
            "key.1",
            "value.0",
            "value.1",
            "other",
        )


# MaxProduct's case (50 s) leaves the default run: the cut through the LayerNorms is semiring-
# independent (Log's case checks it) and MaxProduct's component flows are checked against
# brute-force enumeration below.
@pytest.mark.parametrize(
    "S", [pytest.param(js.MaxProduct(), marks=pytest.mark.slow), js.Log()], ids=repr
)
def test_flows_through_layernorms_equal_the_cut_models(S):
    # the oracle here is the plain (untagged) semiring pass on each cut model
    def plain(f, at):
        from oracle import fields

        return fields(S, S.sum(js.semiring_grad(f, S)(at), axes=-1))

    _check_against_cut_models(S, plain, 4, 2, 2, norm=True)


def test_component_flows_equal_brute_force_path_enumeration():
    d, n_blocks = 2, 1
    model, params, tokens, w = _setup(d, 1, n_blocks, T=2, norm=False)
    target = lambda out: jnp.dot(jnp.sum(out, 0), w)
    x, x2 = _branch_values(model, params, tokens, 0)
    products = {}  # (point, component) -> per token, every path from the token's hidden dims
    for pt in TINY.points:
        names = [
            n for c in pt.components for n in (("query", "key", "value") if c.fused else (c.name,))
        ]
        for name in names + [None]:
            f = _oracle_fn(
                d, 1, n_blocks, params, w, 0, pt.name, name, names if name else [], norm=False
            )
            prods = path_products(f, x if pt.name == "attention" else x2)
            products[pt.name, name] = [
                [p for h in range(d) for p in prods[t, h]] for t in range(len(tokens))
            ]
    for S in [js.MaxProduct(), js.Log(), js.Entropy(), js.Counting(), js.TopK(2)]:
        cf = components.component_flows(model, params, tokens, target, semiring=S, preset=TINY)
        for pt in cf.points:
            for (point, name), per_token in products.items():
                if point != pt.point:
                    continue
                got = pt.component(name, S) if name else pt.total
                for t, ps in enumerate(per_token):  # ⊕ over a token's hidden dims (Eq. 3)
                    assert_matches(
                        S,
                        jax.tree.map(lambda a: np.asarray(a)[t], got),
                        fold(S, ps),
                        where=f"{pt.point} {name} token {t}",
                    )


# ---------------------------------------------------------------- this repo's Transformer


def test_transformer_classifier_preset_jit_vmap():
    m = TransformerClassifier(num_layers=2, hidden=8, heads=2, max_len=5)
    p = init_params(m)
    toks = jnp.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    target = lambda lg: lg[1] - lg[0]
    fn = components.component_flows_fn(m, target, js.Real())
    batched = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(p, toks)
    for i in range(2):
        one = jax.jit(fn)(p, toks[i])
        for a, b in zip(
            jax.tree.leaves(one), jax.tree.leaves(jax.tree.map(lambda a: a[i], batched))
        ):
            # entries near 0 are cancellations of O(0.1) terms: float32 rounding differs
            # between the batched and the single program by ~1e-7 (jax 0.12's XLA)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # the first branch point (layer_0's input = the embeddings) is jax.grad's
        h0 = m.apply(p, toks[i], method=TransformerClassifier.embed)
        g = jax.grad(
            lambda h: target(m.apply(p, h, method=TransformerClassifier.encode_from_embeddings))
        )(h0)
        np.testing.assert_allclose(np.asarray(one.points[0].total), g.sum(-1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(one.embeddings), g, rtol=1e-4, atol=1e-6)
        for pt in one.points:
            np.testing.assert_allclose(np.asarray(pt.flows).sum(-1), pt.total, rtol=1e-4, atol=1e-6)
    assert batched.points[0].flows.shape == (2, 5, 5)


def test_points_subset_keeps_layer_numbers():
    m = TransformerClassifier(num_layers=2, hidden=8, heads=2, max_len=4)
    p = init_params(m)
    target = lambda lg: lg[1] - lg[0]
    both = components.component_flows(m, p, jnp.arange(4), target)
    mlp = components.component_flows(m, p, jnp.arange(4), target, points=("mlp",))
    assert [(q.layer, q.point) for q in mlp.points] == [(0, "mlp"), (1, "mlp")]
    for a, b in zip(both.select("mlp"), mlp.points):  # the other points' labels change nothing
        np.testing.assert_array_equal(a.flows.top_pos, b.flows.top_pos)


def test_errors_name_the_problem_and_the_fix():
    m = TransformerClassifier(num_layers=1, hidden=8, heads=2, max_len=4)
    p = init_params(m)
    with pytest.raises(ValueError, match="need a target"):
        components.component_flows_fn(m)
    with pytest.raises(ValueError, match="names no branch point"):
        components.component_flows_fn(m, lambda lg: lg[0], points=("cross",))

    class Other(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(
        presets.UnsupportedModelError, match="Supported model types: .*bert.*gpt2.*Preset"
    ):
        components.component_flows_fn(Other(), lambda o: o[0])
    bad = TINY._replace(layers=r"nonexistent_\d+", embeddings=r"token_embed")
    with pytest.raises(ValueError, match="no branch point found"):
        components.component_flows(m, p, jnp.arange(4), lambda lg: lg[0], preset=bad)
    bad = presets.PRESETS["transformer"]._replace(embeddings="nope")
    with pytest.raises(ValueError, match="no call of an embedding module"):
        components.component_flows(m, p, jnp.arange(4), lambda lg: lg[0], preset=bad)


def test_targets():
    from types import SimpleNamespace

    out = SimpleNamespace(
        logits=jnp.arange(6.0).reshape(1, 6), last_hidden_state=jnp.ones((1, 3, 2))
    )
    assert float(targets.class_diff(out, 5, 1)) == 4.0
    assert float(targets.similarity(out, jnp.array([2.0, 2.0]))) == pytest.approx(1.0)
    assert targets.top2(jnp.array([0.1, 3.0, 2.0])) == (1, 2)
