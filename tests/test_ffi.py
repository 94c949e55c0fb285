"""The zero-copy XLA FFI path of the CPU tropical kernels (``kernels.ffi``).

Every check forces the kernel path (``MIN_KERNEL_CANDIDATES = 0``) and compares it with the
reference candidate enumeration of ``test_kernels`` (independent of the library), with the XLA
fallback and with the ``pure_callback`` fallback: under ``jit`` and ``vmap`` (batched and
shared weights, nested), with 0 and ±inf weights, 0̄ rows, empty and size-1 axes, both weight
layouts ([C, N] and [N, C]: the kernel reads the latter without a transposed copy), float64;
and semiring gradients through it against brute-force path enumeration.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring import kernels
from jaxpr_semiring import semirings as S
from jaxpr_semiring.analyses.pointer import PointerMaxProduct
from oracle import check_all_semirings
from test_kernels import CASES, exact, maxproduct_value, random_weights, ref_maxabs, ref_maxproduct

pytestmark = pytest.mark.skipif(
    not kernels.ffi.available(),
    reason="the FFI kernel needs numba (pip install 'jaxpr_semiring[cpu]') and jax.ffi",
)

NC_CASES = [  # weights stored [N, C] (contraction last): read in place
    ((3, 7), (5, 7), (((1,), (1,)), ((), ()))),
    ((2, 3, 5), (2, 4, 5), (((2,), (2,)), ((0,), (0,)))),
    ((4, 1), (6, 1), (((1,), (1,)), ((), ()))),
    ((2, 3, 4, 5), (6, 4, 5), (((2, 3), (1, 2)), ((), ()))),
]
ALL_CASES = CASES + NC_CASES


@pytest.fixture
def force_kernel(monkeypatch):
    """Every contraction, however small, goes through the compiled loop."""
    monkeypatch.setattr(kernels.dispatch, "MIN_KERNEL_CANDIDATES", 0)


@pytest.fixture(params=["ffi", "callback"])
def cpu_path(request, force_kernel, monkeypatch):
    """The FFI call, or (FFI unavailable) the pure_callback fallback."""
    if request.param == "callback":
        monkeypatch.setattr(kernels.ffi, "available", lambda: False)
    return request.param


def _mp(kernel, dims):
    return lambda p, n, w: S.MaxProduct(kernel=kernel).dot_general(S.MaxProductValue(p, n), w, dims)


def _ma(kernel, dims):
    return lambda la, s, w: S.MaxAbs(kernel=kernel).dot_general(S.MaxAbsValue(la, s), w, dims)


def test_implementations_names_the_ffi_path(monkeypatch):
    assert kernels.implementations("auto")["cpu"] == "numba-ffi"
    assert kernels.implementations("numba")["cpu"] == "numba-ffi"
    assert kernels.implementations("xla")["cpu"] == "xla"
    assert kernels.describe()["cpu"] == "numba-ffi"
    assert set(kernels.ffi.targets()) == {
        "jaxpr_semiring_maxproduct",
        "jaxpr_semiring_maxproduct_arg",
        "jaxpr_semiring_maxabs",
        "jaxpr_semiring_maxproduct_lowrank",
    }
    monkeypatch.setattr(kernels.ffi, "available", lambda: False)
    assert kernels.implementations("auto")["cpu"] == "numba-callback"


def test_program_calls_the_ffi_target(force_kernel):
    dims = CASES[0][2]
    p, n = maxproduct_value(np.random.default_rng(0), (3, 7))
    hlo = (
        jax.jit(_mp("auto", dims))
        .lower(p, n, random_weights(np.random.default_rng(1), (7, 5)))
        .as_text()
    )
    assert "jaxpr_semiring_maxproduct" in hlo and "callback" not in hlo
    assert (
        "jaxpr_semiring_maxproduct"
        not in jax.jit(_mp("xla", dims))
        .lower(p, n, random_weights(np.random.default_rng(1), (7, 5)))
        .as_text()
    )


@pytest.mark.parametrize("case", range(len(ALL_CASES)))
def test_maxproduct(case, cpu_path):
    vs, ws, dims = ALL_CASES[case]
    rng = np.random.default_rng(case)
    p, n = maxproduct_value(rng, vs)
    w = random_weights(rng, ws)
    out = jax.jit(_mp("auto", dims))(p, n, w)
    rp, rn = ref_maxproduct(p, n, w, dims)
    exact(out.top_pos, rp.astype(np.float32))
    exact(out.top_neg, rn.astype(np.float32))
    fallback = jax.jit(_mp("xla", dims))(p, n, w)
    exact(out.top_pos, fallback.top_pos)
    exact(out.top_neg, fallback.top_neg)


@pytest.mark.parametrize("case", range(len(ALL_CASES)))
def test_maxabs(case, cpu_path):
    vs, ws, dims = ALL_CASES[case]
    rng = np.random.default_rng(50 + case)
    la = rng.standard_normal(vs).astype(np.float32)
    la[rng.random(vs) < 0.25] = -np.inf
    s = np.where(rng.random(vs) < 0.5, -1.0, 1.0).astype(np.float32)
    w = random_weights(rng, ws)
    out = jax.jit(_ma("auto", dims))(la, s, w)
    rl, rs = ref_maxabs(la, s, w, dims)
    assert np.array_equal(np.isneginf(np.asarray(out.log_abs)), np.isneginf(rl))
    np.testing.assert_allclose(
        np.where(np.isfinite(rl), out.log_abs, 0),
        np.where(np.isfinite(rl), rl, 0),
        rtol=1e-5,
        atol=1e-5,
    )
    fallback = jax.jit(_ma("xla", dims))(la, s, w)  # log|w| by numba's log and XLA's: ±1 ulp
    np.testing.assert_allclose(out.log_abs, fallback.log_abs, rtol=1e-6, atol=1e-6)
    exact(out.sign, fallback.sign)


@pytest.mark.parametrize("in_axes", [(0, 0, None), (0, 0, 0), (None, None, 0)])
def test_vmap(in_axes, cpu_path):
    """vmap adds leading axes (size 1 for an unbatched operand): shared or per-example
    weights, either side batched; nested vmap."""
    rng = np.random.default_rng(3)
    dims = NC_CASES[0][2]
    p, n = maxproduct_value(rng, (4, 2, 3, 7))
    w = random_weights(rng, (4, 2, 5, 7))
    args = [p, n, w]
    args = [a if ax == 0 else a[0, 0] for a, ax in zip(args, in_axes)]
    inner = jax.vmap(_mp("auto", dims), in_axes=in_axes)
    out = jax.jit(jax.vmap(inner, in_axes=in_axes))(*args)
    for i in range(4):
        for j in range(2):
            pick = [a[i, j] if ax == 0 else a for a, ax in zip(args, in_axes)]
            rp, rn = ref_maxproduct(*pick, dims)
            exact(out.top_pos[i, j], rp.astype(np.float32))
            exact(out.top_neg[i, j], rn.astype(np.float32))


def test_zero_and_infinite_weights(cpu_path):
    """0̄ rows stay 0̄ whatever the weight (0, ±inf: no NaN, no sign flip); 0 and ±inf weights
    on live rows give the candidates 0 and ±inf."""
    dims = (((1,), (1,)), ((), ()))
    p = np.full((3, 6), -np.inf, np.float32)
    n = np.full((3, 6), np.inf, np.float32)
    p[1, 2], n[1, 2] = 2.0, -1.0
    w = np.ones((4, 6), np.float32)
    w[:, 2] = [-3.0, 0.0, np.inf, -np.inf]
    w[:, 3] = np.inf  # meets only 0̄ entries
    w[:, 4] = 0.0
    out = jax.jit(_mp("auto", dims))(p, n, w)
    rp, rn = ref_maxproduct(p, n, w, dims)
    exact(out.top_pos, rp)
    exact(out.top_neg, rn)
    assert np.asarray(out.top_pos)[1].tolist() == [3.0, 0.0, np.inf, np.inf]
    assert np.asarray(out.top_neg)[1].tolist() == [-6.0, 0.0, -np.inf, -np.inf]
    assert np.all(np.asarray(out.top_pos)[[0, 2]] == -np.inf)
    la = np.where(p > -np.inf, 0.5, -np.inf).astype(np.float32)
    sg = np.ones_like(la)
    for kernel in ("auto", "xla"):
        ma = jax.jit(_ma(kernel, dims))(la, sg, w)
        with np.errstate(divide="ignore"):
            lw = np.log(np.abs(np.array([-3.0, 0.0, np.inf, -np.inf], np.float32)))
        np.testing.assert_allclose(np.asarray(ma.log_abs)[1], 0.5 + lw, rtol=1e-6)
        assert np.asarray(ma.sign)[1].tolist() == [-1.0, 1.0, 1.0, -1.0]
        assert np.all(np.asarray(ma.log_abs)[[0, 2]] == -np.inf)
        assert np.all(np.asarray(ma.sign)[[0, 2]] == 1.0)


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (3, 4, 0), (1, 1, 1), (1, 5, 1)])
def test_empty_and_size_one_axes(shape, cpu_path):
    """M, C or N of size 0 or 1 (C = 0: every output is 0̄)."""
    M, C, N = shape
    rng = np.random.default_rng(sum(shape))
    p, n = maxproduct_value(rng, (2, M, C))
    w = random_weights(rng, (2, C, N))
    dims = (((2,), (1,)), ((0,), (0,)))
    out = jax.jit(_mp("auto", dims))(p, n, w)
    assert out.top_pos.shape == (2, M, N)
    for b in range(2):
        rp, rn = ref_maxproduct(p[b], n[b], w[b], (((1,), (0,)), ((), ())))
        exact(out.top_pos[b], rp.astype(np.float32))
        exact(out.top_neg[b], rn.astype(np.float32))
    if C == 0:
        assert np.all(np.asarray(out.top_pos) == -np.inf) and np.all(
            np.asarray(out.top_neg) == np.inf
        )


def test_float64(cpu_path):
    from conftest import x64

    with x64():
        rng = np.random.default_rng(4)
        for vs, ws, dims in (CASES[0], NC_CASES[0]):
            p, n = (a.astype(np.float64) for a in maxproduct_value(rng, vs))
            w = random_weights(rng, ws).astype(np.float64)
            out = jax.jit(_mp("auto", dims))(p, n, w)
            assert out.top_pos.dtype == jnp.float64
            rp, rn = ref_maxproduct(p, n, w, dims)
            np.testing.assert_array_equal(np.asarray(out.top_pos), rp)
            np.testing.assert_array_equal(np.asarray(out.top_neg), rn)


def arg_case(rng, b, m, c, n_out, nc):
    """Small-integer max-product operands (many ties), 30 % of the entries 0̄: p, n [b, m, c]
    and weights [b, c, n_out] ([b, n_out, c] if ``nc``)."""
    p = rng.integers(-2, 3, size=(b, m, c)).astype(np.float32)
    n = p - rng.integers(0, 2, size=p.shape)
    dead = rng.random(p.shape) < 0.3
    p[dead], n[dead] = -np.inf, np.inf
    w = rng.integers(-2, 3, size=(b, n_out, c) if nc else (b, c, n_out)).astype(np.float32)
    return p, n, w


@pytest.mark.parametrize("nc", [False, True])
def test_maxproduct_arg_matches_fallback(nc, cpu_path):
    """Arg-max (first winning candidate, 2·c + chain) and the winning edge weight, as the XLA
    formulation computes them; ties (small integers) resolve to the first index."""
    p, n, w = arg_case(np.random.default_rng(9 + nc), 2, 5, 9, 6, nc)
    got = jax.jit(lambda *a: kernels.dispatch.maxproduct_arg(*a, nc=nc))(p, n, w)
    want = jax.jit(lambda *a: kernels.xla.maxproduct_arg(*a, nc=nc))(p, n, w)
    for g, x in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(x))
    host = kernels.cpu.maxproduct_arg_numpy(p, n, w, nc=nc)
    for g, x in zip(got, host):
        np.testing.assert_array_equal(np.asarray(g), x)


@pytest.mark.parametrize("nc", [False, True])
def test_maxproduct_arg_xla_chunks_match_host_loop(nc, monkeypatch):
    """The XLA arg-max split into many chunks over the contraction (ties across chunk borders
    keep the first index) equals the host loop."""
    monkeypatch.setattr(kernels.xla, "TROPICAL_CHUNK_ELEMENTS", 40)
    p, n, w = arg_case(np.random.default_rng(21 + nc), 1, 4, 11, 5, nc)
    got = kernels.xla.maxproduct_arg(jnp.asarray(p), jnp.asarray(n), jnp.asarray(w), nc=nc)
    for g, x in zip(got, kernels.cpu.maxproduct_arg_numpy(p, n, w, nc=nc)):
        np.testing.assert_array_equal(np.asarray(g), x)


def test_pointer_semiring_matches_fallback(force_kernel):
    """PointerMaxProduct's contraction (behind top_path) through the FFI equals the XLA path."""
    rng = np.random.default_rng(11)
    dims = (((1,), (1,)), ((), ()))
    p, n = maxproduct_value(rng, (4, 9))
    v = (
        PointerMaxProduct()
        .ones((4, 9), jnp.float32)
        ._replace(
            top_pos=jnp.asarray(p),
            top_neg=jnp.asarray(n),
            pos_ptr=jnp.arange(36, dtype=jnp.int32).reshape(4, 9) * 2,
            neg_ptr=jnp.arange(36, dtype=jnp.int32).reshape(4, 9) * 2 + 1,
            pos_w=jnp.asarray(rng.standard_normal((4, 9)), jnp.float32),
            neg_w=jnp.asarray(rng.standard_normal((4, 9)), jnp.float32),
        )
    )
    w = random_weights(rng, (7, 9))
    got = jax.jit(lambda v, w: PointerMaxProduct().dot_general(v, w, dims))(v, w)
    want = jax.jit(lambda v, w: PointerMaxProduct(kernel="xla").dot_general(v, w, dims))(v, w)
    for g, x in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(x))


