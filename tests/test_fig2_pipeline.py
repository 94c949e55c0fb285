"""Smoke test of examples/fig2_first_token_repeated.py (paper Fig. 2) in --quick mode."""

import importlib.util
import os
import re

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "fig2_first_token_repeated.py")


def _load():
    spec = importlib.util.spec_from_file_location("fig2_first_token_repeated", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fig2_quick_pipeline(tmp_path, capsys):
    mod = _load()
    out = tmp_path / "fig2.png"
    res = mod.main(["--quick", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out

    assert out.exists() and out.stat().st_size > 0
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

    from jaxpr_semiring.paper.synthetic import TOKEN_GROUP_NAMES

    # table header names the four branches; one row per group with four numbers
    header = [l for l in printed.splitlines() if l.startswith("group")]
    assert len(header) == 1
    for label in ("skip connection", "queries", "keys", "values"):
        assert label in header[0]
    for name in TOKEN_GROUP_NAMES:
        rows = [l for l in printed.splitlines() if l.startswith(name)]
        assert len(rows) == 1, name
        nums = re.findall(r"-?\d+\.\d+|nan", rows[0][len(name) :])
        assert len(nums) == 4, rows[0]
    assert res["means"].shape == (3, 4)
    # first token and other tokens always occur; values are finite and non-negative
    assert np.all(np.isfinite(res["means"][[0, 2]]))
    assert np.all(res["means"][[0, 2]] >= 0)
    assert res["counts"][0] > 0 and res["counts"][2] > 0
    assert len(res["verdicts"]) == 3
    assert printed.count("HOLDS") + printed.count("does NOT hold") == 3
