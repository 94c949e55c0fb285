"""The attribution graph: direct linear effects between active features, error nodes, token
embeddings and target logits, in the frozen model.

Freezing (attention patterns, norm scales: recorded once and replayed as constants, see
:class:`~jaxpr_semiring.features.splice.ReplacementModel`; the dictionaries' non-linearities: every
feature activation is a leaf) makes the model an affine function of its leaves — token
embeddings, feature activations, errors. Edge ``A[t, s]`` is the change of target ``t`` (a
feature's pre-activation, or a logit) per unit of source ``s`` times the source's value: the
gradient of ``t`` w.r.t. the leaf, dotted with the leaf. All rows come from one ``jax.vjp`` of
the frozen model, ``vmap``-ed over batches of one-hot cotangent seeds (circuit-tracer's cost:
one backward pass per target row).

>>> import jax, jax.numpy as jnp
>>> from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params
>>> from jaxpr_semiring.features.dictionary import Dictionary
>>> m = TransformerClassifier(num_layers=1, hidden=8, heads=2, max_len=4, vocab_size=5)
>>> p = init_params(m)
>>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
>>> tc = Dictionary(jax.random.normal(k1, (8, 16)), jnp.zeros(16),
...                 0.1 * jax.random.normal(k2, (16, 8)), jnp.zeros(8), kind="transcoder",
...                 site="layer_0/mlp:in", out_site="layer_0/mlp:out")
>>> g = attribution_graph(m, p, jnp.array([1, 2, 3, 4]), [tc], target=1)
>>> g.n_errors, g.n_tokens, g.n_logits, g.adjacency.shape[0] == g.n_nodes
(4, 4, 1, True)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .dictionary import Dictionary
from .graph import FeatureGraph
from .splice import FREEZABLE, Leaves, ReplacementModel

__all__ = ["attribution_graph", "select_logits"]


def select_logits(logits, target=None, *, max_logits: int = 10, prob: float = 0.95):
    """Target logit ids: ``target`` (an id or ids), or (``None``) the most likely tokens until
    their probability reaches ``prob``, at most ``max_logits`` (circuit-tracer's default)."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
    if target is not None:
        ids = np.atleast_1d(np.asarray(target, np.int64))
        bad = ids[(ids < 0) | (ids >= probs.size)]
        if bad.size:
            raise ValueError(
                f"attribution: target id {int(bad[0])} is out of range (vocabulary {probs.size})"
            )
        return ids, probs[ids]
    order = np.argsort(-probs, kind="stable")[:max_logits]
    n = int(np.searchsorted(np.cumsum(probs[order]), prob)) + 1
    ids = order[: min(n, len(order))]
    return ids, probs[ids]


def attribution_graph(
    model: Any,
    params: Any,
    inputs,
    splices: Sequence[Dictionary],
    target=None,
    *,
    freeze: Sequence[str] = FREEZABLE,
    max_features: int | None = None,
    batch_size: int = 256,
    embed_site: str = "auto",
    logits_fn=None,
    input_strings: list[str] | None = None,
    logit_strings: list[str] | None = None,
    replacement: ReplacementModel | None = None,
) -> FeatureGraph:
    """The attribution graph of ``model`` at ``inputs`` (one prompt, ``[pos]`` token ids).

    Args:
      model: a Flax linen Module (called as ``model.apply(params, tokens[None])``), an HF Flax
        model (``model(tokens[None], params=params).logits``) or a callable
        ``(params, tokens[1, pos]) -> output``.
      splices: the dictionaries, each with its ``site`` (and a transcoder's ``out_site``); their
        layer is their call order in the forward pass.
      target: logit id(s) to explain; ``None``: the most likely tokens (:func:`select_logits`).
      freeze: what is held at its recorded value: ``"attention"`` (patterns) and/or ``"norm"``
        (LayerNorm scales). The dictionaries' non-linearities are always frozen.
      max_features: keep the ``max_features`` largest activations as nodes; the others are folded
        into their layer and position's error node, so edges still sum exactly.
      batch_size: cotangent seeds per vmapped VJP.
      embed_site: the token-embedding module (``"auto"``: the first ``nn.Embed`` called).
      logits_fn: ``output -> [V]`` logits (default: last position of ``[1, pos, V]``).
      replacement: a :class:`ReplacementModel` already recorded at ``inputs`` (reused).

    Node order: features (layer-major, then position, then feature index), error nodes
    (``n_layers * n_pos``, layer-major), tokens (``n_pos``), logits.
    """
    rm = replacement or ReplacementModel(
        model,
        params,
        inputs,
        splices,
        freeze=freeze,
        embed_site=embed_site,
        logits_fn=logits_fn,
    )
    leaves = rm.leaves
    acts = [np.asarray(a) for a in leaves["acts"]]
    n_layers, n_pos = len(acts), int(rm.tokens.shape[0])
    active = np.array(
        [(lay, p, f) for lay, a in enumerate(acts) for p, f in zip(*np.nonzero(a))], np.int64
    ).reshape(-1, 3)
    values = np.array([acts[lay][p, f] for lay, p, f in active], np.float64)
    if max_features is not None and len(active) > max_features:
        keep = np.sort(np.argsort(-np.abs(values), kind="stable")[:max_features])
        active, values = active[keep], values[keep]
    logit_ids, logit_probs = select_logits(rm.logits, target)
    n_f, n_l = len(active), len(logit_ids)
    n_e, n_t = n_layers * n_pos, n_pos
    n = n_f + n_e + n_t + n_l

    per_layer = [active[active[:, 0] == lay] for lay in range(n_layers)]

    def rows(lv: Leaves):
        pres, logits = rm.forward(lv)
        parts = [pres[lay][fa[:, 1], fa[:, 2]] for lay, fa in enumerate(per_layer)]
        return jnp.concatenate(parts + [logits[jnp.asarray(logit_ids)]])

    n_rows = n_f + n_l

    @jax.jit
    def batch(leaves, seeds):
        _, vjp_fn = jax.vjp(rows, leaves)
        g = jax.vmap(vjp_fn)(seeds)[0]
        # edges: gradient · leaf value (features: per activation; errors, tokens: per vector)
        fe = [ga * a[None] for ga, a in zip(g["acts"], leaves["acts"])]
        ee = [jnp.sum(ge * e[None], -1) for ge, e in zip(g["errors"], leaves["errors"])]
        te = jnp.sum(g["embed"] * leaves["embed"][None], -1)
        return fe, ee, te

    dtype = jnp.result_type(leaves["embed"])
    kept = [np.zeros(a.shape, bool) for a in acts]
    for lay, p, f in active:
        kept[lay][p, f] = True
    A = np.zeros((n, n), np.float64)
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        size = min(batch_size, n_rows)  # one shape for every batch: one compilation
        seeds = jnp.eye(size, n_rows, k=start, dtype=dtype)
        fe, ee, te = batch(leaves, seeds)
        m = stop - start
        fe = [np.asarray(x, np.float64)[:m] for x in fe]
        ee = [np.asarray(x, np.float64)[:m] for x in ee]
        te = np.asarray(te, np.float64)[:m]
        tgt = np.r_[np.arange(start, min(stop, n_f)), np.arange(max(start, n_f), stop) + n_e + n_t]
        for lay in range(n_layers):
            fa = per_layer[lay]
            cols = np.nonzero(active[:, 0] == lay)[0]
            A[np.ix_(tgt, cols)] = fe[lay][:, fa[:, 1], fa[:, 2]]
            # features left out of the graph: their effect joins their position's error node
            dropped = np.where(kept[lay][None], 0.0, fe[lay]).sum(-1)
            A[tgt, n_f + lay * n_pos : n_f + (lay + 1) * n_pos] = ee[lay] + dropped
        A[tgt, n_f + n_e : n_f + n_e + n_t] = te
    return FeatureGraph(
        adjacency=A,
        n_features=n_f,
        n_errors=n_e,
        n_tokens=n_t,
        n_logits=n_l,
        n_layers=n_layers,
        active_features=active,
        activation_values=values,
        input_tokens=np.asarray(rm.tokens),
        logit_tokens=np.asarray(logit_ids),
        logit_probabilities=np.asarray(logit_probs, np.float64),
        input_strings=input_strings,
        logit_strings=logit_strings,
    )
