"""``jaxpr-semiring feature-paths``: the attribution graph over SAE / transcoder features of one
prompt, semiring paths on it, written as Neuronpedia's graph JSON (docs/features.md).

::

    jaxpr-semiring feature-paths MODEL --text "..." --sae DIR [--sae DIR ...] \\
        [--target WORD[,WORD]] [--semiring top-k:10|entropy|sample:1000] \\
        [--max-features N] --out graph.json [--html report.html]

``MODEL`` is a causal LM directory written by ``save_pretrained`` (Flax weights;
:mod:`jaxpr_semiring.cli.loading`); each ``--sae`` a folder the loaders read (SAELens,
sparsify, Gemma Scope: :func:`jaxpr_semiring.features.loaders.load_dictionary`), its hook names
placed on the model. Bad input is one line and exit code 2, before the model loads wherever it
can be (arguments, semiring syntax, folders, output paths).

>>> parse_feature_semiring("top-k:5"), parse_feature_semiring("sample:100")
(('top-k', 5), ('sample', 100))
"""

from __future__ import annotations

import html
import json
import os
import sys

import jax
import numpy as np

from .. import outputs
from ..features import paths as fpaths
from ..features.graph import FeatureGraph
from .errors import UsageError

__all__ = ["add_parser", "run", "parse_feature_semiring", "semiring_block", "SEMIRINGS"]

SEMIRINGS = ("top-k:K", "entropy", "sample:N")


def parse_feature_semiring(spec: str) -> tuple[str, int | None]:
    """``"top-k:10"`` → ``("top-k", 10)``, ``"entropy"`` → ``("entropy", None)``,
    ``"sample:1000"`` → ``("sample", 1000)``."""
    name, _, arg = (spec or "").partition(":")
    if name == "entropy" and not arg:
        return "entropy", None
    if name in ("top-k", "sample"):
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if n >= 1:
            return name, n
        raise UsageError(
            f"--semiring {spec}: {name} needs a positive count, e.g. {name}:"
            f"{10 if name == 'top-k' else 1000}."
        )
    raise UsageError(f"--semiring {spec!r} is not one of {', '.join(SEMIRINGS)}.")


def add_parser(sub, add_run_options) -> None:
    """Register the subcommand on ``sub`` (argparse sub-parsers)."""
    fp = sub.add_parser(
        "feature-paths", help="semiring paths through SAE/transcoder features (attribution graph)"
    )
    fp.add_argument("model", help="a causal LM save_pretrained directory (Flax weights)")
    fp.add_argument("--text", help="the prompt")
    fp.add_argument(
        "--sae",
        action="append",
        default=[],
        help="an SAE or transcoder folder (SAELens, sparsify, Gemma Scope); repeat per layer",
    )
    fp.add_argument(
        "--target",
        help="the next token(s) to explain, comma separated words (default: the most likely "
        "tokens up to 95%% probability, at most 10)",
    )
    fp.add_argument(
        "--semiring", default="top-k:10", help="top-k:K (default top-k:10), entropy, sample:N"
    )
    fp.add_argument("--max-features", type=int, help="keep the N largest activations as nodes")
    fp.add_argument("--seed", type=int, default=0, help="random seed for sample:N")
    fp.add_argument("--slug", default="feature-paths", help="the graph's name in Neuronpedia")
    fp.add_argument("--out", help="write the Neuronpedia graph JSON here ('-': stdout)")
    fp.add_argument("--html", help="write a self-contained HTML report here")
    add_run_options(fp)


def _check_args(args) -> tuple[str, int | None]:
    if not args.text or not args.text.strip():
        raise UsageError('feature-paths needs --text "a prompt".')
    spec = parse_feature_semiring(args.semiring)
    if not args.sae:
        raise UsageError("feature-paths needs at least one --sae DIR (an SAE or transcoder).")
    for d in args.sae:
        if not os.path.exists(d):
            raise UsageError(f"--sae {d}: no such folder; pass a folder saved by SAELens/sparsify.")
    if args.max_features is not None and args.max_features < 1:
        raise UsageError(f"--max-features {args.max_features}: pass a positive number.")
    if args.out is None and args.html is None:
        raise UsageError(
            "feature-paths writes --out graph.json and/or --html report.html: give one."
        )
    named = [(o, getattr(args, o[2:])) for o in ("--out", "--html") if getattr(args, o[2:])]
    for option, path in named:
        outputs.check_output_path(path, option)
    if len(named) == 2 and not outputs.is_stdout(named[0][1]):
        if os.path.realpath(named[0][1]) == os.path.realpath(named[1][1]):
            raise UsageError("--out and --html name the same file: give each its own.")
    if args.html and outputs.is_stdout(args.html) and args.out and outputs.is_stdout(args.out):
        raise UsageError("--out and --html both write to stdout: give one a file.")
    return spec


def _targets(loaded, spec: str | None):
    from . import loading

    if spec is None:
        return None
    words = [w for w in spec.split(",")]
    if not all(w.strip() for w in words):
        raise UsageError(
            f"--target {spec!r}: give words separated by commas, e.g. --target is,are."
        )
    return [loading.single_token(loaded, w) for w in words]


