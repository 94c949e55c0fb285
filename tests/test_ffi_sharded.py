"""The FFI kernel on four host devices (issue 26): inside ``jax.shard_map`` and under ``jit``
over sharded inputs it gives what the XLA contraction gives, never another device's block.

One subprocess (the device count is fixed when JAX starts) runs every check and reports each
by name; the tests below read its report. Every contraction is forced through the kernel
(``MIN_KERNEL_CANDIDATES = 0``), the batched one is large enough for the threaded loop (the
four devices' calls run at once). The XLA contraction is the reference: inside ``shard_map``
the same sharded program with ``kernel="xla"`` (bit for bit), and the unsharded program
(contractions bit for bit; a full ``semiring_grad`` to float32 rounding, since XLA's own
forward matmul rounds differently for a per-device batch of 1 or 2 than for the whole batch:
that alone made 23 of 32 elements of ``test_ffi``'s shard_map check differ on 4 devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxpr_semiring import kernels

pytestmark = pytest.mark.skipif(
    not kernels.ffi.available(),
    reason="the FFI kernel needs numba (pip install 'jaxpr_semiring[cpu]') and jax.ffi",
)

_SCRIPT = r"""
import json, traceback
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxpr_semiring as js
from jaxpr_semiring import kernels
from jaxpr_semiring import semirings as S

assert jax.device_count() == 4, jax.devices()
kernels.dispatch.MIN_KERNEL_CANDIDATES = 0
REPORT = {}
mesh = jax.make_mesh((4,), ("x",))
rng = np.random.default_rng(26)


def check(name):
    def run(fn):
        try:
            fn()
            REPORT[name] = "ok"
        except BaseException:
            REPORT[name] = traceback.format_exc()[-3000:]
    return run


def same(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def put(x, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


def mp(kernel, dims):
    return lambda p, n, w: tuple(S.MaxProduct(kernel=kernel).dot_general(
        S.MaxProductValue(p, n), w, dims))


def ma(kernel, dims):
    return lambda la, s, w: tuple(S.MaxAbs(kernel=kernel).dot_general(
        S.MaxAbsValue(la, s), w, dims))


def value(shape):
    p = rng.standard_normal(shape).astype(np.float32)
    n = p - np.abs(rng.standard_normal(shape)).astype(np.float32)
    dead = rng.random(shape) < 0.2   # 0-bar entries
    return np.where(dead, -np.inf, p).astype(np.float32), np.where(dead, np.inf,
    n).astype(np.float32)


BATCHED = (((2,), (1,)), ((0,), (0,)))
SHARED = (((1,), (0,)), ((), ()))
SHARED_NC = (((1,), (1,)), ((), ()))   # weights stored [N, C]: read in place
CASES = {  # name: (value shape, weight shape, dims, value spec, weight spec)
    "batched": ((8, 64, 128), (8, 128, 64), BATCHED, P("x"), P("x")),   # 1M candidates/device
    "shared": ((32, 48), (48, 40), SHARED, P("x"), P()),
    "shared_nc": ((32, 48), (40, 48), SHARED_NC, P("x"), P()),
}
DATA = {}
for name, (vs, ws, dims, pv, pw) in CASES.items():
    p, n = value(vs)
    DATA[name] = (p, n, rng.standard_normal(ws).astype(np.float32))


@check("first_use_in_eager_shard_map")
def _():
    # the FFI's one-time probe runs on first use, here inside an eager shard_map: it must not
    # fail there (it did: every later call then went through pure_callback)
    p, n, w = DATA["shared"]
    _, _, dims, pv, pw = CASES["shared"]
    got = jax.shard_map(mp("auto", dims), mesh=mesh, in_specs=(pv, pv, pw), out_specs=pv)(
        put(p, pv), put(n, pv), put(w, pw))
    same(got, jax.jit(mp("xla", dims))(p, n, w))
    d = kernels.describe()
    assert d["cpu"] == "numba-ffi", d
    assert (d.get("cpu_shard_map"), d.get("cpu_explicit_sharding")) == ("numba-ffi", "xla"), d


def ffi_in(lowered):
    text = lowered.as_text()
    assert "jaxpr_semiring_max" in text, ("no FFI call in the program", kernels.describe())


for name, (vs, ws, dims, pv, pw) in CASES.items():
    p, n, w = DATA[name]
    args = (put(p, pv), put(n, pv), put(w, pw))
    want = jax.jit(mp("xla", dims))(p, n, w)

    @check(f"shard_map_{name}")
    def _():
        for vma in (True, False):
            fns = {k: jax.jit(jax.shard_map(mp(k, dims), mesh=mesh, in_specs=(pv, pv, pw),
                                            out_specs=pv, check_vma=vma)) for k in ("auto", "xla")}
            ffi_in(fns["auto"].lower(*args))
            got = fns["auto"](*args)
            same(got, fns["xla"](*args))
            same(got, want)
            for _ in range(3):   # the devices' threaded loops run at once: every time the same
                same(fns["auto"](*args), want)

    @check(f"jit_sharded_{name}")
    def _():
        got = jax.jit(mp("auto", dims))(*args)
        same(got, jax.jit(mp("xla", dims))(*args))
        same(got, want)

    @check(f"maxabs_shard_map_{name}")
    def _():
        la, s = p, np.where(rng.random(p.shape) < 0.5, -1.0, 1.0).astype(np.float32)
        ref = jax.jit(ma("xla", dims))(la, s, w)
        sargs = (put(la, pv), put(s, pv), put(w, pw))
        for fn in (jax.jit(jax.shard_map(ma("auto", dims), mesh=mesh, in_specs=(pv, pv, pw),
                                         out_specs=pv)), jax.jit(ma("auto", dims))):
            got = fn(*sargs)   # log|w| by numba's log and XLA's: within 1 ulp
            np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref[0]), rtol=1e-6, atol=1e-6)
            same(got[1], ref[1])


