"""Where the residual branch points and their components are, per model family: presets as data.

A :class:`Preset` names, as regular expressions over Flax module paths:

* ``layers``: a layer (Transformer block) module, e.g. ``r"encoder/layer/\\d+"``. Everything
  else is relative to the matched layer path.
* ``embeddings``: the token (or patch) embedding module; its first call's output is the input
  the flows are taken with respect to.
* ``points``: the branch points of a layer (:class:`Point`), the first one beginning a layer:
  where each is (:class:`Branch`: an argument of a module call inside the layer) and its
  components (:class:`Component`: module paths, optionally one primitive, of the first
  equations a path takes in this layer: a projection, the residual ``add``).

Post-LN encoders (BERT family) branch at the layer input into skip/query/key/value and at the
attention output into skip/mlp; pre-LN decoders (GPT-2, Llama, …) the same *through* their
pre-attention / pre-MLP norms (a component is the first labelled equation on a path, the norm
is not one); encoder–decoder models add a ``cross_attention`` point (query from the decoder
stream, key/value from the encoder output). ALBERT calls one shared layer module for every
layer: layers are told apart by call order, never by name.

:func:`detect` picks the preset of a Hugging Face Flax model (from ``config.model_type``) or of
this repository's :class:`~jaxpr_semiring.paper.transformer.TransformerClassifier`; for your
own Flax model write a :class:`Preset` (see ``docs/components.md``).

>>> PRESETS["gpt2"].points[0].components[1]
Component(name='qkv', module='attn/c_attn', primitive=None, fused='qkv')
>>> detect_name("roberta")
'bert'
"""

from __future__ import annotations

from typing import Any

from ..analyses.component_channels import (
    ATTENTION_PROJECTIONS,
    POINTS,
    Branch,
    Component,
    Point,
    Preset,
)

__all__ = [
    "Branch",
    "Component",
    "Point",
    "Preset",
    "PRESETS",
    "MODEL_TYPES",
    "POINTS",
    "ATTENTION_PROJECTIONS",
    "detect",
    "detect_name",
    "head_dim",
    "UnsupportedModelError",
]


def _skip(module: str = "") -> Component:
    return Component("skip", module, "add")


def _qkv(prefix: str, names=("query", "key", "value")) -> tuple:
    return tuple(Component(c, f"{prefix}{n}") for c, n in zip(ATTENTION_PROJECTIONS, names))


def _pre_ln_decoder(name, layers, embeddings, attn, mlp_norm, mlp, description) -> Preset:
    """A pre-LN block: residual adds in the block itself, the MLP point before its norm."""
    return Preset(
        name,
        layers,
        embeddings,
        (
            Point("attention", (Branch(),), (_skip(),) + attn),
            Point("mlp", (Branch(mlp_norm),), (_skip(), Component("mlp", mlp))),
        ),
        description,
    )


def _encoder_decoder(name, pre_ln: bool, description) -> Preset:
    """BART-style layers (``(encoder|decoder)/layers/i``); pre-LN (mBART, Pegasus) or post-LN
    (BART, Marian)."""
    cross_q = (
        Branch("encoder_attn_layer_norm") if pre_ln else Branch("encoder_attn", "hidden_states")
    )
    return Preset(
        name,
        r"(?:encoder|decoder)/layers/\d+",
        r"shared|embed_tokens",
        (
            Point(
                "attention",
                (Branch(),),
                (_skip(),) + _qkv("self_attn/", ("q_proj", "k_proj", "v_proj")),
            ),
            Point(
                "cross_attention",
                (cross_q, Branch("encoder_attn", "key_value_states", "output")),
                (_skip(),) + _qkv("encoder_attn/", ("q_proj", "k_proj", "v_proj")),
            ),
            Point(
                "mlp",
                (Branch("final_layer_norm" if pre_ln else "fc1"),),
                (_skip(), Component("mlp", "fc1")),
            ),
        ),
        description,
    )


_BERT_LIKE = Preset(
    "bert",
    r"encoder/layer/\d+",
    r"embeddings/word_embeddings",
    (
        Point("attention", (Branch(),), (_skip("attention/output"),) + _qkv("attention/self/")),
        Point(
            "mlp",
            (Branch("intermediate"),),
            (_skip("output"), Component("mlp", "intermediate/dense")),
        ),
    ),
    "post-LN encoder: BERT, RoBERTa, XLM-R, ELECTRA, RoFormer, CamemBERT",
)

