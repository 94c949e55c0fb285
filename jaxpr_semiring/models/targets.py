"""Scalar targets of model outputs (batch of one): what the flows explain.

Each is ``target(outputs, *target_args) -> scalar``; the arguments are traced, so one jitted
flows function serves every sentence (positions and token ids are data, not constants).

>>> import jax.numpy as jnp
>>> from types import SimpleNamespace
>>> out = SimpleNamespace(logits=jnp.arange(12.0).reshape(1, 2, 6))
>>> float(logit_diff(out, 1, 5, 2))      # logits[0, 1, 5] - logits[0, 1, 2]
3.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["logit_diff", "class_diff", "similarity", "mean_pooled", "top2"]


def logit_diff(outputs, position, a, b):
    """logit(a) − logit(b) at sequence ``position``: a masked-LM prediction at the mask, a
    causal LM's next-token prediction, a seq2seq decoder position."""
    logits = outputs.logits[0, position]
    return logits[a] - logits[b]


def class_diff(outputs, a, b):
    """logit of class ``a`` − logit of class ``b`` (sequence / image classifiers)."""
    logits = outputs.logits[0]
    return logits[a] - logits[b]


def mean_pooled(outputs, attention_mask=None):
    """The mean over tokens of the last hidden state (sentence-transformers pooling)."""
    h = outputs.last_hidden_state[0]
    if attention_mask is None:
        return jnp.mean(h, axis=0)
    w = jnp.asarray(attention_mask, h.dtype)[:, None]
    return jnp.sum(h * w, axis=0) / jnp.maximum(jnp.sum(w), 1)


def similarity(outputs, other):
    """Cosine similarity of the mean-pooled sentence embedding with ``other`` (a fixed
    embedding, e.g. of a second sentence): for sentence encoders without a head."""
    v = mean_pooled(outputs)
    return jnp.dot(v, other) / (jnp.linalg.norm(v) * jnp.linalg.norm(other))


def top2(logits) -> tuple[int, int]:
    """The ids of the two largest logits (a concrete vector), best first."""
    _, ids = jax.lax.top_k(jnp.asarray(logits), 2)
    return int(ids[0]), int(ids[1])