def test_unsupported_dtype_is_an_error():
    """The handler reports a bad operand through XLA's error API (no silent garbage)."""
    p = jnp.ones((1, 2, 3), jnp.int32)
    w = jnp.ones((1, 3, 4), jnp.int32)
    with pytest.raises(Exception, match="operands must be float32 or float64"):
        jax.block_until_ready(jax.jit(kernels.ffi.maxproduct)(p, p, w))


def _mlp(x, w1, w2):
    return jnp.sum(jnp.tanh(jnp.tanh(x @ w1) @ w2))


@pytest.mark.parametrize("semiring", [js.MaxProduct(), js.MaxAbs()], ids=lambda s: s.name)
def test_semiring_gradients_vs_brute_force(semiring, force_kernel):
    """Through the FFI kernel, the semiring gradient equals the fold over every path."""
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.standard_normal(3), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32).at[0, 1].set(0.0)
    w2 = jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)
    check_all_semirings(_mlp, x, w1, w2, argnums=(0, 1, 2), semirings=[semiring])
    hlo = jax.jit(js.semiring_grad(_mlp, semiring, argnums=(0, 1, 2))).lower(x, w1, w2).as_text()
    assert "jaxpr_semiring_max" in hlo


def test_semiring_gradients_jit_vmap(force_kernel):
    """jit(vmap(semiring_grad)) through the FFI kernel equals the XLA kernel per example."""
    rng = np.random.default_rng(13)
    xs = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)
    got, want = (
        jax.jit(
            jax.vmap(
                js.semiring_grad(_mlp, js.MaxProduct(kernel=k), argnums=(0, 1)),
                in_axes=(0, None, None),
            )
        )(xs, w1, w2)
        for k in ("auto", "xla")
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_SHARD_MAP_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxpr_semiring as js
from jaxpr_semiring import kernels
kernels.dispatch.MIN_KERNEL_CANDIDATES = 0
assert kernels.describe()["cpu"] == "numba-ffi"
rng = np.random.default_rng(0)
w = jnp.asarray(rng.standard_normal((8, 5)), jnp.float32)
f = lambda x: jnp.sum(jnp.tanh(x @ w))
mesh = jax.make_mesh((2,), ("x",))
xs = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)
for S, leaf in ((js.MaxProduct(), lambda g: g.top_pos), (js.MaxAbs(), lambda g: g.log_abs)):
    each = jax.vmap(lambda x: leaf(js.semiring_grad(f, S)(x)))
    want = np.asarray(jax.jit(each)(xs))
    for vma in (True, False):
        g = jax.jit(jax.shard_map(each, mesh=mesh, in_specs=P("x"), out_specs=P("x"),
                                  check_vma=vma))
        sharded = jax.device_put(xs, NamedSharding(mesh, P("x")))
        np.testing.assert_array_equal(np.asarray(g(sharded)), want)
        assert "jaxpr_semiring_max" in g.lower(sharded).as_text()
