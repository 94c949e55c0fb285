"""Component flows over a data set: the per-input task of ``jaxpr-semiring flows MODEL --file``
and what fingerprints its results. (Not imported by :mod:`jaxpr_semiring.dataset`: it needs
the model stack, flax and transformers.)

* :func:`flows_task` — ``(prepare, compute, record)`` for
  :func:`~jaxpr_semiring.dataset.run_dataset`: every input gets the single-text command's
  checks and target (its own, in a JSON Lines file), and its record is the single-text
  document. **Padding never changes a record, by construction**: an input is padded only
  when its target and every semiring are known to ignore padded positions (:data:`PADDED`,
  :func:`padding_safe`); anything else runs at its own length.
* :func:`run_options` — the run's fingerprint: the model by content (every file of its
  directory that can change a result: weights, config, tokenizer), its preset, the
  semirings, target and heads; never the model's path as spelled.

>>> sorted(f.__name__ for f in PADDED)
['class_diff', 'logit_diff', 'similarity']
>>> example_target({"good": "is", "bad": "are"}, None, "mlm")
'logit-diff:is,are'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Callable, Sequence

import jax.numpy as jnp

from ..analyses.component_channels import ComponentFlows, PointFlows
from ..dataset import InputError, Prepared, unpad
from ..models import targets
from ..models.components import component_flows_fn
from . import loading
from .errors import UsageError

__all__ = [
    "flows_task",
    "run_options",
    "model_files",
    "model_digest",
    "model_directory",
    "example_target",
    "masked_similarity",
    "PADDED",
    "padding_safe",
]


def masked_similarity(outputs, attention_mask, other):
    """:func:`~jaxpr_semiring.models.targets.similarity` of a padded row: the mean over the
    real tokens only (padded positions have weight 0, so every path through them has product
    0)."""
    v = targets.mean_pooled(outputs, attention_mask)
    return jnp.dot(v, other) / (jnp.linalg.norm(v) * jnp.linalg.norm(other))


#: target function -> how it runs on a padded row: ``None``, as it is (it reads fixed
#: positions, which the attention mask keeps apart from the padding); or a function taking
#: the attention mask first. A target function not listed runs unpadded.
PADDED: dict = {
    targets.logit_diff: None,
    targets.class_diff: None,
    targets.similarity: masked_similarity,
}


def padding_safe(S) -> bool:
    """Whether ``S`` gives the zero-product paths through padded positions no weight
    (docs/datasets.md; MaxProduct: wherever a token has paths of both signs): every semiring
    but those whose values count paths whatever they weigh (``ignores_weights``: Counting,
    Boolean), which run unpadded."""
    return not S.ignores_weights


def example_target(fields: dict, default: str | None, kind: str) -> str | None:
    """The target spec of one JSON Lines input: its ``"target"``, or ``"good"``/``"bad"`` as
    ``logit-diff:good,bad`` (``class-diff`` for a classifier), else ``default``.

    >>> example_target({"target": "similarity:a key"}, "logit-diff:is,are", "encoder")
    'similarity:a key'
    """
    if "target" in fields:
        return str(fields["target"])
    if "good" in fields or "bad" in fields:
        if not ("good" in fields and "bad" in fields):
            raise InputError('a JSON Lines input with a target needs both "good" and "bad".')
        kind_name = "class-diff" if kind == "classifier" else "logit-diff"
        return f"{kind_name}:{fields['good']},{fields['bad']}"
    return default


def flows_task(
    loaded, semirings: Sequence, target: str | None, heads: bool, document: Callable
) -> tuple[Callable, Callable, Callable]:
    """``(prepare, compute, record)`` for :func:`~jaxpr_semiring.dataset.run_dataset`: the
    single-text checks and target per input, component flows for every semiring in one
    jitted program, one document per semiring (``document(loaded, semiring, flows, tokens,
    target)``, the single-text command's). An input runs padded only when its target function
    is in :data:`PADDED` and every semiring in :data:`PADDING_SAFE`, so its record is the
    single-text document (within float rounding) whatever the buckets."""
    model = loaded.model
    pad_all = all(padding_safe(S) for S in semirings)
    chosen: list = []  # the target function: the first input's; every input must share it
    fns: dict = {}

    def prepare(ex):
        try:
            ids, tokens = loading.encode(loaded, ex.text)
            tgt = loading.resolve_target(
                loaded, example_target(ex.fields, target, loaded.kind), ids
            )
        except UsageError as e:
            raise InputError(str(e)) from None
        if chosen and tgt.fn is not chosen[0]:
            raise InputError(
                f"target {tgt.description!r} is of another kind than this run's "
                f"first target; run it separately."
            )
        chosen[:1] = [tgt.fn]
        return Prepared(
            {"input_ids": ids},
            {f"target_{i}": a for i, a in enumerate(tgt.args)},
            (tokens, tgt),
            pad=pad_all and tgt.fn in PADDED,
        )

    def compute(params, row):
        fn = chosen[0]
        masked = PADDED.get(fn) if pad_all else None  # unpadded rows: the target as it is
        if fn not in fns:
            fns[fn] = [
                component_flows_fn(model, masked or fn, S, heads=heads, preset=loaded.preset)
                for S in semirings
            ]
        inputs = {"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]}
        args = [row[f"target_{i}"] for i in range(sum(k.startswith("target_") for k in row))]
        if masked is not None:
            args = [row["attention_mask"]] + args
        return tuple(f(params, inputs, *args) for f in fns[fn])

    def record(ex, prep, outs):
        tokens, tgt = prep.info
        n = prep.length
        docs = []
        for S, cf in zip(semirings, outs):
            points = [
                PointFlows(p.layer, p.point, p.components, unpad(p.flows, n), unpad(p.total, n))
                for p in cf.points
            ]
            cut = ComponentFlows(points, unpad(cf.embeddings, n), cf.value, cf.architecture, S)
            docs.append(document(loaded, S, cut, tokens, tgt))
        return docs

    return prepare, compute, record


# files of a save_pretrained directory that cannot change a result: documentation, and weights
# of other frameworks (the loader reads Flax msgpack or safetensors only)
_NOT_READ = re.compile(
    r"^\.|^(readme|license|licence|notice)\b|\.(md|bin|h5|ot|onnx|pt|pth|ckpt)$", re.IGNORECASE
)


def model_directory(loaded) -> str:
    """The directory a loaded model came from (``"minilm"``: the installed package's)."""
    return loading.minilm_dir() if loaded.name == "minilm" else loaded.name


def model_files(directory: str) -> dict:
    """``{file name: sha256}`` of every top-level file of a model directory that can change a
    result: weights, config, tokenizer files (vocabulary, merges, special tokens, tokenizer
    config), any other unknown file; not documentation or other frameworks' weights. By
    content: the same directory by a relative path, an absolute one or a symlink gives the
    same answer."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if _NOT_READ.search(name) or not os.path.isfile(path):
            continue
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    return out


def model_digest(directory: str) -> str:
    """One sha256 over :func:`model_files` (names and contents)."""
    return hashlib.sha256(json.dumps(model_files(directory), sort_keys=True).encode()).hexdigest()


def run_options(loaded, semirings: Sequence[str], target: str | None, heads: bool) -> dict:
    """What a run's records depend on, for ``run_dataset(options=...)``: the model's files by
    content (:func:`model_files`), its preset (the branch points and components, as data), the
    semirings (as given, in order), the target spec and ``heads``. Not the model's path (pass
    that as ``about``), nor batch size, buckets, devices or processes (they change no record)."""
    preset = json.dumps(loaded.preset, sort_keys=True)
    return {
        "model_files": model_files(model_directory(loaded)),
        "preset": {
            "name": loaded.preset.name,
            "sha256": hashlib.sha256(preset.encode()).hexdigest(),
        },
        "semirings": [s.strip() for s in semirings],
        "target": target,
        "heads": bool(heads),
    }
