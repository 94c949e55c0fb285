"""Flax NNX models: ``nnx_module_scopes`` puts attribute paths (list indices included) into the
jaxpr's name stacks and runs the linen interceptors on NNX calls, so the ``nnx-llama`` preset
labels the components of a tiny NNX Llama-style model (grouped-query attention, RMSNorm, gated
MLP). Oracles: Real totals at every branch point and the flows w.r.t. the embeddings equal
``jax.grad`` of a hand-written forward pass through the same modules (no hooks); Real
components ⊕ to the total; max-product's max over the components is the total."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.models import components, presets  # noqa: E402

D, H, KV, HD, F, V, L = 8, 4, 2, 2, 12, 11, 2
IDS = jnp.array([1, 7, 3, 9])
TARGET = lambda logits: logits[-1, 3] - logits[-1, 4]  # noqa: E731


class Attention(nnx.Module):
    def __init__(self, rngs):
        self.q_proj = nnx.Linear(D, H * HD, use_bias=False, rngs=rngs)
        self.k_proj = nnx.Linear(D, KV * HD, use_bias=False, rngs=rngs)
        self.v_proj = nnx.Linear(D, KV * HD, use_bias=False, rngs=rngs)
        self.o_proj = nnx.Linear(H * HD, D, use_bias=False, rngs=rngs)

    def __call__(self, x):
        t = x.shape[0]
        q = self.q_proj(x).reshape(t, H, HD)
        k = jnp.repeat(self.k_proj(x).reshape(t, KV, HD), H // KV, axis=1)
        v = jnp.repeat(self.v_proj(x).reshape(t, KV, HD), H // KV, axis=1)
        s = jnp.einsum("qhd,khd->hqk", q, k) / np.sqrt(HD)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e9)
        o = jnp.einsum("hqk,khd->qhd", jax.nn.softmax(s, axis=-1), v)
        return self.o_proj(o.reshape(t, H * HD))


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.gate_proj = nnx.Linear(D, F, use_bias=False, rngs=rngs)
        self.up_proj = nnx.Linear(D, F, use_bias=False, rngs=rngs)
        self.down_proj = nnx.Linear(F, D, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nnx.Module):
    def __init__(self, rngs):
        self.input_layernorm = nnx.RMSNorm(D, rngs=rngs)
        self.attn = Attention(rngs)
        self.post_attention_layernorm = nnx.RMSNorm(D, rngs=rngs)
        self.mlp = MLP(rngs)

    def __call__(self, x):
        x = x + self.attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nnx.Module):
    def __init__(self, rngs):
        self.embedder = nnx.Embed(V, D, rngs=rngs)
        self.layers = nnx.List([Layer(rngs) for _ in range(L)])
        self.final_norm = nnx.RMSNorm(D, rngs=rngs)
        self.lm_head = nnx.Linear(D, V, use_bias=False, rngs=rngs)

    def __call__(self, ids):
        x = self.embedder(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.final_norm(x))


@pytest.fixture(scope="module")
def model():
    m = Llama(nnx.Rngs(0))
    # RMSNorm scales of 1 make every layer alike: random ones make a wrong label visible
    for i, layer in enumerate(m.layers):
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.scale[...] = 1 + 0.5 * jax.random.normal(jax.random.PRNGKey(i), (D,))
    return m


def _stacks(fun, *args, prim="dot_general"):
    eqns = jax.make_jaxpr(fun)(*args).eqns
    return [str(e.source_info.name_stack) for e in eqns if e.primitive.name == prim]


def test_scopes_name_every_submodule_call(model):
    app = js.NnxApply(model)
    stacks = _stacks(lambda p: app.apply(p, IDS), app.params)
    want = [
        f"layers/{i}/{m}"
        for i in range(L)
        for m in ("attn/q_proj", "attn/k_proj", "attn/v_proj")
        + ("attn/qhd,khd->hqk", "attn/hqk,khd->qhd", "attn/o_proj")  # jnp.einsum's own scope
        + ("mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
    ] + ["lm_head"]
    assert stacks == want
    adds = _stacks(lambda p: app.apply(p, IDS), app.params, prim="add")
    assert [s for s in adds if s.startswith("layers/1")].count("layers/1") == 2  # residuals
    # NNX alone names nothing: k and v projections cannot be told apart
    assert set(_stacks(model, IDS)) <= {"", "qhd,khd->hqk", "hqk,khd->qhd"}
    assert not hasattr(vars(nnx.Linear)["__call__"], "__wrapped_by_nnx_scopes__")  # restored


def test_nested_contexts_and_super_calls(model):
    class Scaled(nnx.Linear):
        def __call__(self, x):
            return 2.0 * super().__call__(x)

    class Net(nnx.Module):
        def __init__(self):
            self.blocks = nnx.List([Scaled(2, 2, rngs=nnx.Rngs(0)) for _ in range(2)])
            self.out = nnx.Linear(2, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return jnp.sum(self.out(self.blocks[1](self.blocks[0](x))))

    net = Net()

    def f(x):
        with js.nnx_module_scopes(net), js.nnx_module_scopes(net):
            return net(x)

    # Scaled.__call__ and its super().__call__ (nnx.Linear's, hooked for `out`) are one call
    assert _stacks(f, jnp.ones(2)) == ["blocks/0", "blocks/1", "out"]
    assert _stacks(f, jnp.ones(2), prim="mul") == ["blocks/0", "blocks/1"]
    for cls in (Scaled, nnx.Linear):
        assert not hasattr(vars(cls)["__call__"], "__wrapped_by_nnx_scopes__")


def test_linen_interceptors_see_nnx_paths(model):
    """tap_modules (a linen interceptor) selects NNX calls by attribute path and by type."""
    app = js.NnxApply(model)

    def names(**kw):
        def f(p):
            with js.tap_modules(**kw):
                return app.apply(p, IDS)

        eqns = jax.make_jaxpr(f)(app.params).eqns
        return [str(e.params["name"]).split(":", 1)[1] for e in eqns if e.primitive.name == "name"]

    assert names(select="layers/*/mlp") == ["layers/0/mlp:input", "layers/1/mlp:input"]
    assert names(select="layers/1/*", types=nnx.RMSNorm) == [
        "layers/1/input_layernorm:input",
        "layers/1/post_attention_layernorm:input",
    ]


def _hand_forward(model, e, deltas):
    """The target from embedding output ``e`` through the same modules, called directly (no
    hooks), with ``deltas[2 i]`` added at layer i's attention branch point and
    ``deltas[2 i + 1]`` at its MLP branch point."""
    x = e
    for i, layer in enumerate(model.layers):
        x = x + deltas[2 * i]
        x = x + layer.attn(layer.input_layernorm(x))
        x = x + deltas[2 * i + 1]
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return TARGET(model.lm_head(model.final_norm(x)))


@pytest.fixture(scope="module")
def flows(model):
    app = js.NnxApply(model)
    real = components.component_flows_fn(app, TARGET, js.Real(), preset="nnx-llama")
    mp = components.component_flows_fn(
        app, TARGET, js.MaxProduct(), preset="nnx-llama", heads=True, head_dim=HD
    )
    batch = jnp.stack([IDS, IDS[::-1]])
    return jax.jit(jax.vmap(lambda ids: (real(app.params, ids), mp(app.params, ids))))(batch)


def test_real_component_flows_equal_jax_grad(model, flows):
    cf = flows[0]
    assert [(p.layer, p.point) for p in cf.points] == [
        (i, k) for i in range(L) for k in ("attention", "mlp")
    ]
    assert cf.points[0].components == ("skip", "query", "key", "value", "other")
    assert cf.points[1].components == ("skip", "mlp", "other")
    grad = jax.jit(jax.grad(lambda e, d: _hand_forward(model, e, d), argnums=(0, 1)))
    for b, ids in enumerate((IDS, IDS[::-1])):
        e = model.embedder(ids)
        g_emb, g_pts = grad(e, [jnp.zeros_like(e)] * (2 * L))
        np.testing.assert_allclose(cf.embeddings[b], g_emb, rtol=1e-5, atol=1e-7)
        for pt, g in zip(cf.points, g_pts):
            where = f"example {b} layer {pt.layer} {pt.point}"
            np.testing.assert_allclose(pt.total[b], g.sum(-1), rtol=1e-5, atol=1e-6, err_msg=where)
            np.testing.assert_allclose(
                np.asarray(pt.flows[b]).sum(-1), pt.total[b], rtol=1e-5, atol=1e-6, err_msg=where
            )
            other = np.asarray(pt.component("other", js.Real())[b])
            assert np.all(other == 0), where
            assert np.all(np.abs(np.asarray(pt.flows[b])[:, :-1]).max(0) > 0), where


def test_max_product_heads(flows):
    cf, S = flows[1], js.MaxProduct()
    att = cf.points[0].components
    assert att == ("skip",) + tuple(f"query.{h}" for h in range(H)) + (
        "key.0",
        "key.1",
        "value.0",
        "value.1",
        "other",
    )  # grouped-query attention: as many key/value heads as the model has
    for pt in cf.points:
        np.testing.assert_array_equal(np.asarray(pt.flows.top_pos).max(-1), pt.total.top_pos)
        np.testing.assert_array_equal(np.asarray(pt.flows.top_neg).min(-1), pt.total.top_neg)
        assert np.all(np.asarray(pt.component("other", S).top_pos) == -np.inf)


def test_preset_is_listed():
    p = presets.PRESETS["nnx-llama"]
    assert p.layers == r"layers/\d+" and p.embeddings == "embedder"