print("ok")
"""


def test_shard_map_on_two_devices():
    """The FFI kernel inside ``jax.shard_map`` (with and without ``check_vma``) on two host
    devices equals the unsharded program (a subprocess: the device count is fixed at start)."""
    import os
    import subprocess
    import sys

    env = dict(
        os.environ,
        XLA_FLAGS=(
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip(),
    )
    out = subprocess.run(
        [sys.executable, "-c", _SHARD_MAP_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


_FIRST_USE_IN_TRACE_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxpr_semiring as js
from jaxpr_semiring import kernels
kernels.dispatch.MIN_KERNEL_CANDIDATES = 0
w = jnp.asarray(np.random.default_rng(0).standard_normal((8, 5)), jnp.float32)
f = lambda x: jnp.sum(jnp.tanh(x @ w))
mesh = jax.make_mesh((2,), ("x",))
each = jax.vmap(lambda x: js.semiring_grad(f, js.MaxProduct())(x).top_pos)
g = jax.jit(jax.shard_map(each, mesh=mesh, in_specs=P("x"), out_specs=P("x"), check_vma=False))
xs = jax.device_put(jnp.ones((4, 8)), NamedSharding(mesh, P("x")))
text = g.lower(xs).as_text()   # the FFI probe runs for the first time inside this trace
assert "jaxpr_semiring_max" in text and "callback" not in text, text[-2000:]
assert kernels.describe()["cpu"] == "numba-ffi"
np.testing.assert_array_equal(np.asarray(g(xs)), np.asarray(jax.jit(each)(jnp.ones((4, 8)))))
print("ok")
"""


