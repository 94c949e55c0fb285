"""Training a classifier on a synthetic task: optax Adam, minibatches, early stopping.

* :func:`train_classifier` -- generic loop for any Flax module mapping ``int[B, S]`` tokens to
  logits ``[B, C]``: Adam, shuffled minibatches (seeded), a jitted train step, validation after
  every epoch, early stop as soon as validation accuracy reaches ``target_val_acc``.
* :func:`train_on_task` -- generate a task's data, split it, build the paper's model
  (:func:`jaxpr_semiring.models.transformer.model_for_task`) and train it.
* :func:`save_params` / :func:`load_params` -- msgpack checkpoints via
  ``flax.serialization.to_bytes`` / ``from_bytes`` (never pickle).

Example:
    >>> from jaxpr_semiring.tasks.synthetic import FirstTokenRepeatedOnce
    >>> run = train_on_task(FirstTokenRepeatedOnce(seq_len=4, vocab_size=4), n_train=64,
    ...                     n_val=32, max_epochs=1, progress=False)
    >>> len(run.history.val_acc)
    1
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

__all__ = [
    "TrainHistory",
    "TrainedTask",
    "train_classifier",
    "train_on_task",
    "evaluate",
    "train_val_split",
    "save_params",
    "load_params",
]

Params = Any


@dataclass
class TrainHistory:
    """Per-epoch metrics recorded by :func:`train_classifier` (lists indexed by epoch - 1)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    stopped_early: bool = False
    """True if validation accuracy reached ``target_val_acc`` before ``max_epochs``."""
    best_epoch: int = 0
    """Epoch whose parameters were returned (the best validation accuracy, earliest on ties)."""
    best_val_acc: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON serialisable)."""
        return dataclasses.asdict(self)


@dataclass
class TrainedTask:
    """Result of :func:`train_on_task`: model, trained params, history and the data used."""

    model: Any
    params: Params
    history: TrainHistory
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]


def _check_data(data: tuple[Any, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (tokens, labels) pair") from None
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: tokens {x.shape} and labels {y.shape} must share the leading dimension "
            "and labels must be 1-D"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    return x, y


def _loss_and_acc(model: Any, params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = model.apply(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    acc = (logits.argmax(-1) == y).mean()
    return loss, acc


def evaluate(model: Any, params: Params, tokens: Any, labels: Any,
             batch_size: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(tokens, labels)``.

    Example:
        >>> from jaxpr_semiring.models.transformer import TransformerClassifier, init_params
        >>> m = TransformerClassifier(max_len=3)
        >>> loss, acc = evaluate(m, init_params(m), np.ones((5, 3), np.int32), np.zeros(5, np.int32))
        >>> 0.0 <= acc <= 1.0
        True
    """
    x, y = _check_data((tokens, labels), "evaluation data")
    return _evaluate(_eval_step(model), params, x, y, batch_size)


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _make_eval_step(model: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
    return jax.jit(lambda p, xb, yb: _loss_and_acc(model, p, xb, yb))


_cached_eval_step = functools.lru_cache(maxsize=32)(_make_eval_step)


def _eval_step(model: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """A jitted (loss, accuracy) step, cached per model so repeated runs skip recompilation."""
    return _cached_eval_step(model) if _hashable(model) else _make_eval_step(model)


def _make_train_step(model: Any, tx: optax.GradientTransformation) -> Callable[..., Any]:
    @jax.jit
    def train_step(params: Params, opt_state: Any, xb: jax.Array, yb: jax.Array):
        (loss, acc), grads = jax.value_and_grad(
            lambda p: _loss_and_acc(model, p, xb, yb), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return train_step


@functools.lru_cache(maxsize=32)
def _cached_adam_step(model: Any, learning_rate: float
                      ) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
    tx = optax.adam(learning_rate)
    return tx, _make_train_step(model, tx)


def _train_step(model: Any, learning_rate: float, optimizer: optax.GradientTransformation | None
                ) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
    """Optimizer and jitted train step; the default Adam step is cached per (model, lr)."""
    if optimizer is None:
        if _hashable(model):
            return _cached_adam_step(model, float(learning_rate))
        optimizer = optax.adam(learning_rate)
    return optimizer, _make_train_step(model, optimizer)


def _evaluate(step: Callable[..., tuple[jax.Array, jax.Array]], params: Params, x: np.ndarray,
              y: np.ndarray, batch_size: int) -> tuple[float, float]:
    total_loss = total_acc = 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        loss, acc = step(params, xb, yb)
        total_loss += float(loss) * len(yb)
        total_acc += float(acc) * len(yb)
    return total_loss / len(y), total_acc / len(y)


def train_classifier(
    model: Any,
    train_data: tuple[Any, Any],
    val_data: tuple[Any, Any],
    *,
    params: Params | None = None,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    max_epochs: int = 100,
    target_val_acc: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
    eval_batch_size: int = 4096,
    optimizer: optax.GradientTransformation | None = None,
) -> tuple[Params, TrainHistory]:
    """Train ``model`` (tokens -> logits) with Adam and early stopping on validation accuracy.

    Args:
        model: a Flax module; ``model.apply(params, tokens)`` must return logits ``[B, C]``.
        train_data, val_data: ``(tokens int[n, S], labels int[n])`` pairs.
        params: initial parameters; ``None`` initialises with ``jax.random.key(seed)``.
        learning_rate: Adam step size (ignored when ``optimizer`` is given).
        batch_size: minibatch size; the training set is reshuffled every epoch (the last batch
            may be smaller).
        max_epochs: maximum number of passes over the training set.
        target_val_acc: stop after the first epoch whose validation accuracy is ``>=`` this
            (``None`` disables early stopping).
        seed: seeds parameter initialisation and the minibatch shuffling.
        progress: show a tqdm progress bar over epochs.
        eval_batch_size: batch size for validation passes.
        optimizer: a custom optax optimizer (default ``optax.adam(learning_rate)``).

    Returns:
        ``(params, history)``: the parameters of the epoch with the best validation accuracy
        (the final epoch when early stopping triggers) and a :class:`TrainHistory`.

    Example:
        >>> from jaxpr_semiring.models.transformer import TransformerClassifier
        >>> x = np.random.default_rng(0).integers(1, 5, (32, 4)).astype(np.int32)
        >>> y = (x[:, 0] > 2).astype(np.int32)
        >>> p, h = train_classifier(TransformerClassifier(max_len=4, vocab_size=5), (x, y),
        ...                         (x, y), max_epochs=2, progress=False)
        >>> h.epoch
        [1, 2]
    """
    x_tr, y_tr = _check_data(train_data, "train_data")
    x_va, y_va = _check_data(val_data, "val_data")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    if target_val_acc is not None and not 0.0 <= target_val_acc <= 1.0:
        raise ValueError(f"target_val_acc must lie in [0, 1] (or be None), got {target_val_acc}")

    rng = np.random.default_rng(seed)
    if params is None:
        params = model.init(jax.random.key(seed), jnp.asarray(x_tr[:1]))
    tx, train_step = _train_step(model, learning_rate, optimizer)
    opt_state = tx.init(params)
    eval_step = _eval_step(model)
    history = TrainHistory()
    best_params, best_acc = params, -1.0
    n = len(y_tr)
    bar = tqdm(range(1, max_epochs + 1), desc="train", disable=not progress, leave=False)
    for epoch in bar:
        perm = rng.permutation(n)
        sum_loss = sum_acc = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            params, opt_state, loss, acc = train_step(params, opt_state, x_tr[idx], y_tr[idx])
            sum_loss += float(loss) * len(idx)
            sum_acc += float(acc) * len(idx)
        val_loss, val_acc = _evaluate(eval_step, params, x_va, y_va, eval_batch_size)
        history.epoch.append(epoch)
        history.train_loss.append(sum_loss / n)
        history.train_acc.append(sum_acc / n)
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
        if val_acc > best_acc:
            best_params, best_acc = params, val_acc
            history.best_epoch, history.best_val_acc = epoch, val_acc
        bar.set_postfix(loss=f"{sum_loss / n:.4f}", val_acc=f"{val_acc:.4f}")
        if target_val_acc is not None and val_acc >= target_val_acc:
            history.stopped_early = epoch < max_epochs
            break
    bar.close()
    return best_params, history


def train_val_split(tokens: np.ndarray, labels: np.ndarray, n_val: int
                    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split off the last ``n_val`` examples as validation data (generators already shuffle).

    Example:
        >>> (xt, yt), (xv, yv) = train_val_split(np.zeros((10, 3)), np.zeros(10), 2)
        >>> xt.shape, xv.shape
        ((8, 3), (2, 3))
    """
    if not 0 < n_val < len(labels):
        raise ValueError(f"n_val must lie in 1..{len(labels) - 1}, got {n_val}")
    cut = len(labels) - n_val
    return (tokens[:cut], labels[:cut]), (tokens[cut:], labels[cut:])


def train_on_task(
    task: Any,
    *,
    n_train: int = 8000,
    n_val: int = 2000,
    data_seed: int = 0,
    model: Any | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **train_kwargs: Any,
) -> TrainedTask:
    """Generate ``n_train + n_val`` examples of ``task``, split them and train a model.

    The default model is :func:`~jaxpr_semiring.models.transformer.model_for_task` (paper
    §5.1: 1 layer, hidden 16, 2 heads; override with ``model_kwargs``). The paper's §5.1 data
    set has 10 000 examples, hence the defaults 8000 / 2000. ``train_kwargs`` go to
    :func:`train_classifier`.

    Example:
        >>> from jaxpr_semiring.tasks.synthetic import Contains1
        >>> run = train_on_task(Contains1(seq_len=4, vocab_size=4), n_train=32, n_val=16,
        ...                     max_epochs=1, progress=False)
        >>> run.val[0].shape
        (16, 4)
    """
    from jaxpr_semiring.models.transformer import model_for_task

    tokens, labels = task.generate(n_train + n_val, seed=data_seed)
    train, val = train_val_split(tokens, labels, n_val)
    if model is None:
        model = model_for_task(task, **(model_kwargs or {}))
    elif model_kwargs:
        raise ValueError("pass either model or model_kwargs, not both")
    params, history = train_classifier(model, train, val, **train_kwargs)
    return TrainedTask(model=model, params=params, history=history, train=train, val=val)


def save_params(path: str | os.PathLike[str], params: Params) -> None:
    """Write ``params`` to ``path`` as msgpack (``flax.serialization.to_bytes``).

    Parent directories are created. Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "p.msgpack")
        >>> save_params(f, {"w": np.ones(2)})
        >>> load_params(f, {"w": np.zeros(2)})["w"].tolist()
        [1.0, 1.0]
    """
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(flax.serialization.to_bytes(params))


def load_params(path: str | os.PathLike[str], template: Params) -> Params:
    """Read parameters written by :func:`save_params`, restored into ``template``'s structure.

    ``template`` is any pytree with the same structure (e.g. freshly initialised params).
    Example: see :func:`save_params`.
    """
    with open(os.fspath(path), "rb") as fh:
        return flax.serialization.from_bytes(template, fh.read())