def semiring_block(
    graph: FeatureGraph, spec: tuple[str, int | None], seed: int = 0, influence=None
) -> dict:
    """The ``semiring`` block of the document: scores always; top paths (signed Jacobian
    edges, the first target logit), entropy / log #paths (influence edges) or sampled paths."""
    name, n = spec
    rep, comp = fpaths.graph_scores(graph, influence)
    block: dict = {"name": f"{name}:{n}" if n else name}
    block["scores"] = {"replacement": rep, "completeness": comp}
    label = graph.node_label
    if name == "top-k":
        paths = fpaths.top_paths(graph, n, weighting="signed", logit=0)
        block["weighting"] = "signed (logit 0)"
        block["paths"] = [(v, nodes) for v, nodes in paths]
        block["path_labels"] = [[label(i) for i in nodes] for _, nodes in paths]
    elif name == "entropy":
        block["weighting"] = "influence"
        block.update(fpaths.path_entropy(graph))
    else:
        draws = fpaths.sample_graph_paths(graph, n, jax.random.PRNGKey(seed))
        counts: dict = {}
        for v, nodes in draws:
            counts.setdefault(tuple(nodes), [v, 0])[1] += 1
        top = sorted(counts.items(), key=lambda kv: -kv[1][1])[:20]
        ent = fpaths.path_entropy(graph)
        logs = np.log(np.abs([v for v, _ in draws])) - ent["log_z"]
        block["weighting"] = "influence"
        block["n_samples"] = n
        block["distinct_paths"] = len(counts)
        block["entropy"], block["log_n_paths"] = ent["entropy"], ent["log_n_paths"]
        block["entropy_monte_carlo"] = float(-logs.mean())
        block["paths"] = [(v, list(nodes)) for nodes, (v, _) in top]
        block["counts"] = [c for _, (_, c) in top]
        block["path_labels"] = [[label(i) for i in nodes] for nodes, _ in top]
    return block


def _summary(graph: FeatureGraph, block: dict) -> str:
    lines = [
        f"graph: {graph.n_features} features, {graph.n_errors} error nodes, {graph.n_tokens} "
        f"tokens, {graph.n_logits} logits · replacement {block['scores']['replacement']:.4f} · "
        f"completeness {block['scores']['completeness']:.4f}"
    ]
    if "entropy" in block:
        lines.append(
            f"path entropy {block['entropy']:.4f} nats · log #paths {block['log_n_paths']:.4f}"
        )
    for i, ((v, _), labels) in enumerate(zip(block.get("paths", []), block.get("path_labels", []))):
        extra = f" ×{block['counts'][i]}" if "counts" in block else ""
        lines.append(f"{i + 1:3d}. {v:+.4g}{extra}  " + " → ".join(labels))
    return "\n".join(lines)


def _html(graph: FeatureGraph, block: dict, text: str) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{v:+.4g}</td><td>{esc(' → '.join(labels))}</td></tr>"
        for i, ((v, _), labels) in enumerate(
            zip(block.get("paths", []), block.get("path_labels", []))
        )
    )
    facts = "".join(
        f"<li>{esc(k)}: {esc(str(v))}</li>"
        for k, v in block.items()
        if k not in ("paths", "path_labels", "counts")
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>feature paths</title>"
        "<style>body{font-family:sans-serif}td{padding:2px 8px}</style></head><body>"
        f"<h1>Feature paths</h1><p>Prompt: <code>{esc(text)}</code></p><ul>{facts}</ul>"
        f"<table><tr><th>#</th><th>product</th><th>path</th></tr>{rows}</table>"
        "</body></html>\n"
    )


def run(args) -> None:
    """The subcommand (raises :class:`UsageError` / :class:`~jaxpr_semiring.outputs.OutputError`
    on bad input)."""
    from ..features import export, loaders
    from ..features.attribution import attribution_graph  # flax: imported when run
    from . import loading

    spec = _check_args(args)
    loaded = loading.load(args.model)
    if loaded.backend != "flax" or loaded.kind != "causal":
        raise UsageError(
            f"feature-paths explains a causal LM's next token with Flax weights; {args.model!r} "
            f"is a {loaded.backend} {loaded.kind} model."
        )
    dicts = []
    for d in args.sae:
        try:
            dicts.append(loaders.load_dictionary(d, model=loaded.model))
        except ValueError as e:
            raise UsageError(f"--sae {d}: {str(e).splitlines()[0]}") from None
    ids, tokens = loading.encode(loaded, args.text)
    target = _targets(loaded, args.target)
    try:
        graph = attribution_graph(
            loaded.model,
            loaded.params,
            ids,
            dicts,
            target,
            max_features=args.max_features,
            input_strings=tokens,
        )
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    graph.logit_strings = loaded.tokenizer.convert_ids_to_tokens(graph.logit_tokens.tolist())
    influence = fpaths.node_influence(graph)
    block = semiring_block(graph, spec, args.seed, influence)
    stream = (
        sys.stderr if any(outputs.is_stdout(p) for p in (args.out, args.html) if p) else sys.stdout
    )
    print(_summary(graph, block), file=stream)
    if args.out:
        doc = export.to_neuronpedia(
            graph,
            slug=args.slug,
            scan=[os.path.basename(os.path.normpath(d)) for d in args.sae],
            semiring=block,
            influence=influence,
            prompt=args.text,
        )
        outputs.write_output(args.out, json.dumps(doc) + "\n", option="--out")
        print(f"wrote {outputs.shown(args.out)}", file=stream)
    if args.html:
        outputs.write_output(args.html, _html(graph, block, args.text), option="--html")
        print(f"wrote {outputs.shown(args.html)}", file=stream)