def test_first_use_inside_a_sharded_trace_still_uses_the_ffi():
    """The FFI probe runs on first use, usually while a caller traces: it must not become
    part of that trace (it did, failed, and left the pure_callback fallback on for the
    process, which deadlocked sharded runs over 4 host devices)."""
    import os
    import subprocess
    import sys

    env = dict(
        os.environ,
        XLA_FLAGS=(
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip(),
    )
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_USE_IN_TRACE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


_REFUSED_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
import jaxpr_semiring as js
from jaxpr_semiring import kernels
from jaxpr_semiring.kernels import ffi_abi
ffi_abi.API_MAJOR = 99  # as if the installed jaxlib spoke another FFI API version
kernels.dispatch.MIN_KERNEL_CANDIDATES = 0
assert not kernels.ffi.available() and kernels.ffi.targets() == []
assert kernels.describe()["cpu"] == "numba-callback", kernels.describe()
w = jnp.asarray(np.random.default_rng(0).standard_normal((8, 5)), jnp.float32)
f = lambda x: jnp.sum(jnp.tanh(x @ w))
x = jnp.ones(8)
got = jax.jit(js.semiring_grad(f, js.MaxProduct()))(x)
want = jax.jit(js.semiring_grad(f, js.MaxProduct(kernel="xla")))(x)
np.testing.assert_array_equal(np.asarray(got.top_pos), np.asarray(want.top_pos))
print("ok")
"""


def test_refused_handshake_falls_back():
    """A call frame of another FFI API version is refused by the handler (an error, not a
    read): the probe in ``available()`` fails and the ``pure_callback`` loop runs instead."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REFUSED_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("nc", [False, True])
def test_parallel_loops_equal_serial_and_xla(nc, force_kernel, monkeypatch):
    """The threaded loops (several column blocks and row chunks per task split, ties and 0̄
    entries) give what the serial loops and the XLA formulation give, bit for bit."""
    loops = kernels.cpu.module()
    p, n, w = arg_case(np.random.default_rng(21 + nc), 3, 7, 40, 300, nc)
    with np.errstate(divide="ignore"):  # log 0 = −inf; 0̄ entries stay −inf
        la = np.where(np.isinf(p), -np.inf, np.log(np.abs(p))).astype(np.float32)
    s = np.where(p < 0, -1.0, 1.0).astype(np.float32)
    run = jax.jit(
        lambda *a: (
            kernels.dispatch.maxproduct_arg(*a[:3], nc=nc),
            kernels.dispatch.maxabs(*a[3:], nc=nc),
        )
    )
    want = jax.jit(
        lambda *a: (kernels.xla.maxproduct_arg(*a[:3], nc=nc), kernels.xla.maxabs(*a[3:], nc=nc))
    )(p, n, w, la, s, w)
    for threshold in (0, 1 << 62):  # every call threaded / none
        monkeypatch.setattr(loops, "PARALLEL_MIN_CANDIDATES", threshold)
        got = run(p, n, w, la, s, w)
        for g, x in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(x))


