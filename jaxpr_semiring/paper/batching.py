"""Run a function over a data set in fixed-size chunks (one compiled shape).

:func:`map_batches` is how every jitted / vmapped per-example function in the experiments
(SVA targets, MiniLM features, MDL predictions, branch flows, path entropies) is applied to a
whole data set: the last chunk is padded with copies of its last row, so a jitted function
sees one batch shape and compiles once, and the padding rows are cut from the result.

Example:
    >>> calls = []
    >>> def f(x, y):
    ...     calls.append(len(x))
    ...     return {"sum": x + y, "x2": 2 * x}
    >>> out = map_batches(f, (np.arange(5), np.ones(5)), 2)
    >>> out["sum"].tolist(), out["x2"].tolist(), calls
    ([1.0, 2.0, 3.0, 4.0, 5.0], [0, 2, 4, 6, 8], [2, 2, 2])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

__all__ = ["map_batches"]


def map_batches(fn: Callable[..., Any], arrays: Sequence[Any], batch_size: int) -> Any:
    """``fn(*chunk)`` over consecutive ``batch_size`` rows of ``arrays``, results concatenated.

    Args:
        fn: takes one chunk of each array (leading dimension ``batch_size``) and returns a
            pytree of arrays whose leading dimension is the chunk's.
        arrays: arrays sharing the leading dimension ``n >= 1``.
        batch_size: rows per call; the last chunk is padded to it by repeating its last row.

    Returns:
        ``fn``'s pytree with numpy leaves of leading dimension ``n`` (padding rows removed).
    """
    arrays = [np.asarray(a) for a in arrays]
    sizes = {len(a) for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"arrays must share the leading dimension, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("map_batches needs at least one row")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outs = []
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        m = len(chunk[0])
        if m < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - m, 0)]) for c in chunk]
        outs.append(jax.tree.map(lambda v: np.asarray(v)[:m], fn(*chunk)))
    return jax.tree.map(lambda *vs: np.concatenate(vs), *outs)
