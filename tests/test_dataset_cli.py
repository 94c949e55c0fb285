"""``jaxpr-semiring flows MODEL --file ... --out-dir ...`` (jaxpr_semiring.cli.dataset) on a tiny
random BERT checkpoint: records equal the single-text documents, per-line targets, bad lines
reported and skipped, exit code 2 for unusable input or results directories."""

from __future__ import annotations

import argparse
import io
import json
import re

import pytest

from jaxpr_semiring.cli import dataset as dataset_cli, render as report
from jaxpr_semiring.cli import commands as cli
from jaxpr_semiring.cli.commands import FlowsRunner, parse_semiring
from jaxpr_semiring.cli import loading

import family_checkpoints
from test_dataset import assert_same_records, load_records

KEYS = "The keys to the cabinet [MASK] on the table."
LINES = [
    json.dumps({"text": KEYS, "good": "are", "bad": "is"}),
    "",
    json.dumps({"text": "The key to the cabinets [MASK] on the table."}),
    json.dumps({"text": "No mask here."}),
    json.dumps({"text": "The keys [MASK] here.", "good": "are", "bad": "cabinetry"}),
    json.dumps({"text": "[MASK] " + "word " * 30}),
]


def _document(loaded, S, cf, tokens, tgt):
    """FlowsRunner.document's builder on flows computed elsewhere (until the command line
    exposes it as ``cli.document``)."""
    r = FlowsRunner(loaded, S)
    r.flows = lambda text: (cf, tokens, tgt)
    return r.document("")


document = getattr(cli, "document", _document)


def args(model, file, out, *extra):
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--target")
    ap.add_argument("--semiring", default="max-product")
    ap.add_argument("--heads", action="store_true")
    ap.add_argument("--json")
    dataset_cli.add_arguments(ap)
    return ap.parse_args(
        [model, "--file", str(file), "--out-dir", str(out), "--no-progress", *extra]
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = family_checkpoints.build("bert", str(d / "bert"))
    src = d / "in.jsonl"
    src.write_text("\n".join(LINES) + "\n")
    err = io.StringIO()
    code = dataset_cli.run_file(
        args(
            model, src, d / "out", "--semiring", "max-product,real", "--target", "logit-diff:is,are"
        ),
        parse_semiring,
        document,
        err,
    )
    return model, src, d / "out", code, err.getvalue()


def test_records_are_the_single_text_documents(run):
    model, src, out, code, err = run
    assert code == 0
    recs = load_records(out / "flows.jsonl")
    assert [(r["index"], r["semiring"]) for r in recs] == [
        (0, "max-product"),
        (0, "real"),
        (2, "max-product"),
        (2, "real"),
    ]
    assert [r["target"] for r in recs[::2]] == ["logit-diff:are,is@6", "logit-diff:is,are@6"]
    loaded = loading.load(model)
    for r in recs[:2]:
        want = FlowsRunner(loaded, r["semiring"], "logit-diff:are,is").document(KEYS)
        assert_same_records([r], [dict(index=0, text=KEYS, **json.loads(report.to_json(want)))])


def test_bad_lines_are_reported_skipped_and_listed(run):
    model, src, out, code, err = run
    skipped = [line for line in err.splitlines() if line.endswith("; skipped")]
    assert [s.split(":", 2)[1] for s in skipped] == ["4 (index 3)", "5 (index 4)", "6 (index 5)"]
    assert "needs exactly one [MASK] in the text (found no)" in skipped[0]
    assert "target token 'cabinetry' is not a single vocabulary item" in skipped[1]
    assert "the model's position table holds 24: shorten the text" in skipped[2]
    assert "3 skipped (lines 4, 5, 6); 1 empty (line 2)" in err.splitlines()[-1]
    assert [r["index"] for r in load_records(out / "skipped.jsonl")] == [3, 4, 5]


def test_exit_code_2_with_a_one_line_message(run, tmp_path):
    model, src, out, _, _ = run
    cases = [
        (
            args(model, tmp_path / "nope.txt", tmp_path / "o"),
            "cannot read .*nope.txt: No such file",
        ),
        (
            args(model, src, out, "--semiring", "entropy", "--target", "logit-diff:is,are"),
            "holds results of another run \\(options differ: semirings",
        ),
        (args(model, src, tmp_path / "o", "--batch-size", "0"), "--batch-size 0: give at least 1"),
        (args(model, src, tmp_path / "o", "--buckets", "8,x"), "--buckets '8,x': give positive"),
        (args(model, src, src / "o"), "cannot write to .*: Not a directory"),
        (
            args(model, src, tmp_path / "o", "--json", "x.json"),
            "--json is for one text; with --file",
        ),
        (args(model, src, ""), "--file needs --out-dir"),
    ]
    for a, message in cases:
        err = io.StringIO()
        assert dataset_cli.run_file(a, parse_semiring, document, err) == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jaxpr-semiring: error: "), lines
        assert re.search(message, lines[0]), lines[0]
