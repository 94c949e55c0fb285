"""Zero-copy calls from a jitted XLA CPU program into the numba loops, through XLA's FFI.

``jax.pure_callback`` copies every operand on each call (47 ms for BERT's 62 MB vocabulary
matrix). An FFI custom call instead hands the handler XLA's own buffers. The handler registered
here is a small ``ctypes`` trampoline: it answers XLA's metadata query (which FFI API version
the handler speaks: the installed jaxlib's own), then passes the address of the
``XLA_FFI_CallFrame`` to a runner: numba code reads the buffers' data pointers and dimensions
straight from the frame and views them as arrays, and the loop runs on them in place: on
XLA's calling thread for small calls (the runner is one numba function), on numba's threads
for large ones (the runner is Python calling the parallel loop: called from numba code that
loop ran on one thread, :mod:`.numba_loops`). The trampoline holds the GIL, but a
threaded loop releases it while its threads run: with several devices in one process (a
``shard_map`` over host devices) their loops run at once, which numba's ``omp`` and ``tbb``
threading layers allow (its ``workqueue`` layer aborts the process instead).

Inside ``shard_map`` each device's call sees its own block, and its results are typed as
varying over the manual mesh axes the operands vary over (:func:`placement`), as XLA's
contraction's are; under ``jit`` over operands sharded on Explicit mesh axes the dispatch
(:mod:`.dispatch`) runs the XLA contraction instead.

:func:`available` says whether this path works here (numba installed, jax with ``jax.ffi``,
and one probe call through it gives the right result; the handler refuses a call frame of
another FFI API major version with an error rather than read it); :mod:`.dispatch` falls back
to ``pure_callback`` and then XLA otherwise.

>>> import jax.numpy as jnp
>>> if available():
...     p = jnp.array([[[1.0, -2.0]]]); w = jnp.array([[[3.0], [4.0]]])
...     assert [float(x[0, 0, 0]) for x in maxproduct(p, p, w)] == [3.0, -8.0]
"""

from __future__ import annotations

import ctypes
import threading

import jax
import jax.numpy as jnp
import numpy as np

from . import cpu, ffi_abi
from .ffi_abi import CallFrame, ErrorCreateArgs, ExtensionBase, MetadataExtension

__all__ = [
    "available",
    "targets",
    "placement",
    "maxproduct",
    "maxproduct_arg",
    "maxabs",
    "maxproduct_lowrank",
]

_PREFIX = "jaxpr_semiring_"
_STATE: dict = {}  # "ok": bool once registration was tried; "callbacks": keeps them alive


def _error(frame, code, message):
    """An XLA_FFI_Error* made with the runtime's own constructor."""
    api = CallFrame.from_address(frame).api.contents
    args = ErrorCreateArgs(ctypes.sizeof(ErrorCreateArgs), None, message.encode(), code)
    return api.error_create(ctypes.byref(args))


def _trampoline(runs, candidates, parallel, name):
    def handler(frame):
        try:
            call = CallFrame.from_address(frame)
            if call.extension_start:
                ext = ExtensionBase.from_address(call.extension_start)
                if ext.type == ffi_abi.METADATA_EXTENSION:  # XLA asks which API version we speak
                    md = MetadataExtension.from_address(call.extension_start).metadata.contents
                    version = call.api.contents.api_version
                    md.api_version.major_version = version.major_version
                    md.api_version.minor_version = version.minor_version
                    md.traits = 0
                    return None
            version = call.api.contents.api_version.major_version
            if version != ffi_abi.API_MAJOR or call.struct_size < ctypes.sizeof(CallFrame):
                return _error(
                    frame,
                    ffi_abi.ERROR_INTERNAL,
                    f"{name}: XLA FFI API version {version} is not the "
                    f"{ffi_abi.API_MAJOR} this handler reads",
                )
            if runs[parallel(candidates(frame))](frame) != 0:
                return _error(
                    frame,
                    ffi_abi.ERROR_INVALID_ARGUMENT,
                    f"{name}: operands must be float32 or float64",
                )
            return None
        except Exception as e:  # never let an exception pass silently into XLA
            return _error(frame, ffi_abi.ERROR_INTERNAL, f"{name}: {type(e).__name__}: {e}")

    return ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(handler)


