"""Which tropical contraction runs: an explicit setting, resolved per backend inside one jitted
program (``jax.lax.platform_dependent``).

The max-type semirings (``MaxProduct``, ``MaxAbs``, and the pointer max-product behind
``top_path``) take ``kernel=`` with one of :data:`KERNELS`:

* ``"auto"`` (default): the compiled CPU loop on CPU when numba is installed, XLA elsewhere;
* ``"xla"``: the chunked XLA broadcast-reduce everywhere (:mod:`.xla`);
* ``"numba"``: the compiled CPU loop on CPU (an error if numba is missing), XLA elsewhere;
* ``"pallas"``: the Pallas kernel on GPU for float32 (:mod:`.gpu`), the CPU loop on CPU.

:func:`implementations` says what runs where for a setting.

>>> implementations("xla")["cpu"]
'xla'
"""
from __future__ import annotations

import numpy as np
from jax import lax

from . import cpu, gpu, xla

__all__ = ["KERNELS", "check_kernel", "implementations", "describe", "maxproduct",
           "maxproduct_arg", "maxabs"]

KERNELS = ("auto", "xla", "numba", "pallas")

# Canonical operands smaller than this (candidates B·M·C·N) stay in XLA: a host callback costs
# tens of microseconds, XLA's fused loop is as fast for tiny contractions.
MIN_KERNEL_CANDIDATES = 1 << 16


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is a known setting, else a ValueError naming the choices."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(map(repr, KERNELS))}.")
    if kernel == "numba" and not cpu.available():
        raise ValueError("kernel='numba' needs numba: pip install 'jaxpr_semiring[cpu]' (or use "
                         "kernel='auto', which falls back to XLA).")
    return kernel


def implementations(kernel: str = "auto", dtype=np.float32) -> dict:
    """What runs for ``kernel`` on each backend: ``{"cpu": ..., "gpu": ..., "tpu": ...}``,
    each ``"numba"``, ``"pallas"`` or ``"xla"``."""
    check_kernel(kernel)
    on_cpu = "numba" if kernel != "xla" and cpu.available() else "xla"
    on_gpu = "pallas" if kernel == "pallas" and np.dtype(dtype) == np.float32 else "xla"
    return {"cpu": on_cpu, "gpu": on_gpu, "tpu": "xla"}


def describe(kernel: str = "auto") -> dict:
    """:func:`implementations` plus library versions (for benchmark reports)."""
    return dict(kernel=kernel, numba=cpu.version(), **implementations(kernel))


def _dispatch(kernel, dtype, size, fns, *args):
    """Run ``fns[impl]`` chosen per backend; ``fns`` maps "xla"/"numba"/"pallas" to functions."""
    impl = implementations(kernel, dtype)
    if size < MIN_KERNEL_CANDIDATES:
        return fns["xla"](*args)
    branches = {}
    if impl["cpu"] != "xla" and impl["cpu"] in fns:
        branches["cpu"] = fns[impl["cpu"]]
    if impl["gpu"] != "xla" and impl["gpu"] in fns:
        branches["cuda"] = fns[impl["gpu"]]
    if not branches:
        return fns["xla"](*args)
    return lax.platform_dependent(*args, default=fns["xla"], **branches)


def _size(v, w):
    return v.shape[0] * v.shape[1] * v.shape[2] * w.shape[2]


def maxproduct(p, n, w, kernel: str = "auto"):
    """⊕-contraction of MaxProduct values: p, n [B, M, C], w [B, C, N] → (top_pos, top_neg)."""
    fns = {"xla": xla.maxproduct, "numba": cpu.maxproduct,
           "pallas": lambda p, n, w: tuple(gpu.maxproduct(p, n, w))}
    return _dispatch(kernel, p.dtype, _size(p, w), fns, p, n, w)


def maxproduct_arg(p, n, w, kernel: str = "auto"):
    """:func:`maxproduct` plus the arg-max of each output (2·c + chain, −1 for none)."""
    fns = {"xla": xla.maxproduct_arg, "numba": cpu.maxproduct_arg}
    return _dispatch(kernel, p.dtype, _size(p, w), fns, p, n, w)


def maxabs(la, s, lw, sw, kernel: str = "auto"):
    """⊕-contraction of MaxAbs values: la, s [B, M, C], lw, sw [B, C, N] → (log_abs, sign)."""
    fns = {"xla": xla.maxabs, "numba": cpu.maxabs}
    return _dispatch(kernel, la.dtype, _size(la, lw), fns, la, s, lw, sw)
