"""The command line end to end on tiny checkpoints written with save_pretrained: the table, the
JSON document (its schema exactly), the heatmap PNG, the HTML report, top paths, and a one-line
error with exit code 2 for every kind of bad input."""

import html.parser
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import family_checkpoints as fc
from jaxpr_semiring.cli import commands as cli

TEXT = "The keys to the cabinet [MASK] on the table."
KEYS = {"model", "architecture", "semiring", "target", "target_value", "tokens", "points"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """name -> directory of a tiny checkpoint (bert: masked LM, gpt2: causal LM, encoder: a
    BERT without head)."""
    root = tmp_path_factory.mktemp("ckpt")
    dirs = {n: fc.build(n, str(root / n)) for n in ("bert", "gpt2")}
    from transformers import FlaxBertModel

    enc = FlaxBertModel(fc.config("bert", 30522), seed=1)
    enc.save_pretrained(str(root / "encoder"))
    fc.tokenizer("wordpiece").save_pretrained(str(root / "encoder"))
    dirs["encoder"] = str(root / "encoder")
    return dirs


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _read_json(path):
    from jaxpr_semiring.cli import render as report

    with open(path, encoding="utf-8") as fh:
        return report.from_json(fh.read())


def _check_schema(doc, fields, n_layers=2):
    assert set(doc) == KEYS
    T = len(doc["tokens"])
    assert [(p["layer"], p["point"]) for p in doc["points"]] == [
        (l, k) for l in range(n_layers) for k in ("attention", "mlp")
    ]
    for p in doc["points"]:
        assert set(p) == {"layer", "point", "components", "flows", "total"}
        assert p["components"][-1] == "other"
        assert list(p["flows"]) == fields and list(p["total"]) == fields
        for f in fields:
            assert np.shape(p["flows"][f]) == (T, len(p["components"])) and np.shape(
                p["total"][f]
            ) == (T,)


class _Html(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.external, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.external += [v for k, v in attrs if k in ("src", "href") and v and "://" in v]

    def handle_data(self, data):
        self.text.append(data)


def test_flows_mlm_table_json_png_html(ckpt, capsys, tmp_path):
    j, png, page = tmp_path / "f.json", tmp_path / "f.png", tmp_path / "f.html"
    rc, out, err = _run(
        capsys,
        "flows",
        ckpt["bert"],
        "--text",
        TEXT,
        "--target",
        "logit-diff:is,are",
        "--json",
        j,
        "--out",
        png,
        "--html",
        page,
    )
    assert rc == 0, err
    assert (
        "layer 0" in out and "layer 1" in out and "skip" in out and "query" in out and "mlp" in out
    )
    doc = _read_json(j)
    _check_schema(doc, ["top_pos", "top_neg"])
    assert doc["semiring"] == "max-product" and doc["architecture"] == "bert"
    assert doc["target"] == "logit-diff:is,are@6" and doc["tokens"][6] == "[MASK]"
    for p in doc["points"]:  # ⊕ over the components (max for top_pos) is the total
        np.testing.assert_array_equal(np.max(p["flows"]["top_pos"], -1), p["total"]["top_pos"])
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    parser = _Html()
    with open(page, encoding="utf-8") as fh:
        parser.feed(fh.read())
    assert "table" in parser.tags and not parser.external  # self-contained
    assert "cabinet" in "".join(parser.text)
    _renders_in_a_browser(page, tmp_path)


def _renders_in_a_browser(page, tmp_path):
    """Where the machine has a headless Chromium: the page renders (a non-blank screenshot,
    a DOM with the tokens and tables)."""
    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    if browser is None:
        return
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1000,800"]
    shot = tmp_path / "shot.png"
    subprocess.run(cmd + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    import matplotlib.image

    assert np.std(matplotlib.image.imread(str(shot))) > 0.01
    dom = subprocess.run(
        cmd + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert "cabinet" in dom and "<table" in dom


@pytest.mark.parametrize(
    "semiring, fields",
    [
        ("top-k:2", ["log_abs[0]", "sign[0]", "log_abs[1]", "sign[1]"]),
        ("entropy", ["log_z", "mean_log_abs", "entropy"]),
        ("real", ["value"]),
    ],
)
def test_flows_semiring_fields_and_heads(ckpt, capsys, tmp_path, semiring, fields):
    j = tmp_path / "f.json"
    argv = [
        "flows",
        ckpt["gpt2"],
        "--text",
        "The keys to the cabinet",
        "--semiring",
        semiring,
        "--json",
        j,
    ]
    rc, out, err = _run(capsys, *(argv + (["--heads"] if semiring == "real" else [])))
    assert rc == 0, err
    doc = _read_json(j)
    _check_schema(doc, fields)
    assert doc["semiring"] == semiring and doc["architecture"] == "gpt2"
    assert doc["target"].startswith("logit-diff:") and doc["target"].endswith(
        f"@{len(doc['tokens']) - 1}"
    )
    if semiring == "real":
        att = doc["points"][0]
        assert att["components"] == [
            "skip",
            "query.0",
            "query.1",
            "key.0",
            "key.1",
            "value.0",
            "value.1",
            "other",
        ]
        np.testing.assert_allclose(
            np.sum(att["flows"]["value"], -1), att["total"]["value"], rtol=1e-4, atol=1e-6
        )


def test_similarity_target_and_top_path(ckpt, capsys, tmp_path):
    j = tmp_path / "f.json"
    rc, out, err = _run(
        capsys,
        "flows",
        ckpt["encoder"],
        "--text",
        "The keys are on the table.",
        "--target",
        'similarity:"A key is in the drawer."',
        "--json",
        j,
    )
    assert rc == 0, err
    doc = _read_json(j)
    assert doc["target"] == "similarity:A key is in the drawer." and -1 <= doc["target_value"] <= 1
    p = tmp_path / "p.json"
    rc, out, err = _run(
        capsys,
        "top-path",
        ckpt["gpt2"],
        "--text",
        "The keys to the cabinet",
        "--token",
        2,
        "--json",
        p,
    )
    assert rc == 0, err
    with open(p, encoding="utf-8") as fh:
        path = json.load(fh)
    assert path["start"]["token"] == 2 and path["steps"]
    assert path["steps"][-1]["product"] == pytest.approx(path["value"], rel=1e-3)
    assert "top gradient path" in out


def test_module_and_console_script_exit_code_2(tmp_path):
    missing = str(tmp_path / "nope")
    for argv in (
        [sys.executable, "-m", "jaxpr_semiring"],
        [os.path.join(os.path.dirname(sys.executable), "jaxpr-semiring")],
    ):
        r = subprocess.run(argv + ["flows", missing, "--text", "x"], capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
        assert "Traceback" not in r.stderr


def _bad_dirs(ckpt, tmp_path):
    no_weights = tmp_path / "no_weights"
    shutil.copytree(ckpt["bert"], no_weights)
    os.remove(no_weights / "flax_model.msgpack")
    no_tok = tmp_path / "no_tok"
    os.makedirs(no_tok)
    for f in ("config.json", "flax_model.msgpack"):
        shutil.copy(os.path.join(ckpt["bert"], f), no_tok / f)
    t5 = tmp_path / "t5"
    shutil.copytree(ckpt["bert"], t5)
    from transformers import T5Config

    T5Config(vocab_size=100, d_model=8, num_layers=1, num_heads=2, d_ff=8, d_kv=4).save_pretrained(
        str(t5)
    )
    return no_weights, no_tok, t5


BAD = [  # (argv after "flows", a fragment of the message)
    (lambda d: ["/nonexistent/dir", "--text", TEXT], "does not exist"),
    (lambda d: [d["no_weights"], "--text", TEXT], "has no weights"),
    (lambda d: [d["no_tok"], "--text", TEXT], "has no tokenizer"),
    (lambda d: [d["t5"], "--text", TEXT], "no component preset for model type 't5'"),
    (
        lambda d: [d["bert"], "--text", TEXT, "--target", "logit-diff:is,qqxqqzz"],
        "not a single vocabulary item",
    ),
    (lambda d: [d["bert"], "--text", "the table " * 20], "position table holds 24"),
    (
        lambda d: [
            d["bert"],
            "--text",
            "The keys are on the table.",
            "--target",
            "logit-diff:is,are",
        ],
        "needs exactly one [MASK]",
    ),
    (lambda d: [d["bert"], "--text", TEXT, "--semiring", "tropical"], "unknown semiring"),
    (lambda d: [d["bert"], "--text", TEXT, "--target", "logit-diff:is"], "write logit-diff:A,B"),
    (lambda d: [d["bert"], "--text", TEXT, "--target", "bogus:1"], "unknown target"),
    (lambda d: [d["encoder"], "--text", TEXT], "no prediction head"),
    (
        lambda d: [d["gpt2"], "--text", "The keys", "--target", "class-diff:0,1"],
        "needs a classifier",
    ),
]


def test_bad_input_is_one_line_and_exit_code_2(ckpt, capsys, tmp_path):
    no_weights, no_tok, t5 = _bad_dirs(ckpt, tmp_path)
    dirs = dict(ckpt, no_weights=no_weights, no_tok=no_tok, t5=t5)
    for make, fragment in BAD:
        rc, out, err = _run(capsys, "flows", *make(dirs))
        assert rc == 2, (fragment, err)
        assert err.startswith("jaxpr-semiring: error: ") and err.strip().count("\n") == 0, err
        assert fragment in err, (fragment, err)
    rc, out, err = _run(capsys, "top-path", ckpt["bert"], "--text", TEXT, "--token", 99)
    assert rc == 2 and "outside the 12 tokens" in err
    rc, out, err = _run(capsys, "flows", ckpt["bert"])
    assert rc == 2 and "needs --text" in err and err.strip().count("\n") == 0
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--file", tmp_path / "in.txt")  # a data set
    assert rc == 2 and "--out-dir" in err and err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as e:  # argparse: top-path without --text
        cli.main(["top-path", ckpt["bert"]])
    assert e.value.code == 2
