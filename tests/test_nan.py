"""NaN semantics (docs/semantics.md, "NaN"): a path whose product is NaN makes the value NaN.

Oracle: ``jax.grad``'s NaN mask, on graphs where its NaNs all come from paths (no zero cotangent
of an element without a path meets a NaN; where one does, the semiring value follows the paths
and ``Real`` follows ``jax.grad``: ``test_nan_weight_beyond_a_dead_row``). Every semiring's
value is NaN exactly there (every field of it, every TopK slot), eagerly, under ``jit`` and
under ``vmap``; the weight-blind ``Counting`` and ``Boolean`` count a NaN edge like any other
(their value equals the value with the NaN replaced by a number). Also: the contraction kernels
(numba through the FFI, the XLA fallback, Pallas in interpret mode, the low-rank loop, the
lifted matmuls chunked and on live columns), ``top_path`` names the NaN edge, component flows
report NaN where the gradient is NaN, 0̄ still annihilates ±inf and NaN weights without making
a NaN, and the two documented limits (a NaN beyond a weight-0 edge in the log-space
semirings; a lifted matmul row live elsewhere meeting a NaN weight) hold as documented.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring import kernels

WEIGHT_BLIND = (js.Counting, js.Boolean)
SEMIRINGS = [
    js.Real(),
    js.MaxProduct(),
    js.MaxAbs(),
    js.TopK(3),
    js.Log(),
    js.Entropy(),
    js.Expectation(),
    js.Counting(),
    js.Boolean(),
]
NUMBA = kernels.cpu.available()
TROPICAL = [js.MaxProduct(kernel="xla"), js.MaxAbs(kernel="xla")] + (
    [js.MaxProduct(kernel="numba"), js.MaxAbs(kernel="numba")] if NUMBA else []
)

_k = jax.random.split(jax.random.PRNGKey(0), 6)
X = jax.random.normal(_k[0], (5,))
W1 = jax.random.normal(_k[1], (5, 4))
W2 = jax.random.normal(_k[2], (4, 3))


def nan_mask(S, v):
    """Where a semiring value is NaN (any field; TopK: any slot)."""
    leaves = [np.asarray(a) for a in jax.tree.leaves(v)]
    m = np.zeros(leaves[0].shape, bool)
    for a in leaves:
        if a.dtype != bool:
            m |= np.isnan(a)
    return m.any(-1) if S.extra_axes else m


def all_fields_nan(S, v, mask):
    """Every field (and slot) of the value is NaN where ``mask``."""
    for a in jax.tree.leaves(v):
        a = np.asarray(a)
        if a.dtype == bool:
            continue
        m = mask[..., None] if S.extra_axes else mask
        assert np.all(np.isnan(a)[np.broadcast_to(m, a.shape)]), (
            f"{S}: a NaN value with a number field"
        )


def check(S, fun, args, argnums, transform=lambda f: f, clean=None):
    """S's value is NaN exactly where jax.grad's is (weight-blind semirings: equal to the value
    on ``clean`` args, no NaN)."""
    got = transform(js.semiring_grad(fun, S, argnums=argnums))(*args)
    want = transform(jax.grad(fun, argnums=argnums))(*args)
    for g, w in zip(got, want):
        if isinstance(S, WEIGHT_BLIND):
            assert not nan_mask(S, g).any(), f"{S}: NaN from a NaN weight"
            continue
        np.testing.assert_array_equal(
            nan_mask(S, g),
            np.isnan(np.asarray(w)),
            err_msg=f"{S}: NaN mask differs from jax.grad's",
        )
        all_fields_nan(S, g, np.isnan(np.asarray(w)))
    if isinstance(S, WEIGHT_BLIND) and clean is not None:
        ref = transform(js.semiring_grad(fun, S, argnums=argnums))(*clean)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    return got, want


TRANSFORMS = {
    "eager": lambda f: f,
    "jit": jax.jit,
}


# --------------------------------------------------------------------- (a) one NaN weight


def mlp(x, W1, W2):
    return jnp.sum(jnp.tanh(x @ W1) @ W2)


@pytest.mark.parametrize("how", TRANSFORMS)
@pytest.mark.parametrize("S", SEMIRINGS, ids=repr)
def test_mlp_with_one_nan_weight(S, how):
    w2 = W2.at[1, 2].set(jnp.nan)
    _, want = check(S, mlp, (X, W1, w2), (0, 1, 2), TRANSFORMS[how], clean=(X, W1, W2))
    assert np.isnan(want[0]).all() and np.isnan(want[1]).sum() == 5  # x, W1[:, 1]


@pytest.mark.parametrize("S", SEMIRINGS, ids=repr)
def test_mlp_with_one_nan_weight_vmap(S):
    """vmap over inputs, one of which meets the NaN through a NaN weight of its own."""
    w1s = jnp.stack([W1, W1.at[3, 2].set(jnp.nan), W1])
    xs = jnp.stack([X, -X, 2 * X])
    f = lambda x, w1: mlp(x, w1, W2)
    got = jax.jit(jax.vmap(js.semiring_grad(f, S, argnums=(0, 1))))(xs, w1s)
    want = jax.vmap(jax.grad(f, argnums=(0, 1)))(xs, w1s)
    for g, w in zip(got, want):
        want_mask = np.isnan(np.asarray(w))
        assert want_mask[1].any() and not want_mask[[0, 2]].any()
        if isinstance(S, WEIGHT_BLIND):
            assert not nan_mask(S, g).any()
        else:
            np.testing.assert_array_equal(nan_mask(S, g), want_mask)


# ---------------------------------------------------------------- (b) a NaN activation


def log_net(x, W1, W2):
    """log of a negative pre-activation: the activation is NaN, log's own derivative is not;
    only the edges that read the activation (W2's) are NaN."""
    return jnp.sum(jnp.log(x @ W1) @ W2)


def sqrt_net(x, W1, W2):
    """sqrt of a negative: the activation and its derivative are NaN."""
    return jnp.sum(jnp.sqrt(x @ W1) @ W2)


def inf_times_zero(x, W1, W2):
    """0·inf in one element: the activation is NaN; mul's edges read the other operand."""
    scale = jnp.array([1.0, jnp.inf, 1.0, 1.0])
    h = (x @ W1) * jnp.array([1.0, 0.0, 1.0, 1.0])
    return jnp.sum(jnp.tanh(h * scale) @ W2)


@pytest.mark.parametrize("how", TRANSFORMS)
@pytest.mark.parametrize("fun", [log_net, sqrt_net, inf_times_zero], ids=lambda f: f.__name__)
@pytest.mark.parametrize("S", SEMIRINGS, ids=repr)
def test_nan_activation(S, fun, how):
    h = X @ W1
    assert (h < 0).any() and (h > 0).any()
    _, want = check(S, fun, (X, W1, W2), (0, 1, 2), TRANSFORMS[how])
    assert any(np.isnan(w).any() for w in want) and not all(np.isnan(w).all() for w in want)


@pytest.mark.parametrize("S", SEMIRINGS, ids=repr)
def test_nan_activation_vmap(S):
    xs = jnp.stack([X, jnp.abs(X), -X])  # the second makes no negative pre-activation of |W1|
    w1 = jnp.abs(W1)
    f = lambda x: sqrt_net(x, w1, W2)
    got = jax.jit(jax.vmap(js.semiring_grad(f, S)))(xs)
    want = np.isnan(np.asarray(jax.vmap(jax.grad(f))(xs)))
    assert want[[0, 2]].any() and not want[1].any()
    if isinstance(S, WEIGHT_BLIND):
        assert not nan_mask(S, got).any()
    else:
        np.testing.assert_array_equal(nan_mask(S, got), want)


# ------------------------------------------------- (c) contractions large enough for a kernel

B_X = jax.random.normal(_k[3], (16, 64))
B_W = jax.random.normal(_k[4], (64, 128))
B_C = jax.random.normal(_k[5], (16, 128))


def linear_head(x, W):
    return jnp.sum((x @ W) * B_C)


def tanh_head(x, W):
    return jnp.sum(jnp.tanh(x @ W) * B_C)


CONTRACTION_CASES = {
    "nan weight": (linear_head, lambda: (B_X, B_W.at[3, 5].set(jnp.nan))),
    "nan input": (linear_head, lambda: (B_X.at[2, 7].set(jnp.nan), B_W)),
    "nan value into the kernel": (tanh_head, lambda: (B_X.at[2, 7].set(jnp.nan), B_W)),
}


@pytest.mark.parametrize("how", TRANSFORMS)
@pytest.mark.parametrize("case", CONTRACTION_CASES)
@pytest.mark.parametrize("S", TROPICAL + SEMIRINGS, ids=repr)
def test_large_contraction(S, case, how):
    assert 16 * 64 * 128 >= kernels.dispatch.MIN_KERNEL_CANDIDATES  # the kernel runs
    if isinstance(S, js.semirings.Tropical):
        assert kernels.describe(S.kernel)["cpu"] == (
            "xla" if S.kernel == "xla" or not NUMBA else kernels.describe("numba")["cpu"]
        )
    fun, args = CONTRACTION_CASES[case]
    x, w = args()
    _, want = check(S, fun, (x, w), (0, 1), TRANSFORMS[how], clean=(B_X, B_W))
    assert any(np.isnan(a).any() for a in want)


@pytest.mark.parametrize(
    "S", TROPICAL + [js.TopK(2), js.Log(), js.Entropy(), js.Expectation()], ids=repr
)
def test_large_contraction_vmap(S):
    xs = jnp.stack([B_X, B_X.at[2, 7].set(jnp.nan), B_X.at[9, 1].set(jnp.nan)])
    got = jax.jit(jax.vmap(js.semiring_grad(tanh_head, S), (0, None)))(xs, B_W)
    want = np.isnan(np.asarray(jax.vmap(jax.grad(tanh_head), (0, None))(xs, B_W)))
    np.testing.assert_array_equal(nan_mask(S, got), want)


@pytest.mark.parametrize(
    "S", [S for S in TROPICAL + SEMIRINGS if not isinstance(S, js.Real)], ids=repr
)
def test_nan_weight_beyond_a_dead_row(S):
    """Only row 0 of x @ W reaches the output: a NaN weight makes NaN the paths through it,
    x[0, 3]; jax.grad (and Real, which is jax.grad) also multiplies the other rows' zero
    cotangents by it (0·NaN), which are no paths."""
    w = B_W.at[3, 5].set(jnp.nan)
    f = lambda x: jnp.sum((x @ w)[0] * B_C[0])
    assert np.isnan(np.asarray(jax.grad(f)(B_X))[:, 3]).all()
    want = np.zeros(B_X.shape, bool)
    want[0, 3] = True
    g = jax.jit(js.semiring_grad(f, S))(B_X)
    if isinstance(S, WEIGHT_BLIND):
        want[:] = False
    np.testing.assert_array_equal(nan_mask(S, g), want)
    assert np.isnan(np.asarray(js.semiring_grad(f, js.Real())(B_X))[:, 3]).all()


@pytest.mark.parametrize(
    "cols",
    [(5,), (5, 9), (9,), (5,) + tuple(range(0, 128, 3))],
    ids=lambda c: f"{len(c)} columns" if len(c) > 2 else str(c),
)
@pytest.mark.parametrize("S", [js.Log(), js.Entropy(), js.Expectation(), js.Counting()], ids=repr)
def test_lifted_chunks_and_live_columns(S, cols, monkeypatch):
    """The lifted contractions built chunk by chunk, and from the live columns only (a target
    reading a few outputs): a NaN weight reaches x[0, 3] through column 5, if it is read."""
    monkeypatch.setattr(kernels.lifted, "LIFT_CHUNK_BYTES", 2048)  # 16 chunks of W
    w = B_W.at[3, 5].set(jnp.nan)
    f = lambda x: jnp.sum((x @ w)[0, jnp.array(cols)])
    want = np.zeros(B_X.shape, bool)
    want[0, 3] = 5 in cols and not isinstance(S, WEIGHT_BLIND)
    for g in (js.semiring_grad(f, S)(B_X), jax.jit(js.semiring_grad(f, S))(B_X)):
        np.testing.assert_array_equal(nan_mask(S, g), want)
    clean = js.semiring_grad(lambda x: jnp.sum((x @ B_W)[0, jnp.array(cols)]), S)(B_X)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(clean)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a[~want], b[~want], rtol=1e-5)


