"""The compiled CPU loops (numba, :mod:`.numba_loops`) for the tropical contractions: whether
they are available, and how to run them on host arrays or behind ``jax.pure_callback``.

A plain vectorized loop beats XLA's CPU code for a broadcast-multiply-max by about 20×.
Semantics are exactly the XLA formulation's (:mod:`.xla`): a 0̄ entry of ``v`` (top_pos = −inf
for MaxProduct) contributes no candidate whatever the weight; a NaN entry, or a NaN weight on
a live entry, is a NaN candidate that wins; an output with no candidate is 0̄. Weights come [B, C,
N], or [B, N, C] with ``nc=True`` (no transposed copy).
Inside a jitted program the loops run zero-copy through XLA's FFI (:mod:`.ffi`);
:func:`maxproduct` & co. here go through ``jax.pure_callback``, which copies every operand (the
fallback where the FFI cannot be used). Available only when numba is installed
(``pip install "jaxpr_semiring[cpu]"``).

>>> import numpy as np
>>> if available():
...     p = np.array([[[1.0, -2.0]]]); w = np.array([[[3.0], [4.0]]])
...     assert [float(x[0, 0, 0]) for x in maxproduct_numpy(p, p, w)] == [3.0, -8.0]
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = [
    "available",
    "version",
    "module",
    "loops",
    "batch_index",
    "maxproduct",
    "maxproduct_arg",
    "maxabs",
    "maxproduct_numpy",
    "maxproduct_arg_numpy",
    "maxabs_numpy",
]

_NUMBA = None  # the numba_loops module once imported, False if numba is unavailable


def version() -> str | None:
    """numba's version, or None when it is not installed."""
    try:
        import numba
    except Exception:
        return None
    return numba.__version__


def module():
    """:mod:`.numba_loops` (imported on first use: numba is optional), or None without numba."""
    global _NUMBA
    if _NUMBA is None:
        try:
            from . import numba_loops

            _NUMBA = numba_loops
        except ImportError:  # numba not installed: callers fall back to XLA
            _NUMBA = False
    return _NUMBA or None


def loops() -> dict | None:
    """The compiled loops, None without numba: ``loops()[name][parallel]`` for ``name`` in
    ``maxproduct``, ``maxproduct_arg``, ``maxabs`` (``parallel``: on numba's threads).

    Operands: values [Pv, M, C] (C-contiguous), weights [Pw, C, N] (or [Pw, N, C] with
    ``nc=True``), per output batch element b the batch index into the values ``iv[b]`` and into
    the weights ``iw[b]``, and preallocated [B, M, N] outputs.
    """
    return module().LOOPS if module() else None


def available() -> bool:
    """Whether the compiled CPU loops can run (numba importable)."""
    return loops() is not None


def batch_index(lead_v, lead_w):
    """Flat output batch shape and, per output batch element, the flat index into v and w
    (leading axes broadcast as numpy does: ``vmap`` gives unbatched operands size-1 axes)."""
    shape = np.broadcast_shapes(lead_v, lead_w)
    grid = np.indices(shape).reshape(len(shape), -1) if shape else np.zeros((0, 1), np.int64)

    def flat(lead):
        if not lead:
            return np.zeros(grid.shape[1], np.int64)
        idx = tuple(np.where(np.asarray(lead)[:, None] == 1, 0, grid[len(shape) - len(lead) :]))
        return np.ravel_multi_index(idx, lead).astype(np.int64)

    return shape, flat(lead_v), flat(lead_w)


def _host(name, n_int_out, vs, w, nc):
    """Run a loop on host arrays with leading batch axes (added by ``vmap``) broadcast."""
    if not available():
        raise RuntimeError(f"{name}_numpy needs numba: pip install 'jaxpr_semiring[cpu]'.")
    lead_v, lead_w = vs[0].shape[:-2], w.shape[:-2]
    shape, iv, iw = batch_index(lead_v, lead_w)
    M, C = vs[0].shape[-2:]
    N = w.shape[-2] if nc else w.shape[-1]
    size = lambda lead: int(np.prod(lead, dtype=np.int64))
    vs3 = [
        np.ascontiguousarray(np.broadcast_to(v, vs[0].shape).reshape((size(lead_v), M, C)))
        for v in vs
    ]
    w3 = np.ascontiguousarray(w.reshape((size(lead_w),) + w.shape[-2:]))
    dt = vs[0].dtype
    outs = [np.empty((iv.size, M, N), dt) for _ in vs]
    if name != "maxabs":
        extra = [
            np.empty((iv.size, M, N) if n_int_out else (0, 0, 0), t)
            for t in (np.int32, np.int32, dt, dt)
        ]
    else:
        extra = []
    args = (*vs3, w3.astype(dt, copy=False), nc, iv, iw, *outs, *extra)
    if module().parallel(iv.size * M * C * N):
        module().launch(loops()[name][True], *args)
    else:
        loops()[name][False](*args)
    outs += extra if n_int_out else []
    return [o.reshape(shape + (M, N)) for o in outs]


def maxproduct_numpy(p, n, w, nc=False):
    """The MaxProduct loop on numpy arrays: p, n [B, M, C]; w [B, C, N] ([B, N, C] if ``nc``)."""
    return tuple(_host("maxproduct", 0, [np.asarray(p), np.asarray(n)], np.asarray(w), nc))


def maxproduct_arg_numpy(p, n, w, nc=False):
    """The MaxProduct loop with arg-max: (top_pos, top_neg, arg_pos, arg_neg, w_pos, w_neg),
    ``w_*`` the winning candidate's edge weight (0 where there is none)."""
    return tuple(_host("maxproduct_arg", 4, [np.asarray(p), np.asarray(n)], np.asarray(w), nc))


def maxabs_numpy(la, s, w, nc=False):
    """The MaxAbs loop on numpy arrays (raw weights ``w``); outputs with no candidate are
    (−inf, +1)."""
    return tuple(_host("maxabs", 0, [np.asarray(la), np.asarray(s)], np.asarray(w), nc))


def _callback(host_fn, shapes, nc, *args):
    specs = tuple(jax.ShapeDtypeStruct(s, d) for s, d in shapes)
    return jax.pure_callback(lambda *a: host_fn(*a, nc=nc), specs, *args, vmap_method="expand_dims")


def _out_shape(v, w, nc):
    return (v.shape[0], v.shape[1], w.shape[1] if nc else w.shape[2])


def maxproduct(p, n, w, nc=False):
    """MaxProduct contraction behind ``jax.pure_callback`` (copies its operands)."""
    shape = _out_shape(p, w, nc)
    return _callback(maxproduct_numpy, [(shape, p.dtype)] * 2, nc, p, n, w)


def maxproduct_arg(p, n, w, nc=False):
    """:func:`maxproduct` with arg-max and winning edge weights (see
    :func:`maxproduct_arg_numpy`)."""
    shape = _out_shape(p, w, nc)
    return _callback(
        maxproduct_arg_numpy,
        [(shape, p.dtype)] * 2 + [(shape, np.int32)] * 2 + [(shape, p.dtype)] * 2,
        nc,
        p,
        n,
        w,
    )


def maxabs(la, s, w, nc=False):
    """MaxAbs contraction behind ``jax.pure_callback`` (raw weights ``w``)."""
    return _callback(maxabs_numpy, [(_out_shape(la, w, nc), la.dtype)] * 2, nc, la, s, w)
