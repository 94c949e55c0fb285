"""Smoke tests: the Fig. 5 and Fig. 6 examples run end to end in --quick mode and write PNGs.

Each takes well under 90 s on 2 idle CPU cores (most of it is compilation).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, *extra):
    out = tmp_path / (script.replace(".py", ".png"))
    js = tmp_path / (script.replace(".py", ".json"))
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        MPLBACKEND="Agg",
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", script),
            "--quick",
            "--out",
            str(out),
            "--json",
            str(js),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.exists() and out.stat().st_size > 1000
    assert js.exists()
    return proc.stdout, js


def test_fig5_quick(tmp_path):
    import json

    stdout, js = _run("fig5_entropy_vs_mdl.py", tmp_path)
    assert "wrote" in stdout
    rows = json.loads(js.read_text())["rows"]
    assert {r["task"] for r in rows} == {"Contains1", "BinCountOnes(C=3)"}
    for r in rows:
        assert r["mdl_bits"] > 0 and r["uniform_bits"] > 0
        assert r["entropy"] == pytest.approx(r["entropy"])  # finite, not NaN
        assert r["entropy"] > 0


def test_fig6_quick(tmp_path):
    import json
    import math

    stdout, js = _run("fig6_entropy_sanity.py", tmp_path)
    res = json.loads(js.read_text())
    assert set(res) >= {"a", "b", "c"}
    assert all(math.isfinite(v) for v in res["a"]["whole"] + res["a"]["mean_token"])
    assert all(math.isfinite(v) for v in res["c"]["entropy"])
    assert len(res["b"]) == 2
