"""Component presets for PyTorch Hugging Face models bridged by
:mod:`jaxpr_semiring.models.torch_bridge`, keyed on the PyTorch module names, as data.

The regexes are matched against the bridged equations' name stacks: a module path
(``model/layers/0/self_attn/q_proj``) followed by torchax's scopes, one per ATen operation
(``linear/...``, ``aten::add.Tensor``). So a component names its module and the primitive of
its first equation: ``dot_general`` for a projection (a ``Conv1D`` or ``view`` before the
matmul is then not taken for the projection), ``add`` for a residual (:func:`own`: an operation
of the module itself, not of a submodule). Grouped-query attention needs nothing special: a
``k_proj`` with fewer heads has fewer output columns, and ``heads=True`` splits them into its
own key/value heads (``key.0`` … ``key.{kv_heads-1}``).

>>> detect_name("qwen3")
'torch:llama'
>>> PRESETS["torch:gemma2"].points[1].branches[0].module
'pre_feedforward_layernorm'
"""

from __future__ import annotations

from typing import Any

from .presets import Branch, Component, Point, Preset, UnsupportedModelError

__all__ = ["PRESETS", "MODEL_TYPES", "detect_name", "detect", "own", "OPS"]

#: what torchax appends below a module path: one scope per ATen operation, nested
OPS = r"(?:/[^/]+)*"


def own(module: str = "") -> str:
    """Equations of ``module`` itself (relative to the layer; ``""``: the layer), not of a
    submodule: module segments never contain ``::``, torchax's ATen scopes always do."""
    return (module + "/" if module else "") + r"[^/]*::[^/]*" + OPS


def _proj(name: str, module: str, fused: str | None = None) -> Component:
    return Component(name, module + OPS, "dot_general", fused)


def _skip(module: str = "") -> Component:
    return Component("skip", own(module), "add")


def _qkv(prefix: str, names=("q_proj", "k_proj", "v_proj")) -> tuple:
    return tuple(_proj(c, prefix + n) for c, n in zip(("query", "key", "value"), names))


def _decoder(name: str, attn_branch: Branch, mlp_branch: Branch, attn, mlp: str, desc: str):
    return Preset(
        name,
        r"layers/\d+",
        r"embed_tokens",
        (
            Point("attention", (attn_branch,), (_skip(),) + attn),
            Point("mlp", (mlp_branch,), (_skip(), _proj("mlp", mlp))),
        ),
        desc,
    )


_MLP = "mlp/(?:gate_proj|up_proj)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _decoder(
            "torch:llama",
            Branch(),
            Branch("post_attention_layernorm"),
            _qkv("self_attn/"),
            _MLP,
            "pre-RMSNorm decoder: Llama, Mistral, Qwen 2/3, Gemma, OLMo",
        ),
        _decoder(
            "torch:gemma2",
            Branch(),
            Branch("pre_feedforward_layernorm"),
            _qkv("self_attn/"),
            _MLP,
            "Gemma 2/3: norms before and after attention and MLP (sandwich)",
        ),
        _decoder(
            "torch:olmo2",
            Branch(),
            Branch("mlp"),
            _qkv("self_attn/"),
            _MLP,
            "OLMo 2: norms after attention and MLP only (the branches read the residual)",
        ),
        _decoder(
            "torch:phi3",
            Branch(),
            Branch("post_attention_layernorm"),
            (_proj("qkv", "self_attn/qkv_proj", "qkv"),),
            "mlp/gate_up_proj",
            "Phi-3: fused qkv_proj ([q | k | v], as many k/v heads as q heads) and gate_up_proj",
        ),
        Preset(
            "torch:gpt2",
            r"h/\d+",
            r"wte",
            (
                Point("attention", (Branch(),), (_skip(), _proj("qkv", "attn/c_attn", "qkv"))),
                Point("mlp", (Branch("ln_2"),), (_skip(), _proj("mlp", "mlp/c_fc"))),
            ),
            "GPT-2: pre-LN, fused Conv1D c_attn split into q/k/v by output columns",
        ),
        Preset(
            "torch:bert",
            r"encoder/layer/\d+",
            r"embeddings/word_embeddings",
            (
                Point(
                    "attention",
                    (Branch(),),
                    (_skip("attention/output"),)
                    + _qkv("attention/self/", ("query", "key", "value")),
                ),
                Point(
                    "mlp",
                    (Branch("intermediate"),),
                    (_skip("output"), _proj("mlp", "intermediate/dense")),
                ),
            ),
            "post-LN encoder: BERT, RoBERTa",
        ),
    ]
}

#: ``config.model_type`` → preset name
MODEL_TYPES = {
    "llama": "torch:llama",
    "mistral": "torch:llama",
    "qwen2": "torch:llama",
    "qwen3": "torch:llama",
    "gemma": "torch:llama",
    "olmo": "torch:llama",
    "gemma2": "torch:gemma2",
    "gemma3_text": "torch:gemma2",
    "olmo2": "torch:olmo2",
    "phi3": "torch:phi3",
    "gpt2": "torch:gpt2",
    "bert": "torch:bert",
    "roberta": "torch:bert",
}


def detect_name(model_type: str, config: Any = None) -> str:
    """The preset name for a PyTorch model of ``model_type``; an
    :class:`~jaxpr_semiring.models.presets.UnsupportedModelError` naming the supported ones
    (and for a Phi-3 with fewer k/v heads than q heads, whose fused ``[q | k | v]`` columns
    the ``"qkv"`` layout would split in thirds)."""
    name = MODEL_TYPES.get(str(model_type))
    if name is None:
        raise UnsupportedModelError(
            f"no component preset for model type {model_type!r} (PyTorch bridge: "
            f"{', '.join(sorted(MODEL_TYPES))}); pass preset=Preset(...) (docs/torch.md)."
        )
    kv = getattr(config, "num_key_value_heads", None)
    if name == "torch:phi3" and kv not in (None, getattr(config, "num_attention_heads", kv)):
        raise UnsupportedModelError(
            f"Phi-3 with {kv} k/v heads and {config.num_attention_heads} q heads: its fused "
            f"qkv_proj is not split in thirds, which the preset assumes; no preset for it yet."
        )
    return name


def detect(config: Any) -> Preset:
    """The preset for a PyTorch model's ``config``."""
    return PRESETS[detect_name(getattr(config, "model_type", None), config)]