def test_lifted_row_live_elsewhere_meets_the_nan():
    """The documented limit of the lifted matmuls (Log, Entropy, Expectation): a row live at
    some contraction index meets every NaN weight of its columns, also at an index where it is
    0̄ (0·NaN inside the matmul). Column 5 is not read here, so no path crosses W[3, 5]: the
    max-type semirings have no NaN, the lifted ones have x[0, 3] NaN."""
    w = B_W.at[3, 5].set(jnp.nan)
    f = lambda x: jnp.sum((x @ w)[0, ::3])
    for S in (js.MaxProduct(), js.MaxAbs(), js.TopK(2), js.Counting()):
        assert not nan_mask(S, js.semiring_grad(f, S)(B_X)).any()
    want = np.zeros(B_X.shape, bool)
    want[0, 3] = True
    for S in (js.Log(), js.Entropy(), js.Expectation()):
        np.testing.assert_array_equal(nan_mask(S, js.semiring_grad(f, S)(B_X)), want)


def test_nan_beyond_a_dead_relu():
    """relu(NaN) has weight 0 (the graph's max(x, 0) at NaN): the path through it has product
    0·NaN = NaN. MaxProduct and Real see it, as jax.grad does; MaxAbs and TopK cannot tell a
    zero product from no path, and annihilate it (docs/semantics.md, "NaN", ii). (Log and
    Entropy have it here through their matmul: the row of x @ W1's cotangent is live at other
    columns, iii.)"""
    w1 = jnp.asarray(B_W).at[2, 1].set(jnp.nan)  # [64, 128]: the kernels run
    w2 = jnp.asarray(B_C[:3].T)  # [128, 3]
    f = lambda x: jnp.sum(jax.nn.relu(x @ w1) @ w2)
    x = B_X[:4]
    want = np.isnan(np.asarray(jax.grad(f)(x)))
    assert want[:, 2].all() and want.sum() == 4  # x[:, 2] · w1[2, 1] → relu(NaN) (weight 0)
    for S in [js.Real()] + [S for S in TROPICAL if isinstance(S, js.MaxProduct)]:
        np.testing.assert_array_equal(nan_mask(S, js.semiring_grad(f, S)(x)), want, err_msg=repr(S))
    for S in (js.MaxAbs(), js.TopK(2)):
        assert not nan_mask(S, js.semiring_grad(f, S)(x)).any()


