"""Component flows for any Transformer: at every residual branch point of every layer, how much
semiring gradient flows through each component (skip, query, key, value, mlp, …) per token.

The model front end: this module finds the model's preset (:mod:`.presets`), calls the model
(Hugging Face Flax or linen) with its embedding output as the differentiated input, and runs
one backward pass with the analysis of :mod:`jaxpr_semiring.analyses.component_channels`
(how channels, branch points, ``other`` and NaN work is documented there). Cost grows with the
number of components at the branch points only, not with the layers.

>>> import jax, jax.numpy as jnp, jaxpr_semiring as js
>>> from jaxpr_semiring.paper.transformer import TransformerClassifier, init_params
>>> m = TransformerClassifier(num_layers=2, max_len=5)
>>> p = init_params(m)
>>> cf = component_flows(m, p, jnp.array([1, 2, 3, 4, 5]), target=lambda lg: lg[1] - lg[0])
>>> [(pt.layer, pt.point, pt.components) for pt in cf.points][:2]
[(0, 'attention', ('skip', 'query', 'key', 'value', 'other')), (0, 'mlp', ('skip', 'mlp', 'other'))]
>>> cf.points[0].flows.top_pos.shape     # [tokens, components]
(5, 5)
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ..analyses.component_channels import ComponentFlows, ComponentObserver, instrument
from ..analyses.tagged import Tagged
from ..api import backprop
from ..semirings import MaxProduct, Semiring
from . import presets as P

__all__ = ["component_flows", "component_flows_fn", "embedding_target", "is_hf_model"]


# --------------------------------------------------------------------------- entry points


def is_hf_model(model) -> bool:
    """Whether ``model`` is a Hugging Face Flax model (called as ``model(ids, params=...)``).
    Its ``params`` is a property that raises for a model built with ``_do_init=False`` (as the
    command line loads them), so the class is asked, not the instance."""
    return hasattr(model, "config") and hasattr(model, "module") and hasattr(type(model), "params")


def _call(model, params, inputs):
    """The model's outputs: a Hugging Face model on one example (a batch axis of 1 is added),
    a linen module on ``inputs`` as they are."""
    if is_hf_model(model):
        batched = {k: None if v is None else jnp.asarray(v)[None] for k, v in inputs.items()}
        return model(**batched, params=params)
    if isinstance(inputs, dict):
        return model.apply(params, **inputs)
    return model.apply(params, *inputs)


def _as_inputs(model, inputs):
    if isinstance(inputs, dict):
        return {k: v for k, v in inputs.items() if v is not None}
    if is_hf_model(model):
        key = (
            "pixel_values" if jnp.issubdtype(jnp.result_type(inputs), jnp.floating) else "input_ids"
        )
        return {key: inputs}
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def component_flows_fn(
    model,
    target: Callable | None = None,
    semiring: Semiring | None = None,
    *,
    heads: bool = False,
    preset: P.Preset | str | None = None,
    points: Sequence[str] | None = None,
    head_dim: int | None = None,
) -> Callable:
    """A jittable/vmappable ``fn(params, inputs, *target_args) -> ComponentFlows`` for one
    example.

    ``model``: a Hugging Face Flax model (``inputs``: a dict of its inputs for one example,
    without the batch axis, or the ``input_ids`` / ``pixel_values`` array) or a Flax linen
    module (``inputs``: its ``apply`` arguments: an array, a tuple or a dict).
    ``target(outputs, *target_args)`` maps the model's outputs to a scalar (see
    :mod:`jaxpr_semiring.models.targets`). ``semiring`` defaults to ``MaxProduct()``.
    ``heads=True`` splits query/key/value per attention head (of width ``head_dim``, by
    default from the model's config). ``preset`` overrides the detected family
    (:mod:`jaxpr_semiring.models.presets`); ``points`` restricts the branch points (e.g.
    ``("attention",)``).
    """
    if target is None:
        raise ValueError(
            "component flows need a target: pass target(outputs, *target_args) -> "
            "scalar, e.g. jaxpr_semiring.models.targets.logit_diff."
        )
    preset = P.detect(model, preset)
    S = MaxProduct() if semiring is None else semiring
    T = Tagged(S)
    hd = head_dim or _head_dim(model, preset, heads)
    names = tuple(pt.name for pt in preset.points if points is None or pt.name in points)
    if not names:
        raise ValueError(
            f"points={points!r} names no branch point of preset {preset.name!r} "
            f"(it has {[pt.name for pt in preset.points]})."
        )

    def fn(params, inputs, *target_args) -> ComponentFlows:
        f, emb0 = embedding_target(model, params, inputs, target, target_args, preset, names)
        observer = ComponentObserver(T, preset, names, heads, hd)
        b = backprop(f, T, observer=observer)(emb0)
        emb = T.merge(b.grads)
        if is_hf_model(model):
            emb = S.map(lambda a: a[0], emb)
        return ComponentFlows(observer.readout(b.cotangents), emb, b.value, preset.name, S)

    return fn


def _head_dim(model, preset, heads: bool) -> int | None:
    needed = heads or any(c.fused == "heads:qkv" for pt in preset.points for c in pt.components)
    return P.head_dim(model) if needed else None


def embedding_target(
    model,
    params,
    inputs,
    target: Callable,
    target_args: Sequence = (),
    preset: P.Preset | str | None = None,
    points: Sequence[str] = (),
):
    """``(f, e0)``: ``f(e)`` is ``target(outputs, *target_args)`` of the model whose embedding
    module (the preset's; its first call) returns ``e`` instead, with the branch points of
    ``points`` tapped; ``e0`` is the embedding output itself. Differentiate ``f`` at ``e0``
    (e.g. with :func:`jaxpr_semiring.top_path`) for flows from the tokens.

    ``inputs`` as in :func:`component_flows_fn` (one example).
    """
    preset = P.detect(model, preset)
    inputs = _as_inputs(model, inputs)
    seen: list = []
    # a bridged PyTorch model (models.torch_bridge) taps its own modules
    tap_model = getattr(model, "instrument_components", instrument)
    with tap_model(preset, seen=seen):  # under jit the rest of this pass is dead code
        _call(model, params, inputs)
    if not seen:
        raise ValueError(
            f"preset {preset.name!r}: no call of an embedding module matching "
            f"{preset.embeddings!r}; check the preset's embeddings pattern."
        )

    def f(e):
        with tap_model(preset, points, e):
            out = _call(model, params, inputs)
        return target(out, *target_args)

    return f, seen[0]


def component_flows(
    model,
    params,
    inputs,
    target: Callable | None = None,
    target_args: Sequence = (),
    semiring: Semiring | None = None,
    *,
    heads: bool = False,
    preset: P.Preset | str | None = None,
    points: Sequence[str] | None = None,
    head_dim: int | None = None,
) -> ComponentFlows:
    """Per layer × branch point × token × component flows of ``target(outputs, *target_args)``
    for one example (see :func:`component_flows_fn` for the arguments), compiled with
    ``jax.jit``. For many examples, jit (and vmap) :func:`component_flows_fn` yourself.
    """
    fn = component_flows_fn(
        model, target, semiring, heads=heads, preset=preset, points=points, head_dim=head_dim
    )
    return jax.jit(fn)(params, inputs, *target_args)