def _lowrank_case(rng, R=3, A=40, N=300, b=2, C=2, dtype=np.float32):
    """Small-integer factors (exact products), 20 % of the rows' entries 0̄, owners with −1 and
    probes in every column block."""
    p = rng.integers(-3, 4, size=(R, A)).astype(dtype)
    n = p - rng.integers(0, 2, size=p.shape)
    dead = rng.random(p.shape) < 0.2
    p[dead], n[dead] = -np.inf, np.inf
    U = rng.integers(-3, 4, size=(b, R, A)).astype(dtype)
    V = rng.integers(-3, 4, size=(b, R, N)).astype(dtype)
    G = rng.integers(-3, 4, size=(C, R, A)).astype(dtype)
    owner = rng.integers(-1, N, size=(C, R, A)).astype(np.int32)
    return p, n, U, V, G, owner


def _lowrank_reference(p, n, U, V, G, owner):
    """The weights stored ([R, A, N], the block rule's fallback order of sums) through the XLA
    contraction."""
    J = np.einsum("irk,irj->rkj", U, V).astype(p.dtype)
    N = V.shape[-1]
    for c in range(G.shape[0]):
        hit = owner[c][:, :, None] == np.arange(N)
        J = np.where(hit, G[c][:, :, None] + J, J)
    return kernels.xla.maxproduct(p[:, None], n[:, None], J)


