"""Every fast contraction path equals the reference broadcast-reduce formulation.

The reference (written here, independent of the library's code) materializes every candidate
lift(w[c]) ⊗ v[c] of a ``dot_general`` in float64 numpy and ⊕-reduces over the contracting
axes. Checked: the semirings' ``dot_general`` (whatever kernel it dispatches to: the numba CPU
loop through XLA's FFI — tests/test_ffi.py forces it on every case — or BLAS formulations for
the log-space semirings), the XLA chunked fallback with small forced chunk sizes (C not a
multiple of the chunk), the Pallas kernel in
interpret mode, under ``jit`` and ``vmap``; random shapes with size-1 axes, batch dims,
non-canonical dimension numbers, 0̄ entries, zero and negative weights.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_semiring import kernels
from jaxpr_semiring import semirings as S
from jaxpr_semiring.numerics import abs_xlogx

# (v shape, w shape, dimension_numbers) — lax.dot_general layout: contract/batch axes anywhere
CASES = [
    ((3, 7), (7, 5), (((1,), (0,)), ((), ()))),  # plain matmul
    ((7, 3), (5, 7), (((0,), (1,)), ((), ()))),  # both transposed
    ((1, 1), (1, 1), (((1,), (0,)), ((), ()))),  # size-1 everything
    ((4, 1), (1, 6), (((1,), (0,)), ((), ()))),  # C = 1
    ((2, 3, 5), (2, 5, 4), (((2,), (1,)), ((0,), (0,)))),  # batch dim
    ((5, 2, 3), (4, 2, 5), (((0,), (2,)), ((1,), (1,)))),  # batch + transposed, odd order
    ((2, 3, 4, 5), (4, 3, 6), (((2, 1), (0, 1)), ((), ()))),  # two contracting axes
    ((2, 3, 4, 5), (5, 2, 3), (((3,), (0,)), ((0,), (1,)))),  # batch not leading in w
    ((3, 37), (37, 2), (((1,), (0,)), ((), ()))),  # C odd (chunk remainders)
    ((3, 4), (6,), (((), ()), ((), ()))),  # no contraction (outer product)
]


def _normalize(dims, v_ndim, w_ndim):
    (vc, wc), (vb, wb) = dims
    v_free = [i for i in range(v_ndim) if i not in vc and i not in vb]
    w_free = [i for i in range(w_ndim) if i not in wc and i not in wb]
    return list(vc), list(wc), list(vb), list(wb), v_free, w_free


def candidates(v, w, dims):
    """[out..., C_total] arrays of v and w values aligned per candidate (float64 numpy)."""
    v, w = np.asarray(v, np.float64), np.asarray(w, np.float64)
    vc, wc, vb, wb, v_free, w_free = _normalize(dims, v.ndim, w.ndim)
    vt = np.transpose(v, vb + v_free + vc)
    wt = np.transpose(w, wb + wc + w_free)
    nb, nvf, nwf, nc = len(vb), len(v_free), len(w_free), len(vc)
    bshape = vt.shape[:nb]
    vfs = vt.shape[nb : nb + nvf]
    cs = vt.shape[nb + nvf :]
    wfs = wt.shape[nb + nc :]
    C = int(np.prod(cs, dtype=np.int64))
    vt = vt.reshape(bshape + vfs + (1,) * nwf + (C,))
    wt = wt.reshape(bshape + (1,) * nvf + (C,) + wfs)
    wt = np.moveaxis(wt, nb + nvf, -1)
    out = bshape + vfs + wfs
    return np.broadcast_to(vt, out + (C,)), np.broadcast_to(wt, out + (C,))


def ref_maxproduct(p, n, w, dims):
    P, W = candidates(p, w, dims)
    Nn, _ = candidates(n, w, dims)
    alive = P > -np.inf
    with np.errstate(invalid="ignore"):
        a, b = W * P, W * Nn
    hi = np.where(alive, np.maximum(a, b), -np.inf)
    lo = np.where(alive, np.minimum(a, b), np.inf)
    return hi.max(-1, initial=-np.inf), lo.min(-1, initial=np.inf)


def ref_maxabs(la, s, w, dims):
    L, W = candidates(la, w, dims)
    Sg, _ = candidates(s, w, dims)
    with np.errstate(divide="ignore"):
        cand = L + np.log(np.abs(W))
    sg = Sg * np.where(W < 0, -1.0, 1.0)
    best = cand.max(-1, initial=-np.inf)
    sign = np.where(cand == best[..., None], sg, -1.0).max(-1, initial=-1.0)
    return best, np.where(best == -np.inf, 1.0, sign)


def _lse(x):
    m = x.max(-1, initial=-np.inf)
    ref = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - ref[..., None]).sum(-1)) + ref


def ref_log(lv, w, dims, counting=False):
    L, W = candidates(lv, w, dims)
    with np.errstate(divide="ignore"):
        lw = np.zeros_like(W) if counting else np.log(np.abs(W))
    return _lse(L + lw)


def ref_entropy(lz, mean, w, dims):
    L, W = candidates(lz, w, dims)
    M, _ = candidates(mean, w, dims)
    with np.errstate(divide="ignore"):
        lw = np.log(np.abs(W))
    c_lz = L + lw
    out_lz = _lse(c_lz)
    ref = np.where(np.isfinite(out_lz), out_lz, 0.0)
    wts = np.exp(c_lz - ref[..., None])
    with np.errstate(invalid="ignore"):
        c_mean = np.where(c_lz > -np.inf, M + lw, 0.0)
    tot = wts.sum(-1)
    mean_out = np.where(tot > 0, (wts * c_mean).sum(-1) / np.where(tot > 0, tot, 1), 0.0)
    return out_lz, mean_out


def ref_expectation(z, t, w, dims):
    Z, W = candidates(z, w, dims)
    T, _ = candidates(t, w, dims)
    aw = np.abs(W)
    with np.errstate(divide="ignore", invalid="ignore"):
        xl = np.where(aw > 0, aw * np.log(np.where(aw > 0, aw, 1)), 0.0)
    return (aw * Z).sum(-1), (aw * T + xl * Z).sum(-1)


def ref_boolean(b, w, dims):
    Bv, _ = candidates(b, w, dims)
    return Bv.any(-1)


def random_weights(rng, shape):
    w = rng.standard_normal(shape)
    w[rng.random(shape) < 0.2] = 0.0  # zero-weight edges
    return w.astype(np.float32)


def _dead(rng, shape, frac=0.25):
    return rng.random(shape) < frac


def maxproduct_value(rng, shape):
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    p, n = np.maximum(a, b), np.minimum(a, b)
    dead = _dead(rng, shape)
    p[dead], n[dead] = -np.inf, np.inf
    return p.astype(np.float32), n.astype(np.float32)


def _close(a, b, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(
        np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol
    )


def exact(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.fixture(params=["auto", "xla"])
def kernel_mode(request):
    return request.param


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the XLA chunked fallback to use tiny chunks (C not a multiple of the chunk)."""
    monkeypatch.setattr(kernels.xla, "TROPICAL_CHUNK_ELEMENTS", 7)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("jit", [False, True])
