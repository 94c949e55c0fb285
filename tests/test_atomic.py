"""Atomic blocks: Real == jax.grad through them, every semiring == brute-force enumeration on the
graph where each block is one equation with its Jacobian edges (tests/brute_force.py builds
that graph independently), row layouts, Flax module selection, jit/vmap, errors."""

from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import jaxpr_semiring as js
from jaxpr_semiring.atomic_blocks import jacobian as block_jacobian, layout as block_layout
from jaxpr_semiring.atomic_blocks.collapse import block_ranges
from jaxpr_semiring.markers import ATOMIC_PREFIX
from jaxpr_semiring.interpreter import Node, flatten, forward
from oracle import check_all_semirings
from test_semirings_vs_paths import BINARY, UNARY, step, value


RNG = np.random.default_rng(0)


def rand(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def layer_norm(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * scale + bias


def assert_real_is_grad(f, *args, argnums=0):
    got = js.semiring_grad(f, js.Real(), argnums=argnums)(*args)
    want = jax.grad(f, argnums=argnums)(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


# ----------------------------------------------------------------- oracle A: Real == jax.grad


def test_grad_jit_vmap_of_an_atomic_function_are_those_of_fn():
    fn = lambda v: jnp.tanh(v) * v.sum()
    x = rand(4)
    f = lambda v: jnp.sum(fn(v) ** 2)
    fa = lambda v: jnp.sum(js.atomic(fn)(v) ** 2)
    np.testing.assert_allclose(jax.grad(fa)(x), jax.grad(f)(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(fa)(x), f(x), rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(fa)(jnp.stack([x, -x])), jax.vmap(f)(jnp.stack([x, -x])), rtol=1e-6
    )
    # lowering: the markers are identities, the compiled program is the one of fn
    assert jax.jit(fa).lower(x).compile()(x) == pytest.approx(float(f(x)), rel=1e-6)


@pytest.mark.parametrize("argnums", [0, (0, 1, 2)])
def test_real_through_layer_norm_equals_grad(argnums):
    x, s, b = rand(3, 5), rand(5), rand(5)
    w = rand(3, 5)
    f = lambda x, s, b: jnp.sum(js.atomic(layer_norm)(x, s, b) * w)
    assert_real_is_grad(f, x, s, b, argnums=argnums)


def test_real_closed_over_parameters_and_jit_inside():
    s = rand(4)
    blk = js.atomic(jax.jit(lambda v: jax.nn.softmax(v * s, axis=-1)))
    f = lambda x: (
        jnp.sum(blk(x) * jnp.arange(4.0)) + jnp.sum(blk(2.0 * x))
    )  # one jaxpr inlined twice
    assert_real_is_grad(f, rand(2, 4))


# ------------------------------------------------ oracle B: semirings == brute-force enumeration

CASES = {
    "layer_norm_all_args": (
        lambda x, s, b: jnp.sum(js.atomic(layer_norm)(x, s, b) * jnp.array([1.0, -2.0, 0.5])),
        (rand(2, 3), rand(3), rand(3)),
        (0, 1, 2),
    ),
    "cancelling_paths_zero_weight": (
        lambda x: jnp.sum(js.atomic(lambda v: v - v.mean())(x) * jnp.array([1.0, 2.0, -1.0])),
        (rand(3),),
        0,
    ),
    "dead_relu_inside": (
        lambda x: jnp.sum(js.atomic(lambda v: jnp.maximum(v, 0.0) * 2.0)(x)),
        (jnp.array([-1.0, 0.5, 2.0]),),
        0,
    ),
    "select_inside": (
        lambda x: jnp.sum(js.atomic(lambda v: jnp.where(v > 0, v * v, jnp.sin(v)))(x)),
        (jnp.array([-1.0, 0.5, 2.0]),),
        0,
    ),
    "softmax_rows": (
        lambda x: jnp.sum(js.atomic(jax.nn.softmax)(x) * jnp.arange(6.0).reshape(2, 3)),
        (rand(2, 3),),
        0,
    ),
    "two_outputs_and_closure": (
        lambda x, y: (lambda o: jnp.sum(o[0] * o[1]))(
            js.atomic(lambda a: (jnp.cumsum(a * y), a[::-1] - y))(x)
        ),
        (rand(3), rand(3)),
        (0, 1),
    ),
    "nested_blocks": (
        lambda x: jnp.sum(js.atomic(lambda v: js.atomic(jnp.tanh)(v) * v[0])(x) ** 2),
        (rand(3),),
        0,
    ),
    "identity_block_and_passthrough": (
        lambda x: jnp.sum(js.atomic(lambda v: (v, 2.0 * v))(x)[0] * js.atomic(lambda v: v)(x)),
        (rand(3),),
        0,
    ),
    "integer_input_block": (
        lambda t: jnp.sum(js.atomic(lambda i: jnp.take(t, i, axis=0))(jnp.array([2, 0, 2])) ** 2),
        (rand(3, 2),),
        0,
    ),
    "block_in_scan_body": (
        lambda x: jnp.sum(
            jax.lax.scan(
                lambda c, u: (js.atomic(lambda a, b: jnp.tanh(a * b + a.sum()))(c, u),) * 2,
                x[0],
                x[1:],
            )[0]
        ),
        (rand(3, 2),),
        0,
    ),
    "elementwise_rows_gelu": (lambda x: jnp.sum(js.atomic(jax.nn.gelu)(x) * x), (rand(2, 3),), 0),
    "dense_no_rows": (
        lambda x: jnp.sum(js.atomic(lambda v: jnp.outer(v, v) @ v)(x)),
        (rand(3),),
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_all_semirings_equal_brute_force(name):
    f, args, argnums = CASES[name]
    check_all_semirings(f, *args, argnums=argnums)
    assert_real_is_grad(f, *args, argnums=argnums)


def test_atomic_changes_the_statistics():
    """The decomposed and the atomic LayerNorm are different graphs: a test that could not fail
    would not show it."""
    x, s, b = rand(2, 3), rand(3), rand(3)
    dec = lambda x: jnp.sum(layer_norm(x, s, b) * jnp.array([1.0, -2.0, 0.5]))
    atm = lambda x: jnp.sum(js.atomic(layer_norm)(x, s, b) * jnp.array([1.0, -2.0, 0.5]))
    c_dec = jnp.exp(js.semiring_grad(dec, js.Counting())(x))
    c_atm = jnp.exp(js.semiring_grad(atm, js.Counting())(x))
    np.testing.assert_allclose(c_atm, 3.0, rtol=1e-5)  # one edge to each output of the row
    assert np.all(c_dec > 3.5)
    np.testing.assert_allclose(
        js.semiring_grad(dec)(x), js.semiring_grad(atm)(x), rtol=1e-4, atol=1e-6
    )


def test_float64(enable_x64):
    f, args, argnums = CASES["layer_norm_all_args"]
    args = tuple(a.astype(jnp.float64) for a in args)
    g = js.semiring_grad(f, js.Entropy(), argnums=argnums)(*args)
    assert g[0].log_z.dtype == jnp.float64
    check_all_semirings(f, *args, argnums=argnums)


def build_with_block(program, first, last):
    """A random program whose steps first..last run inside one atomic block."""

    def run(pool, steps):
        pool = list(pool)
        for kind, op, i, j in steps:
            a, b = pool[i % len(pool)], pool[j % len(pool)]
            pool.append(UNARY[op][1](a) if kind == "u" else BINARY[op][1](a, b))
        return pool

    def f(x, y):
        pool = run([x, y], program[:first])
        pool = js.atomic(lambda *p: tuple(run(p, program[first : last + 1])))(*pool)
        pool = run(pool, program[last + 1 :])
        return jnp.sum(pool[-1] * jnp.array([1.0, -0.7, 1.3]))

    return f


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=st.lists(step, min_size=1, max_size=4),
    cut=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    xs=st.lists(value, min_size=6, max_size=6),
)
def test_random_programs_with_a_block(program, cut, xs):
    first, last = sorted(c % len(program) for c in cut)
    f = build_with_block(program, first, last)
    x, y = jnp.array(xs[:3], jnp.float32), jnp.array(xs[3:], jnp.float32)
    check_all_semirings(f, x, y, argnums=(0, 1), rtol=5e-4, atol=5e-4)


# --------------------------------------------------------------------------- rows and layout


def _layout_of(f, *args):
    closed = jax.make_jaxpr(f)(*args)
    graph = flatten(closed.jaxpr, closed.consts)
    node = next(n for n in graph.nodes if n.primitive.name == "atomic")
    env = forward(graph, args)
    blk = node.params["block"]
    inner_env = forward(blk.graph, [env[a.key] for a in node.invars])
    wanted = [
        i for i, a in enumerate(blk.graph.invars) if jnp.issubdtype(a.aval.dtype, jnp.floating)
    ]
    return block_layout.layout(blk.graph, inner_env, wanted, [0])


def test_rows_layer_norm_is_one_block_per_token():
    x, s, b = rand(7, 5), rand(5), rand(5)
    lay = _layout_of(lambda x, s, b: js.atomic(layer_norm)(x, s, b), x, s, b)
    assert lay.rows == 7 and lay.n_dense == 5  # 5 probes, not 35
    assert lay.n_probes == 7  # + scale and bias: one position each, 2 JVPs
    assert not lay.traced


def test_rows_elementwise_and_softmax():
    assert _layout_of(lambda x: js.atomic(jax.nn.gelu)(x), rand(4, 6)).n_probes == 1
    lay = _layout_of(lambda x: js.atomic(lambda v: jax.nn.softmax(v, axis=-1))(x), rand(2, 3, 4))
    assert (lay.rows, lay.n_probes) == (6, 4)


def test_traced_structure_under_jit_falls_back_to_dense_and_is_exact():
    f = lambda x, m: jnp.sum(js.atomic(lambda v: jnp.where(m, v * v, -v))(x) * jnp.arange(1.0, 4.0))
    x, m = rand(3), jnp.array([True, False, True])
    for S in (js.MaxProduct(), js.Counting(), js.Boolean()):
        eager = js.semiring_grad(f, S)(x, m)
        jitted = jax.jit(js.semiring_grad(f, S))(x, m)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    check_all_semirings(lambda x: f(x, m), x)


def test_dense_block_above_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(block_jacobian, "MAX_ENTRIES", 10)
    f = lambda x: jnp.sum(js.atomic(lambda v: jnp.outer(v, v) @ v)(x))
    with pytest.raises(ValueError, match=r"atomic block '<lambda>' needs 4 JVPs .*no cheaper row"):
        js.semiring_grad(f, js.Log())(rand(4))


def test_low_rank_and_probe_chunks_give_the_same_result(monkeypatch):
    """A LayerNorm's Jacobian per row is diagonal + rank 2 (mean, 1/std): built from 5 JVPs/VJPs
    instead of one probe per hidden element; chunked probes and the plain probes agree."""
    x, s, b = rand(3, 24), rand(24), rand(24)
    f = lambda x, s: jnp.sum(js.atomic(layer_norm)(x, s, b) * jnp.arange(72.0).reshape(3, 24))
    semirings = (js.Log(), js.MaxProduct(), js.Entropy(), js.Counting())
    used = []
    low_rank = block_jacobian.low_rank
    monkeypatch.setattr(
        block_jacobian, "low_rank", lambda *a: used.append(low_rank(*a)) or used[-1]
    )
    want = [js.semiring_grad(f, S, argnums=(0, 1))(x, s) for S in semirings]
    assert used and all(u is not None for u in used)
    for setting in (("low_rank", lambda *a: None), ("CHUNK_ENTRIES", 30)):  # 1 probe per chunk
        monkeypatch.setattr(block_jacobian, *setting)
        got = [js.semiring_grad(f, S, argnums=(0, 1))(x, s) for S in semirings]
        for a, c in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_allclose(a, c, rtol=2e-5, atol=1e-6)


@pytest.mark.skipif(not js.kernels.ffi.available(), reason="the CPU loop needs numba and jax.ffi")
def test_max_product_low_rank_loop_equals_stored_jacobian(monkeypatch):
    """MaxProduct contracts a LayerNorm block's factors in the CPU loop without storing the
    Jacobian: the stored chunks' values (to rounding), under jit and vmap."""
    monkeypatch.setattr(js.kernels.dispatch, "MIN_KERNEL_CANDIDATES", 0)
    s, b = rand(40), rand(40)
    f = lambda x: jnp.sum(js.atomic(layer_norm)(x, s, b) * jnp.arange(120.0).reshape(3, 40))
    xs = rand(2, 3, 40)
    calls = []
    dot = js.MaxProduct.low_rank_dot
    monkeypatch.setattr(
        js.MaxProduct, "low_rank_dot", lambda *a: calls.append(dot(*a)) or calls[-1]
    )
    fused = [
        js.semiring_grad(f, js.MaxProduct())(xs[0]),
        jax.jit(jax.vmap(js.semiring_grad(f, js.MaxProduct())))(xs),
    ]
    assert calls and all(c is not None for c in calls)
    monkeypatch.setattr(js.MaxProduct, "low_rank_dot", lambda *a: None)
    stored = [
        js.semiring_grad(f, js.MaxProduct())(xs[0]),
        jax.jit(jax.vmap(js.semiring_grad(f, js.MaxProduct())))(xs),
    ]
    for a, c in zip(jax.tree.leaves(fused), jax.tree.leaves(stored)):  # XLA may fuse a·b + c
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=0)


# -------------------------------------------------------------------- jit, vmap, top paths


def test_jit_and_vmap():
    s, b = rand(4), rand(4)
    f = lambda x: jnp.sum(js.atomic(layer_norm)(x, s, b) ** 2)
    xs = rand(3, 2, 4)
    for S in (js.Entropy(), js.MaxProduct()):
        batched = jax.jit(jax.vmap(js.semiring_grad(f, S)))(xs)
        for n in range(3):
            one = js.semiring_grad(f, S)(xs[n])
            for a, c in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
                np.testing.assert_allclose(a, c[n], rtol=1e-5, atol=1e-6)


def test_top_path_crosses_a_block_in_one_step():
    s, b = rand(4), rand(4)
    f = lambda x: jnp.sum(jnp.tanh(js.atomic(layer_norm, name="ln")(x, s, b)) * jnp.arange(4.0))
    x = rand(2, 4)
    p = jax.jit(js.top_path(f, at=(1, 2)))(x)
    prims = [st.primitive for st in p.steps]
    assert prims.count("atomic") == 1 and p.steps[0].primitive == "atomic"
    best = js.semiring_grad(f, js.MaxProduct())(x).top_pos[1, 2]
    np.testing.assert_allclose(p.product, best, rtol=1e-5)


# -------------------------------------------------------------------------- Flax modules


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(name="ln1")(x)
        h = nn.gelu(nn.Dense(4, name="dense")(h))
        return jnp.sum(nn.LayerNorm(name="ln2")(h) * jnp.arange(4.0))


def test_atomic_modules_matches_explicit_blocks():
    m = Tiny()
    x = rand(2, 3)
    p = m.init(jax.random.PRNGKey(0), x)

    def f(x):
        with js.atomic_modules(types=nn.LayerNorm):
            return m.apply(p, x)

    def by_path(x):
        with js.atomic_modules("ln*"):
            return m.apply(p, x)

    closed = jax.make_jaxpr(f)(x)
    nodes = flatten(closed.jaxpr, closed.consts).nodes
    blocks = [n for n in nodes if n.primitive.name == "atomic"]
    assert [b.path.rsplit("/", 1)[-1] for b in blocks] == ["ln1", "ln2"]
    for S in (js.MaxProduct(), js.Entropy()):
        a, b = js.semiring_grad(f, S)(x), js.semiring_grad(by_path, S)(x)
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(u, v, rtol=1e-6)
    check_all_semirings(f, x)
    assert_real_is_grad(f, x)
    # differentiating the parameters too: scale/bias are shared inputs of each block
    g = lambda p, x: Tiny().apply(p, x)
    with js.atomic_modules(types=nn.LayerNorm):
        assert_real_is_grad(lambda q: g(q, x), p)
    leaves, treedef = jax.tree.flatten(p)

    def gp(*q):  # tests/oracle.py compares flat argument tuples
        with js.atomic_modules(types=nn.LayerNorm):
            return g(jax.tree.unflatten(treedef, q), x)

    check_all_semirings(
        gp, *leaves, argnums=tuple(range(len(leaves))), semirings=[js.MaxProduct(), js.Entropy()]
    )


def test_atomic_functions_patches_and_restores():
    table = {"act": jnp.tanh}
    f = lambda x: jnp.sum(table["act"](jax.nn.softmax(x)) * jnp.arange(3.0))
    x = rand(3)
    with js.atomic_functions((jax.nn, "softmax"), (table, "act")):
        closed = jax.make_jaxpr(f)(x)
        c = js.semiring_grad(f, js.Counting())(x)
    assert table["act"] is jnp.tanh and jax.nn.softmax.__name__ == "softmax"
    nodes = flatten(closed.jaxpr, closed.consts).nodes
    assert [n.path for n in nodes if n.primitive.name == "atomic"] == ["", ""]
    np.testing.assert_allclose(jnp.exp(c), 3.0, rtol=1e-5)  # softmax: 3 edges, tanh: 1


def test_block_ranges_repeated_uid_and_overlap_error():
    blk = jax.jit(js.atomic(jnp.sin))
    closed = jax.make_jaxpr(lambda x: blk(x) + blk(2 * x))(rand(2))
    graph = flatten(closed.jaxpr, closed.consts)
    assert sum(n.primitive.name == "atomic" for n in graph.nodes) == 2
    assert block_ranges([]) == []
    marker = lambda uid, side: Node(
        SimpleNamespace(name="name"), {"name": f"{ATOMIC_PREFIX}{uid}:{side}:f{uid}"}, (), (), ""
    )
    crossed = [marker(1, "in"), marker(2, "in"), marker(1, "out"), marker(2, "out")]
    with pytest.raises(ValueError, match="atomic blocks 'f1' and 'f2' overlap without nesting"):
        block_ranges(crossed)