def _ref_maxproduct(p, n, w):
    """float64 numpy reference of the MaxProduct contraction [M, C] x [C, N], IEEE NaN."""
    p, n, w = (np.asarray(a, np.float64) for a in (p, n, w))
    dead = (p == -np.inf)[:, :, None]
    with np.errstate(invalid="ignore"):  # inf·0 = NaN is part of the reference
        cand_hi = np.where(w[None] >= 0, p[:, :, None] * w[None], n[:, :, None] * w[None])
        cand_lo = np.where(w[None] >= 0, n[:, :, None] * w[None], p[:, :, None] * w[None])
        hi = np.where(dead, -np.inf, cand_hi).max(1)
        lo = np.where(dead, np.inf, cand_lo).min(1)
    return hi, lo


def _kernel_operands():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(6, 40)).astype(np.float32)
    n = p - np.abs(rng.normal(size=p.shape)).astype(np.float32)
    p[0, :] = -np.inf
    n[0, :] = np.inf  # a dead row
    p[1, 4] = n[1, 4] = np.nan  # a NaN value
    w = rng.normal(size=(40, 300)).astype(np.float32)
    w[7, 11] = np.nan  # a NaN weight (row 0 is dead there: no NaN)
    return p, n, w


def test_kernels_maxproduct_nan():
    p, n, w = _kernel_operands()
    rp, rn = _ref_maxproduct(p, n, w)
    assert np.isnan(rp[1]).all() and np.isnan(rp[2:, 11]).all() and (rp[0] == -np.inf).all()
    outs = {"xla": kernels.xla.maxproduct(p[None], n[None], w[None])}
    if NUMBA:
        outs["numba"] = kernels.cpu.maxproduct_numpy(p[None], n[None], w[None])
        outs["numba nc"] = kernels.cpu.maxproduct_numpy(p[None], n[None], w.T[None].copy(), nc=True)
        outs["numba-ffi"] = jax.jit(lambda *a: kernels.dispatch.maxproduct(*a, kernel="numba"))(
            p[None], n[None], w[None]
        )
    outs["pallas"] = kernels.gpu.maxproduct(
        jnp.asarray(p[None]),
        jnp.asarray(n[None]),
        jnp.asarray(w[None]),
        block_m=4,
        block_n=64,
        block_c=8,
        interpret=True,
    )
    for name, (op, on) in outs.items():
        np.testing.assert_array_equal(np.isnan(np.asarray(op[0])), np.isnan(rp), err_msg=name)
        np.testing.assert_array_equal(np.isnan(np.asarray(on[0])), np.isnan(rn), err_msg=name)
        fin = ~np.isnan(rp)
        np.testing.assert_allclose(np.asarray(op[0])[fin], rp[fin], rtol=1e-6, err_msg=name)