@check("varying_result_is_not_taken_as_replicated")
def _():
    # out_specs=P() claims the result is the same on every device: refused for the XLA
    # contraction, and for the kernel (its result was typed device-invariant and shard_map
    # returned device 0's block as the whole result)
    p, n, w = DATA["shared"]
    _, _, dims, pv, pw = CASES["shared"]
    args = (put(p, pv), put(n, pv), put(w, pw))
    for k in ("xla", "auto"):
        g = jax.jit(jax.shard_map(mp(k, dims), mesh=mesh, in_specs=(pv, pv, pw), out_specs=P()))
        try:
            out = g(*args)
        except ValueError as e:
            assert "out_specs" in str(e), e
        else:
            raise AssertionError(f"kernel={k}: out_specs=P() accepted, shape {out[0].shape}")


W1 = jnp.asarray(rng.standard_normal((16, 32)) / 4, jnp.float32)
W2 = jnp.asarray(rng.standard_normal((32, 24)) / 4, jnp.float32)
XS = jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)


def mlp(x):
    return jnp.sum(jnp.tanh(jnp.tanh(x @ W1) @ W2))


def per_example(kernel):
    return jax.vmap(lambda x: js.semiring_grad(mlp, js.MaxProduct(kernel=kernel))(x))


def whole_batch(kernel):
    return js.semiring_grad(mlp, js.MaxProduct(kernel=kernel))


def close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@check("mlp_semiring_grad_shard_map")
def _():
    xs = put(XS, P("x"))
    for make in (per_example, whole_batch):
        want = jax.jit(make("xla"))(XS)
        for vma in (True, False):
            fns = {k: jax.jit(jax.shard_map(make(k), mesh=mesh, in_specs=P("x"),
                                            out_specs=P("x"), check_vma=vma))
                   for k in ("auto", "xla")}
            ffi_in(fns["auto"].lower(xs))
            got = fns["auto"](xs)
            same(got, fns["xla"](xs))   # the same sharded program: bit for bit
            close(got, want)


@check("mlp_semiring_grad_jit_sharded")
def _():
    # jit over a batch sharded on an Explicit axis: the XLA contraction runs (vmap of the FFI
    # call failed to trace there), partitioned by XLA
    xs = put(XS, P("x"))
    for make in (per_example, whole_batch):
        got = jax.jit(make("auto"))(xs)
        same(got, jax.jit(make("xla"))(xs))
        close(got, jax.jit(make("xla"))(XS))


