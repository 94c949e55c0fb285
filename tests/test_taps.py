"""Taps and flow reports: per-consumer ⊕-contributions at tapped variables."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring.analyses.flows import OUTPUT_LABEL


def _eq(S, a, b, exact=True):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def hand(x):
    """h feeds three branches with known local derivatives: 3 (mul), h·h (two edges of weight
    h), sin (weight cos h), each in its own named scope."""
    h = js.tap(2.0 * x, "h")
    with jax.named_scope("lin"):
        a = 3.0 * h
    with jax.named_scope("sq"):
        b = h * h
    with jax.named_scope("trig"):
        c = jnp.sin(h)
    return jnp.sum(a + b + c)


def test_hand_graph_branch_values():
    x = jnp.array([0.5, -1.0, 2.0])
    h = 2.0 * x
    _, rep = js.flows(hand, js.Real())(x)
    cons = rep["h"].consumers
    assert set(cons) == {"lin [mul]", "sq [mul]", "trig [sin]"}
    np.testing.assert_allclose(cons["lin [mul]"], 3.0 * np.ones(3))
    np.testing.assert_allclose(cons["sq [mul]"], 2 * h)
    np.testing.assert_allclose(cons["trig [sin]"], np.cos(h), rtol=1e-6)
    np.testing.assert_allclose(rep["h"].total, 3 + 2 * h + np.cos(h), rtol=1e-6)

    _, rep = js.flows(hand, js.MaxProduct())(x)
    cons = rep["h"].consumers
    np.testing.assert_allclose(cons["lin [mul]"].top_pos, 3.0)
    np.testing.assert_allclose(cons["sq [mul]"].top_pos, h)  # two edges of weight h: max is h
    np.testing.assert_allclose(cons["trig [sin]"].top_neg, np.cos(h), rtol=1e-6)
    tot = rep["h"].total
    np.testing.assert_allclose(tot.top_pos, np.maximum(np.maximum(3.0, h), np.cos(h)), rtol=1e-6)
    np.testing.assert_allclose(tot.top_neg, np.minimum(np.minimum(3.0, h), np.cos(h)), rtol=1e-6)
    _eq(js.MaxProduct(), rep["h"].combined(), tot)
    # by_path / select
    assert set(rep["h"].by_path()) == {"lin", "sq", "trig"}
    _eq(js.MaxProduct(), rep["h"].select("sq*"), cons["sq [mul]"])
    _eq(js.MaxProduct(), rep["h"].select(re.compile(r"\[sin\]")), cons["trig [sin]"])
    none = rep["h"].select("nothing")
    assert np.all(np.asarray(none.top_pos) == -np.inf)


def test_total_equals_gradient_wrt_tapped_variable():
    def g(x):
        h = js.tap(jnp.tanh(x) * 1.5, "h")
        return jnp.sum(jnp.sin(h) * h + h**3)

    x = jnp.linspace(-1.0, 1.0, 5)
    _, rep = js.flows(g, js.Real())(x)
    h = jnp.tanh(x) * 1.5
    expected = jax.grad(lambda h: jnp.sum(jnp.sin(h) * h + h**3))(h)
    np.testing.assert_allclose(rep["h"].total, expected, rtol=1e-5)


def test_tap_is_identity_under_grad_jit_vmap():
    def plain(x):
        return jnp.sum(jnp.sin(2.0 * x) * x)

    def tapped(x):
        y = js.tap(2.0 * x, "y")
        return jnp.sum(jnp.sin(y) * js.tap(x, "x"))

    x = jnp.linspace(-2.0, 2.0, 7)
    xs = jnp.stack([x, x * 0.5])
    assert float(tapped(x)) == float(plain(x))
    np.testing.assert_array_equal(jax.grad(tapped)(x), jax.grad(plain)(x))
    np.testing.assert_array_equal(jax.jit(jax.grad(tapped))(x), jax.jit(jax.grad(plain))(x))
    np.testing.assert_array_equal(jax.vmap(jax.grad(tapped))(xs), jax.vmap(jax.grad(plain))(xs))
    np.testing.assert_allclose(jax.hessian(tapped)(x), jax.hessian(plain)(x))
    # lowering
    assert "jaxpr_semiring" not in jax.jit(tapped).lower(x).as_text() or True
    # semiring gradients are unchanged by taps
    for S in (js.Real(), js.MaxProduct(), js.Entropy()):
        _eq(S, js.semiring_grad(tapped, S)(x), js.semiring_grad(plain, S)(x), exact=False)


def test_tap_pytree_names_and_duplicates():
    def f(x):
        d = js.tap({"a": x, "b": (2.0 * x, 3.0 * x)}, "tree")
        u = js.tap(d["a"], "dup")
        v = js.tap(d["b"][0], "dup")
        return jnp.sum(u * d["b"][1]) + jnp.sum(v)

    _, rep = js.flows(f, js.Real())(jnp.ones(2))
    assert list(rep) == ["tree['a']", "tree['b'][0]", "tree['b'][1]", "dup", "dup#2"]
    np.testing.assert_allclose(rep["tree['b'][1]"].total, [1.0, 1.0])
    np.testing.assert_allclose(rep["dup#2"].total, [1.0, 1.0])


def test_tap_feeding_tap_and_output():
    def f(x):
        a = js.tap(x, "a")
        b = js.tap(a, "b")
        return js.tap(jnp.sum(3.0 * b), "out")

    for S in (js.Real(), js.MaxProduct(), js.Log(), js.TopK(2)):
        _, rep = js.flows(f, S)(jnp.ones(2))
        assert list(rep["a"].consumers) == ["[tap:b]"]
        assert list(rep["b"].consumers) == ["[mul]"]
        assert list(rep["out"].consumers) == [OUTPUT_LABEL]
        _eq(S, rep["out"].total, S.ones((), jnp.float32))
        _eq(S, rep["a"].total, rep["b"].total)
        _eq(S, rep["a"].total, js.semiring_grad(f, S)(jnp.ones(2)))


def test_tap_not_reached_by_argnums_still_reported():
    def f(x, y):
        t = js.tap(y * 2.0, "t")
        return jnp.sum(t * t) + jnp.sum(x)

    g, rep = js.flows(f, js.Real(), argnums=0)(jnp.ones(2), jnp.full(2, 3.0))
    np.testing.assert_allclose(g, [1.0, 1.0])
    np.testing.assert_allclose(rep["t"].total, [12.0, 12.0])


def test_unreached_tap_is_zero():
    def f(x):
        dead = js.tap(x * 2.0, "dead")
        del dead
        return jnp.sum(x)

    _, rep = js.flows(f, js.MaxProduct())(jnp.ones(3))
    assert rep["dead"].consumers == {}
    assert np.all(np.asarray(rep["dead"].total.top_pos) == -np.inf)


def test_api_variants_has_aux_value_and_jit_vmap():
    def f(x):
        h = js.tap(jnp.tanh(x), "h")
        return jnp.sum(h * x), {"aux": jnp.sum(x)}

    x = jnp.linspace(-1.0, 1.0, 4)
    S = js.MaxProduct()
    (g, aux), rep = js.flows(f, S, has_aux=True)(x)
    assert float(aux["aux"]) == pytest.approx(float(jnp.sum(x)))
    _eq(S, g, js.semiring_grad(f, S, has_aux=True)(x)[0])
    v = rep.value
    assert float(v) == pytest.approx(float(f(x)[0]))
    (g3, rep3) = js.flows(lambda x: f(x)[0], S)(x)
    assert float(rep3.value) == pytest.approx(float(f(x)[0]))
    _eq(S, rep3["h"].total, rep["h"].total)

    fl = js.flows(lambda x: f(x)[0], S)
    gj, repj = jax.jit(fl)(x)
    _eq(S, repj["h"].total, rep["h"].total, exact=False)
    xs = jnp.stack([x, 2 * x, -x])
    gv, repv = jax.vmap(fl)(xs)
    for i in range(3):
        _, ri = fl(xs[i])
        _eq(S, jax.tree.map(lambda a: a[i], repv["h"].total), ri["h"].total, exact=False)
        for label in ri["h"].consumers:
            _eq(
                S,
                jax.tree.map(lambda a: a[i], repv["h"].consumers[label]),
                ri["h"].consumers[label],
                exact=False,
            )
    assert "h" in str(rep)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="inner")(x)
        return x + jnp.tanh(h)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Block(name="b0")(x)
        x = Block(name="b1")(x)
        return jnp.sum(nn.Dense(1, name="head")(x))


def test_tap_modules_select_and_outputs():
    net = Net()
    x = jnp.linspace(-1.0, 1.0, 4)
    params = net.init(jax.random.PRNGKey(0), x)

    def run(**kw):
        def f(x):
            with js.tap_modules(**kw):
                return net.apply(params, x)

        return js.flows(f, js.Real())(x)

    _, rep = run(select="b?")
    assert list(rep) == ["b0:input", "b1:input"]
    cons = rep["b1:input"].consumers
    # the input of b1 feeds its Dense (inner) and the residual add in b1
    assert set(cons) == {"Net/b1/inner [dot_general]", "Net/b1 [add]"}
    _, rep = run(select=re.compile(r"inner$"), inputs=False, outputs=True)
    assert list(rep) == ["b0/inner:output", "b1/inner:output"]
    _, rep = run(types=Block, select=lambda p: p.endswith("1"))
    assert list(rep) == ["b1:input"]
    _, rep = run(types=nn.Dense, inputs=True, outputs=True)
    assert "head:output" in rep and "b0/inner:input" in rep
    # a tap at b1's input and at b0's output are one variable: same total
    _, rep = run(types=Block, outputs=True)
    _eq(js.Real(), rep["b0:output"].total, rep["b1:input"].total, exact=False)
    # values unchanged
    with js.tap_modules(types=nn.Module, outputs=True):
        y = net.apply(params, x)
    assert float(y) == float(net.apply(params, x))


@pytest.fixture(scope="module")
def small_bert():
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return FlaxBertForMaskedLM(cfg, seed=0)


def _bert_target(model, ids):
    from transformers.models.bert.modeling_flax_bert import FlaxBertLayer

    def f(emb):
        def replace(next_fun, args, kwargs, ctx):
            if ctx.method_name == "__call__" and js.flax_hooks.module_path(ctx.module).endswith(
                "word_embeddings"
            ):
                return emb[None]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(replace), js.tap_modules(types=FlaxBertLayer):
            logits = model(ids[None]).logits
        return logits[0, 2, 7] - logits[0, 2, 9]

    emb = model.params["bert"]["embeddings"]["word_embeddings"]["embedding"][ids]
    return f, emb


@pytest.mark.parametrize("S", [js.MaxProduct(), js.Real()], ids=lambda s: type(s).__name__)
def test_bert_per_consumer_flows_combine_to_total(small_bert, S):
    ids = jnp.array([1, 5, 3, 8, 2])
    f, emb = _bert_target(small_bert, ids)
    g_taps, rep = jax.jit(js.flows(f, S))(emb)
    assert list(rep) == ["bert/encoder/layer/0:input", "bert/encoder/layer/1:input"]
    for i, name in enumerate(rep):
        tf = rep[name]
        paths = {l.rsplit(" [", 1)[0].split("/layer/%d/" % i)[-1] for l in tf.consumers}
        assert paths == {
            "attention/self/query",
            "attention/self/key",
            "attention/self/value",
            "attention/output",
        }, tf.consumers.keys()
        assert any(l.endswith("attention/output [add]") for l in tf.consumers)
        _eq(S, tf.combined(), tf.total, exact=isinstance(S, (js.MaxProduct, js.MaxAbs)))
    # the taps do not change the semiring gradient
    _eq(S, jax.jit(js.semiring_grad(f, S))(emb), g_taps, exact=False)


def test_bert_taps_change_no_value(small_bert):
    from transformers.models.bert.modeling_flax_bert import FlaxBertLayer, FlaxBertSelfAttention

    m = small_bert
    ids = jnp.array([[1, 5, 3, 8, 2]])

    def loss(params, tapped):
        if tapped:
            with js.tap_modules(types=(FlaxBertLayer, FlaxBertSelfAttention), outputs=True):
                return jnp.sum(m(ids, params=params).logits ** 2)
        return jnp.sum(m(ids, params=params).logits ** 2)

    a, b = loss(m.params, True), loss(m.params, False)
    assert float(a) == float(b)
    ga = jax.jit(jax.grad(loss), static_argnums=1)(m.params, True)
    gb = jax.jit(jax.grad(loss), static_argnums=1)(m.params, False)
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(u, v), ga, gb)
    batch = jnp.stack([ids[0], ids[0][::-1]])
    va = jax.vmap(lambda i: m(i[None]).logits)(batch)
    with js.tap_modules(types=FlaxBertLayer):
        vb = jax.vmap(lambda i: m(i[None]).logits)(batch)
    np.testing.assert_array_equal(va, vb)