def test_maxproduct(case, jit, kernel_mode):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(case)
    p, n = maxproduct_value(rng, vs)
    w = random_weights(rng, ws)
    fn = lambda p, n, w: S.MaxProduct(kernel=kernel_mode).dot_general(
        S.MaxProductValue(p, n), w, dims
    )
    out = (jax.jit(fn) if jit else fn)(jnp.asarray(p), jnp.asarray(n), jnp.asarray(w))
    rp, rn = ref_maxproduct(p, n, w, dims)
    # products of two float32 values are exact in float64 then rounded once: bitwise equal
    exact(out.top_pos, rp.astype(np.float32))
    exact(out.top_neg, rn.astype(np.float32))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_maxproduct_small_chunks(case, small_chunks, monkeypatch):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(100 + case)
    p, n = maxproduct_value(rng, vs)
    w = random_weights(rng, ws)
    out = jax.jit(
        lambda p, n, w: S.MaxProduct(kernel="xla").dot_general(S.MaxProductValue(p, n), w, dims)
    )(p, n, w)
    rp, rn = ref_maxproduct(p, n, w, dims)
    exact(out.top_pos, rp)
    exact(out.top_neg, rn)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("chunks", [False, True])
def test_maxabs(case, chunks, kernel_mode, monkeypatch):
    if chunks:
        monkeypatch.setattr(kernels.xla, "TROPICAL_CHUNK_ELEMENTS", 7)
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(200 + case)
    la = rng.standard_normal(vs).astype(np.float32)
    la[_dead(rng, vs)] = -np.inf
    s = np.where(rng.random(vs) < 0.5, -1.0, 1.0).astype(np.float32)
    s[la == -np.inf] = 1.0
    w = random_weights(rng, ws)
    w[..., :1] = 2.0 ** rng.integers(-2, 3, size=w[..., :1].shape)  # exact ties in log|w|
    out = jax.jit(
        lambda la, s, w: S.MaxAbs(kernel=kernel_mode).dot_general(S.MaxAbsValue(la, s), w, dims)
    )(la, s, w)
    rl, rs = ref_maxabs(la, s, w, dims)
    # log|w| is computed in float32 by both: compare log_abs to tolerance, signs where not tied
    _close(np.where(np.isfinite(rl), out.log_abs, 0), np.where(np.isfinite(rl), rl, 0))
    assert np.array_equal(np.isneginf(np.asarray(out.log_abs)), np.isneginf(rl))
    assert set(np.unique(np.asarray(out.sign))) <= {-1.0, 1.0}
    exact(np.where(rl == -np.inf, out.sign, 1.0), np.ones_like(rl))  # 0̄ has sign +1