@pytest.mark.skipif(not NUMBA, reason="numba not installed")
@pytest.mark.parametrize("rows", [2, 16])  # a serial call and a parallel one
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_maxproduct_numbers_and_not(rows, seed, dtype):
    """The CPU loop takes a faster path (register tiles) for weight blocks and rows whose
    candidates are all numbers: rows with every entry live several at a time, rows with 0̄
    entries one at a time. Mixed with ±inf and NaN entries and weights (inf·0 = NaN) in other
    rows and blocks of the same call, every output equals the float64 reference, NaN where it
    is NaN."""
    rng = np.random.default_rng(seed)
    C, N = 64, 300  # three column blocks of the loop, the last one not a whole tile
    p = rng.normal(size=(2, rows, C)).astype(dtype)
    n = p - np.abs(rng.normal(size=p.shape)).astype(dtype)
    dead = (rng.random(p.shape) < 0.2) & (rng.random((2, rows, 1)) < 0.5)  # about half the rows
    dead[0, -1] = True  # a row with no live entry
    p[dead], n[dead] = -np.inf, np.inf
    w = rng.normal(size=(C, N)).astype(dtype)
    w[rng.random(w.shape) < 0.1] = 0.0
    b, m = rng.integers(2), rng.integers(rows)  # one row meets inf (·0: NaN) and NaN entries
    p[b, m, :3], n[b, m, :3] = [np.inf, np.nan, 2.0], [1.0, np.nan, -np.inf]
    w[rng.integers(C), rng.integers(200, N)] = np.inf  # only the last block holds non-numbers
    w[rng.integers(C), rng.integers(200, N)] = np.nan
    for nc in (False, True):
        op, on = kernels.cpu.maxproduct_numpy(p, n, w.T[None].copy() if nc else w[None], nc=nc)
        assert op.dtype == dtype
        for i in range(2):
            rp, rn = _ref_maxproduct(p[i], n[i], w)
            for got, want in ((op[i], rp), (on[i], rn)):
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
                fin = ~np.isnan(want)
                np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6)


