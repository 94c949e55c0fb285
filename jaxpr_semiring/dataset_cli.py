"""``jaxpr-semiring flows MODEL --file inputs.txt --out-dir results/``: component flows for a
whole data set, on the dataset layer (:mod:`jaxpr_semiring.dataset`).

Every option of the single-text command applies; ``--semiring`` may name several semirings
(``max-product,entropy``: one jitted program). ``results/flows.jsonl`` holds, in input order,
for every input and semiring the single-text JSON document (docs/report_format.md) with
``"index"`` (0-based line number) and ``"text"`` in front. In a JSON Lines file a line may
carry its own target: ``"target"`` (a spec as ``--target``) or ``"good"``/``"bad"`` (tokens,
or classes for a classifier). A line that fails a check of the single-text command is
reported and skipped; an unreadable file, an unwritable or mismatched ``--out-dir`` exit
with 2.

The single-text side is injected (no import of the command line from here):
``run_file(args, parse_semiring, document)`` with ``document(loaded, semiring, flows, tokens,
target) -> dict`` building one document from computed flows.

>>> import argparse
>>> ap = argparse.ArgumentParser(); add_arguments(ap)
>>> a = ap.parse_args(["--file", "s.txt", "--out-dir", "r", "--buckets", "16,32"])
>>> a.batch_size, parse_buckets(a.buckets), parse_buckets("exact")
(8, [16, 32], 'exact')
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any, Callable, Sequence

from . import report
from .dataset import DatasetError, InputError, Prepared, init_distributed, run_dataset, unpad
from .models import loading
from .models.components import ComponentFlows, PointFlows, component_flows_fn
from .models.loading import UsageError
from .semirings import Boolean, Counting

__all__ = ["add_arguments", "parse_buckets", "run_file", "example_target", "model_digest",
           "flows_task"]

# these semirings count zero-weight paths, and padded keys add some: run them unpadded
_COUNT_PATHS = (Counting, Boolean)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data-set options of ``jaxpr-semiring flows``."""
    g = parser.add_argument_group("data sets", "run every line of a file (instead of --text)")
    g.add_argument("--file", help="inputs, one per line: plain text, or JSON Lines with \"text\" "
                                  "(and optionally \"target\" or \"good\"/\"bad\")")
    g.add_argument("--out-dir", help="results directory: flows.jsonl, skipped.jsonl, parts/ "
                                     "(a re-run resumes)")
    g.add_argument("--batch-size", type=int, default=8, help="inputs per batch per device (8)")
    g.add_argument("--buckets", help="padded lengths, e.g. 16,32,64 (default: powers of two "
                                     "from 8), or 'exact' (no padding)")
    g.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                   help="input format (auto: JSON Lines if .jsonl or lines start with '{')")
    g.add_argument("--coordinator", help="jax.distributed coordinator HOST:PORT (several processes)")
    g.add_argument("--num-processes", type=int, help="jax.distributed: how many processes")
    g.add_argument("--process-id", type=int, help="jax.distributed: this process's id")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_buckets(spec: str | None) -> list[int] | str | None:
    """``"16,32"`` → [16, 32]; ``"exact"``; None → the default."""
    if spec is None or spec == "exact":
        return spec
    try:
        out = [int(x) for x in spec.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise UsageError(f"--buckets {spec!r}: give positive lengths (e.g. 16,32,64) or 'exact'.")
    return out


def example_target(fields: dict, default: str | None, kind: str) -> str | None:
    """The target spec of one JSON Lines input: its ``"target"``, or ``"good"``/``"bad"`` as
    ``logit-diff:good,bad`` (``class-diff`` for a classifier), else ``default``.

    >>> example_target({"good": "is", "bad": "are"}, None, "mlm")
    'logit-diff:is,are'
    """
    if "target" in fields:
        return str(fields["target"])
    if "good" in fields or "bad" in fields:
        if not ("good" in fields and "bad" in fields):
            raise InputError('a JSON Lines input with a target needs both "good" and "bad".')
        kind_name = "class-diff" if kind == "classifier" else "logit-diff"
        return f"{kind_name}:{fields['good']},{fields['bad']}"
    return default


def model_digest(directory: str) -> str:
    """sha256 over a model directory's config and weight files (what the results are of)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name == "config.json" or name.startswith(("flax_model", "model.safetensors")):
            h.update(name.encode())
            with open(os.path.join(directory, name), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def flows_task(loaded, semirings: Sequence, target: str | None, heads: bool,
               document: Callable) -> tuple[Callable, Callable, Callable]:
    """``(prepare, compute, record)`` for :func:`~jaxpr_semiring.dataset.run_dataset`: the
    single-text checks and target per input, component flows for every semiring in one
    jitted program, one document per semiring."""
    model = loaded.model
    chosen: list = []      # the target function: the first input's; every input must share it
    fns: dict = {}

    def prepare(ex):
        try:
            ids, tokens = loading.encode(loaded, ex.text)
            tgt = loading.resolve_target(loaded, example_target(ex.fields, target, loaded.kind), ids)
        except UsageError as e:
            raise InputError(str(e)) from None
        if chosen and tgt.fn is not chosen[0]:
            raise InputError(f"target {tgt.description!r} is of another kind than this run's "
                             f"first target; run it separately.")
        chosen[:1] = [tgt.fn]
        return Prepared({"input_ids": ids}, {f"target_{i}": a for i, a in enumerate(tgt.args)},
                        (tokens, tgt))

    def compute(params, row):
        fn = chosen[0]
        if fn not in fns:
            fns[fn] = [component_flows_fn(model, fn, S, heads=heads, preset=loaded.preset)
                       for S in semirings]
        inputs = {"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]}
        args = [row[f"target_{i}"] for i in range(sum(k.startswith("target_") for k in row))]
        return tuple(f(params, inputs, *args) for f in fns[fn])

    def record(ex, prep, outs):
        tokens, tgt = prep.info
        n = prep.length
        docs = []
        for S, cf in zip(semirings, outs):
            points = [PointFlows(p.layer, p.point, p.components, unpad(p.flows, n), unpad(p.total, n))
                      for p in cf.points]
            cut = ComponentFlows(points, unpad(cf.embeddings, n), cf.value, cf.architecture, S)
            docs.append(document(loaded, S, cut, tokens, tgt))
        return docs

    return prepare, compute, record


def run_file(args: argparse.Namespace, parse_semiring: Callable[[str], Any],
             document: Callable, stream=None) -> int:
    """``jaxpr-semiring flows MODEL --file ...``; the exit code (2: bad usage, unreadable input,
    unwritable or mismatched results directory)."""
    stream = sys.stderr if stream is None else stream
    try:
        if not args.out_dir:
            raise UsageError("--file needs --out-dir (the results directory).")
        single = [f"--{k}" for k in ("text", "json", "out", "html") if getattr(args, k, None)]
        if single:
            raise UsageError(f"{', '.join(single)} is for one text; with --file the records go "
                             f"to --out-dir/flows.jsonl (render one with jaxpr_semiring.report).")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")
        init_distributed(args.coordinator, args.num_processes, args.process_id)
        semirings = [parse_semiring(s.strip()) for s in args.semiring.split(",")]
        buckets = parse_buckets(args.buckets)
        try:                     # before the model loads: fail fast
            open(args.file, "rb").close()
        except OSError as e:
            raise DatasetError(f"cannot read {args.file}: {e.strerror or e}.") from None
        loaded = loading.load(args.model)
        counts = [type(S).__name__ for S in semirings if isinstance(S, _COUNT_PATHS)]
        similarity = (args.target or "").startswith("similarity:")
        if (counts or similarity) and buckets is None:
            buckets = "exact"
            why = f"{', '.join(counts)} counts paths through padding" if counts else \
                "the similarity target pools over every position"
            print(f"jaxpr-semiring: {why}: running unpadded (--buckets exact)", file=stream)
        prepare, compute, record = flows_task(loaded, semirings, args.target, args.heads, document)
        directory = loading.minilm_dir() if args.model == "minilm" else args.model
        options = {"model": args.model, "model_sha256": model_digest(directory),
                   "semirings": [s.strip() for s in args.semiring.split(",")],
                   "target": args.target, "heads": bool(args.heads)}
        run_dataset(args.file, args.out_dir, prepare=prepare, compute=compute, record=record,
                    params=loaded.model.params, options=options, batch_size=args.batch_size,
                    buckets=buckets, format=args.format, encode=report.to_json,
                    progress=not args.no_progress, stream=stream)
    except (UsageError, DatasetError) as e:
        print(f"jaxpr-semiring: error: {e}", file=stream)
        return 2
    return 0
