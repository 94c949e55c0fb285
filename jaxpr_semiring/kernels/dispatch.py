"""Which max-type (tropical) contraction runs: an explicit setting, resolved per backend inside
one jitted
program (``jax.lax.platform_dependent``).

The max-type semirings (``MaxProduct``, ``MaxAbs``, and the pointer max-product behind
``top_path``) take ``kernel=`` with one of :data:`KERNELS`:

* ``"auto"`` (default): the compiled CPU loop on CPU when numba is installed, XLA elsewhere;
* ``"xla"``: the chunked XLA broadcast-reduce everywhere (:mod:`.xla`);
* ``"numba"``: the compiled CPU loop on CPU (an error if numba is missing), XLA elsewhere;
* ``"pallas"``: the Pallas kernel on GPU for float32 (:mod:`.gpu`), the CPU loop on CPU.

On CPU the loop is called zero-copy through XLA's FFI (``"numba-ffi"``, :mod:`.ffi`), or, where
that cannot be registered, behind ``jax.pure_callback`` (``"numba-callback"``, which copies its
operands). Under ``jit`` over operands sharded on a mesh with Explicit axes (outside
``shard_map``, whose manual axes the FFI loop serves per device) the CPU choice is the XLA
contraction, which XLA partitions (a custom call has no sharding rule); and inside a
``shard_map`` that checks types (``check_vma``) the ``pure_callback`` loop gives way to it,
since JAX types that loop's results device-invariant (:func:`.ffi.placement`).
:func:`implementations` says what runs where for a setting, :func:`describe` also what runs
in those two places.

>>> implementations("xla")["cpu"]
'xla'
"""

from __future__ import annotations

import numpy as np
from jax import lax
from jax.extend import backend

from . import cpu, ffi, gpu, xla

__all__ = [
    "KERNELS",
    "MIN_KERNEL_CANDIDATES",
    "check_kernel",
    "implementations",
    "describe",
    "maxproduct",
    "maxproduct_arg",
    "maxabs",
    "maxproduct_dot",
    "maxabs_dot",
]

KERNELS = ("auto", "xla", "numba", "pallas")