def test_kernels_maxabs_and_arg_nan():
    p, n, w = _kernel_operands()
    rp, _ = _ref_maxproduct(p, n, w)
    la = np.where(np.isnan(p), np.nan, np.log(np.abs(np.where(p == -np.inf, 0, p))))
    la[0] = -np.inf
    s = np.where(p < 0, -1.0, 1.0).astype(np.float32)
    s[np.isnan(p)] = np.nan
    outs = {"xla": kernels.xla.maxabs(la[None], s[None], w[None])}
    if NUMBA:
        outs["numba"] = kernels.cpu.maxabs_numpy(la[None], s[None], w[None])
    for name, (ol, os_) in outs.items():
        np.testing.assert_array_equal(np.isnan(np.asarray(ol[0])), np.isnan(rp), err_msg=name)
        np.testing.assert_array_equal(np.isnan(np.asarray(os_[0])), np.isnan(rp), err_msg=name)
        assert (np.asarray(ol[0])[0] == -np.inf).all() and (np.asarray(os_[0])[0] == 1).all()
    args = {"xla": kernels.xla.maxproduct_arg(p[None], n[None], w[None])}
    if NUMBA:
        args["numba"] = kernels.cpu.maxproduct_arg_numpy(p[None], n[None], w[None])
    for name, (vp, vn, ap, an, wp, wn) in args.items():
        vp, ap, wp = (np.asarray(a[0]) for a in (vp, ap, wp))
        np.testing.assert_array_equal(np.isnan(vp), np.isnan(rp), err_msg=name)
        # a NaN output points at its first NaN candidate: row 1's at c = 4, column 11's at c = 7
        assert (ap[1] // 2 == 4).all(), name
        assert (ap[2:, 11] // 2 == 7).all() and np.isnan(wp[2:, 11]).all(), name
        assert (ap[0] == -1).all(), name


def test_lowrank_loop_nan():
    """The low-rank loop (an atomic block's factored Jacobian): a NaN factor makes NaN the rows
    whose entry it weighs is live; at a 0̄ entry it is no candidate; a NaN entry is one."""
    rng = np.random.default_rng(4)
    R, A, N = 3, 40, 300
    p = rng.integers(-3, 4, size=(R, A)).astype(np.float32)
    n = p - 1
    U = rng.integers(-3, 4, size=(2, R, A)).astype(np.float32)
    V = rng.integers(-3, 4, size=(2, R, N)).astype(np.float32)
    G = np.zeros((0, R, A), np.float32)
    owner = np.zeros((0, R, A), np.int32)
    U[0, 1, 5] = np.nan  # row 1, live entry 5: NaN
    U[0, 0, 6] = np.nan
    p[0, 6], n[0, 6] = -np.inf, np.inf  # row 0, 0̄ entry 6: no NaN
    p[2, 7] = n[2, 7] = np.nan  # row 2, a NaN entry: NaN
    out = jax.jit(lambda *a: kernels.lowrank.maxproduct(*a, min_candidates=0))(p, n, U, V, G, owner)
    if out is None:
        pytest.skip("the low-rank loop needs numba and XLA's FFI")
    J = np.einsum("irk,irj->rkj", U, V)
    rp, rn = kernels.xla.maxproduct(p[:, None], n[:, None], J)
    for got, want in zip(out, (rp[:, 0], rn[:, 0])):
        got, want = np.asarray(got), np.asarray(want)
        assert np.isnan(want[1]).all() and np.isnan(want[2]).all() and not np.isnan(want[0]).any()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[0], want[0])


# ----------------------------------------------------------------------------- top_path


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="out")(jnp.tanh(nn.Dense(4, name="hidden")(x)))


