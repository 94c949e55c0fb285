"""bfloat16 models (docs/semantics.md, "Low-precision models"): the primals stay as the model
computes them (bf16), every semiring value is at least float32. A bf16 copy of a 4-layer
Transformer gives Real flows within a stated tolerance of the float32 model's ``jax.grad``
(and of ``jax.grad`` of the bf16 model itself); log-space values of a 16-layer bf16 network
are finite exactly where the float32 network's are; a contraction of bf16 operands accumulates its
semiring values in float32 (exactly the float32 arithmetic on the same numbers); float64
under ``jax_enable_x64`` stays float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr_semiring as js

from jaxpr_semiring.paper import transformer

#: relative L2 error of a bf16 model's Real flows w.r.t. the float32 model's gradient
#: (bf16 keeps 8 significant bits: its rounding of weights and activations alone is ~1e-2)
REAL_TOL = 5e-2
#: absolute error of log-space fields (Log, Entropy's log_z; nats)
LOG_TOL = 0.1


def _cast(tree, dtype):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def flows():
    """Real flows (bf16) and ``jax.grad`` w.r.t. the embeddings of a 4-layer Transformer in
    float32 and a bf16 copy of it."""
    m = transformer.TransformerClassifier(
        num_layers=4, hidden=16, heads=2, vocab_size=21, max_len=8
    )
    p32 = transformer.init_params(m)
    toks = jnp.array([1, 5, 2, 7, 3, 9, 4, 11])
    out = {}
    for name, p in (("f32", p32), ("bf16", _cast(p32, jnp.bfloat16))):
        logits = transformer.logits_from_embeddings_fn(m, p)
        f = lambda h, lg=logits: lg(h)[1] - lg(h)[0]
        h = transformer.embed_tokens(m, p, toks)
        assert h.dtype == f(h).dtype == p["params"]["classifier"]["kernel"].dtype
        if name == "f32":  # Real == jax.grad in float32 is tests/test_real_equals_grad.py's
            out[name] = (None, jax.jit(jax.grad(f))(h))
        else:
            out[name] = jax.jit(lambda h, f=f: (js.semiring_grad(f, js.Real())(h), jax.grad(f)(h)))(
                h
            )
    return out


def test_real_flows_within_tolerance_of_float32_model(flows):
    (real, grad16), (_, want) = flows["bf16"], flows["f32"]
    assert real.dtype == jnp.float32 and grad16.dtype == jnp.bfloat16
    err = _rel(real, want)
    assert err < REAL_TOL, err
    # and Real == jax.grad of the bf16 model itself, to bf16 rounding
    assert _rel(real, grad16) < REAL_TOL


def _deep(dtype):
    """16 tanh layers of width 8 in ``dtype``; inputs 0 and 1 are multiplied by 0 (no path of
    nonzero product: -inf in log space)."""
    ws = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8)) / np.sqrt(8.0)
    keep = jnp.arange(8) >= 2

    def f(x):
        h = (x * keep).astype(dtype)
        for w in ws.astype(dtype):
            h = jnp.tanh(1.5 * h @ w)
        return jnp.sum(h[:, 0])

    return f


def test_log_space_values_finite_where_float32_are():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
    S = (js.Log(), js.Entropy())
    lo, ent = jax.jit(js.semiring_grad(_deep(jnp.bfloat16), S))(x)
    lo32, ent32 = jax.jit(js.semiring_grad(_deep(jnp.float32), S))(x)
    assert lo.dtype == ent.log_z.dtype == ent.mean_log_abs.dtype == jnp.float32
    finite = np.isfinite(np.asarray(lo32))
    assert finite.any() and not finite.all()
    for a, b in ((lo, lo32), (ent.log_z, ent32.log_z), (ent.entropy, ent32.entropy)):
        np.testing.assert_array_equal(np.isfinite(np.asarray(a)), finite)
        np.testing.assert_allclose(np.asarray(a)[finite], np.asarray(b)[finite], atol=LOG_TOL)


def _contractions(x, w, c, v, dtype=jnp.bfloat16):
    """Linear in ``x``: a dot and a conv in ``dtype``, read by float32 constants."""
    y = lax.dot_general(x.astype(dtype), w, (((1,), (0,)), ((), ())))
    z = lax.conv_general_dilated(x.astype(dtype)[None, None], v, (1, 1), "SAME")
    return jnp.sum(c * y) + jnp.sum(z[0, 0] * c[:, :1])


def test_bf16_contractions_accumulate_in_float32():
    """The Real gradient of a function linear in ``x`` reads only the bf16 operands, which are
    exact in float32: it equals ``jax.grad`` of the same function on those numbers upcast (a
    bf16 accumulation would be ~1e-3 off)."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k[0], (5, 64))
    w = jax.random.normal(k[1], (64, 7)).astype(jnp.bfloat16)
    c = jax.random.normal(k[2], (5, 7))
    v = jax.random.normal(k[3], (1, 1, 3, 3)).astype(jnp.bfloat16)
    got = js.semiring_grad(_contractions, js.Real())(x, w, c, v)
    up = lambda x, w, v: _contractions(x, w, c, v, jnp.float32)
    want = jax.grad(up)(x, w.astype(jnp.float32), v.astype(jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float64_unchanged(enable_x64):
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    shapes = ((5, 6), (6, 7), (5, 7), (1, 1, 3, 3))
    x, w, c, v = [jax.random.normal(kk, s, jnp.float64) for kk, s in zip(k, shapes)]

    def f(x, w):
        z = lax.conv_general_dilated(x[None, None], v, (1, 1), "SAME")[0, 0]
        return jnp.sum(jnp.tanh(c * (x @ w))) + jnp.sum(z * z)

    got = js.semiring_grad(f, js.Real(), argnums=(0, 1))(x, w)
    for a, b in zip(got, jax.grad(f, argnums=(0, 1))(x, w)):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