_LLAMA_ATTN = _qkv("self_attn/", ("q_proj", "k_proj", "v_proj"))

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _BERT_LIKE,
        Preset(
            "distilbert",
            r"transformer/layer/\d+",
            r"embeddings/word_embeddings",
            (
                Point(
                    "attention",
                    (Branch("", "hidden_states"),),
                    (_skip(),) + _qkv("attention/", ("q_lin", "k_lin", "v_lin")),
                ),
                Point("mlp", (Branch("ffn"),), (_skip(), Component("mlp", "ffn/lin1"))),
            ),
            "post-LN encoder, residual adds in the block",
        ),
        Preset(
            "albert",
            r"albert_layer_groups/\d+/albert_layers/\d+",
            r"embeddings/word_embeddings",
            (
                Point("attention", (Branch(),), (_skip("attention"),) + _qkv("attention/")),
                Point("mlp", (Branch("ffn"),), (_skip(), Component("mlp", "ffn"))),
            ),
            "post-LN encoder, one layer module shared by all layers (told apart by call order)",
        ),
        Preset(
            "gpt2",
            r"h/\d+",
            r"wte",
            (
                Point(
                    "attention",
                    (Branch(),),
                    (_skip(), Component("qkv", "attn/c_attn", fused="qkv")),
                ),
                Point("mlp", (Branch("ln_2"),), (_skip(), Component("mlp", "mlp/c_fc"))),
            ),
            "pre-LN decoder, fused c_attn split into q/k/v by output columns",
        ),
        _pre_ln_decoder(
            "gpt_neo",
            r"h/\d+",
            r"wte",
            _qkv("attn/attention/", ("q_proj", "k_proj", "v_proj")),
            "ln_2",
            "mlp/c_fc",
            "pre-LN decoder",
        ),
        Preset(
            "gptj",
            r"h/\d+",
            r"wte",
            (
                Point(
                    "attention",
                    (Branch(),),
                    (_skip(),)
                    + _qkv("attn/", ("q_proj", "k_proj", "v_proj"))
                    + (Component("mlp", "mlp/fc_in"),),
                ),
            ),
            "parallel attention and MLP from one norm: one branch point with skip/q/k/v/mlp",
        ),
        _pre_ln_decoder(
            "opt",
            r"decoder/layers/\d+",
            r"embed_tokens",
            _LLAMA_ATTN,
            "final_layer_norm",
            "fc1",
            "pre-LN decoder (do_layer_norm_before=True)",
        ),
        _pre_ln_decoder(
            "opt-post-ln",
            r"decoder/layers/\d+",
            r"embed_tokens",
            _LLAMA_ATTN,
            "fc1",
            "fc1",
            "post-LN OPT (do_layer_norm_before=False, e.g. OPT-350m)",
        ),
        Preset(
            "bloom",
            r"h/\d+",
            r"word_embeddings",
            (
                Point(
                    "attention",
                    (Branch(),),
                    (
                        _skip("self_attention"),
                        Component("qkv", "self_attention/query_key_value", fused="heads:qkv"),
                    ),
                ),
                Point(
                    "mlp",
                    (Branch("post_attention_layernorm"),),
                    (_skip("mlp"), Component("mlp", "mlp/dense_h_to_4h")),
                ),
            ),
            "pre-LN decoder, residual adds inside attention/MLP, fused per-head q/k/v",
        ),
        _pre_ln_decoder(
            "llama",
            r"layers/\d+",
            r"embed_tokens",
            _LLAMA_ATTN,
            "post_attention_layernorm",
            "mlp/(?:gate_proj|up_proj)",
            "pre-RMSNorm decoder: Llama, Mistral, Gemma",
        ),
        _pre_ln_decoder(
            "xglm",
            r"layers/\d+",
            r"embed_tokens",
            _LLAMA_ATTN,
            "final_layer_norm",
            "fc1",
            "pre-LN decoder",
        ),
        _encoder_decoder("bart", False, "post-LN encoder-decoder: BART, Marian"),
        _encoder_decoder("mbart", True, "pre-LN encoder-decoder: mBART, Pegasus"),
        Preset(
            "vit",
            r"encoder/layer/\d+",
            r"embeddings/patch_embeddings",
            (
                Point("attention", (Branch(),), (_skip(),) + _qkv("attention/attention/")),
                Point(
                    "mlp",
                    (Branch("layernorm_after"),),
                    (_skip("output"), Component("mlp", "intermediate/dense")),
                ),
            ),
            "pre-LN vision encoder; tokens are [CLS] and the patches",
        ),
        Preset(
            "transformer",
            r"layer_\d+",
            r"token_embed",
            (
                Point("attention", (Branch(),), (_skip("skip"),) + _qkv("attention/")),
                Point(
                    "mlp",
                    (Branch("mlp"),),
                    (_skip("mlp_residual"), Component("mlp", "mlp/dense_in")),
                ),
            ),
            "this repository's TransformerClassifier (jaxpr_semiring.paper.transformer)",
        ),
        _pre_ln_decoder(
            "nnx-llama",
            r"layers/\d+",
            r"embedder",
            _qkv("attn/", ("q_proj", "k_proj", "v_proj")),
            "post_attention_layernorm",
            "mlp/(?:gate_proj|up_proj)",
            "Flax NNX pre-RMSNorm decoder, attribute paths as in tunix's Llama 3 (embedder, "
            "layers/i/attn/q_proj, mlp/gate_proj), called through jaxpr_semiring.NnxApply",
        ),
    ]
}