def _register():
    numba_loops = cpu.module()
    callbacks = {}
    for name, run in numba_loops.RUNNERS.items():
        cb = _trampoline(run, numba_loops.candidates, numba_loops.parallel, _PREFIX + name)
        jax.ffi.register_ffi_target(_PREFIX + name, jax.ffi.pycapsule(cb), platform="cpu")
        callbacks[name] = cb
    return callbacks


def _probe() -> bool:
    """One small call through the registered target on the CPU device, checked against its
    known result: the handshake and the buffer layout work with this jaxlib.

    It usually runs while a caller is tracing (the first contraction of a jitted or
    ``shard_map``-ped function). It must not become part of that trace (which failed, and
    silently fell back to ``pure_callback`` for the process): it runs on a thread of its own,
    where JAX's (thread-local) trace state is empty. ``ensure_compile_time_eval`` was not
    enough: an eager ``shard_map`` refuses its ``device_put``."""

    def run(result):
        try:
            cpu_device = jax.devices("cpu")[0]
            p, w = (
                jax.device_put(np.array(a, np.float32), cpu_device)
                for a in ([[[1.0, -2.0]]], [[[3.0], [4.0]]])
            )
            out = jax.jit(maxproduct).lower(p, p, w).compile()(p, p, w)
            result.append([float(x[0, 0, 0]) for x in out] == [3.0, -8.0])
        except Exception:  # an incompatible jaxlib: the pure_callback fallback runs
            result.append(False)

    result: list = []
    thread = threading.Thread(target=run, args=(result,), name="jaxpr_semiring-ffi-probe")
    thread.start()
    thread.join()
    return result == [True]


def available() -> bool:
    """Whether the numba loops can be called through XLA's FFI here: registers them and runs
    one probe call, once; False (the ``pure_callback`` fallback runs) if either fails."""
    if "ok" not in _STATE:
        _STATE["ok"] = False
        if cpu.available() and hasattr(jax, "ffi") and hasattr(jax.ffi, "ffi_call"):
            try:
                _STATE["callbacks"] = _register()
                _STATE["ok"] = True  # the probe's own call checks this
                _STATE["ok"] = _probe()
            except Exception:  # an incompatible jaxlib: the pure_callback fallback runs
                _STATE["ok"] = False
    return _STATE["ok"]


def targets() -> list[str]:
    """The registered FFI target names (empty when :func:`available` is false)."""
    return [_PREFIX + n for n in _STATE.get("callbacks", {})] if available() else []


def placement(*operands):
    """``(result, varying, spread)``: what JAX's types say about where a host call's
    ``operands`` live. The one place in the kernels that reads it, and JAX-version specific:
    ``aval.mat.varying``, ``ShapeDtypeStruct(manual_axis_type=)`` and
    ``aval.sharding.mesh.axis_types`` as in jax 0.10 to 0.12 (older releases spelled the
    first two ``aval.vma`` and ``vma=``).

    * ``result(shape, dtype)``: the ``ShapeDtypeStruct`` of an FFI call's result that varies
      over every manual (``shard_map``) mesh axis some operand varies over, as XLA's own
      contraction's does. The call computes on each device's own block; typed device-invariant
      (what a bare ``ShapeDtypeStruct`` says), its result let ``shard_map`` take one device's
      block for all (``out_specs=P()`` accepted it silently; the XLA contraction's is refused).
    * ``varying``: whether some operand varies over a manual mesh axis. ``pure_callback``
      types its results from shape and dtype alone, so the dispatch does not use it there.
    * ``spread``: whether an operand's type places it on a mesh with Explicit axes, outside
      ``shard_map``'s manual ones (``jit`` over arrays sharded on a ``jax.make_mesh`` mesh). A
      custom call has no sharding rule: XLA gathers every operand to each device, and ``vmap``
      over an Explicit axis fails to trace (ffi_call's batching rule drops that axis from its
      results' type). The dispatch runs the XLA contraction there (:func:`.dispatch.describe`
      says so). Auto axes leave no trace in the types; XLA gathers the operands, correctly.

    >>> result, varying, spread = placement(np.ones((2, 3)))
    >>> result((2, 4), np.float32).shape, varying, spread
    ((2, 4), False, False)
    """
    avals = [jax.typeof(x) for x in operands]
    varying = [a for a in avals if getattr(a, "mat", None) is not None and a.mat.varying]
    kw = {}
    if varying:  # the type names the (manual) mesh of its varying axes
        kw = dict(
            sharding=jax.sharding.NamedSharding(
                varying[0].sharding.mesh, jax.sharding.PartitionSpec()
            ),
            manual_axis_type=type(varying[0].mat)(
                varying=frozenset().union(*(a.mat.varying for a in varying))
            ),
        )
    explicit = jax.sharding.AxisType.Explicit
    spread = any(
        size > 1 and kind == explicit
        for a in avals
        if getattr(a, "sharding", None) is not None
        for size, kind in zip(a.sharding.mesh.axis_sizes, a.sharding.mesh.axis_types)
    )
    return (lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, **kw)), bool(varying), spread


