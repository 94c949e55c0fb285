"""The API's call forms: decorator factories, the Observer protocol, jittable/vmappable top
paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring.api import backprop
from jaxpr_semiring.interpreter import Observer


def f(x):
    return jnp.sum(jnp.tanh(x) * jnp.array([3.0, -2.0]))


X = jnp.array([0.1, -0.4])


def _eq(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), a, b)


def test_decorator_forms_equal_the_call_form():
    S = js.MaxProduct()
    expected = js.semiring_grad(f, S)(X)

    @js.semiring_grad(semiring=S)
    def g1(x):
        return f(x)

    @js.semiring_grad(S)  # a semiring in fun's place
    def g2(x):
        return f(x)

    @js.semiring_grad  # bare: Real, like jax.grad
    def g3(x):
        return f(x)

    @js.value_and_semiring_grad(semiring=S, argnums=0)
    def g4(x):
        return f(x)

    _eq(g1(X), expected)
    _eq(g2(X), expected)
    _eq(g3(X), jax.grad(f)(X))
    v, g = g4(X)
    assert float(v) == pytest.approx(float(f(X)))
    _eq(g, expected)
    assert g1.__name__ == "g1"  # functools.wraps, as jax.grad


def test_decorator_with_has_aux_and_argnums():
    @js.semiring_grad(semiring=js.Log(), argnums=(0, 1), has_aux=True)
    def h(x, y):
        return jnp.sum(x * y), {"n": 2}

    (gx, gy), aux = h(X, 2.0 * X)
    assert aux == {"n": 2}
    np.testing.assert_allclose(gx, jnp.log(jnp.abs(2.0 * X)), rtol=1e-6)


class Recorder(Observer):
    """Counts the protocol's calls and makes one extra variable a source."""

    def __init__(self):
        self.started = 0
        self.contributions = []
        self.finals = []

    def start(self, graph, env):
        self.started += 1
        return ()

    def contribution(self, ref, value, consumer):
        self.contributions.append(None if consumer is None else consumer.primitive.name)

    def cotangent(self, ref, value, producer):
        self.finals.append(producer.primitive.name)
        return value


def test_observer_protocol_sees_the_one_walk():
    obs = Recorder()
    b = backprop(lambda x: jnp.sum(jnp.sin(x) * x), js.Real(), observer=obs)(X)
    assert obs.started == 1
    assert obs.contributions[0] is None  # the output seed comes first
    assert set(obs.finals) == {"reduce_sum", "mul", "sin"}
    assert "mul" in obs.contributions and "sin" in obs.contributions
    _eq(b.grads, jax.grad(lambda x: jnp.sum(jnp.sin(x) * x))(X))


def test_observer_cotangent_replaces_what_the_rule_sees():
    class Doubler(Observer):
        def cotangent(self, ref, value, producer):
            return 2.0 * value if producer.primitive.name == "sin" else value

    b = backprop(lambda x: jnp.sum(jnp.sin(x)), js.Real(), observer=Doubler())(X)
    _eq(b.grads, 2.0 * jnp.cos(X))


def mlp(x):
    W = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]])
    h = jnp.tanh(x @ W)
    return jnp.sum(h * jnp.array([1.0, -0.5, 2.0]))


def test_top_path_jit_and_vmap_equal_eager():
    xs = jnp.array([[0.2, -0.1], [1.0, 0.5], [-0.3, 0.8]])
    batched = jax.jit(jax.vmap(js.top_path(mlp)))(xs)
    for i in range(3):
        eager = js.top_path(mlp)(xs[i])
        one = jax.tree.map(lambda a: a[i], batched)
        assert [(s.primitive, s.index, s.chain) for s in one.steps] == [
            (s.primitive, s.index, s.chain) for s in eager.steps
        ]
        assert one.product == pytest.approx(eager.product, rel=1e-6)
        g = js.semiring_grad(mlp, js.MaxProduct())(xs[i])
        assert one.value == pytest.approx(float(jnp.max(g.top_pos)), rel=1e-6)


def test_path_read_inside_jit_says_how():
    with pytest.raises(TypeError, match="concrete values"):
        jax.jit(lambda x: len(js.top_path(mlp)(x)))(X)


def test_scan_is_one_step_of_a_path():
    def f(x):
        def body(c, w):
            return jnp.tanh(c * w), None

        c, _ = jax.lax.scan(body, x, jnp.array([2.0, -1.5, 0.7]))
        return jnp.sum(c * 3.0)

    x = jnp.array([0.3, -0.2])
    p = js.top_path(f, at=0)(x)
    assert [s.primitive for s in p.steps] == ["scan", "mul", "reduce_sum"]
    g = js.semiring_grad(f, js.MaxProduct())(x)
    assert p.product == pytest.approx(float(g.top_pos[0]), rel=1e-5)
