"""Component flows on a tiny random model of every Hugging Face Flax family with a preset:
Real flows ⊕ to the total; the Real total at the first branch point and the flows w.r.t. the
embeddings equal ``jax.grad`` (taken independently, through ``nn.intercept_methods``); max over
the components of max-product is the total's; per-head flows ⊕ to the unsplit component; no
path is left to ``other``; one branch-point set per layer (ALBERT: by call order)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
import family_checkpoints as fc
from jaxpr_semiring.models import components, presets, targets
from jaxpr_semiring.flax_hooks import module_path

FAMILIES = sorted(fc.FAMILIES)


def _inputs(name):
    if name == "vit":
        return (
            {"pixel_values": jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8))},
            targets.class_diff,
            (2, 0),
        )
    return {"input_ids": jnp.array([0, 9, 25, 17, 40, 33, 2])}, targets.logit_diff, (4, 11, 7)


def _grad_oracles(model, preset, inputs, target, targs, layer_call):
    """jax.grad of the target w.r.t. the embedding output and w.r.t. the hidden input of the
    ``layer_call``-th call of a layer module (a perturbation added there, found by path)."""
    layer_re = re.compile(r"(?:^|/)(?:" + preset.layers + r")$")
    emb_re = re.compile(r"(?:^|/)(?:" + preset.embeddings + r")$")
    arg = preset.points[0].branches[0].arg
    batched = {k: v[None] for k, v in inputs.items()}

    def run(d_emb, d_layer, capture=None):
        state = {"emb": 0, "layer": 0}

        def icpt(next_fun, args, kwargs, ctx):
            path = module_path(ctx.module) if ctx.method_name == "__call__" else None
            if path is not None and layer_re.search(path):
                state["layer"] += 1
                if state["layer"] == layer_call + 1:
                    args, kwargs = list(args), dict(kwargs)
                    if isinstance(arg, int):
                        args[arg] = args[arg] + d_layer
                    else:
                        kwargs[arg] = kwargs[arg] + d_layer
                    if capture is not None:
                        capture.append(args[arg] if isinstance(arg, int) else kwargs[arg])
            out = next_fun(*args, **kwargs)
            if path is not None and emb_re.search(path) and state["emb"] == 0:
                state["emb"] += 1
                if capture is not None:
                    capture.append(out)
                out = out + d_emb
            return out

        with nn.intercept_methods(icpt):
            return target(model(**batched, params=model.params), *targs)

    shapes = []
    run(0.0, 0.0, shapes)
    e0, x0 = shapes[0], shapes[1]
    g_emb = jax.grad(lambda d: run(d, 0.0))(jnp.zeros_like(e0))
    g_layer = jax.grad(lambda d: run(0.0, d))(jnp.zeros_like(x0))
    return g_emb[0], g_layer


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, fc.model(request.param)


def test_family_real_flows(family):
    name, model = family
    preset = presets.detect(model)
    inputs, target, targs = _inputs(name)
    fn = components.component_flows_fn(model, target, js.Real())
    cf = jax.jit(fn)(model.params, inputs, *targs)
    c = model.config
    n_layers = (
        c.encoder_layers + c.decoder_layers
        if c.is_encoder_decoder
        else next(
            getattr(c, a)
            for a in ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
            if isinstance(getattr(c, a, None), int)
        )
    )
    assert sorted({p.layer for p in cf.points}) == list(range(n_layers))
    g_emb, g_layer = _grad_oracles(model, preset, inputs, target, targs, 0)
    # Σ over hidden dims is ~0 when a LayerNorm follows (its Jacobian sums to 0): float32
    # cancellation error follows the gradient's own scale, not the near-zero sum
    scale = 1e-5 * float(jnp.max(jnp.abs(g_layer)))
    for pt in cf.points:
        np.testing.assert_allclose(
            np.asarray(pt.flows).sum(-1),
            pt.total,
            rtol=1e-4,
            atol=max(1e-6, scale),
            err_msg=f"{name} layer {pt.layer} {pt.point}",
        )
    np.testing.assert_allclose(cf.embeddings, g_emb, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        cf.points[0].total,
        g_layer.reshape(-1, *g_layer.shape[-2:]).sum((0, 2)),
        rtol=1e-4,
        atol=scale,
    )
    if name == "albert":  # one shared layer module: the second call is layer 1
        _, g1 = _grad_oracles(model, preset, inputs, target, targs, 1)
        np.testing.assert_allclose(
            cf.select("attention")[1].total,
            g1[0].sum(-1),
            rtol=1e-4,
            atol=1e-5 * float(jnp.max(jnp.abs(g1))),
        )


def test_family_max_product_heads(family):
    name, model = family
    inputs, target, targs = _inputs(name)
    S = js.MaxProduct()
    plain = components.component_flows_fn(model, target, S)
    split = components.component_flows_fn(model, target, S, heads=True)
    a, b = jax.jit(lambda p, i, *t: (plain(p, i, *t), split(p, i, *t)))(
        model.params, inputs, *targs
    )
    for pa, pb in zip(a.points, b.points):
        where = f"{name} layer {pa.layer} {pa.point}"
        for v in (pa, pb):  # max over the components is the total; nothing is left to "other"
            np.testing.assert_array_equal(
                np.asarray(v.flows.top_pos).max(-1), v.total.top_pos, err_msg=where
            )
            np.testing.assert_array_equal(
                np.asarray(v.flows.top_neg).min(-1), v.total.top_neg, err_msg=where
            )
            assert np.all(np.asarray(v.component("other", S).top_pos) == -np.inf), where
        np.testing.assert_array_equal(pa.total.top_pos, pb.total.top_pos, err_msg=where)
        for comp in pa.components:
            heads = [c for c in pb.components if c.split(".")[0] == comp]
            if comp in presets.ATTENTION_PROJECTIONS:
                assert len(heads) >= 1 and all(h != comp for h in heads), (where, pb.components)
            merged = jax.tree.map(
                lambda *xs: np.stack(xs, -1), *[pb.component(h, S) for h in heads]
            )
            np.testing.assert_array_equal(
                np.asarray(merged.top_pos).max(-1),
                pa.component(comp, S).top_pos,
                err_msg=f"{where} {comp}",
            )