def _call(name, outs, *args, nc):
    available()
    result = placement(*args)[0]  # per-device results vary like the operands
    specs = tuple(result(s, d) for s, d in outs)
    return jax.ffi.ffi_call(_PREFIX + name, specs, vmap_method="expand_dims")(
        *args, nc=np.int32(bool(nc))
    )


def _out_shape(v, w, nc):
    return v.shape[:-1] + (w.shape[-2] if nc else w.shape[-1],)


def maxproduct(p, n, w, nc=False):
    """MaxProduct contraction: p, n [B, M, C] with w [B, C, N] ([B, N, C] if ``nc``) →
    (top_pos, top_neg) [B, M, N]."""
    shape = _out_shape(p, w, nc)
    return _call("maxproduct", [(shape, p.dtype)] * 2, p, n, w, nc=nc)


def maxproduct_arg(p, n, w, nc=False):
    """:func:`maxproduct` plus per output the arg-max (2·c + chain, −1 for none) and the
    winning candidate's edge weight, per chain."""
    shape = _out_shape(p, w, nc)
    return _call(
        "maxproduct_arg",
        [(shape, p.dtype)] * 2 + [(shape, np.int32)] * 2 + [(shape, p.dtype)] * 2,
        p,
        n,
        w,
        nc=nc,
    )


def maxabs(la, s, w, nc=False):
    """MaxAbs contraction (raw weights ``w``): → (log_abs, sign) [B, M, N]."""
    return _call("maxabs", [(_out_shape(la, w, nc), la.dtype)] * 2, la, s, w, nc=nc)


def _flat(x, dtype):
    return x.astype(dtype).reshape(x.shape[0], -1)


def maxproduct_lowrank(p, n, U, V, G, owner):
    """MaxProduct contraction with weights given by factors, never stored: p, n [R, A]; weight
    of row r, probe j, output k = Σ_i U[i, r, k]·V[i, r, j] + Σ_c [owner[c, r, k] = j]·G[c, r, k];
    U [b, R, A], V [b, R, N], G and owner (int32) [C, R, A] → (top_pos, top_neg) [R, N]."""
    available()
    if G.shape[0] == 0:  # no sparse entries: one that no probe owns (zero-size buffers divide by 0)
        G, owner = jnp.zeros((1,) + p.shape, p.dtype), jnp.full((1,) + p.shape, -1, jnp.int32)
    args = (p, n, _flat(U, p.dtype), _flat(V, p.dtype), _flat(G, p.dtype), _flat(owner, np.int32))
    spec = placement(*args)[0]((p.shape[0], V.shape[-1]), p.dtype)
    return jax.ffi.ffi_call(
        _PREFIX + "maxproduct_lowrank", (spec, spec), vmap_method="broadcast_all"
    )(*args)
