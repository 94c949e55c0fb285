"""Hook names of SAE/transcoder libraries mapped onto this library's sites.

A site is ``"<module path>:in"`` or ``"<module path>:out"``: the input or output of a module
call, the path ``/``-separated as in Flax name stacks (:func:`jaxpr_semiring.flax_hooks.
module_path`). Hugging Face Flax models and PyTorch models bridged to JAX share the module
names of the PyTorch checkpoint (``transformer.h.3.mlp`` is ``"transformer/h/3/mlp"``), so one
table per family serves both. Checked on tiny HF Flax models (GPT-2, Llama, Mistral, Gemma,
BERT): ``FlaxGPT2LMHeadModel`` calls ``transformer/h/0/mlp``, ``FlaxGPT2Model`` ``h/0/mlp``;
``FlaxLlamaForCausalLM`` ``model/layers/0/mlp``; ``FlaxBertForMaskedLM``
``bert/encoder/layer/0/intermediate``.

Names understood by :func:`to_site`:

* TransformerLens / SAELens: ``hook_embed``, ``blocks.L.hook_resid_pre`` / ``hook_resid_mid``
  / ``hook_resid_post``, ``blocks.L.hook_attn_out``, ``blocks.L.attn.hook_z``,
  ``blocks.L.hook_mlp_in`` = ``blocks.L.ln2.hook_normalized``, ``blocks.L.mlp.hook_post``,
  ``blocks.L.hook_mlp_out``.
* Hugging Face module names, as sparsify's hookpoints (``layers.3``, ``layers.3.mlp``,
  ``h.3``: relative to the base model) or SAELens' for HF models (``model.layers.3``); which
  side (``in``/``out``) comes from the caller: sparsify SAEs read module outputs, its
  transcoders read a module's input and write its output.
* Sites already in this grammar (``"transformer/h/3/mlp:in"``, or ``"layers.3.mlp:in"``).

>>> to_site("blocks.3.hook_mlp_out", model="gpt2", prefix="transformer")
'transformer/h/3/mlp:out'
>>> to_site("blocks.0.attn.hook_z", model="llama", prefix="model")
'model/layers/0/self_attn/o_proj:in'
>>> to_site("layers.2.mlp", model="llama", prefix="model", side="in")
'model/layers/2/mlp:in'
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

__all__ = ["Layout", "FAMILIES", "MODEL_TYPES", "to_site", "model_layout", "resolve", "is_site"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a family's tensors are, relative to its base model (``{L}`` = layer index)."""

    layer: str  # the block: its input is resid_pre, its output resid_post
    embed: str  # token embedding output (hook_embed)
    resid_mid: str  # after attention's residual add, before the MLP's norm
    attn_out: str  # the attention branch's output, before the residual add
    hook_z: str  # per-head values mixed by attention, heads concatenated (o_proj input)
    mlp_in: str  # the MLP's input (after its norm)
    mlp_post: str  # the MLP's hidden activation (down projection input)
    mlp_out: str  # the MLP branch's output, before the residual add


def _pre_ln(layer, embed, norm2, attn, o_proj, down, mlp="mlp") -> Layout:
    return Layout(
        layer,
        f"{embed}:out",
        f"{layer}/{norm2}:in",
        f"{layer}/{attn}:out",
        f"{layer}/{o_proj}:in",
        f"{layer}/{mlp}:in",
        f"{layer}/{down}:in",
        f"{layer}/{mlp}:out",
    )


#: family name → layout; paths relative to the base model (``prefix`` anchors them)
FAMILIES: dict[str, Layout] = {
    "gpt2": _pre_ln("h/{L}", "wte", "ln_2", "attn", "attn/c_proj", "mlp/c_proj"),
    # Llama, Mistral, Gemma (Flax and PyTorch), Qwen2 (PyTorch)
    "llama": _pre_ln(
        "layers/{L}",
        "embed_tokens",
        "post_attention_layernorm",
        "self_attn",
        "self_attn/o_proj",
        "mlp/down_proj",
    ),
    # Gemma 2/3 (PyTorch only): branch outputs pass a post-norm before the residual add, and
    # TransformerLens' hook_attn_out / hook_mlp_out are taken after it
    "gemma2": Layout(
        "layers/{L}",
        "embed_tokens:out",
        "layers/{L}/pre_feedforward_layernorm:in",
        "layers/{L}/post_attention_layernorm:out",
        "layers/{L}/self_attn/o_proj:in",
        "layers/{L}/mlp:in",
        "layers/{L}/mlp/down_proj:in",
        "layers/{L}/post_feedforward_layernorm:out",
    ),
    # post-LN encoder: branch outputs are the dense layers before the residual add + LayerNorm
    "bert": Layout(
        "encoder/layer/{L}",
        "embeddings:out",
        "encoder/layer/{L}/attention/output:out",
        "encoder/layer/{L}/attention/output/dense:out",
        "encoder/layer/{L}/attention/output/dense:in",
        "encoder/layer/{L}/intermediate:in",
        "encoder/layer/{L}/output/dense:in",
        "encoder/layer/{L}/output/dense:out",
    ),
}

#: Hugging Face ``config.model_type`` → family
MODEL_TYPES = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "gemma": "llama",
    "qwen2": "llama",
    "gemma2": "gemma2",
    "gemma3": "gemma2",
    "gemma3_text": "gemma2",
    "bert": "bert",
    "roberta": "bert",
}