@check("callback_fallback_in_shard_map")
def _():
    # without the FFI the pure_callback loop would run; JAX types its results device-invariant,
    # so inside a type-checked shard_map the XLA contraction runs instead
    kernels.ffi.available = lambda: False
    assert kernels.describe()["cpu"] == "numba-callback"
    assert kernels.describe()["cpu_shard_map"] == "xla"
    p, n, w = DATA["shared"]
    _, _, dims, pv, pw = CASES["shared"]
    args = (put(p, pv), put(n, pv), put(w, pw))
    g = jax.jit(jax.shard_map(mp("auto", dims), mesh=mesh, in_specs=(pv, pv, pw), out_specs=pv))
    assert "callback" not in g.lower(*args).as_text()
    same(g(*args), jax.jit(mp("xla", dims))(p, n, w))
    try:
        jax.jit(jax.shard_map(mp("auto", dims), mesh=mesh, in_specs=(pv, pv, pw),
                              out_specs=P()))(*args)
    except ValueError as e:
        assert "out_specs" in str(e), e
    else:
        raise AssertionError("out_specs=P() accepted")


print("REPORT " + json.dumps(REPORT))
"""


@pytest.fixture(scope="module")
def report():
    env = dict(
        os.environ,
        XLA_FLAGS=(
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
        ).strip(),
    )
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


def _ok(report, *names):
    for name in names:
        assert report.get(name) == "ok", f"{name}:\n{report.get(name, 'not run')}"


def test_first_use_inside_an_eager_shard_map_keeps_the_ffi(report):
    """The FFI probe runs on first use; inside an eager ``shard_map`` it failed and left the
    ``pure_callback`` fallback on for the process. ``describe()`` names what runs where."""
    _ok(report, "first_use_in_eager_shard_map")


@pytest.mark.parametrize("case", ["batched", "shared", "shared_nc"])
def test_shard_map_equals_xla(report, case):
    """Inside ``jit(shard_map)`` (with and without ``check_vma``) the FFI call runs on each
    device's block and equals the XLA contraction, sharded and unsharded, bit for bit; the
    batched case runs the four devices' threaded loops at once, repeatedly."""
    _ok(report, f"shard_map_{case}")


@pytest.mark.parametrize("case", ["batched", "shared", "shared_nc"])
def test_jit_with_sharded_inputs_equals_xla(report, case):
    """``jit`` over NamedSharding inputs (Explicit axes) gives the XLA contraction's result."""
    _ok(report, f"jit_sharded_{case}")


@pytest.mark.parametrize("case", ["batched", "shared", "shared_nc"])
def test_maxabs_sharded(report, case):
    _ok(report, f"maxabs_shard_map_{case}")


def test_kernel_result_varies_per_device(report):
    """The kernel's result inside ``shard_map`` is typed as varying over the mesh axis, as the
    XLA contraction's is: ``out_specs=P()`` is refused, never answered with device 0's block."""
    _ok(report, "varying_result_is_not_taken_as_replicated")


def test_callback_fallback_gives_way_to_xla_in_shard_map(report):
    """Where the FFI is unavailable, the ``pure_callback`` loop (whose results JAX types
    device-invariant) does not run inside a type-checked ``shard_map``: XLA's contraction does."""
    _ok(report, "callback_fallback_in_shard_map")


def test_mlp_semiring_grad_sharded_batch(report):
    """A full MaxProduct ``semiring_grad`` of a two-layer MLP over a batch sharded on 4 devices
    (per example under ``vmap``, and over the whole batch): inside ``shard_map`` equal to the
    XLA kernel's sharded program bit for bit, and to the unsharded one to float32 rounding."""
    _ok(report, "mlp_semiring_grad_shard_map")


def test_mlp_semiring_grad_jit_sharded_batch(report):
    """The same under ``jit`` over the sharded batch (it failed to trace with the FFI call)."""
    _ok(report, "mlp_semiring_grad_jit_sharded")