def test_top_path_names_the_nan_edge():
    m = TwoLayers()
    params = m.init(jax.random.PRNGKey(1), X)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a.at[2, 1].set(jnp.nan) if "out" in str(path) and a.ndim == 2 else a, params
    )
    f = lambda x: jnp.sum(m.apply(params, x))
    assert np.isnan(np.asarray(jax.grad(f)(X))).all()
    for fn in (
        js.top_path(f),
        jax.jit(js.top_path(f)),
        js.top_path(f, at=3),
        js.top_path(f, chain="top_neg"),
    ):
        p = fn(X)
        assert np.isnan(p.value)
        e = p.nan_edge
        assert e is not None and e.primitive == "dot_general" and "out" in e.path
        assert e.index == (1,) and np.isnan(e.weight)
        assert all(not np.isnan(s.product) for s in p.steps[: p.nan_step])
        assert "NaN from edge" in str(p) and "out" in str(p).splitlines()[0]


def test_top_path_nan_activation_names_the_edge_reading_it():
    f = lambda W2: log_net(X, W1, W2)
    p = js.top_path(f)(W2)
    i = int(np.flatnonzero(np.isnan(np.log(np.asarray(X @ W1))))[0])
    assert p.start["index"][0] == i and np.isnan(p.value)
    assert p.nan_edge.primitive == "dot_general" and p.nan_step == 0
    q = js.top_path(lambda x: log_net(x, W1, W2))(X)  # x's paths are finite: no NaN edge
    assert np.isfinite(q.value) and q.nan_edge is None


def test_top_path_kernel_nan():
    w = B_W.at[3, 5].set(jnp.nan)
    for kernel in ("xla", "numba") if NUMBA else ("xla",):
        p = js.top_path(lambda x: linear_head(x, w), kernel=kernel)(B_X)
        assert p.start["index"][1] == 3 and np.isnan(p.value)
        assert p.nan_edge.primitive == "dot_general" and p.nan_edge.index[1] == 5


# ----------------------------------------------------------------------- component flows


