"""Length buckets and padded batches with attention masks.

Every input is padded (on the right, with zeros) to the smallest bucket length that holds it,
so a compiled function sees only a few shapes (one per bucket used: bounded recompilation),
and inputs of one bucket are batched together. The batch has an ``attention_mask`` (1 for a
real token, 0 for padding) and each row's true ``length``; an incomplete last batch is filled
with copies of its last row, whose results are dropped.

>>> import numpy as np
>>> rows = [Prepared({"ids": np.array([5, 6, 7])}), Prepared({"ids": np.array([8])}, {"pos": 0})]
>>> b = stack(rows, length=4, size=3)
>>> b["ids"].tolist(), b["attention_mask"].tolist(), b["length"].tolist()
([[5, 6, 7, 0], [8, 0, 0, 0], [8, 0, 0, 0]], [[1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]], [3, 1, 1])
>>> bucket_lengths([3, 9, 30], None), bucket_of(9, [8, 16, 32]), bucket_lengths([3, 9, 3], "exact")
([8, 16, 32], 16, [3, 9])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .inputs import InputError

__all__ = [
    "Prepared",
    "bucket_lengths",
    "bucket_of",
    "stack",
    "unpad",
    "MASK",
    "LENGTH",
    "MIN_BUCKET",
]

MASK = "attention_mask"  # added to every batch unless the tokens carry their own
LENGTH = "length"
MIN_BUCKET = 8


class Prepared:
    """What :func:`~jaxpr_semiring.dataset.run_dataset`'s ``prepare`` returns for one input.

    tokens: name → array ``[length, ...]`` (padded along axis 0 to the bucket length).
    args: name → fixed-shape array or number per input (target token ids, a mask position…).
    info: anything the ``record`` callback needs back (e.g. the token strings).
    pad: False when padding would change this input's result (a computation that pools over
      every position, a semiring that counts zero-weight paths): it then runs at its own
      length, whatever the buckets (one compilation per such length).
    """

    def __init__(
        self,
        tokens: Mapping[str, Any],
        args: Mapping[str, Any] | None = None,
        info: Any = None,
        pad: bool = True,
    ):
        self.tokens = {k: np.asarray(v) for k, v in tokens.items()}
        self.args = {k: np.asarray(v) for k, v in (args or {}).items()}
        self.info = info
        self.pad = bool(pad)
        lengths = {v.shape[0] if v.ndim else None for v in self.tokens.values()}
        if len(lengths) != 1 or None in lengths:
            raise ValueError(
                f"Prepared.tokens must be arrays sharing their first (token) axis, "
                f"got shapes { {k: v.shape for k, v in self.tokens.items()} }."
            )
        clash = (
            (set(self.tokens) & set(self.args))
            | ({LENGTH} & set(self.tokens))
            | ({MASK, LENGTH} & set(self.args))
        )
        if clash:
            raise ValueError(
                f"Prepared: names {sorted(clash)} are used twice or reserved (the "
                f"batch adds {LENGTH!r}, and {MASK!r} unless the tokens have one)."
            )
        self.length = lengths.pop()
        if self.length < 1:
            raise InputError("no tokens")

    def __repr__(self):
        pad = "" if self.pad else ", pad=False"
        return (
            f"Prepared(length={self.length}, tokens={list(self.tokens)}, "
            f"args={list(self.args)}{pad})"
        )


def bucket_lengths(lengths: Sequence[int], buckets: Sequence[int] | str | None) -> list[int]:
    """The bucket lengths: ``buckets`` sorted; by default powers of two from
    :data:`MIN_BUCKET` up to the longest input (a few shapes, at most 2× padding);
    ``"exact"``: every input length (no padding, one compilation per length)."""
    if isinstance(buckets, str):
        if buckets != "exact":
            raise ValueError(f"buckets={buckets!r}: pass lengths, None or 'exact'.")
        return sorted(set(lengths)) or [MIN_BUCKET]
    if buckets is not None:
        out = sorted({int(b) for b in buckets})
        if not out or out[0] < 1:
            raise ValueError(f"buckets must be positive lengths, got {list(buckets)}.")
        return out
    top = max(lengths, default=1)
    out, b = [], MIN_BUCKET
    while True:
        out.append(b)
        if b >= top:
            return out
        b *= 2


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``length`` tokens (InputError if none does)."""
    for b in buckets:
        if length <= b:
            return b
    raise InputError(
        f"{length} tokens: longer than the largest bucket ({buckets[-1]}); "
        f"pass larger buckets (--buckets)"
    )


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    return np.pad(x, [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def stack(rows: Sequence[Prepared], length: int, size: int) -> dict:
    """One batch of ``size`` rows (``rows`` then copies of the last one), tokens padded to
    ``length``, with :data:`MASK` (int32 ``[size, length]``, unless the tokens have their own,
    which is padded with 0) and :data:`LENGTH` (int32 ``[size]``)."""
    rows = list(rows) + [rows[-1]] * (size - len(rows))
    out = {k: np.stack([_pad(r.tokens[k], length) for r in rows]) for k in rows[0].tokens}
    if MASK not in out:
        out[MASK] = (
            np.arange(length)[None, :] < np.array([r.length for r in rows])[:, None]
        ).astype(np.int32)
    out[LENGTH] = np.array([r.length for r in rows], np.int32)
    out.update({k: np.stack([r.args[k] for r in rows]) for k in rows[0].args})
    return out


def unpad(tree: Any, length: int, axis: int = 0) -> Any:
    """Every array leaf of ``tree`` cut to its first ``length`` entries along ``axis`` (the
    token axis of a per-input output): padded positions never reach a record."""
    import jax

    return jax.tree.map(lambda a: np.take(np.asarray(a), np.arange(length), axis=axis), tree)
