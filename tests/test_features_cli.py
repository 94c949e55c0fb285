"""``jaxpr-semiring feature-paths`` end to end on a tiny GPT-2 checkpoint with transcoders saved in
SAELens' format: the Neuronpedia document (schema-checked), the semiring block, the HTML report,
and one-line errors with exit code 2."""

import json
import os

import numpy as np
import pytest

import family_checkpoints as fc
from jaxpr_semiring.cli import commands as cli
from jaxpr_semiring.features import export

TEXT = "The keys to the cabinet"


def save_transcoder(folder, layer, d, d_sae, seed):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    w = {
        "W_enc": rng.normal(size=(d, d_sae)) / np.sqrt(d),
        "b_enc": np.full(d_sae, 0.1),
        "W_dec": 0.3 * rng.normal(size=(d_sae, d)),
        "b_dec": np.zeros(d),
    }
    save_file({k: v.astype(np.float32) for k, v in w.items()}, f"{folder}/sae_weights.safetensors")
    cfg = {
        "architecture": "transcoder",
        "d_in": d,
        "d_sae": d_sae,
        "d_out": d,
        "metadata": {
            "hook_name": f"blocks.{layer}.hook_mlp_in",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out",
        },
    }
    with open(f"{folder}/cfg.json", "w") as fh:
        json.dump(cfg, fh)
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    model = fc.build("gpt2", str(root / "gpt2"))
    with open(f"{model}/config.json") as fh:
        cfg = json.load(fh)
    d = cfg["n_embd"]
    saes = [save_transcoder(str(root / f"tc{i}"), i, d, 12, i) for i in range(cfg["n_layer"])]
    return model, saes


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("semiring", ["top-k:4", "entropy"])
def test_feature_paths_writes_a_neuronpedia_graph(ckpt, capsys, tmp_path, semiring):
    model, saes = ckpt
    out, page = tmp_path / "graph.json", tmp_path / "report.html"
    sae_args = [a for s in saes for a in ("--sae", s)]
    rc, stdout, err = _run(
        capsys,
        "feature-paths",
        model,
        "--text",
        TEXT,
        *sae_args,
        "--semiring",
        semiring,
        "--out",
        out,
        "--html",
        page,
    )
    assert rc == 0, err
    doc = json.loads(out.read_text())
    export.check_document(doc)
    block = doc["semiring"]
    assert 0 <= block["scores"]["replacement"] <= 1 and 0 <= block["scores"]["completeness"] <= 1
    assert "replacement" in stdout and "wrote" in stdout and "<ul>" in page.read_text()
    if semiring == "entropy":
        assert block["entropy"] <= block["log_n_paths"] + 1e-6 and "path entropy" in stdout
        return
    check_paths(doc)
    assert "→" in stdout and "<table>" in page.read_text() and "→" in page.read_text()


def check_paths(doc):
    block = doc["semiring"]
    assert block["paths"] and all(p["node_ids"] for p in block["paths"])
    # every path starts at a token or an error node and ends at a logit of the document
    ids = {n["node_id"]: n for n in doc["nodes"]}
    for p in block["paths"]:
        assert ids[p["node_ids"][0]]["feature_type"] in ("embedding", "mlp reconstruction error")
        assert ids[p["node_ids"][-1]]["feature_type"] == "logit"


def test_samples_target_and_max_features(ckpt, capsys, tmp_path):
    model, saes = ckpt
    out = tmp_path / "g.json"
    argv = ["feature-paths", model, "--text", TEXT, "--sae", saes[0], "--sae", saes[1]]
    argv += ["--semiring", "sample:20", "--target", "the", "--max-features", "8", "--out", out]
    rc, stdout, err = _run(capsys, *argv)
    assert rc == 0, err
    doc = json.loads(out.read_text())
    block = doc["semiring"]
    assert sum(block["counts"]) == 20 and block["entropy"] <= block["log_n_paths"] + 1e-6
    assert sum(n["feature_type"] == "logit" for n in doc["nodes"]) == 1
    assert sum(n["feature_type"] == "cross layer transcoder" for n in doc["nodes"]) <= 8
    check_paths(doc)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--semiring", "top-k:0"], "positive count"),
        (["--semiring", "max-product"], "is not one of"),
        (["--text", " "], "needs --text"),
        ([], "needs at least one --sae"),
        (["--sae", "/no/such/dir"], "no such folder"),
        (["--max-features", "0"], "positive number"),
        (["--out", "/no/such/dir/g.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(ckpt, capsys, tmp_path, extra, message):
    model, saes = ckpt
    argv = ["feature-paths", model, "--text", TEXT, "--out", tmp_path / "g.json"]
    if "needs at least one --sae" not in message and "--sae" not in extra:
        argv += ["--sae", saes[0]]
    rc, _, err = _run(capsys, *argv, *extra)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g.json").exists()


def test_errors_after_loading(ckpt, capsys, tmp_path):
    model, saes = ckpt
    base = ["feature-paths", model, "--text", TEXT, "--out", tmp_path / "g.json"]
    rc, _, err = _run(capsys, *base, "--sae", saes[0], "--target", "cabinetry-xyz")
    assert rc == 2 and "single vocabulary item" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cfg.json").write_text("{}")
    (bad / "sae_weights.safetensors").write_bytes(b"")
    rc, _, err = _run(capsys, *base, "--sae", str(bad))
    assert (
        rc == 2
        and err.startswith("jaxpr-semiring: error: --sae")
        and len(err.strip().splitlines()) == 1
    )
