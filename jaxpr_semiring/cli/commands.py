"""The command line: where does the gradient flow, in any Transformer, for one sentence.

::

    jaxpr-semiring flows MODEL --text "The keys to the cabinet [MASK] on the table." \\
        [--target logit-diff:is,are] [--semiring
        max-product|real|log|entropy|counting|max-abs|top-k:K] \\
        [--heads] [--json flows.json] [--out flows.png] [--html flows.html]
    jaxpr-semiring top-path MODEL --text ... [--token I] [--json path.json]

``MODEL`` is a directory written by ``save_pretrained`` or ``minilm`` (the offline MiniLM
sentence encoder). ``flows`` prints a table (layers × components per token) and writes the
JSON document (schema: ``docs/components.md``), a heatmap PNG and an HTML report; with
``--file inputs.txt --out-dir results/`` it runs a data set (:mod:`jaxpr_semiring.cli.dataset`).
``top-path`` prints the top gradient path from a token to the target. Bad input is a one-line
error and exit code 2, reported before the model loads wherever it can be (arguments, target
syntax, output paths). Output files follow :mod:`jaxpr_semiring.outputs` (``-`` is stdout, and
the table then goes to stderr; a regular file is replaced atomically; a FIFO, a device or
``/dev/stdout`` is written through); no code from a model directory ever runs, and stdin is
never read (docs/guarantees.md). Compiled programs are cached across runs (:mod:`.cache`;
``--no-cache`` turns it off); ``--profile`` prints where the seconds went (:mod:`.profile`).

Library use: :class:`FlowsRunner` loads nothing itself; it takes a loaded model and turns texts
into JSON documents, reusing one jitted flows function; :func:`document` builds the document
of flows computed elsewhere.

>>> parse_semiring("top-k:3")
TopK(3)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from .. import outputs
from ..analyses.top_path import top_path
from ..api import semiring_grad
from ..models.components import component_flows_fn, embedding_target
from ..outputs import OutputError
from ..semirings import MaxProduct, Semiring, registry
from . import cache, dataset, feature_paths, loading, memory, render
from . import profile as _profile
from .errors import UsageError
from .loading import Loaded

__all__ = ["main", "parse_semiring", "FlowsRunner", "document", "top_path_document"]


def parse_semiring(spec: str) -> Semiring:
    """A ``--semiring`` name → the semiring: any registered one
    (:mod:`jaxpr_semiring.semirings.registry`: ``"max-product"``, ``"real"``, ``"log"``,
    ``"entropy"``, ``"counting"``, ``"max-abs"``, ``"expectation"``, ``"boolean"``,
    ``"top-k:K"``, or a subclass of your own that sets ``cli_name``)."""
    try:
        return registry.parse(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None


class FlowsRunner:
    """Texts → component-flows documents for one loaded model, semiring and target spec; the
    flows program is compiled once per input shape (and memory-checked) and reused.

    Args:
      loaded: from :func:`jaxpr_semiring.cli.loading.load`.
      semiring: a semiring or its command-line name (``"max-product"``, ``"top-k:2"``, …).
      target: a target spec (``"logit-diff:is,are"``, ``"similarity:another text"``, …) or
        None for the top-1 minus the top-2 prediction.
      heads: split query/key/value per attention head.
    """

    def __init__(
        self,
        loaded: Loaded,
        semiring: Semiring | str = "max-product",
        target: str | None = None,
        heads: bool = False,
    ):
        self.loaded, self.target, self.heads = loaded, target, heads
        if isinstance(semiring, type):
            raise TypeError(
                f"FlowsRunner got the class {semiring.__name__}, not a semiring: "
                f"pass an instance: {semiring.__name__}()."
            )
        self.S = parse_semiring(semiring) if isinstance(semiring, str) else semiring
        self._compiled: dict = {}  # (target function, argument shapes) -> checked executable

    def flows(self, text: str):
        """``(ComponentFlows, tokens, Target)`` of one text."""
        with _profile.phase("tokenize"):
            ids, tokens = loading.encode(self.loaded, text)
        with _profile.phase("target"):
            tgt = loading.resolve_target(self.loaded, self.target, ids)
        args = (self.loaded.params, {"input_ids": ids}, *tgt.args)
        leaves, tree = jax.tree.flatten(args[1:])
        key = (tgt.fn, tree, tuple((np.shape(x), np.asarray(x).dtype) for x in leaves))
        if key not in self._compiled:  # compile once per shape, and refuse what cannot fit
            fn = component_flows_fn(
                self.loaded.model, tgt.fn, self.S, heads=self.heads, preset=self.loaded.preset
            )
            with _profile.phase("trace"):
                traced = jax.jit(fn).trace(*args)
            with _profile.phase("lower"):
                lowered = traced.lower()
            with _profile.phase("compile"):
                compiled = lowered.compile()
            fix = "use a smaller K or a shorter text" if self.S.cli_arg else "use a shorter text"
            memory.check_fits(compiled, f"--semiring {self.S.label}", fix=fix)
            self._compiled[key] = compiled
        with _profile.phase("run"):
            out = jax.block_until_ready(self._compiled[key](*args))
        return out, tokens, tgt

    def document(self, text: str) -> dict:
        """The JSON document (``docs/components.md``) of one text."""
        cf, tokens, tgt = self.flows(text)
        with _profile.phase("write"):
            return document(self.loaded, self.S, cf, tokens, tgt)


def document(
    loaded: Loaded, S: Semiring, flows, tokens: Sequence[str], target: loading.Target
) -> dict:
    """The JSON document of flows computed for one text (``flows``: a
    :class:`~jaxpr_semiring.analyses.component_channels.ComponentFlows` of one example)."""
    points = []
    for pt in flows.points:
        fields = S.field_values(pt.flows)
        total = S.field_values(pt.total)
        points.append(
            {
                "layer": pt.layer,
                "point": pt.point,
                "components": list(pt.components),
                "flows": {f: a.tolist() for f, a in fields.items()},
                "total": {f: total[f].tolist() for f in fields},
            }
        )
    return {
        "model": loaded.name,
        "architecture": loaded.model.config.model_type,
        "semiring": S.label,
        "target": target.description,
        "target_value": float(flows.value),
        "tokens": list(tokens),
        "points": points,
    }


def top_path_document(
    loaded: Loaded, text: str, target: str | None = None, token: int | None = None
) -> tuple[dict, Any]:
    """``(document, Path)``: the top gradient path (max-product) from token ``token``'s
    embedding (its best dimension; default: the best element of any token) to the target."""
    ids, tokens = loading.encode(loaded, text)
    if token is not None and not -len(ids) <= token < len(ids):
        raise UsageError(f"--token {token} is outside the {len(ids)} tokens (0..{len(ids) - 1}).")
    tgt = loading.resolve_target(loaded, target, ids)
    model, params = loaded.model, loaded.params

    def traced(what):
        def run(p):
            f, e0 = embedding_target(model, p, {"input_ids": ids}, tgt.fn, tgt.args, loaded.preset)
            return what(f, e0)

        return jax.jit(run)(params)

    at = None
    if token is not None:
        token %= len(ids)
        g = traced(lambda f, e0: semiring_grad(f, MaxProduct())(e0))
        at = (0, token, int(np.argmax(np.asarray(g.top_pos)[0, token])))
    path = traced(lambda f, e0: top_path(f, at=at)(e0))
    value = traced(lambda f, e0: f(e0))
    start = path.start["index"]
    doc = {
        "model": loaded.name,
        "architecture": model.config.model_type,
        "target": tgt.description,
        "target_value": float(value),
        "tokens": tokens,
        "start": {"token": int(start[1]), "dim": int(start[2])},
        "value": path.value,
        "steps": [dict(s._asdict(), shape=list(s.shape), index=list(s.index)) for s in path.steps],
    }
    return doc, path


# ------------------------------------------------------------------------------ argparse


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jaxpr-semiring flows: error: ... (see --help)``), exit
    code 2 as always."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {outputs.shown(message)} (see {self.prog} --help).\n")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="jaxpr-semiring",
        description=("Where does the gradient flow: semiring backpropagation on Transformers."),
    )
    sub = ap.add_subparsers(dest="command", required=True)
    target_help = (
        "what to explain: logit-diff:A,B[@POS] (masked LM: at the mask; causal LM: "
        "next token at POS, default the last), class-diff:A,B (classifiers), "
        'similarity:"another text" (sentence encoders); default: the top-1 minus '
        "the top-2 prediction"
    )
    fl = sub.add_parser("flows", help="flows through every component at every branch point")
    fl.add_argument("model", help="a save_pretrained directory, or 'minilm'")
    fl.add_argument("--text", help="the input text (or --file for a data set)")
    fl.add_argument("--target", help=target_help)
    fl.add_argument(
        "--semiring",
        default="max-product",
        help="max-product (default), real, log, entropy, counting, max-abs, top-k:K "
        "(with --file: several, comma separated)",
    )
    fl.add_argument("--heads", action="store_true", help="split query/key/value per head")
    fl.add_argument("--json", help="write the JSON document here ('-': stdout)")
    fl.add_argument("--out", help="write the heatmap PNG here")
    fl.add_argument("--html", help="write the HTML report here")
    fl.add_argument("--field", help="the value field the table and figures show")
    dataset.add_arguments(fl)
    _add_run_options(fl)
    tp = sub.add_parser("top-path", help="the top gradient path from a token to the target")
    tp.add_argument("model", help="a save_pretrained directory, or 'minilm'")
    tp.add_argument("--text", required=True, help="the input text")
    tp.add_argument("--target", help=target_help)
    tp.add_argument("--token", type=int, help="start token index (default: the best one)")
    tp.add_argument("--json", help="write the path as JSON here ('-': stdout)")
    _add_run_options(tp)
    feature_paths.add_parser(sub, _add_run_options)
    return ap


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        action="store_true",
        help="print where the seconds went (import, load, …, compile, run, write) to stderr",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help=f"do not use the compilation cache (also: {cache.ENV_OFF}=1; default directory: "
        "$XDG_CACHE_HOME/jaxpr_semiring/jax)",
    )


_OUTPUTS = {"flows": ("json", "out", "html"), "top-path": ("json",)}


def _check_outputs(args) -> None:
    """Every output path writable, no two the same file, matplotlib there for --out: checked
    before the model loads."""
    named = [
        (f"--{k}", getattr(args, k))
        for k in _OUTPUTS[args.command]
        if getattr(args, k, None) is not None
    ]
    for option, path in named:
        outputs.check_output_path(path, option)
    real = {}
    for option, path in named:
        key = "-" if outputs.is_stdout(path) else os.path.realpath(path)
        if key in real and not (key != "-" and os.path.exists(key) and not os.path.isfile(key)):
            raise UsageError(
                f"{real[key]} and {option} name the same file "
                f"{outputs.shown(path)}: give each its own."
            )
        real[key] = option
    if getattr(args, "out", None) is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(
                '--out needs matplotlib: pip install "jaxpr_semiring[examples]" '
                "(or leave --out out)."
            )


def _check_text(text: str | None, command: str) -> None:
    if not text:
        raise UsageError(
            f'{command} needs --text "a sentence"'
            + (
                " (or --file inputs.txt --out-dir results/ for a data set)."
                if command == "flows"
                else "."
            )
        )
    if not text.strip():
        raise UsageError('the text is empty: pass --text "a sentence".')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(
            f"--text is not valid Unicode (character {e.start}): pass UTF-8 text."
        ) from None


def _human_stream(args):
    """Where the table and messages go: stderr when an output file is standard output."""
    paths = [getattr(args, k, None) for k in _OUTPUTS[args.command]]
    return sys.stderr if any(outputs.is_stdout(p) for p in paths if p is not None) else sys.stdout


def _flows(args) -> None:
    _check_text(args.text, "flows")
    S = parse_semiring(args.semiring)
    if args.field is not None and args.field not in S.fields:
        raise UsageError(
            f"--field {args.field!r} is not a field of {S.label}: use one of {list(S.fields)}."
        )
    loading.check_target(args.target)
    _check_outputs(args)
    with _profile.phase("load"):
        loaded = loading.load(args.model)
    runner = FlowsRunner(loaded, S, args.target, args.heads)
    doc = runner.document(args.text)
    with _profile.phase("write"):
        _write_flows(args, doc)


def _write_flows(args, doc) -> None:
    stream = _human_stream(args)
    print(render.format_table(doc, args.field), file=stream)
    for option, write in (
        ("json", render.save_json),
        ("out", render.save_heatmap),
        ("html", render.save_html),
    ):
        path = getattr(args, option)
        if path is None:
            continue
        try:
            write(doc, path) if write is render.save_json else write(doc, path, field=args.field)
        except OutputError as e:
            raise OutputError(f"--{option} {e}") from None
        print(f"wrote {outputs.shown(path)}", file=stream)


def _top_path(args) -> None:
    _check_text(args.text, "top-path")
    loading.check_target(args.target)
    _check_outputs(args)
    with _profile.phase("load"):
        loaded = loading.load(args.model)
    with _profile.phase("compute"):  # trace, compile and run: three jitted programs
        doc, path = top_path_document(loaded, args.text, args.target, args.token)
    stream = _human_stream(args)
    shown = outputs.shown
    print(
        f"model {shown(doc['model'])} ({shown(doc['architecture'])}) · target "
        f"{shown(doc['target'])} = {doc['target_value']:.6g} · from token "
        f"{doc['start']['token']} {doc['tokens'][doc['start']['token']]!r}",
        file=stream,
    )
    print(path, file=stream)
    if args.json is not None:
        outputs.write_output(
            args.json, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", option="--json"
        )
        print(f"wrote {shown(args.json)}", file=stream)


def _error(message: str, stream=None) -> int:
    """Print the one-line error (control characters escaped); the exit code 2."""
    stream = sys.stderr if stream is None else stream
    try:
        print(f"jaxpr-semiring: error: {outputs.shown(message)}", file=stream, flush=True)
    except (OSError, ValueError):
        pass
    return 2


def _silence_stdout() -> None:
    """After a failed write to stdout, point its descriptor at /dev/null, so that the
    interpreter's final flush does not print a second error."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input). Never reads stdin."""
    started = _profile.since_process_start() if argv is None else None  # the console script
    args = _parser().parse_args(argv)
    if args.profile:
        _profile.reset()
        _profile.enable()
        if started is not None:
            _profile.record("import", *started)
    with cache.enabled(args.no_cache) as cache_dir:
        code = _run(args)
    if args.profile:
        _profile.disable()
        _profile.report(cache=cache_dir)
    return code


def _run(args) -> int:
    try:
        if args.command == "flows" and args.file:
            return dataset.run_file(args, parse_semiring, document)
        commands = {"flows": _flows, "top-path": _top_path, "feature-paths": feature_paths.run}
        commands[args.command](args)
        sys.stdout.flush()
    except (UsageError, OutputError) as e:
        return _error(str(e))
    except OSError as e:  # printing the table: stdout is full, closed or gone
        if e.filename is not None:
            return _error(f"{e.filename}: {e.strerror or e}.")
        _silence_stdout()
        fix = "free some space" if e.errno == errno.ENOSPC else "check where stdout goes"
        return _error(f"cannot write to standard output: {e.strerror or e}: {fix}.")
    return 0