def test_maxabs_signs_exact(kernel_mode):
    """With weights ±2^k every log|g| is exact, so ties and signs are compared exactly."""
    rng = np.random.default_rng(7)
    dims = (((1,), (0,)), ((), ()))
    la = rng.integers(-3, 3, size=(6, 40)).astype(np.float32) * np.float32(np.log(2.0))
    la[_dead(rng, la.shape)] = -np.inf
    s = np.where(rng.random(la.shape) < 0.5, -1.0, 1.0).astype(np.float32)
    w = (
        np.where(rng.random((40, 300)) < 0.5, -1.0, 1.0)
        * 2.0 ** rng.integers(-2, 3, size=(40, 300))
    ).astype(np.float32)
    lw = np.log(np.abs(w)).astype(np.float32)
    out = jax.jit(
        lambda la, s, w: S.MaxAbs(kernel=kernel_mode).dot_general(S.MaxAbsValue(la, s), w, dims)
    )(la, s, w)
    # reference on the same float32 log|w| values
    cand = la[:, :, None] + lw[None]
    sg = s[:, :, None] * np.where(w < 0, -1.0, 1.0)[None]
    best = cand.max(1)
    sign = np.where(cand == best[:, None], sg, -1.0).max(1)
    sign = np.where(best == -np.inf, 1.0, sign)
    exact(out.log_abs, best)
    exact(out.sign, sign)


