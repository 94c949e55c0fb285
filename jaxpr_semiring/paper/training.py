"""One optax training loop for every model the experiments train, and the classifier on top.

* :func:`fit` -- the loop: ``loss_fn(params, batch)``, an optax optimizer (default Adam), one
  jitted update step (cached per loss function and optimizer, so repeated runs -- e.g. one
  model per MDL block -- compile once), an optional evaluation after every epoch, early
  stopping when a monitored metric reaches a target, and a tqdm bar. It returns the
  parameters and a :class:`TrainHistory`.
* :class:`Minibatches` -- seeded shuffled minibatches of a pytree of arrays, reshuffled every
  epoch; a plain list of batches serves full-batch training.
* :func:`train_classifier` -- a Flax module mapping ``int[B, S]`` tokens to logits ``[B, C]``
  trained with :func:`fit`: cross-entropy, validation accuracy after every epoch, early stop
  as soon as it reaches ``target_val_acc``, the best epoch's parameters returned.
* :func:`train_on_task` -- generate a task's data, split it, build the paper's model
  (:func:`jaxpr_semiring.paper.transformer.model_for_task`) and train it.
* :func:`save_params` / :func:`load_params` -- msgpack checkpoints via
  ``flax.serialization.to_bytes`` / ``from_bytes`` (never pickle).

Example:
    >>> from jaxpr_semiring.paper.synthetic import FirstTokenRepeatedOnce
    >>> run = train_on_task(FirstTokenRepeatedOnce(seq_len=4, vocab_size=4), n_train=64,
    ...                     n_val=32, max_epochs=1, progress=False)
    >>> len(run.history.val_acc)
    1
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

__all__ = [
    "TrainHistory",
    "TrainedTask",
    "Minibatches",
    "fit",
    "train_classifier",
    "train_on_task",
    "evaluate",
    "train_val_split",
    "save_params",
    "load_params",
]

Params = Any
Batch = Any
LossFn = Callable[[Params, Batch], Any]


@dataclass
class TrainHistory:
    """Per-epoch metrics recorded by :func:`fit` (lists indexed by epoch - 1).

    Every metric is also an attribute (``history.val_acc`` is ``history.metrics["val_acc"]``),
    and so is the best value of the monitored metric (``history.best_val_acc`` when
    ``monitor="val_acc"``).
    """

    epoch: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    """``train_loss`` (and ``train_<name>`` for each auxiliary output of the loss: means over
    the epoch's batches, weighted by batch size), then whatever ``eval_fn`` returned."""
    monitor: str | None = None
    """The metric early stopping and ``best_*`` refer to."""
    best_epoch: int = 0
    """Epoch with the highest monitored metric (the earliest on ties); 0 if none."""
    best: float = float("nan")
    """The monitored metric at ``best_epoch``."""
    stopped_early: bool = False
    """True if the monitored metric reached its target before the last epoch."""
    steps: int = 0
    """Optimizer updates made."""

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__
        if name in fields.get("metrics", {}):
            return fields["metrics"][name]
        if fields.get("monitor") is not None and name == f"best_{fields['monitor']}":
            return fields["best"]
        raise AttributeError(f"{type(self).__name__} has no attribute or metric {name!r}")

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics."""
        self.epoch.append(epoch)
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(value)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON serialisable): ``epoch``, every metric, ``stopped_early``,
        ``best_epoch``, ``best_<monitor>`` and ``steps``."""
        out: dict[str, Any] = {"epoch": list(self.epoch)}
        out.update({k: list(v) for k, v in self.metrics.items()})
        out.update(stopped_early=self.stopped_early, best_epoch=self.best_epoch)
        if self.monitor is not None:
            out[f"best_{self.monitor}"] = self.best
        out["steps"] = self.steps
        return out


@dataclass
class TrainedTask:
    """Result of :func:`train_on_task`: model, trained params, history and the data used."""

    model: Any
    params: Params
    history: TrainHistory
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def _rows(tree: Any) -> int:
    leaves = jax.tree.leaves(tree)
    return len(leaves[0]) if leaves and np.ndim(leaves[0]) else 1


@dataclass(eq=False)
class Minibatches:
    """Shuffled minibatches of ``data`` (a pytree of arrays sharing the leading dimension).

    Each iteration is one epoch over a fresh permutation drawn from one
    ``numpy.random.default_rng(seed)``: the same seed gives the same sequence of epochs. The
    last batch is smaller when ``batch_size`` does not divide the data, or left out with
    ``drop_remainder=True`` (one batch shape: one compilation).

    Example:
        >>> mb = Minibatches((np.arange(5), np.arange(5) * 10), 2, seed=0)
        >>> [len(x) for x, y in mb], len(mb)
        ([2, 2, 1], 3)
        >>> all((y == 10 * x).all() for x, y in mb)
        True
    """

    data: Any
    batch_size: int
    seed: int = field(default=0, kw_only=True)
    drop_remainder: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        sizes = {len(a) for a in jax.tree.leaves(self.data)}
        if len(sizes) != 1:
            raise ValueError(
                f"data arrays must share the leading dimension, got sizes {sorted(sizes)}"
            )
        self._n = sizes.pop()
        self._rng = np.random.default_rng(self.seed)

    def __len__(self) -> int:
        full, rest = divmod(self._n, self.batch_size)
        return full + (bool(rest) and not self.drop_remainder)

    def __iter__(self) -> Iterator[Any]:
        perm = self._rng.permutation(self._n)
        stop = self._n - self.batch_size + 1 if self.drop_remainder else self._n
        for start in range(0, stop, self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield jax.tree.map(lambda a: a[idx], self.data)


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


@functools.lru_cache(maxsize=32)
def _update_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, has_aux: bool
) -> Callable[..., Any]:
    """The jitted update ``(params, opt_state, batch) -> (params, opt_state, loss, aux)``."""

    @jax.jit
    def step(params: Params, opt_state: Any, batch: Batch):
        out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, batch)
        loss, aux = out if has_aux else (out, {})
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, aux

    return step


