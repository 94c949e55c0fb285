"""Same function, same numbers on every supported JAX release.

JAX changes how library functions are written (jax 0.12's ``jax.nn.softmax`` is a ``custom_jvp``
whose body no longer wraps the stability maximum in ``stop_gradient``), which would change the
graph and so Counting, MaxProduct and Entropy. docs/semantics.md ("Library functions") fixes one
graph per function; this test pins its numbers: a table computed once (``python
tests/test_version_invariance.py --write`` on the oldest supported JAX) that every end of CI must
reproduce. Inputs and weights come from numpy, never from a JAX PRNG or a Flax initializer.
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js

TABLE = os.path.join(os.path.dirname(__file__), "data", "version_table.json")
SEMIRINGS = {
    "Counting": js.Counting(),
    "MaxProduct": js.MaxProduct(),
    "Entropy": js.Entropy(),
    "Real": js.Real(),
}
rng = np.random.default_rng(2026)
X = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
W = jnp.asarray(np.cos(np.arange(24) * 0.7 + 0.3).reshape(3, 8), jnp.float32)


def readout(y):
    return jnp.sum(y * W)


def _bert_layer():
    import flax
    from transformers import BertConfig
    from transformers.models.bert.modeling_flax_bert import FlaxBertLayer

    cfg = BertConfig(
        hidden_size=8,
        num_attention_heads=2,
        intermediate_size=16,
        hidden_act="gelu",
        attention_probs_dropout_prob=0.0,
        hidden_dropout_prob=0.0,
    )
    layer = FlaxBertLayer(cfg)
    mask = jnp.ones((1, 3))
    shapes = jax.eval_shape(lambda: layer.init(jax.random.PRNGKey(0), X[None], mask, None))
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
    prng = np.random.default_rng(7)
    params = flax.traverse_util.unflatten_dict(
        {
            k: jnp.asarray(prng.normal(scale=0.5, size=v.shape), jnp.float32)
            for k, v in sorted(flat.items())
        }
    )
    return lambda x: readout(layer.apply(params, x[None], mask, None, deterministic=True)[0][0])


def _layer_norm():
    import flax.linen as nn

    prng = np.random.default_rng(5)
    scale = jnp.asarray(prng.uniform(0.5, 1.5, size=8), jnp.float32)
    bias = jnp.asarray(prng.normal(size=8), jnp.float32)
    ln = nn.LayerNorm()
    return lambda x: readout(ln.apply({"params": {"scale": scale, "bias": bias}}, x))


FUNCTIONS = {
    "softmax": lambda x: readout(jax.nn.softmax(x)),
    "softmax_axis0": lambda x: readout(jax.nn.softmax(x, axis=0)),
    "log_softmax": lambda x: readout(jax.nn.log_softmax(x)),
    "logsumexp": lambda x: jnp.sum(jax.nn.logsumexp(x, axis=-1) * W[:, 0]),
    "gelu_tanh": lambda x: readout(jax.nn.gelu(x)),
    "gelu_erf": lambda x: readout(jax.nn.gelu(x, approximate=False)),
    # jax 0.12: a custom_jvp computed by bit manipulation (one elementwise node)
    "gamma": lambda x: readout(jax.scipy.special.gamma(1.0 + 0.5 * x * x)),
    "dot_product_attention": lambda x: readout(
        jax.nn.dot_product_attention(
            x.reshape(1, 3, 2, 4), x.reshape(1, 3, 2, 4) * 0.5, x.reshape(1, 3, 2, 4)
        ).reshape(3, 8)
    ),
}


@functools.lru_cache(maxsize=None)
def functions():
    fs = dict(FUNCTIONS)
    fs["layer_norm"] = _layer_norm()
    fs["bert_layer"] = _bert_layer()
    return fs


def compute(fn, S):
    return {
        k: np.asarray(v, np.float64).ravel().tolist()
        for k, v in zip(
            getattr(S.zeros((), jnp.float32), "_fields", ("value",)),
            jax.tree.leaves(js.semiring_grad(fn, S)(X)),
        )
    }


@pytest.fixture(scope="module")
def table():
    with open(TABLE) as f:
        return json.load(f)


@pytest.mark.parametrize("semiring", sorted(SEMIRINGS))
@pytest.mark.parametrize("name", sorted(list(FUNCTIONS) + ["layer_norm", "bert_layer"]))
def test_same_numbers_as_the_table(table, name, semiring):
    fn = functions()[name]
    got = compute(fn, SEMIRINGS[semiring])
    want = table[name][semiring]
    assert sorted(got) == sorted(want)
    for field in want:
        # Counting is exact (log of an integer); float32 rounding may differ in the last bits
        # between XLA releases, a different graph differs in the first digit.
        np.testing.assert_allclose(
            got[field],
            want[field],
            rtol=2e-5,
            atol=1e-6,
            err_msg=f"{name} {semiring}.{field} (jax {jax.__version__})",
        )


def test_counting_is_the_documented_graph():
    """softmax over n inputs: x_j → y_i has 1 path (through the normaliser) for j ≠ i and 2
    for j = i (exp directly, and through the sum); no path through the stability maximum."""
    f = lambda x: jax.nn.softmax(x)[0]
    count = np.exp(np.asarray(js.semiring_grad(f, js.Counting())(jnp.array([0.3, -1.0, 2.0]))))
    np.testing.assert_allclose(count, [2, 1, 1], rtol=1e-6)
    g = lambda x: jax.nn.logsumexp(x)
    count = np.exp(np.asarray(js.semiring_grad(g, js.Counting())(jnp.array([0.3, -1.0, 2.0]))))
    np.testing.assert_allclose(count, [1, 1, 1], rtol=1e-6)


if __name__ == "__main__" and "--write" in sys.argv:
    out = {
        name: {s: compute(fn, S) for s, S in SEMIRINGS.items()} for name, fn in functions().items()
    }
    out["_meta"] = {
        "jax": jax.__version__,
        "written_by": "tests/test_version_invariance.py --write",
    }
    os.makedirs(os.path.dirname(TABLE), exist_ok=True)
    with open(TABLE, "w") as f:
        json.dump(out, f, indent=0)
    print("wrote", TABLE)