@pytest.fixture(params=["whole", "chunked"])
def lift_chunks(request, monkeypatch):
    """Lifted weight matrices whole, or built in chunks of 1–2 contraction indices (8 bytes:
    remainders on every odd C)."""
    if request.param == "chunked":
        monkeypatch.setattr(kernels.lifted, "LIFT_CHUNK_BYTES", 8)
    return request.param


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("name", ["Log", "Counting"])
def test_log_counting(case, name, lift_chunks):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(300 + case)
    lv = rng.standard_normal(vs).astype(np.float32) * 3
    lv[_dead(rng, vs)] = -np.inf
    w = random_weights(rng, ws)
    Sr = getattr(S, name)()
    out = jax.jit(lambda lv, w: Sr.dot_general(lv, w, dims))(lv, w)
    ref = ref_log(lv, w, dims, counting=name == "Counting")
    assert np.array_equal(np.isneginf(np.asarray(out)), np.isneginf(ref))
    _close(np.where(np.isfinite(ref), out, 0), np.where(np.isfinite(ref), ref, 0))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_entropy(case, lift_chunks):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(400 + case)
    lz = rng.standard_normal(vs).astype(np.float32) * 3
    dead = _dead(rng, vs)
    lz[dead] = -np.inf
    mean = rng.standard_normal(vs).astype(np.float32)
    mean[dead] = 0.0
    w = random_weights(rng, ws)
    out = jax.jit(lambda a, b, w: S.Entropy().dot_general(S.EntropyValue(a, b), w, dims))(
        lz, mean, w
    )
    rl, rm = ref_entropy(lz, mean, w, dims)
    assert np.array_equal(np.isneginf(np.asarray(out.log_z)), np.isneginf(rl))
    _close(np.where(np.isfinite(rl), out.log_z, 0), np.where(np.isfinite(rl), rl, 0))
    _close(out.mean_log_abs, rm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_expectation(case, lift_chunks):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(500 + case)
    z = np.abs(rng.standard_normal(vs)).astype(np.float32)
    z[_dead(rng, vs)] = 0.0
    t = (z * rng.standard_normal(vs)).astype(np.float32)
    w = random_weights(rng, ws)
    out = jax.jit(lambda a, b, w: S.Expectation().dot_general(S.ExpectationValue(a, b), w, dims))(
        z, t, w
    )
    rz, rt = ref_expectation(z, t, w, dims)
    _close(out.z, rz)
    _close(out.t, rt, atol=1e-4)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_boolean(case):
    vs, ws, dims = CASES[case]
    rng = np.random.default_rng(600 + case)
    b = rng.random(vs) < 0.3
    w = random_weights(rng, ws)
    out = jax.jit(lambda b, w: S.Boolean().dot_general(b, w, dims))(b, w)
    np.testing.assert_array_equal(np.asarray(out), ref_boolean(b, w, dims))


def _all_eqns(jaxpr):
    """Equations of a jaxpr and of every sub-jaxpr (loop bodies, cond branches)."""
    for e in jaxpr.eqns:
        yield e
        for p in e.params.values():
            for sub in p if isinstance(p, (tuple, list)) else [p]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)