def fit(
    loss_fn: LossFn,
    params: Params,
    batches: Iterable[Batch],
    *,
    epochs: int = 1,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    has_aux: bool = False,
    eval_fn: Callable[[Params], dict[str, float]] | None = None,
    monitor: str | None = None,
    target: float | None = None,
    restore_best: bool = False,
    progress: bool = False,
    desc: str = "train",
) -> tuple[Params, TrainHistory]:
    """Minimise ``loss_fn(params, batch)`` with optax, epoch by epoch.

    Args:
        loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or ``-> (loss, aux)`` with
            ``has_aux=True`` where ``aux`` is a dict of scalar metrics (as in ``jax.grad``).
            Pass the same function object again to reuse the compiled update step.
        params: initial parameters (any pytree).
        batches: iterated once per epoch: :class:`Minibatches` (a new shuffle every epoch), a
            list (the same batches every epoch; ``[data]`` for full-batch steps) or, with
            ``epochs=1``, any iterable. A batch is whatever ``loss_fn`` takes.
        epochs: maximum number of epochs.
        optimizer: an optax optimizer; default ``optax.adam(learning_rate)``.
        learning_rate: Adam's step size (ignored when ``optimizer`` is given).
        has_aux: ``loss_fn`` returns ``(loss, aux)``.
        eval_fn: ``eval_fn(params) -> {name: value}`` after every epoch (e.g. validation).
        monitor: the metric (``train_loss``, ``train_<aux name>`` or an ``eval_fn`` name) that
            ``best_*``, ``target`` and ``restore_best`` refer to; larger is better.
        target: stop after the first epoch whose ``monitor`` metric is ``>=`` this.
        restore_best: return the parameters of the epoch with the best ``monitor`` metric
            (the earliest on ties) instead of the last ones.
        progress: show a tqdm bar over epochs (``desc`` labels it).

    Returns:
        ``(params, history)``: the trained parameters and a :class:`TrainHistory`.

    Example (least squares, full batch):
        >>> x = np.linspace(-1, 1, 8, dtype=np.float32); y = 3 * x + 1
        >>> loss = lambda p, b: jnp.mean((p["w"] * b[0] + p["b"] - b[1]) ** 2)
        >>> p, h = fit(loss, {"w": 0.0, "b": 0.0}, [(x, y)], epochs=300, learning_rate=0.1)
        >>> round(float(p["w"]), 2), round(float(p["b"]), 2), h.steps
        (3.0, 1.0, 300)
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if (target is not None or restore_best) and monitor is None:
        raise ValueError("target and restore_best need monitor=<metric name>")
    tx = _adam(float(learning_rate)) if optimizer is None else optimizer
    step = _update_step(loss_fn, tx, has_aux)
    opt_state = tx.init(params)
    history = TrainHistory(monitor=monitor)
    best_params, best_value = params, -math.inf
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        losses, auxes, sizes = [], [], []
        for batch in batches:
            params, opt_state, loss, aux = step(params, opt_state, batch)
            losses.append(loss)
            auxes.append(aux)
            sizes.append(_rows(batch))
        if not sizes:
            raise ValueError(
                f"batches gave no batch in epoch {epoch}; for several epochs pass "
                "a list or Minibatches(...), not a one-pass iterator"
            )
        history.steps += len(sizes)
        n = sum(sizes)
        # device values are read once per epoch, not per step (keeps the dispatch asynchronous)
        metrics = {"train_loss": sum(float(v) * m for v, m in zip(losses, sizes)) / n}
        for name in auxes[0]:
            metrics[f"train_{name}"] = sum(float(a[name]) * m for a, m in zip(auxes, sizes)) / n
        if eval_fn is not None:
            metrics.update(eval_fn(params))
        history.record(epoch, metrics)
        postfix = {"loss": f"{metrics['train_loss']:.4f}"}
        if monitor is not None:
            if monitor not in metrics:
                raise ValueError(
                    f"monitor={monitor!r} is not a metric; the metrics are {sorted(metrics)}"
                )
            value = metrics[monitor]
            postfix[monitor] = f"{value:.4f}"
            if value > best_value:
                best_params, best_value = params, value
                history.best_epoch, history.best = epoch, value
        bar.set_postfix(postfix)
        if target is not None and metrics[monitor] >= target:
            history.stopped_early = epoch < epochs
            break
    bar.close()
    return (best_params if restore_best else params), history


# ---------------------------------------------------------------------------------------------
# classifiers
# ---------------------------------------------------------------------------------------------


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


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _make_classifier_loss(model: Any) -> tuple[LossFn, Callable[..., Any]]:
    def loss_fn(params: Params, batch: tuple[jax.Array, jax.Array]):
        x, y = batch
        logits = model.apply(params, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, {"acc": (logits.argmax(-1) == y).mean()}

    return loss_fn, jax.jit(loss_fn)


_cached_classifier_loss = functools.lru_cache(maxsize=32)(_make_classifier_loss)


def _classifier_loss(model: Any) -> tuple[LossFn, Callable[..., Any]]:
    """``(loss_fn, jitted loss_fn)`` of a classifier: cross-entropy with accuracy as ``aux``;
    cached per model, so repeated runs reuse the compiled steps."""
    return _cached_classifier_loss(model) if _hashable(model) else _make_classifier_loss(model)


def _evaluate(
    eval_step: Callable[..., Any], params: Params, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float]:
    total_loss = total_acc = 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        loss, aux = eval_step(params, (xb, yb))
        total_loss += float(loss) * len(yb)
        total_acc += float(aux["acc"]) * len(yb)
    return total_loss / len(y), total_acc / len(y)


def evaluate(
    model: Any, params: Params, tokens: Any, labels: Any, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(tokens, labels)``.

    Example:
        >>> from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params
        >>> m = TransformerClassifier(max_len=3)
        >>> x, y = np.ones((5, 3), np.int32), np.zeros(5, np.int32)
        >>> loss, acc = evaluate(m, init_params(m), x, y)
        >>> 0.0 <= acc <= 1.0
        True
    """
    x, y = _check_data((tokens, labels), "evaluation data")
    return _evaluate(_classifier_loss(model)[1], params, x, y, batch_size)


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
        >>> from jaxpr_semiring.paper.transformer import TransformerClassifier
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
    if params is None:
        params = model.init(jax.random.key(seed), jnp.asarray(x_tr[:1]))
    loss_fn, eval_step = _classifier_loss(model)

    def validate(p: Params) -> dict[str, float]:
        loss, acc = _evaluate(eval_step, p, x_va, y_va, eval_batch_size)
        return {"val_loss": loss, "val_acc": acc}

    return fit(
        loss_fn,
        params,
        Minibatches((x_tr, y_tr), batch_size, seed=seed),
        epochs=max_epochs,
        optimizer=optimizer,
        learning_rate=learning_rate,
        has_aux=True,
        eval_fn=validate,
        monitor="val_acc",
        target=target_val_acc,
        restore_best=True,
        progress=progress,
    )


def train_val_split(
    tokens: np.ndarray, labels: np.ndarray, n_val: int
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

    The default model is :func:`~jaxpr_semiring.paper.transformer.model_for_task` (paper
    §5.1: 1 layer, hidden 16, 2 heads; override with ``model_kwargs``). The paper's §5.1 data
    set has 10 000 examples, hence the defaults 8000 / 2000. ``train_kwargs`` go to
    :func:`train_classifier`.

    Example:
        >>> from jaxpr_semiring.paper.synthetic import Contains1
        >>> run = train_on_task(Contains1(seq_len=4, vocab_size=4), n_train=32, n_val=16,
        ...                     max_epochs=1, progress=False)
        >>> run.val[0].shape
        (16, 4)
    """
    from .transformer import model_for_task

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