@pytest.mark.parametrize("threaded", [False, True])
def test_lowrank_loop_equals_stored_weights(threaded, force_kernel, monkeypatch):
    """Weights built from factors inside the loop == the same weights stored and contracted by
    XLA (several column blocks, 0̄ rows, owners outside the row); float64 too; under vmap with
    factors batched or shared."""
    from conftest import x64

    monkeypatch.setattr(kernels.cpu.module(), "PARALLEL_MIN_CANDIDATES", 0 if threaded else 1 << 62)
    rng = np.random.default_rng(31 + threaded)
    case = _lowrank_case(rng)
    got = jax.jit(kernels.lowrank.maxproduct)(*case)
    for g, x in zip(got, _lowrank_reference(*case)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(x)[:, 0])
    cases = [_lowrank_case(rng) for _ in range(2)]
    stacked = [np.stack(a) for a in zip(*cases)]
    both = jax.jit(jax.vmap(kernels.lowrank.maxproduct))(*stacked)
    shared = jax.jit(jax.vmap(kernels.lowrank.maxproduct, in_axes=(0, 0) + (None,) * 4))(
        *stacked[:2], *cases[0][2:]
    )
    for i in range(2):
        for g, x in zip(both, _lowrank_reference(*cases[i])):
            np.testing.assert_array_equal(np.asarray(g[i]), np.asarray(x)[:, 0])
        for g, x in zip(shared, _lowrank_reference(cases[i][0], cases[i][1], *cases[0][2:])):
            np.testing.assert_array_equal(np.asarray(g[i]), np.asarray(x)[:, 0])
    with x64():
        case = _lowrank_case(rng, dtype=np.float64)
        got = jax.jit(kernels.lowrank.maxproduct)(*case)
        assert got[0].dtype == jnp.float64
        for g, x in zip(got, _lowrank_reference(*case)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(x)[:, 0])