@pytest.mark.parametrize(
    "S", [js.MaxProduct(), js.MaxAbs(), js.TopK(2), js.Entropy(), js.Real()], ids=repr
)
def test_component_flows_report_nan(S):
    """A NaN weight in layer 1's query projection: the flows of every token whose gradient
    is NaN are NaN (embeddings, the totals at each branch point before it and the component
    that carries the NaN), never a number that could win."""
    from jaxpr_semiring.models import components
    from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params

    m = TransformerClassifier(num_layers=2, max_len=5)
    params = init_params(m)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    path = next(
        p
        for p, a in flat
        if "layer_1" in jax.tree_util.keystr(p)
        and "query" in jax.tree_util.keystr(p)
        and a.ndim >= 2
    )
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a.at[(0,) * a.ndim].set(jnp.nan) if p == path else a, params
    )
    ids = jnp.array([1, 2, 3, 4, 5])
    target = lambda lg: lg[1] - lg[0]
    cf = components.component_flows(m, params, ids, target=target, semiring=S)
    f, e0 = components.embedding_target(m, params, ids, target)
    want = np.isnan(np.asarray(jax.grad(f)(e0)))
    assert want.any()
    np.testing.assert_array_equal(nan_mask(S, cf.embeddings), want)
    want_tokens = want.any(-1)
    first = cf.points[0]
    np.testing.assert_array_equal(nan_mask(S, first.total), want_tokens)
    for pt in cf.points:
        flows, total = nan_mask(S, pt.flows), nan_mask(S, pt.total)
        np.testing.assert_array_equal(flows.any(-1), total)  # ⊕ over the components
    layer1 = [pt for pt in cf.points if pt.layer == 1 and pt.point == "attention"][0]
    q = layer1.components.index("query")
    assert nan_mask(S, layer1.flows)[:, q].any()


# ----------------------------------------------- 0̄ still annihilates: no NaN without a NaN


def no_path_meets_inf(x):
    """x[1] = 0 has no path to the output, and sqrt'(0) = inf: 0̄ ⊗ inf (jax.grad: 0·inf)."""
    return jnp.sum(jnp.sqrt(x)[:1] * 2.0)


def no_path_meets_nan(x):
    """x[1] < 0 has no path, and its local derivative is NaN: 0̄ ⊗ NaN."""
    return jnp.sum(jnp.sqrt(x)[:1] * 2.0) + jnp.sum(jnp.exp(x) * jnp.array([1.0, 0.0]))


@pytest.mark.parametrize("fun", [no_path_meets_inf, no_path_meets_nan], ids=lambda f: f.__name__)
@pytest.mark.parametrize("S", [S for S in SEMIRINGS if not isinstance(S, js.Real)], ids=repr)
def test_no_path_annihilates_inf_and_nan_weights(S, fun):
    x = jnp.array([4.0, 0.0]) if fun is no_path_meets_inf else jnp.array([4.0, -1.0])
    for g in (js.semiring_grad(fun, S)(x), jax.jit(js.semiring_grad(fun, S))(x)):
        assert not nan_mask(S, g).any(), f"{S}: NaN from 0̄ ⊗ inf/NaN"


@pytest.mark.parametrize("S", [S for S in SEMIRINGS if not isinstance(S, js.Real)], ids=repr)
def test_semiring_ops_annihilate_and_propagate(S):
    """⊕ and ⊗ on values: NaN ⊕ a = NaN, lift(NaN) ⊗ 0̄ = 0̄, lift(w) ⊗ NaN = NaN (w = 0 too)."""
    one, zero = S.ones((3,), jnp.float32), S.zeros((3,), jnp.float32)
    w = jnp.array([jnp.nan, jnp.inf, -jnp.inf])
    for v in (S.scale(w, zero), jax.jit(S.scale)(w, zero)):
        assert not nan_mask(S, v).any()
    if isinstance(S, WEIGHT_BLIND):
        return
    nan = S.scale(jnp.full((3,), jnp.nan), one)
    assert nan_mask(S, nan).all()
    all_fields_nan(S, nan, np.ones(3, bool))
    assert nan_mask(S, S.add(nan, one)).all() and nan_mask(S, S.add(one, nan)).all()
    assert nan_mask(S, S.scale(jnp.array([0.0, 2.0, -1.0]), nan)).all()
    assert nan_mask(S, S.sum(S.add(S.where(jnp.array([True, False, False]), nan), one), 0)).all()
