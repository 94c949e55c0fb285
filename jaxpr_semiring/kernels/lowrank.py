"""Contractions whose weights are given by factors and never stored: an atomic block's
Jacobian (:func:`jaxpr_semiring.atomic_blocks.layout.low_rank`), whose entry (row r, probe j, output
k) is Σ_i U[i, r, k]·V[i, r, j] plus G[c, r, k] where owner[c, r, k] = j. Stored, a BERT
LayerNorm's is 30 × 512² entries per call; the CPU loop builds each entry where it is used.

Only MaxProduct has one: its stored path pays a transposed copy and a second pass over every
entry (BERT-6L with atomic LayerNorms: 239 → 103 ms); the same loop for the log-sum measured
no faster than XLA's fused construction and matmul (54 vs 50 ms), and the entropy needs a
logarithm per entry, which XLA vectorizes and numba does not.

The function returns None where the loop does not run (no numba or no FFI, another backend,
a small call, operands sharded over Explicit mesh axes outside ``shard_map``): the caller then
stores the weights chunk by chunk and contracts them with the semiring's ``dot_general``.

>>> import jax.numpy as jnp
>>> p = jnp.ones((1, 2)); U = jnp.array([[[1.0, -2.0]]]); V = jnp.array([[[3.0]]])
>>> G = jnp.zeros((0, 1, 2)); owner = jnp.zeros((0, 1, 2), jnp.int32)
>>> out = maxproduct(p, p, U, V, G, owner, min_candidates=0)   # None without numba
>>> out is None or [float(x[0, 0]) for x in out] == [3.0, -6.0]
True
"""

from __future__ import annotations

from jax.extend import backend

from . import dispatch, ffi

__all__ = ["maxproduct"]


def maxproduct(p, n, U, V, G, owner, kernel: str = "auto", min_candidates: int | None = None):
    """(top_pos, top_neg) [R, N] of the MaxProduct contraction of p, n [R, A] with the factored
    weights, or None (see the module docstring). ``min_candidates``: default
    :data:`.dispatch.MIN_KERNEL_CANDIDATES`."""
    R, A = p.shape
    least = dispatch.MIN_KERNEL_CANDIDATES if min_candidates is None else min_candidates
    if (
        R * A * V.shape[-1] < least
        or set(backend.backends()) != {"cpu"}
        or dispatch.implementations(kernel, p.dtype)["cpu"] != "numba-ffi"
        or ffi.placement(p, n, U, V, G, owner)[2]
    ):
        return None
    return ffi.maxproduct_lowrank(p, n, U, V, G, owner)