#: Hugging Face ``config.model_type`` → preset name
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "roformer": "bert",
    "camembert": "bert",
    "distilbert": "distilbert",
    "albert": "albert",
    "gpt2": "gpt2",
    "gpt_neo": "gpt_neo",
    "gptj": "gptj",
    "opt": "opt",
    "bloom": "bloom",
    "llama": "llama",
    "mistral": "llama",
    "gemma": "llama",
    "xglm": "xglm",
    "bart": "bart",
    "marian": "bart",
    "mbart": "mbart",
    "pegasus": "mbart",
    "vit": "vit",
}


class UnsupportedModelError(ValueError):
    """No preset for this architecture."""


def _unsupported(what: str) -> UnsupportedModelError:
    families = ", ".join(sorted(MODEL_TYPES))
    return UnsupportedModelError(
        f"no component preset for {what}. Supported model types: {families}, and "
        f"jaxpr_semiring.paper.transformer.TransformerClassifier. For another Flax model pass "
        f"preset=Preset(name, layers=r'<layer module path regex>', embeddings=r'<embedding module "
        f"regex>', points=(Point('attention', (Branch(),), (Component('skip', '<residual module>', "
        f"'add'), Component('query', '<query projection>'), ...)),)) (docs/components.md)."
    )


def detect_name(model_type: str, config: Any = None) -> str:
    """The preset name for a Hugging Face ``model_type`` (and its config, where the layout
    depends on it: OPT with ``do_layer_norm_before=False``)."""
    name = MODEL_TYPES.get(str(model_type))
    if name is None:
        raise _unsupported(f"model type {model_type!r}")
    if name == "opt" and config is not None and not getattr(config, "do_layer_norm_before", True):
        return "opt-post-ln"
    return name


def detect(model: Any, preset: Preset | str | None = None) -> Preset:
    """The preset for ``model`` (a Hugging Face Flax model, or this repository's
    ``TransformerClassifier``), or ``preset`` itself (a :class:`Preset` or a preset name)."""
    if isinstance(preset, Preset):
        return preset
    own = getattr(model, "default_preset", None)  # a bridged PyTorch model's (torch_presets)
    if preset is None and isinstance(own, Preset):
        return own
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise _unsupported(f"preset name {preset!r} (known: {', '.join(PRESETS)})")
        return PRESETS[preset]
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "model_type"):
        return PRESETS[detect_name(config.model_type, config)]
    if type(model).__name__ == "TransformerClassifier":
        return PRESETS["transformer"]
    raise _unsupported(f"{type(model).__name__}")


def head_dim(model: Any) -> int:
    """The attention head width of ``model`` (from its config, or a linen module's
    ``hidden``/``heads`` attributes)."""
    config = getattr(model, "config", model)
    hd = getattr(config, "head_dim", None)
    if isinstance(hd, int) and hd > 0:
        return hd
    width = next(
        (
            getattr(config, a)
            for a in ("hidden_size", "n_embd", "d_model", "dim", "hidden")
            if isinstance(getattr(config, a, None), int)
        ),
        None,
    )
    heads = next(
        (
            getattr(config, a)
            for a in (
                "num_attention_heads",
                "n_head",
                "num_heads",
                "n_heads",
                "encoder_attention_heads",
                "heads",
            )
            if isinstance(getattr(config, a, None), int)
        ),
        None,
    )
    if not width or not heads:
        raise ValueError(
            f"cannot tell the attention head width of {type(model).__name__}: "
            f"pass head_dim= (the width of one head's query/key/value columns)."
        )
    return width // heads
