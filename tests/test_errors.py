"""Errors are part of the API: each names the problem and the fix."""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import jaxpr_semiring as js
from jaxpr_semiring import rules


def test_non_scalar_output():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Gradient only defined for scalar-output functions. Output had shape: (3,)"
        ),
    ):
        js.semiring_grad(lambda x: x * 2)(jnp.ones(3))


def test_integer_output():
    with pytest.raises(TypeError, match="requires real-valued outputs .* but got int32"):
        js.semiring_grad(lambda x: jnp.argmax(x))(jnp.ones(3))


@pytest.mark.parametrize("x,name", [(jnp.arange(3), "int32"), (jnp.ones(3, bool), "bool")])
def test_non_float_input(x, name):
    with pytest.raises(
        TypeError, match=f"requires real-valued inputs .* but got {name}.*non-differentiated argnum"
    ):
        js.semiring_grad(lambda x: jnp.sum(x))(x)


def test_complex_input():
    with pytest.raises(TypeError, match="complex64"):
        js.semiring_grad(lambda x: jnp.real(jnp.sum(x)))(jnp.ones(2, jnp.complex64))


def test_argnums_out_of_range():
    with pytest.raises(
        TypeError, match=re.escape("argnums=3 requires at least 4 positional arguments")
    ):
        js.semiring_grad(lambda x: x, argnums=3)(1.0)


def test_has_aux_needs_pair():
    with pytest.raises(TypeError, match="two-element tuple"):
        js.semiring_grad(lambda x: x * 2.0, has_aux=True)(1.0)


def test_unsupported_primitive_names_primitive_path_and_fix():
    p = jax.extend.core.Primitive("my_mystery_op")
    p.def_impl(lambda x: x * 2)
    p.def_abstract_eval(lambda x: x)

    def f(x):
        with jax.named_scope("block"):
            return jnp.sum(p.bind(x))

    with pytest.raises(NotImplementedError) as e:
        js.semiring_grad(f, js.MaxProduct())(jnp.ones(2))
    msg = str(e.value)
    assert "'my_mystery_op'" in msg and "block" in msg
    assert "jaxpr_semiring.rules.register('my_mystery_op')" in msg
    # ... and the fix works.
    rules.register(p)(rules.elementwise)
    try:
        p_jvp = jax.interpreters.ad.primitive_jvps
        p_jvp[p] = lambda primals, tangents: (p.bind(*primals), tangents[0] * 2)
        g = js.semiring_grad(f, js.MaxProduct())(jnp.ones(2))
        assert g.top_pos.tolist() == [2.0, 2.0]
    finally:
        rules.RULES.pop("my_mystery_op")


def test_while_loop_with_unknown_trip_count():
    def f(x):
        return lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] * 2.0, c[1] + 1), (x, 0))[0].sum()

    with pytest.raises(TypeError, match="while_loop.*lax.scan.*fori_loop with constant"):
        js.semiring_grad(f)(jnp.ones(2))


def test_rule_returning_wrong_shape_is_reported():
    p = jax.extend.core.Primitive("bad_rule_op")
    p.def_impl(lambda x: x)
    p.def_abstract_eval(lambda x: x)
    rules.register(p)(lambda ctx, ins, outs, cts: [ctx.semiring.sum(cts[0])])
    try:
        with pytest.raises(
            ValueError,
            match="rule for 'bad_rule_op'.*shape \\(\\) for an operand of shape \\(3,\\)",
        ):
            js.semiring_grad(lambda x: jnp.sum(p.bind(x)))(jnp.ones(3))
    finally:
        rules.RULES.pop("bad_rule_op")
