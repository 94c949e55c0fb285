"""Prequential (online) minimum description length (Voita & Titov, 2020), paper §5.3.

The sender transmits the labels of ``(x_1, y_1) … (x_N, y_N)`` block by block. With block
boundaries ``0 < t_1 < t_2 < … < t_S = N``:

* the first ``t_1`` labels are sent with the uniform code, ``t_1 · log2 K`` bits (``K`` = the
  task's true number of classes);
* for ``i = 1 … S−1`` a model is trained **from scratch** on the first ``t_i`` examples and the
  labels of block ``t_i < j ≤ t_{i+1}`` are sent with it: ``Σ_j −log2 p(y_j | x_j)`` bits --
  the sum of **per-example** code lengths, not a block-mean loss.

``online codelength = t_1 log2 K + Σ_i Σ_j −log2 p_i(y_j | x_j)``; the uniform codelength is
``N log2 K`` and the compression ratio ``uniform / online``. Default block boundaries are Voita
& Titov's: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and 100 % of the data.

Training uses :func:`jaxpr_semiring.paper.training.train_classifier` (Adam, early stopping on a
validation split of the block's training prefix). Any other learner can be plugged in through
``fit(x_train, y_train, block) -> predict_logits`` where ``predict_logits(x)`` returns
``[n, C]`` logits (or log-probabilities; they are log-softmax normalised), ``C >= K``.

Example (a "model" that predicts the label frequencies of its training prefix)::

    >>> import numpy as np
    >>> def fit(x, y, block):
    ...     logp = np.log(np.bincount(y, minlength=2) + 1.0)
    ...     return lambda xs: np.tile(logp, (len(xs), 1))
    >>> y = np.array([0, 1, 1, 1])
    >>> r = online_codelength(np.zeros((4, 1)), y, 2, fit=fit, block_fractions=(0.25, 0.5, 1.0))
    >>> r.boundaries, round(r.codelength, 4), r.uniform_codelength
    ((1, 2, 4), 4.585, 4.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "VOITA_TITOV_FRACTIONS",
    "MDLResult",
    "block_boundaries",
    "codelengths_bits",
    "online_codelength",
    "trainer_fit",
]

VOITA_TITOV_FRACTIONS: tuple[float, ...] = (
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.0625,
    0.125,
    0.25,
    0.5,
    1.0,
)
"""Block boundaries as fractions of the data (Voita & Titov, 2020)."""

Fit = Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], Any]]


@dataclass
class MDLResult:
    """Result of :func:`online_codelength` (all code lengths in bits).

    Attributes:
        codelength: online (prequential) codelength.
        uniform_codelength: ``N log2 K``.
        compression: ``uniform_codelength / codelength``.
        num_classes: ``K``.
        boundaries: ``(t_1, …, t_S)``.
        block_codelengths: per block (``[0, t_1)``, ``[t_1, t_2)``, …), summed bits.
        example_codelengths: ``float64[N]`` bits per example (first block: ``log2 K`` each).
        block_info: per trained model, a dict (e.g. the trainer's validation accuracy).
    """

    codelength: float
    uniform_codelength: float
    compression: float
    num_classes: int
    boundaries: tuple[int, ...]
    block_codelengths: list[float]
    example_codelengths: np.ndarray = field(repr=False)
    block_info: list[dict] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {
            "codelength": self.codelength,
            "uniform_codelength": self.uniform_codelength,
            "compression": self.compression,
            "num_classes": self.num_classes,
            "boundaries": list(self.boundaries),
            "block_codelengths": list(self.block_codelengths),
        }


def block_boundaries(n: int, fractions: Sequence[float] = VOITA_TITOV_FRACTIONS) -> tuple[int, ...]:
    """Strictly increasing boundaries ``round(f · n)`` (at least 1, duplicates removed, the
    last forced to ``n``).

    Example:
        >>> block_boundaries(1000)
        (1, 2, 4, 8, 16, 32, 62, 125, 250, 500, 1000)
        >>> block_boundaries(10)
        (1, 2, 5, 10)
    """
    if n < 1:
        raise ValueError(f"need at least one example, got n={n}")
    fr = [float(f) for f in fractions]
    if not fr or any(not 0 < f <= 1 for f in fr) or fr != sorted(fr):
        raise ValueError(f"fractions must be increasing values in (0, 1], got {fractions}")
    out: list[int] = []
    for f in fr:
        t = min(n, max(1, int(round(f * n))))
        if not out or t > out[-1]:
            out.append(t)
    if out[-1] != n:
        out.append(n)
    return tuple(out)


def codelengths_bits(logits: Any, labels: Any) -> np.ndarray:
    """Per-example code lengths ``−log2 softmax(logits)[y]`` in bits (``float64[n]``).

    Example:
        >>> codelengths_bits(np.log([[0.5, 0.25, 0.25]]), [1]).tolist()
        [2.0]
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"logits must be [n, C] with n = len(labels); got {z.shape}, {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    m = z.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return (logz - z[np.arange(len(y)), y]) / math.log(2.0)


def trainer_fit(
    model: Any,
    *,
    val_fraction: float = 0.1,
    min_steps: int = 200,
    max_epochs: int = 50,
    max_epochs_cap: int = 2000,
    batch_size: int = 64,
    target_val_acc: float | None = 1.0,
    seed: int = 0,
    pad_val_to: int = 256,
    predict_batch: int = 512,
    **train_kwargs,
) -> Fit:
    """A ``fit`` for :func:`online_codelength` training ``model`` from scratch per block with
    :func:`~jaxpr_semiring.paper.training.train_classifier`.

    The block's training prefix is split: the last ``max(1, round(val_fraction · n))`` examples
    are the early-stopping validation set (for ``n == 1`` the one example is both). Small
    prefixes would get only a handful of Adam steps from ``max_epochs`` epochs, so the number
    of epochs is raised to reach ``min_steps`` steps (at most ``max_epochs_cap`` epochs). To
    keep one compiled shape, the training prefix is cyclically repeated up to a multiple of
    ``batch_size`` and the validation set to ``pad_val_to`` rows; predictions run in padded
    chunks of ``predict_batch``.
    """
    import jax.numpy as jnp

    from .batching import map_batches
    from .training import train_classifier

    def fit(x: np.ndarray, y: np.ndarray, block: int):
        n = len(y)
        n_val = max(1, int(round(val_fraction * n))) if n > 1 else 0
        if n_val:
            xt, yt, xv, yv = x[: n - n_val], y[: n - n_val], x[n - n_val :], y[n - n_val :]
        else:
            xt, yt, xv, yv = x, y, x, y
        reps = -(-len(yt) // batch_size) * batch_size
        xt, yt = np.resize(xt, (reps,) + xt.shape[1:]), np.resize(yt, reps)
        if pad_val_to:
            xv = np.resize(xv, (max(pad_val_to, len(yv)),) + xv.shape[1:])
            yv = np.resize(yv, max(pad_val_to, len(yv)))
        steps_per_epoch = reps // batch_size
        epochs = min(max_epochs_cap, max(max_epochs, -(-min_steps // steps_per_epoch)))
        params, hist = train_classifier(
            model,
            (xt, yt),
            (xv, yv),
            batch_size=batch_size,
            max_epochs=epochs,
            target_val_acc=target_val_acc,
            seed=seed + block,
            progress=False,
            **train_kwargs,
        )

        def predict(xs):
            return map_batches(lambda c: model.apply(params, jnp.asarray(c)), (xs,), predict_batch)

        predict.info = {
            "train_size": n,
            "best_val_acc": hist.best_val_acc,  # type: ignore
            "epochs": len(hist.epoch),
        }
        return predict

    return fit


def online_codelength(
    x: Any,
    y: Any,
    num_classes: int,
    *,
    fit: Fit | None = None,
    model: Any = None,
    block_fractions: Sequence[float] = VOITA_TITOV_FRACTIONS,
    progress: bool = False,
    **fit_kwargs,
) -> MDLResult:
    """Prequential MDL of labels ``y`` given inputs ``x`` (module docstring).

    Args:
        x, y: the data in transmission order (shuffle beforehand if it is sorted).
        num_classes: the task's true number of classes ``K`` (uniform code ``log2 K`` per
            label); the model may output more classes (paper §5.3 always uses 36).
        fit: ``fit(x_prefix, y_prefix, block) -> predict_logits``; default
            :func:`trainer_fit` of ``model`` with ``fit_kwargs``.
        model: a Flax classifier (tokens → logits), used when ``fit`` is None.
        block_fractions: block boundaries as fractions of ``len(y)``.

    Returns:
        :class:`MDLResult`.
    """
    from tqdm.auto import tqdm

    x = np.asarray(x)
    y = np.asarray(y, np.int64)
    n = len(y)
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} rows but y has {n} labels")
    if num_classes < 1 or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"labels must lie in 0..num_classes-1={num_classes - 1}")
    if fit is None:
        if model is None:
            raise ValueError("pass fit=... or model=... (a Flax classifier)")
        fit = trainer_fit(model, **fit_kwargs)
    elif fit_kwargs:
        raise ValueError(f"unexpected keyword arguments with a custom fit: {sorted(fit_kwargs)}")
    bounds = block_boundaries(n, block_fractions)
    per_example = np.empty(n, np.float64)
    per_example[: bounds[0]] = math.log2(num_classes)
    blocks = [float(per_example[: bounds[0]].sum())]
    infos = []
    bar = tqdm(range(len(bounds) - 1), desc="MDL blocks", disable=not progress, leave=False)
    for i in bar:
        lo, hi = bounds[i], bounds[i + 1]
        predict = fit(x[:lo], y[:lo], i)
        logits = np.asarray(predict(x[lo:hi]))
        if logits.shape[1] < num_classes:
            raise ValueError(
                f"the model predicts {logits.shape[1]} classes, fewer than "
                f"num_classes={num_classes}"
            )
        per_example[lo:hi] = codelengths_bits(logits, y[lo:hi])
        blocks.append(float(per_example[lo:hi].sum()))
        infos.append(dict(getattr(predict, "info", {}), block=i, train_size=lo))
    total = float(per_example.sum())
    uniform = n * math.log2(num_classes)
    return MDLResult(
        codelength=total,
        uniform_codelength=uniform,
        compression=uniform / total if total > 0 else math.inf,
        num_classes=num_classes,
        boundaries=bounds,
        block_codelengths=blocks,
        example_codelengths=per_example,
        block_info=infos,
    )