def test_lifted_dots_chunking_matches_whole():
    """The chunked path (a loop over chunks plus a remainder) equals one whole lift, also under
    vmap with shared weights and with 0 and ±inf entries; its program does not grow with the
    number of chunks; the shared weight is lifted once per batch, not once per example."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal((2, 3, 37)).astype(np.float32)
    v[0, 0, :5] = 0.0
    w = random_weights(rng, (37, 6))
    w[3, 2] = np.inf
    prods = lambda v: [(v, jnp.abs), (v * 2, jnp.abs), (v, abs_xlogx)]
    dims = (((1,), (0,)), ((), ()))
    whole = jax.vmap(lambda v: kernels.lifted_dots(prods(v), w, dims, chunk_bytes=1 << 30))(v)
    chunked = jax.jit(jax.vmap(lambda v: kernels.lifted_dots(prods(v), w, dims, chunk_bytes=40)))(v)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    size = lambda C: len(
        list(
            _all_eqns(
                jax.make_jaxpr(lambda v, w: kernels.lifted_dots(prods(v), w, dims, chunk_bytes=40))(
                    np.ones((3, C), np.float32), np.ones((C, 6), np.float32)
                ).jaxpr
            )
        )
    )
    assert size(37) == size(367)  # 3 and 36 full chunks of 10 (+ remainder 7): one loop
    batched = jax.make_jaxpr(
        jax.vmap(lambda v: kernels.lifted_dots(prods(v), w, dims, chunk_bytes=40))
    )(v)
    lifted = [e.invars[0].aval.shape for e in _all_eqns(batched.jaxpr) if e.primitive.name == "abs"]
    assert lifted and all(len(shape) == 2 for shape in lifted), lifted
    # no rows at all: zero-size result, no error
    empty = kernels.lifted_dots(prods(v[0, :0]), w, dims, chunk_bytes=40)
    assert [e.shape for e in empty] == [(0, 6)] * 3


@pytest.mark.parametrize("live", [[], [0], [4, 30], list(range(0, 37, 3)), list(range(37))])
def test_lifted_dots_live_indices(live, monkeypatch):
    """A chunked contraction whose rows are nonzero at few contraction indices lifts only
    those weights (a gather; the union over a vmapped batch), and equals the dense result —
    unbatched, under vmap (one example all zero), and in its derivative."""
    monkeypatch.setattr(kernels.lifted, "LIVE_MAX_INDICES", 4)
    rng = np.random.default_rng(len(live))
    v = np.zeros((3, 5, 37), np.float32)
    v[0][:, live] = rng.random((5, len(live)))
    v[2][1, live] = rng.random(len(live))
    w = random_weights(rng, (37, 6))
    prods = lambda v: [(v, jnp.abs), (v * 2, jnp.abs), (v, abs_xlogx), (v, jnp.ones_like)]
    dims = (((1,), (0,)), ((), ()))
    f = lambda v, budget: kernels.lifted_dots(prods(v), w, dims, chunk_bytes=budget)
    whole = jax.vmap(lambda v: f(v, 1 << 30))(v)
    for got in (
        jax.jit(jax.vmap(lambda v: f(v, 40)))(v),
        [jnp.stack(x) for x in zip(*[jax.jit(lambda v: f(v, 40))(v[i]) for i in range(3)])],
    ):
        for a, b in zip(whole, got):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert "cond" in str(jax.make_jaxpr(lambda v: f(v, 40))(v[0]))
    loss = lambda v, budget: sum(jnp.sum(x) for x in f(v, budget)[:2])
    np.testing.assert_allclose(jax.grad(loss)(v[0], 40), jax.grad(loss)(v[0], 1 << 30), rtol=1e-5)


# ------------------------------------------------------------------- vmap, dtypes, edge cases


@pytest.mark.parametrize("w_batched", [False, True])
def test_maxproduct_vmap(w_batched, kernel_mode):
    """vmap over the callback (expand_dims): shared and per-example weights."""
    rng = np.random.default_rng(11)
    dims = (((1,), (0,)), ((), ()))
    p, n = maxproduct_value(rng, (4, 30, 50))
    w = random_weights(rng, (4, 50, 70) if w_batched else (50, 70))
    fn = lambda p, n, w: S.MaxProduct(kernel=kernel_mode).dot_general(
        S.MaxProductValue(p, n), w, dims
    )
    out = jax.jit(jax.vmap(fn, in_axes=(0, 0, 0 if w_batched else None)))(p, n, w)
    for i in range(4):
        rp, rn = ref_maxproduct(p[i], n[i], w[i] if w_batched else w, dims)
        exact(out.top_pos[i], rp)
        exact(out.top_neg[i], rn)


def test_maxproduct_all_dead_and_special_weights(kernel_mode):
    """0̄ rows stay 0̄ whatever the weight (negative, zero, ±inf): no NaN, no sign flip."""
    dims = (((1,), (0,)), ((), ()))
    p = np.full((3, 64), -np.inf, np.float32)
    n = np.full((3, 64), np.inf, np.float32)
    p[1, 5], n[1, 5] = 2.0, -1.0
    w = np.ones((64, 1200), np.float32)
    w[5, :4] = [-3.0, 0.0, np.inf, -np.inf]
    w[6, :] = np.inf  # a dead row meets infinite weights
    w[7, :] = 0.0
    out = jax.jit(
        lambda p, n, w: S.MaxProduct(kernel=kernel_mode).dot_general(
            S.MaxProductValue(p, n), w, dims
        )
    )(p, n, w)
    rp, rn = ref_maxproduct(p, n, w, dims)
    exact(out.top_pos, rp)
    exact(out.top_neg, rn)
    assert np.all(np.asarray(out.top_pos)[[0, 2]] == -np.inf)
    assert np.all(np.asarray(out.top_neg)[[0, 2]] == np.inf)


def test_maxproduct_float64(kernel_mode):
    from conftest import x64

    with x64():
        rng = np.random.default_rng(3)
        dims = (((1,), (0,)), ((), ()))
        p, n = (a.astype(np.float64) for a in maxproduct_value(rng, (5, 300)))
        w = random_weights(rng, (300, 400)).astype(np.float64)
        out = jax.jit(
            lambda p, n, w: S.MaxProduct(kernel=kernel_mode).dot_general(
                S.MaxProductValue(p, n), w, dims
            )
        )(p, n, w)
        assert out.top_pos.dtype == jnp.float64
        rp, rn = ref_maxproduct(p, n, w, dims)
        np.testing.assert_array_equal(np.asarray(out.top_pos), rp)
        np.testing.assert_array_equal(np.asarray(out.top_neg), rn)


@pytest.mark.skipif(
    not kernels.cpu.available(), reason="needs numba: pip install 'jaxpr_semiring[cpu]'"
)
@pytest.mark.parametrize("nc", [False, True])
def test_numba_kernel_direct(nc):
    """The host entry point (weights [C, N], or [N, C] read without a transposed copy), with
    more columns than one block and a broadcast batch of the weights."""
    rng = np.random.default_rng(5)
    p, n = maxproduct_value(rng, (2, 9, 33))
    w = random_weights(rng, (1, 33, 150))
    op, on = kernels.cpu.maxproduct_numpy(p, n, np.swapaxes(w, 1, 2).copy() if nc else w, nc=nc)
    for b in range(2):
        rp, rn = ref_maxproduct(p[b], n[b], w[0], (((1,), (0,)), ((), ())))
        exact(op[b], rp)
        exact(on[b], rn)


# ------------------------------------------------------------------------------ Pallas kernel


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 33, 17, 70), (1, 1, 1, 1), (3, 8, 40, 9)])
def test_pallas_interpret(shape):
    pytest.importorskip("jax.experimental.pallas")
    B, M, C, N = shape
    rng = np.random.default_rng(sum(shape))
    p, n = maxproduct_value(rng, (B, M, C))
    w = random_weights(rng, (B, C, N))
    op, on = kernels.gpu.maxproduct(
        jnp.asarray(p),
        jnp.asarray(n),
        jnp.asarray(w),
        block_m=8,
        block_n=16,
        block_c=4,
        interpret=True,
    )
    for b in range(B):
        rp, rn = ref_maxproduct(p[b], n[b], w[b], (((1,), (0,)), ((), ())))
        exact(op[b], rp)
        exact(on[b], rn)


@pytest.mark.skipif(not kernels.cpu.available(), reason="numba not installed")
@pytest.mark.parametrize(
    "T,rows,vectors,lanes",
    [("float", 1, 2, 4), ("float", 2, 2, 8), ("float", 4, 2, 16), ("double", 2, 3, 2)],
)
def test_register_tile_ir(T, rows, vectors, lanes):
    """The CPU loop's register tiles are LLVM IR made for the host's vector width; the other
    widths' IR, compiled here by llvmlite for the generic target and called through
    ctypes: op[r, j] = max_i max(w·p, w·n), on[r, j] the min, over the rows ks of the block."""
    import ctypes

    import llvmlite.binding as ll

    from jaxpr_semiring.kernels import numba_loops

    text = numba_loops.tile_ir("tile", T, rows, vectors, lanes) + "\nattributes #0 = { nounwind }\n"
    module = ll.parse_assembly(text)
    module.verify()
    engine = ll.create_mcjit_compiler(
        module, ll.Target.from_default_triple().create_target_machine()
    )
    engine.finalize_object()
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn = ctypes.CFUNCTYPE(None, ptr, ptr, ptr, i64, ptr, i64, ptr, ptr)(
        engine.get_function_address("tile")
    )
    dt = np.float32 if T == "float" else np.float64
    rng = np.random.default_rng(0)
    K, nbp = 37, 3 * vectors * lanes
    blk = rng.normal(size=(50, nbp)).astype(dt)
    ks = rng.choice(50, K, replace=False).astype(np.int64)
    pv = rng.normal(size=(rows, K)).astype(dt)
    nv = pv - np.abs(rng.normal(size=pv.shape)).astype(dt)
    op, on = np.empty((rows, nbp), dt), np.empty((rows, nbp), dt)
    fn(
        *(a.ctypes.data for a in (pv, nv, ks)),
        K,
        blk.ctypes.data,
        nbp,
        op.ctypes.data,
        on.ctypes.data,
    )
    a, b = blk[ks][None] * pv[:, :, None], blk[ks][None] * nv[:, :, None]
    np.testing.assert_array_equal(op, np.maximum(a, b).max(1))
    np.testing.assert_array_equal(on, np.minimum(a, b).min(1))


@pytest.mark.skipif(not kernels.cpu.available(), reason="needs numba")
def test_register_tile_refuses_strided_arrays():
    """The tile reads raw pointers with C strides: a strided view is refused when the loop is
    compiled, not read wrongly."""
    import numba

    from jaxpr_semiring.kernels import numba_loops

    @numba.njit
    def call(pv, nv, ks, blk, op, on):
        numba_loops.tile(pv, nv, ks, ks.size, blk, blk.shape[1], op, on)

    f = np.zeros((4, 8), np.float32)
    ks = np.arange(4, dtype=np.int64)
    blk = np.zeros((4, 64), np.float32)
    with pytest.raises(numba.core.errors.TypingError, match="pv must be a C-contiguous"):
        call(
            f[:, ::2],
            f[:, ::2],
            ks,
            blk,
            np.zeros((4, 64), np.float32),
            np.zeros((4, 64), np.float32),
        )


_CONCURRENT = """
import threading
import jax, jax.numpy as jnp, numpy as np
import jaxpr_semiring as js
from jaxpr_semiring.kernels import cpu
rng = np.random.default_rng(0)
p = rng.normal(size=(1, 256, 512)).astype(np.float32)
n = p - 1
w = rng.normal(size=(1, 512, 512)).astype(np.float32)
want = np.maximum(p[0, :, :, None] * w[0], n[0, :, :, None] * w[0]).max(1)
grad = jax.jit(js.semiring_grad(lambda x: jnp.sum(jnp.tanh(x @ w[0])), js.MaxProduct()))
ref = grad(p[0])
errors = []
def host():
    for _ in range(10):
        errors.append(not np.array_equal(cpu.maxproduct_numpy(p, n, w)[0][0], want))
def ffi():
    for _ in range(10):
        errors.append(not np.array_equal(np.asarray(grad(p[0]).top_pos), np.asarray(ref.top_pos)))
threads = [threading.Thread(target=f) for f in (host, host, ffi, ffi)]
[t.start() for t in threads]
[t.join() for t in threads]
import numba
print(numba.threading_layer(), js.kernels.describe()["cpu"], sum(errors))
"""


@pytest.mark.skipif(not kernels.cpu.available(), reason="needs numba")
def test_parallel_loops_from_several_threads_under_workqueue():
    """numba's workqueue threading layer (its fallback without OpenMP or TBB) aborts the
    process when two threads launch parallel loops at once: XLA calls the FFI kernel from
    several threads, and host calls can come from any. Launches are serialized there."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    r = subprocess.run(
        [sys.executable, "-c", _CONCURRENT], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["workqueue", "numba-ffi", "0"], r.stdout
