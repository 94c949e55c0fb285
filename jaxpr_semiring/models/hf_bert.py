"""Branch-point flows for Hugging Face Flax BERT (paper §5, Fig. 2–4), without editing the model.

At the input h_i of every Transformer layer the hidden state branches into the skip connection
(the residual ``add`` in ``attention/output``) and the queries, keys and values of self-attention
(``attention/self/{query,key,value}``). :func:`branch_flows` runs one semiring backward pass
from a scalar target of the model outputs and returns per layer × token × branch the semiring
value arriving through that branch, ⊕-aggregated over the hidden dimensions (paper Eq. 3), and
the flows w.r.t. the word-embedding output. It is the ``"attention"`` branch point of the BERT
preset of :mod:`jaxpr_semiring.models.components` (which also has the MLP branch point and every
other family).

Works for any Flax BERT (``FlaxBertModel``, ``FlaxBertForMaskedLM``, …); jittable and
vmappable over sentences::

    fn = branch_flows_fn(model, target=my_target)            # (params, input_ids, *targs)
    out = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(model.params, ids_batch)
    out.flows.top_pos          # [batch, layers, tokens, 4]  (BRANCHES order)

For masked-LM models the default target is logit(correct) − logit(wrong) at the mask position
(:func:`mlm_logit_diff`, ``target_args=(mask_position, correct_id, wrong_id)``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..analyses.component_channels import OTHER
from ..api import value_and_semiring_grad
from ..flax_hooks import module_path
from ..semirings import MaxProduct, Semiring
from .components import component_flows_fn
from .targets import logit_diff

__all__ = [
    "BRANCHES",
    "BranchFlows",
    "branch_flows",
    "branch_flows_fn",
    "embedding_flows",
    "word_embeddings_replaced_by",
    "embedding_flows_fn",
    "mlm_logit_diff",
    "classify_consumer",
    "word_embedding_table",
]

#: branch order of the last axis of :attr:`BranchFlows.flows`
BRANCHES = ("skip", "query", "key", "value")

# consumer module path, relative to the layer, → branch
_BRANCH_PREFIX = {
    "attention/output": "skip",
    "attention/self/query": "query",
    "attention/self/key": "key",
    "attention/self/value": "value",
}


class BranchFlows(NamedTuple):
    """Result of :func:`branch_flows` (a pytree; batched under ``vmap``).

    flows: semiring value, leaves ``[num_layers, seq_len, 4]`` (branches in :data:`BRANCHES`
      order; TopK adds a trailing k axis): ⊕ over hidden dims of the flow arriving at the
      layer input through each branch.
    total: semiring value ``[num_layers, seq_len]``: ⊕ over hidden dims of everything arriving
      at the layer input (= ⊕ over branches, plus ``other`` consumers if any).
    other: semiring value ``[num_layers, seq_len]``: consumers that are none of the 4
      branches (0̄ for standard BERT).
    embeddings: semiring value ``[seq_len, hidden]``: flows w.r.t. the word-embedding output.
    value: the target's value.
    """

    flows: Any
    total: Any
    other: Any
    embeddings: Any
    value: jax.Array


def classify_consumer(
    label: str, layer_path: str, branches: dict[str, str] | None = None
) -> str | None:
    """The branch of a consumer label (``"<module path> [<prim>]"``) of the input of the layer
    at ``layer_path`` (e.g. ``"bert/encoder/layer/3"``), or None.

    ``branches`` maps module sub-paths below the layer to branch names (default: Hugging Face
    BERT's skip/query/key/value); other models pass their own.

    >>> classify_consumer("M/bert/encoder/layer/3/attention/self/key [dot_general]",
    ...                   "bert/encoder/layer/3")
    'key'
    """
    path = label.rsplit(" [", 1)[0]
    marker = "/" + layer_path + "/"
    i = ("/" + path + "/").find(marker)
    if i < 0:
        return None
    rel = ("/" + path + "/")[i + len(marker) :].strip("/")
    for prefix, branch in (branches or _BRANCH_PREFIX).items():
        if rel == prefix or rel.startswith(prefix + "/"):
            return branch
    return None


#: logit(correct) − logit(wrong) at ``mask_position`` (batch element 0)
mlm_logit_diff = logit_diff


def word_embedding_table(params):
    """The word-embedding matrix in a Flax BERT parameter tree."""
    found = []

    def visit(tree, path):
        if isinstance(tree, dict) or hasattr(tree, "items"):
            for k, v in tree.items():
                visit(v, path + (k,))
        elif path[-3:] == ("embeddings", "word_embeddings", "embedding"):
            found.append(tree)

    visit(params, ())
    if len(found) != 1:
        raise ValueError(
            f"expected one embeddings/word_embeddings/embedding in params, found {len(found)}"
        )
    return found[0]


def _is_word_embeddings(module) -> bool:
    p = module_path(module)
    return p == "embeddings/word_embeddings" or p.endswith("/embeddings/word_embeddings")


def word_embeddings_replaced_by(embeddings):
    """Context manager: every Hugging Face BERT word-embedding lookup returns ``embeddings``
    instead (the input representation to differentiate w.r.t.; shape of the lookup's output).

    >>> import jax.numpy as jnp
    >>> with word_embeddings_replaced_by(jnp.zeros((1, 3, 8))):
    ...     pass
    """

    def replace(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and _is_word_embeddings(context.module):
            return embeddings.astype(jnp.result_type(embeddings))
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(replace)


def _default_target(model, target):
    if target is not None:
        return target
    if "MaskedLM" in type(model).__name__ or "ForPreTraining" in type(model).__name__:
        return mlm_logit_diff
    raise ValueError(
        f"{type(model).__name__} has no default target: pass target(outputs, "
        f"*target_args) -> scalar (e.g. a dot product of outputs.pooler_output[0] "
        f"with a fixed vector)."
    )


def branch_flows_fn(
    model, target: Callable | None = None, semiring: Semiring | None = None
) -> Callable:
    """A jittable/vmappable ``fn(params, input_ids, *target_args, attention_mask=None,
    token_type_ids=None) -> BranchFlows`` for one sentence (``input_ids`` of shape [seq_len]).

    ``target(outputs, *target_args)`` maps the model outputs (batch of one) to a scalar.
    """
    S = MaxProduct() if semiring is None else semiring
    flows_fn = component_flows_fn(
        model, _default_target(model, target), S, preset="bert", points=("attention",)
    )

    def fn(params, input_ids, *target_args, attention_mask=None, token_type_ids=None):
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 1:
            raise ValueError(
                f"input_ids must be one sentence of shape [seq_len] (got "
                f"{input_ids.shape}); jax.vmap over sentences for a batch."
            )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        cf = flows_fn(params, inputs, *target_args)
        flows, total = cf.stacked("attention")
        comps = cf.points[0].components
        pick = lambda name: S.map(lambda a: a[..., comps.index(name)], flows)
        branches = S.map(lambda *a: jnp.stack(a, axis=-1), *[pick(b) for b in BRANCHES])
        return BranchFlows(branches, total, pick(OTHER), cf.embeddings, cf.value)

    return fn


def branch_flows(
    model,
    params,
    input_ids,
    target: Callable | None = None,
    target_args: Sequence = (),
    semiring: Semiring | None = None,
    *,
    attention_mask=None,
    token_type_ids=None,
) -> BranchFlows:
    """Per layer × token × branch (skip, query, key, value) semiring flows at each BERT layer's
    input for the scalar ``target(outputs, *target_args)`` (default for masked-LM models:
    :func:`mlm_logit_diff` with ``target_args=(mask_position, correct_id, wrong_id)``).

    ``input_ids``: one sentence, shape [seq_len]. ``semiring`` defaults to ``MaxProduct()``.
    Compiled with ``jax.jit`` on each call; for repeated calls, vmap or your own jit use
    :func:`branch_flows_fn`. See :class:`BranchFlows` for the fields.
    """
    fn = branch_flows_fn(model, target, semiring)
    run = jax.jit(lambda p, i, am, tt, *ta: fn(p, i, *ta, attention_mask=am, token_type_ids=tt))
    return run(params, input_ids, attention_mask, token_type_ids, *target_args)


def embedding_flows_fn(
    model, target: Callable | None = None, semiring: Semiring | None = None
) -> Callable:
    """``fn(params, input_ids, *target_args, attention_mask=None, token_type_ids=None) ->
    (value, flows)``: the semiring gradient w.r.t. the word-embedding output ([seq_len,
    hidden]), no taps. Jittable and vmappable."""
    S = MaxProduct() if semiring is None else semiring
    target = _default_target(model, target)

    def fn(params, input_ids, *target_args, attention_mask=None, token_type_ids=None):
        input_ids = jnp.asarray(input_ids)
        emb = jnp.take(word_embedding_table(params), input_ids, axis=0)

        def f(e):
            with word_embeddings_replaced_by(e[None]):
                am = None if attention_mask is None else jnp.asarray(attention_mask)[None]
                tt = None if token_type_ids is None else jnp.asarray(token_type_ids)[None]
                out = model(input_ids[None], attention_mask=am, token_type_ids=tt, params=params)
            return target(out, *target_args)

        return value_and_semiring_grad(f, S)(emb)

    return fn


def embedding_flows(
    model,
    params,
    input_ids,
    target: Callable | None = None,
    target_args: Sequence = (),
    semiring: Semiring | None = None,
    *,
    attention_mask=None,
    token_type_ids=None,
):
    """``(value, flows)``: semiring gradient of the target w.r.t. the word-embedding output
    (shape [seq_len, hidden]); ⊕ over the last axis gives per-token values (Eq. 3)."""
    return embedding_flows_fn(model, target, semiring)(
        params,
        input_ids,
        *target_args,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
    )