# Contractions with fewer candidate products (B·M·C·N) stay in XLA: its fused loop is as fast
# as a custom call's fixed cost for them.
MIN_KERNEL_CANDIDATES = 1 << 14


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is a known setting, else a ValueError naming the choices."""
    if kernel not in KERNELS:
        raise ValueError(
            f"unknown kernel {kernel!r}: choose one of {', '.join(map(repr, KERNELS))}."
        )
    if kernel == "numba" and not cpu.available():
        raise ValueError(
            "kernel='numba' needs numba: pip install 'jaxpr_semiring[cpu]' (or use "
            "kernel='auto', which falls back to XLA)."
        )
    return kernel


def implementations(kernel: str = "auto", dtype=np.float32) -> dict:
    """What runs for ``kernel`` on each backend: ``{"cpu": ..., "gpu": ..., "tpu": ...}``, each
    ``"numba-ffi"`` (zero-copy), ``"numba-callback"`` (``pure_callback``), ``"pallas"`` or
    ``"xla"``. Contractions under ``MIN_KERNEL_CANDIDATES`` candidates always run in XLA."""
    check_kernel(kernel)
    if kernel == "xla" or not cpu.available():
        on_cpu = "xla"
    else:
        on_cpu = "numba-ffi" if ffi.available() else "numba-callback"
    on_gpu = "pallas" if kernel == "pallas" and np.dtype(dtype) == np.float32 else "xla"
    return {"cpu": on_cpu, "gpu": on_gpu, "tpu": "xla"}


def describe(kernel: str = "auto") -> dict:
    """:func:`implementations` plus library versions (for benchmark reports), and what runs on
    CPU for sharded operands: ``cpu_shard_map`` inside ``shard_map`` (the ``numba-ffi`` loop on
    each device's block; ``xla`` instead of ``numba-callback`` where ``check_vma`` types the
    operands as varying), ``cpu_explicit_sharding`` under ``jit`` over operands sharded on
    Explicit mesh axes (always ``xla``, which XLA partitions).

    >>> d = describe("xla"); d["cpu_shard_map"], d["cpu_explicit_sharding"]
    ('xla', 'xla')
    """
    impl = implementations(kernel)
    return dict(
        kernel=kernel,
        numba=cpu.version(),
        **impl,
        cpu_shard_map="xla" if impl["cpu"] == "numba-callback" else impl["cpu"],
        cpu_explicit_sharding="xla",
    )


def _dispatch(kernel, dtype, size, fns, *args):
    """Run ``fns[impl]`` chosen per backend; ``fns`` maps implementation names to functions.

    When CPU is the only backend initialized, the CPU choice is emitted alone: a
    ``platform_dependent`` would also trace and lower the XLA fallback, ~15 % of the compile
    time of a MaxProduct backward pass.
    """
    if size < MIN_KERNEL_CANDIDATES:
        return fns["xla"](*args)
    impl = implementations(kernel, dtype)
    if impl["cpu"] != "xla":
        _, varying, spread = ffi.placement(*args)
        if spread or (varying and impl["cpu"] == "numba-callback"):  # see ffi.placement
            impl = dict(impl, cpu="xla")
    branches = {
        platform: fns[impl[name]]
        for platform, name in (("cpu", "cpu"), ("cuda", "gpu"))
        if impl[name] != "xla" and impl[name] in fns
    }
    if not branches:
        return fns["xla"](*args)
    if set(backend.backends()) == {"cpu"}:
        return branches.get("cpu", fns["xla"])(*args)
    return lax.platform_dependent(*args, default=fns["xla"], **branches)


def _size(v, w, nc):
    return v.shape[0] * v.shape[1] * v.shape[2] * (w.shape[1] if nc else w.shape[2])


def maxproduct(p, n, w, nc=False, kernel: str = "auto"):
    """⊕-contraction of MaxProduct values: p, n [B, M, C], w [B, C, N] ([B, N, C] if ``nc``) →
    (top_pos, top_neg) [B, M, N]."""

    def pallas(p, n, w):
        return tuple(gpu.maxproduct(p, n, w.swapaxes(1, 2) if nc else w))

    fns = {
        "xla": lambda *a: xla.maxproduct(*a, nc=nc),
        "numba-ffi": lambda *a: ffi.maxproduct(*a, nc=nc),
        "numba-callback": lambda *a: cpu.maxproduct(*a, nc=nc),
        "pallas": pallas,
    }
    return _dispatch(kernel, p.dtype, _size(p, w, nc), fns, p, n, w)


def maxproduct_arg(p, n, w, nc=False, kernel: str = "auto"):
    """:func:`maxproduct` plus per chain the arg-max of each output (2·c + chain, −1 for none)
    and the winning candidate's edge weight: (top_pos, top_neg, arg_pos, arg_neg, w_pos,
    w_neg)."""
    fns = {
        "xla": lambda *a: xla.maxproduct_arg(*a, nc=nc),
        "numba-ffi": lambda *a: ffi.maxproduct_arg(*a, nc=nc),
        "numba-callback": lambda *a: cpu.maxproduct_arg(*a, nc=nc),
    }
    return _dispatch(kernel, p.dtype, _size(p, w, nc), fns, p, n, w)


def maxabs(la, s, w, nc=False, kernel: str = "auto"):
    """⊕-contraction of MaxAbs values: la, s [B, M, C] with raw weights w [B, C, N] ([B, N, C]
    if ``nc``) → (log_abs, sign) [B, M, N]."""
    fns = {
        "xla": lambda *a: xla.maxabs(*a, nc=nc),
        "numba-ffi": lambda *a: ffi.maxabs(*a, nc=nc),
        "numba-callback": lambda *a: cpu.maxabs(*a, nc=nc),
    }
    return _dispatch(kernel, la.dtype, _size(la, w, nc), fns, la, s, w)


def maxproduct_dot(p, n, w, dimension_numbers, kernel: str = "auto"):
    """:func:`maxproduct` for operands in ``lax.dot_general`` layout: (top_pos, top_neg) shaped
    like ``lax.dot_general(p, w, dimension_numbers)``."""
    canon_v, w3, nc, out_shape = xla.layout(p, w.astype(p.dtype), dimension_numbers)
    out = maxproduct(canon_v(p), canon_v(n), w3, nc, kernel)
    return tuple(x.reshape(out_shape) for x in out)


def maxabs_dot(la, s, w, dimension_numbers, kernel: str = "auto"):
    """:func:`maxabs` for operands in ``lax.dot_general`` layout: (log_abs, sign)."""
    canon_v, w3, nc, out_shape = xla.layout(la, w.astype(la.dtype), dimension_numbers)
    out = maxabs(canon_v(la), canon_v(s), w3, nc, kernel)
    return tuple(x.reshape(out_shape) for x in out)
