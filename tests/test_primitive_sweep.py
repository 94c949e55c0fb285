"""Every differentiable primitive of the installed JAX has a semiring rule, is inlined as a call,
or is listed below as unsupported with its reason. A JAX release that adds a differentiable
primitive fails here (the list comes from ``jax.lax`` and ``jax.extend.core.primitives``, not by
hand), before a user meets "no rule" on a model. New primitives that exist only on newer JAX are
checked against ``jax.grad`` (oracle A) and brute force (oracle B) where the installed JAX has
them."""

import inspect

import jax
import jax.extend.core.primitives as jprims
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad

import jaxpr_semiring as js
from jaxpr_semiring import _compat
from jaxpr_semiring.rules import RULES
from oracle import check_all_semirings

# Differentiable in JAX, deliberately without a rule here (docs/coverage.md says the same).
UNSUPPORTED = {
    # linear algebra decompositions: primitives with dense, solver-defined Jacobians
    **dict.fromkeys(
        [
            "cholesky",
            "eig",
            "eigh",
            "lu",
            "qr",
            "svd",
            "schur",
            "hessenberg",
            "householder_product",
            "triangular_solve",
            "tridiagonal_solve",
            "custom_linear_solve",
        ],
        "linear algebra: no elementwise path structure",
    ),
    # complex numbers: a path product of complex weights has no max/entropy reading
    **dict.fromkeys(["complex", "conj", "real", "imag", "fft"], "complex values"),
    # collectives (inside shard_map / pmap): the graph is per device
    **dict.fromkeys(
        ["psum", "pmax", "pmin", "ppermute", "all_gather", "all_to_all", "ragged_all_to_all"],
        "collectives: run the analysis outside shard_map",
    ),
    # mutable state and internal primitives that never appear in a traced user function
    **dict.fromkeys(["get", "swap", "dce_sink", "stage"], "state / internal"),
    "reduce": "variadic reduce with a user computation: no generic local derivative",
    "select_and_gather_add": "internal to max-pool's JVP",
    "select_and_scatter_add": "internal to max-pool's transpose",
}


def installed_primitives():
    found = {}
    for mod in (lax, jprims):
        for name in dir(mod):
            p = getattr(mod, name)
            if isinstance(p, Primitive):
                found[p.name] = p
    return found


def differentiable(p):
    return p in ad.primitive_jvps or p in ad.primitive_transposes


def test_every_differentiable_primitive_is_handled():
    missing = sorted(
        name
        for name, p in installed_primitives().items()
        if differentiable(p)
        and name not in RULES
        and _compat.call_body(name, {}) is None
        and name not in _compat._CALL_BODY_PARAM
        and name not in UNSUPPORTED
    )
    assert not missing, (
        f"jax {jax.__version__} has differentiable primitives with no semiring "
        f"rule: {missing}. Register a rule (DEVELOPERS.md, 'A primitive') or list "
        f"them in UNSUPPORTED with the reason."
    )


def test_unsupported_list_is_current():
    """A primitive listed as unsupported that has since got a rule must leave the list."""
    assert not sorted(set(UNSUPPORTED) & set(RULES))


def test_rules_take_unknown_params():
    """Releases add parameters (jax 0.12's ``out_sharding`` on gather): a rule names the
    parameters it reads and accepts the rest, so a new placement annotation cannot break it."""
    rigid = sorted(
        name
        for name, rule in RULES.items()
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(rule).parameters.values())
    )
    assert not rigid, f"rules without **params: {rigid}"


rng = np.random.default_rng(3)
x5 = jnp.asarray(rng.uniform(0.2, 0.8, size=5), jnp.float32)
y5 = jnp.asarray(rng.uniform(0.2, 0.8, size=5), jnp.float32)
w5 = jnp.asarray(np.cos(np.arange(5) + 0.4), jnp.float32)

NEW_ELEMENTWISE = {  # jax >= 0.11 names: lax function, arity
    "log2": ("log2", 1),
    "log2p1": ("log2p1", 1),
    "exp2m1": ("exp2m1", 1),
    "sinpi": ("sinpi", 1),
    "cospi": ("cospi", 1),
    "tanpi": ("tanpi", 1),
    "asinpi": ("asinpi", 1),
    "acospi": ("acospi", 1),
    "atanpi": ("atanpi", 1),
    "atan2pi": ("atan2pi", 2),
    "one_minus_square": ("one_minus_square", 1),
    "fma": ("fma", 3),
    "fmuladd": ("fmuladd", 3),
}


@pytest.mark.parametrize("name", sorted(NEW_ELEMENTWISE))
def test_new_elementwise_primitives(name):
    fn_name, arity = NEW_ELEMENTWISE[name]
    fn = getattr(lax, fn_name, None)
    if fn is None:
        pytest.skip(f"jax {jax.__version__} has no lax.{fn_name}")
    args = (x5, y5, x5 * 0.5)[:arity]
    f = lambda *a: jnp.sum(fn(*a) * w5)
    closed = jax.make_jaxpr(f)(*args)
    assert name in {e.primitive.name for e in closed.jaxpr.eqns}
    argnums = tuple(range(arity))
    got = js.semiring_grad(f, js.Real(), argnums=argnums)(*args)
    np.testing.assert_allclose(got, jax.grad(f, argnums=argnums)(*args), rtol=1e-5, atol=1e-6)
    check_all_semirings(f, *args, argnums=argnums)


def test_polynomial():
    poly = getattr(lax, "polynomial", None)
    if poly is None:
        pytest.skip(f"jax {jax.__version__} has no lax.polynomial")
    f = lambda x, c: jnp.sum(poly(x, [c, 2.0 * c, -0.5]) * w5)
    c = jnp.float32(0.7)
    got = js.semiring_grad(f, js.Real(), argnums=(0, 1))(x5, c)
    want = jax.grad(f, argnums=(0, 1))(x5, c)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    check_all_semirings(f, x5, c, argnums=(0, 1))


def test_scatter_sub():
    f = lambda x, u: jnp.sum(jnp.tanh(x.at[jnp.array([0, 2, 0])].subtract(u)) * w5[:4])
    x, u = x5[:4], y5[:3]
    got = js.semiring_grad(f, js.Real(), argnums=(0, 1))(x, u)
    for g, w in zip(got, jax.grad(f, argnums=(0, 1))(x, u)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    check_all_semirings(f, x, u, argnums=(0, 1))
