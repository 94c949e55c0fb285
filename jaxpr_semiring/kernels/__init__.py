"""Contraction kernels: the one operation whose speed decides a semiring's cost.

* :mod:`.dispatch` — which max-type contraction runs (an explicit ``kernel=`` setting of the
  semiring, resolved per backend), over
* :mod:`.ffi` (the compiled numba loops of :mod:`.numba_loops`, called zero-copy through XLA's
  FFI; :mod:`.ffi_abi` mirrors the C structs), :mod:`.cpu` (the same loops on host arrays and
  behind ``pure_callback``), :mod:`.gpu` (Pallas) and :mod:`.xla` (the chunked broadcast-reduce
  fallback that runs everywhere);
* :mod:`.lifted` — log-type contractions as real matmuls against lifted weights;
* :mod:`.lowrank` — contractions with factored weights (atomic blocks' Jacobians), built where
  they are used by the CPU loop instead of stored.

Nothing here knows about semirings: inputs are canonical arrays ([B, M, C] values, [B, C, N]
weights) and the results are arrays.
"""

from . import cpu, dispatch, ffi, gpu, lifted, lowrank, xla
from .lifted import lifted_dots, log_shift, scheduled_after
from .dispatch import KERNELS, check_kernel, describe, implementations
from .xla import canonical, chunked_contraction, layout

__all__ = [
    "cpu",
    "ffi",
    "gpu",
    "lifted",
    "lowrank",
    "dispatch",
    "xla",
    "lifted_dots",
    "log_shift",
    "scheduled_after",
    "KERNELS",
    "check_kernel",
    "describe",
    "implementations",
    "canonical",
    "chunked_contraction",
    "layout",
]