_TL = re.compile(r"blocks\.(\d+)\.(.+)")
_TL_FIELDS = {
    "hook_resid_pre": None,  # the block's input
    "hook_resid_post": None,  # the block's output
    "hook_resid_mid": "resid_mid",
    "hook_attn_out": "attn_out",
    "attn.hook_z": "hook_z",
    "hook_mlp_in": "mlp_in",
    "ln2.hook_normalized": "mlp_in",
    "mlp.hook_post": "mlp_post",
    "hook_mlp_out": "mlp_out",
}
_HF = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
KNOWN_FORMS = (
    "TransformerLens names (hook_embed, blocks.L.hook_resid_pre|hook_resid_mid|hook_resid_post|"
    "hook_attn_out|attn.hook_z|hook_mlp_in|ln2.hook_normalized|mlp.hook_post|hook_mlp_out), "
    "Hugging Face module names (layers.3, layers.3.mlp, h.3, model.layers.3) with side in|out, "
    "or sites 'module/path:in|out'"
)


def is_site(name: str) -> bool:
    """True when ``name`` is already a site (``"<path>:in"`` / ``"<path>:out"``).

    >>> is_site("transformer/h/0:out"), is_site("blocks.0.hook_resid_post")
    (True, False)
    """
    return isinstance(name, str) and (name.endswith(":in") or name.endswith(":out"))


def model_layout(model: Any) -> tuple[str, str]:
    """``(family, prefix)`` of a model: a Hugging Face model (Flax or PyTorch; ``prefix`` is
    its base model's attribute, ``"transformer"`` for ``GPT2LMHeadModel``, ``""`` for
    ``GPT2Model``), a config, or a ``model_type`` string (prefix ``""``).

    >>> model_layout("mistral")
    ('llama', '')
    """
    if isinstance(model, str):
        model_type, prefix = model, ""
    else:
        config = getattr(model, "config", model)
        model_type = getattr(config, "model_type", None)
        base = getattr(model, "base_model_prefix", "") or ""
        try:  # Flax (also with _do_init=False): the head model nests the base model's params
            params = getattr(model, "params_shape_tree", None) or getattr(model, "params", None)
        except Exception:
            params = None
        if hasattr(params, "keys"):
            prefix = base if base in params else ""
        elif hasattr(model, "named_children"):  # PyTorch
            prefix = base if base in dict(model.named_children()) else ""
        else:
            prefix = ""
    if model_type in FAMILIES:
        return model_type, prefix
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"sites: no hook-name table for model type {model_type!r}; known: "
            f"{sorted(MODEL_TYPES)} (pass sites in the 'module/path:in|out' form instead)"
        )
    return MODEL_TYPES[model_type], prefix


def _anchor(path: str, prefix: str) -> str:
    if not prefix or path == prefix or path.startswith(prefix + "/"):
        return path
    return f"{prefix}/{path}"


def to_site(name: str, *, model: Any = None, prefix: str | None = None, side: str | None = None):
    """A hook name (see the module docstring) → ``"<module path>:in|out"``.

    Args:
      name: the hook name.
      model: a Hugging Face model, config or ``model_type`` (:func:`model_layout`); needed for
        TransformerLens names.
      prefix: the base model's path inside the model (overrides :func:`model_layout`'s).
      side: ``"in"`` or ``"out"`` for a Hugging Face module name.
    """
    family, pfx = model_layout(model) if model is not None else (None, "")
    if prefix is not None:
        pfx = prefix
    if is_site(name):
        path, s = name.rsplit(":", 1)
        return f"{_anchor(path.replace('.', '/'), pfx)}:{s}"
    m = _TL.fullmatch(name)
    if name == "hook_embed" or (m and m.group(2) in _TL_FIELDS):
        if family is None:
            raise ValueError(
                f"sites: {name!r} is a TransformerLens hook name; pass model= (a Hugging Face "
                "model or its model_type) to place it"
            )
        layout = FAMILIES[family]
        if name == "hook_embed":
            return _anchor(layout.embed, pfx)
        layer, field = m.group(1), _TL_FIELDS[m.group(2)]
        if field is None:
            side = "in" if m.group(2) == "hook_resid_pre" else "out"
            site = f"{layout.layer}:{side}"
        else:
            site = getattr(layout, field)
        return _anchor(site.replace("{L}", layer), pfx)
    if _HF.fullmatch(name) and not name.startswith(("blocks.", "hook_")) and "." in name:
        if side not in ("in", "out"):
            raise ValueError(
                f"sites: {name!r} is a module name; say which side is read: side='in' or 'out'"
            )
        return f"{_anchor(name.replace('.', '/'), pfx)}:{side}"
    raise ValueError(f"sites: unknown hook name {name!r}; known forms: {KNOWN_FORMS}")


def resolve(dictionary, model: Any, *, prefix: str | None = None):
    """The dictionary with ``site``/``out_site`` placed on ``model`` (:func:`to_site`; a
    loader called without ``model=`` keeps the file's own hook names).

    >>> import jax.numpy as jnp
    >>> from jaxpr_semiring.features.dictionary import Dictionary
    >>> d = Dictionary(jnp.eye(2), jnp.zeros(2), jnp.eye(2), jnp.zeros(2),
    ...                site="blocks.1.hook_resid_post")
    >>> resolve(d, "gpt2", prefix="transformer").site
    'transformer/h/1:out'
    """
    out = {}
    for field in ("site", "out_site"):
        name = getattr(dictionary, field)
        if name is not None:
            out[field] = to_site(name, model=model, prefix=prefix)
    return dataclasses.replace(dictionary, **out)
