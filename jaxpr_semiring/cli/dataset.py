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
target) -> dict`` building one document from computed flows. The per-input task and the run's
fingerprint are the dataset layer's (:mod:`jaxpr_semiring.cli.dataset_flows`: padding never
changes a record; the model is identified by its files' content, tokenizer included). Every
check that needs no model (options, target syntax, the input file, ``--out-dir``) is made
before the model loads; a results directory that fails mid-run is one line naming it.

>>> import argparse
>>> ap = argparse.ArgumentParser(); add_arguments(ap)
>>> a = ap.parse_args(["--file", "s.txt", "--out-dir", "r", "--buckets", "16,32"])
>>> a.batch_size, parse_buckets(a.buckets), parse_buckets("exact")
(8, [16, 32], 'exact')
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any, Callable

from .. import outputs
from ..dataset import DatasetError, init_distributed, run_dataset
from ..outputs import OutputError
from . import loading, memory, render
from .dataset_flows import example_target, flows_task, model_digest, run_options
from .errors import UsageError

__all__ = [
    "add_arguments",
    "parse_buckets",
    "run_file",
    "example_target",
    "model_digest",
    "flows_task",
    "run_options",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data-set options of ``jaxpr-semiring flows``."""
    g = parser.add_argument_group("data sets", "run every line of a file (instead of --text)")
    g.add_argument(
        "--file",
        help='inputs, one per line: plain text, or JSON Lines with "text" '
        '(and optionally "target" or "good"/"bad")',
    )
    g.add_argument(
        "--out-dir", help="results directory: flows.jsonl, skipped.jsonl, parts/ (a re-run resumes)"
    )
    g.add_argument("--batch-size", type=int, default=8, help="inputs per batch per device (8)")
    g.add_argument(
        "--buckets",
        help="padded lengths, e.g. 16,32,64 (default: powers of two "
        "from 8), or 'exact' (no padding)",
    )
    g.add_argument(
        "--format",
        choices=("auto", "text", "jsonl"),
        default="auto",
        help="input format (auto: JSON Lines if .jsonl or lines start with '{')",
    )
    g.add_argument(
        "--coordinator", help="jax.distributed coordinator HOST:PORT (several processes)"
    )
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


def _write_failure(e: OSError, out_dir: str) -> DatasetError:
    """A failed write during the run, as one line naming the results directory (never a
    temporary file's name) and the fix."""
    name = os.fsdecode(e.filename) if e.filename is not None else None
    inside = name is None or os.path.abspath(name).startswith(os.path.abspath(out_dir) + os.sep)
    where = outputs.shown(out_dir) if inside else outputs.shown(name)
    fix = (
        "free some space"
        if e.errno == errno.ENOSPC
        else "make it writable"
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        else "check it"
    )
    return DatasetError(
        f"cannot write to {where}: {e.strerror or e}; {fix} and run the same "
        f"command again (finished inputs are kept and not recomputed)."
    )


def run_file(
    args: argparse.Namespace, parse_semiring: Callable[[str], Any], document: Callable, stream=None
) -> int:
    """``jaxpr-semiring flows MODEL --file ...``; the exit code (2: bad usage, unreadable input,
    unwritable or mismatched results directory)."""
    stream = sys.stderr if stream is None else stream
    try:
        if not args.out_dir:
            raise UsageError("--file needs --out-dir (the results directory).")
        single = [
            f"--{k}"
            for k in ("text", "json", "out", "html", "field")
            if getattr(args, k, None) is not None
        ]
        if single:
            raise UsageError(
                f"{', '.join(single)} is for one text; with --file the records go "
                f"to --out-dir/flows.jsonl (render one with jaxpr_semiring.cli.render)."
            )
        if args.batch_size < 1:
            raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")
        init_distributed(args.coordinator, args.num_processes, args.process_id)
        semirings = [parse_semiring(s.strip()) for s in args.semiring.split(",")]
        buckets = parse_buckets(args.buckets)
        loading.check_target(args.target)
        try:  # before the model loads: fail fast
            open(args.file, "rb").close()
        except OSError as e:
            raise DatasetError(
                f"cannot read {outputs.shown(args.file)}: {e.strerror or e}."
            ) from None
        except ValueError:  # a NUL character
            raise UsageError(f"--file {outputs.shown(args.file)}: not a file name.") from None
        outputs.check_output_dir(args.out_dir, "--out-dir")
        loaded = loading.load(args.model)
        prepare, compute, record = flows_task(loaded, semirings, args.target, args.heads, document)
        options = run_options(loaded, args.semiring.split(","), args.target, args.heads)
        try:
            run_dataset(
                args.file,
                args.out_dir,
                prepare=prepare,
                compute=compute,
                record=record,
                params=loaded.params,
                options=options,
                batch_size=args.batch_size,
                buckets=buckets,
                format=args.format,
                encode=render.to_json,
                progress=not args.no_progress,
                stream=stream,
                about={"model": args.model},
                check_compiled=lambda c: memory.check_fits(
                    c,
                    f"--semiring {args.semiring} with --batch-size {args.batch_size}",
                    fix="use a smaller --batch-size, smaller --buckets"
                    + (" or a smaller K" if any(S.cli_arg for S in semirings) else ""),
                ),
            )
        except OSError as e:  # the results directory failed mid-run (read-only, full, gone)
            raise _write_failure(e, args.out_dir) from None
    except (UsageError, DatasetError, OutputError) as e:
        print(f"jaxpr-semiring: error: {outputs.shown(e)}", file=stream)
        return 2
    return 0
