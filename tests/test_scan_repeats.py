"""Repeated blocks walked as one lax.scan (interpreter.scan_repeats, jaxpr_semiring/repeats.py):
both oracles hold with it on, and it really scans (a test that cannot fail is a defect)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring import interpreter, repeats
from jaxpr_semiring.graph import reachable
from oracle import check_all_semirings


def mlp(x, Ws, bs, w):
    """Carry x, per-block W and b, a shared w: every kind of external input."""
    for W, b in zip(Ws, bs):
        x = x + w * jnp.tanh(x @ W + b)
    return jnp.sum(x * x)


def mlp_args(depth=3, width=2, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [jnp.asarray(rng.standard_normal((width, width)), jnp.float32) for _ in range(depth)]
    bs = [jnp.asarray(0.3 * rng.standard_normal(width), jnp.float32) for _ in range(depth)]
    x = jnp.asarray(rng.standard_normal(width), jnp.float32)
    return x, Ws, bs, jnp.float32(0.7)


def _scans(f, S, *args, argnums=0):
    with interpreter.scan_repeats():
        jaxpr = jax.make_jaxpr(js.semiring_grad(f, S, argnums=argnums))(*args)
    return "scan[" in str(jaxpr)


def test_finds_the_layers_and_their_kinds():
    args = mlp_args(depth=4)
    closed = jax.make_jaxpr(mlp)(*args)
    g = interpreter.flatten(closed.jaxpr, closed.consts)
    r = repeats.find_repeat(g, reachable(g, g.invars))
    assert (r.count, r.period) == (4, 5)
    assert sorted(r.kinds) == ["block", "block", "carry", "shared"]
    assert _scans(mlp, js.Real(), *args, argnums=(0, 1, 2, 3))
    assert not _scans(lambda x: jnp.sum(jnp.tanh(x)), js.Real(), args[0])


def test_brute_force_every_kind_of_input():
    args = mlp_args()
    with interpreter.scan_repeats():
        check_all_semirings(
            mlp,
            *args,
            argnums=(0, 1, 2, 3),
            semirings=[js.Real(), js.MaxProduct(), js.Entropy()],
        )


def test_real_equals_grad_under_jit_and_vmap():
    x, Ws, bs, w = mlp_args(width=3)
    xs = jnp.stack([x, -x, 2 * x])
    want = jax.vmap(jax.grad(mlp, argnums=(0, 1, 3)), in_axes=(0, None, None, None))(xs, Ws, bs, w)
    with interpreter.scan_repeats():
        got = jax.jit(
            jax.vmap(js.semiring_grad(mlp, js.Real(), argnums=(0, 1, 3)), (0, None, None, None))
        )(xs, Ws, bs, w)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def bert():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench_bert as bb

    cfg = dict(bb.TINY, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    model = bb.build_model(cfg)
    table = np.asarray(model.params["bert"]["embeddings"]["word_embeddings"]["embedding"])
    f = bb.make_target(model, 5)
    batch = bb.make_batch(np.random.default_rng(0), 1, 5, 16, cfg["vocab_size"], table)
    return f, (batch[0][0], model.params) + tuple(b[0] for b in batch[1:])


def test_bert_layers_scan_and_match(bert):
    f, args = bert
    closed = jax.make_jaxpr(f)(*args)
    g = interpreter.flatten(closed.jaxpr, closed.consts)
    assert repeats.find_repeat(g, reachable(g, g.invars[:1])).count >= 2
    with interpreter.scan_repeats():
        real = jax.jit(js.semiring_grad(f, js.Real()))(*args)
        scanned = jax.jit(js.semiring_grad(f, js.MaxProduct()))(*args)
    np.testing.assert_allclose(real, jax.jit(jax.grad(f))(*args), rtol=1e-4, atol=1e-6)
    unrolled = jax.jit(js.semiring_grad(f, js.MaxProduct()))(*args)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_scans_by_default_from_twelve_blocks_and_every_semiring_holds():
    """Outside any context the walk scans a run of at least AUTO_SCAN_BLOCKS (12) blocks and
    leaves shorter runs unrolled; scan_repeats(False) turns it off. Scanned by default, every
    semiring still equals the brute-force fold of the enumerated paths."""
    assert interpreter.AUTO_SCAN_BLOCKS == 12
    deep, shallow = mlp_args(depth=12, width=1), mlp_args(depth=11, width=1)
    scanned = lambda args: "scan[" in str(jax.make_jaxpr(js.semiring_grad(mlp, js.Log()))(*args))
    assert scanned(deep) and not scanned(shallow)
    with interpreter.scan_repeats(False):
        assert not scanned(deep)
    with interpreter.scan_repeats():
        assert scanned(shallow)
    # backprop, which returns every variable's cotangent, scans only when asked to
    from jaxpr_semiring.api import backprop

    every = len(backprop(mlp, js.Log())(*deep).cotangents)  # keys are fresh per trace
    with interpreter.scan_repeats(False):
        assert every == len(backprop(mlp, js.Log())(*deep).cotangents)
    with interpreter.scan_repeats():
        assert len(backprop(mlp, js.Log())(*deep).cotangents) < every
    check_all_semirings(mlp, *deep, argnums=(0, 1, 3))
