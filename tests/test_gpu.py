"""On a CUDA GPU: the Pallas MaxProduct kernel (``interpret=False``, compiled through Triton)
equals the XLA path exactly, alone, through the ``kernel="pallas"`` dispatch, under jit/vmap
and inside a whole ``semiring_grad``; ``Real`` equals ``jax.grad`` on a model large enough to
use the GPU's matmuls.

Skipped off the GPU. ``benchmarks/gpu_check.sh`` runs this file on the GPU machine; its CPU
rehearsal (``GPU_CHECK_DRY_RUN=1``) sets ``JAXPR_SEMIRING_GPU_TEST_INTERPRET=1``, which runs the
kernel comparisons here in Pallas interpret mode and the ``kernel="pallas"`` setting on the CPU
(where it means the numba loop), so that this file's own code is exercised without a GPU; only
the check that the compiled program holds a Triton kernel needs the CUDA backend.

Exact equality is the right check: every candidate is a product of two float32 values and ⊕
is max/min, so any correct kernel returns the same bits whatever its tiling or reduction order.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring import kernels
from jaxpr_semiring import semirings as S

ON_GPU = jax.default_backend() == "gpu"
INTERPRET = not ON_GPU and os.environ.get("JAXPR_SEMIRING_GPU_TEST_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    not (ON_GPU or INTERPRET),
    reason=f"needs a CUDA GPU (jax.default_backend() is {jax.default_backend()!r}); run "
    "benchmarks/gpu_check.sh on a GPU machine (docs/gpu.md)",
)

# (B, M, C, N): not multiples of any tile, size-1 axes, BERT-like, and C longer than one block
SHAPES = [
    (1, 3, 5, 7),
    (2, 33, 17, 70),
    (1, 1, 1, 1),
    (3, 8, 40, 9),
    (1, 30, 512, 160),
    (2, 65, 300, 129),
]
TILES = [
    dict(block_m=32, block_n=64, block_c=8),
    dict(block_m=16, block_n=32, block_c=4),
    dict(block_m=16, block_n=128, block_c=16),
]


def _inputs(shape, seed, special=False):
    B, M, C, N = shape
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((B, M, C)), rng.standard_normal((B, M, C))
    p, n = np.maximum(a, b), np.minimum(a, b)
    dead = rng.random((B, M, C)) < 0.25
    p[dead], n[dead] = -np.inf, np.inf  # 0̄ entries: no candidate whatever w
    w = rng.standard_normal((B, C, N))
    w[rng.random((B, C, N)) < 0.2] = 0.0  # zero-weight edges
    if special and C > 2 and N > 3:
        w[:, 0, :4] = [-3.0, 0.0, np.inf, -np.inf]  # a live row meets ±inf weights
        p[:, :, 1], n[:, :, 1] = -np.inf, np.inf  # a dead row meets them too
        w[:, 1, :] = np.inf
    return tuple(jnp.asarray(x, jnp.float32) for x in (p, n, w))


def _exact(got, want):
    for g, r in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


def _pallas(p, n, w, **tiles):
    return kernels.gpu.maxproduct(p, n, w, interpret=INTERPRET, **tiles)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(
    "tiles", TILES if ON_GPU else TILES[1:2], ids=lambda t: "-".join(map(str, t.values()))
)
def test_pallas_equals_xla(shape, tiles):
    if INTERPRET and np.prod(shape) > 50_000:
        pytest.skip("interpret mode: the large shapes run on the GPU only")
    p, n, w = _inputs(shape, seed=sum(shape), special=True)
    got = jax.jit(lambda p, n, w: _pallas(p, n, w, **tiles))(p, n, w)
    _exact(got, kernels.xla.maxproduct(p, n, w))
    assert not np.isnan(np.asarray(got[0])).any() and not np.isnan(np.asarray(got[1])).any()


def test_pallas_under_vmap_and_shared_weights():
    p, n, w = _inputs((4, 17, 40, 33), seed=3)
    fn = jax.jit(jax.vmap(lambda p, n: _pallas(p[None], n[None], w[:1])))
    got = fn(p, n)
    want = jax.vmap(lambda p, n: kernels.xla.maxproduct(p[None], n[None], w[:1]))(p, n)
    _exact(got, want)


@pytest.mark.skipif(not ON_GPU, reason="the kernel dispatch runs Pallas on the CUDA backend only")
def test_dispatch_runs_pallas_on_gpu():
    assert kernels.implementations("pallas")["gpu"] == "pallas"
    p, n, w = _inputs((1, 64, 256, 128), seed=5)  # over MIN_KERNEL_CANDIDATES
    fn = jax.jit(lambda p, n, w: kernels.dispatch.maxproduct(p, n, w, kernel="pallas"))
    hlo = fn.lower(p, n, w).as_text().lower()
    assert "triton" in hlo or "mosaic" in hlo, "the kernel='pallas' program holds no Pallas kernel"
    _exact(fn(p, n, w), kernels.xla.maxproduct(p, n, w))


@pytest.mark.parametrize(
    "vs,ws,dims",
    [
        ((40, 300), (300, 200), (((1,), (0,)), ((), ()))),  # plain matmul
        ((300, 40), (200, 300), (((0,), (1,)), ((), ()))),  # both transposed
        ((3, 40, 300), (3, 300, 70), (((2,), (1,)), ((0,), (0,)))),
    ],
)  # batched
def test_semiring_dot_general_pallas_equals_xla(vs, ws, dims):
    """The ``kernel="pallas"`` setting (on CPU: the numba loop) equals ``kernel="xla"``."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(vs), rng.standard_normal(vs)
    v = S.MaxProductValue(
        jnp.asarray(np.maximum(a, b), jnp.float32), jnp.asarray(np.minimum(a, b), jnp.float32)
    )
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    run = lambda k: jax.jit(lambda v, w: S.MaxProduct(kernel=k).dot_general(v, w, dims))(v, w)
    _exact(run("pallas"), run("xla"))


def _mlp(x, ws):
    for w in ws:
        x = jnp.tanh(x @ w)
    return jnp.sum(x**2)


def test_semiring_grad_pallas_equals_xla_and_real_equals_grad():
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.standard_normal((64, 256)), jnp.float32)
    ws = [jnp.asarray(rng.standard_normal((256, 256)) / 16, jnp.float32) for _ in range(3)]
    grad = lambda S_: jax.jit(js.semiring_grad(_mlp, S_, argnums=(0, 1)))(x, ws)
    _exact(
        jax.tree.leaves(grad(js.MaxProduct(kernel="pallas"))),
        jax.tree.leaves(grad(js.MaxProduct(kernel="xla"))),
    )
    with jax.default_matmul_precision("highest"):  # TF32 is JAX's GPU default for f32 matmuls
        got, want = grad(js.Real()), jax.jit(jax.grad(_mlp, argnums=(0, 1)))(x, ws)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=2e-4, atol=1e-5)


def test_float64_pallas_setting_falls_back_to_xla():
    from conftest import x64

    with x64():
        rng = np.random.default_rng(2)
        p = jnp.asarray(rng.standard_normal((1, 40, 300)))
        w = jnp.asarray(rng.standard_normal((1, 300, 50)))
        assert (
            p.dtype == jnp.float64 and kernels.implementations("pallas", np.float64)["gpu"] == "xla"
        )
        _exact(
            jax.jit(lambda p, w: kernels.dispatch.maxproduct(p, p, w, kernel="pallas"))(p, w),
            kernels.xla.maxproduct(p, p, w),
        )
