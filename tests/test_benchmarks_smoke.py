"""The benchmarks run end to end in --tiny mode (no timing assertions).

Each runs in a subprocess with XLA's CPU backend optimizations lowered (compile time dominates
tiny models); bench_bert is restricted to a subset of methods at one batch size to stay well
under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _run(args, timeout=300):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        " --xla_llvm_disable_expensive_passes=true"
    ).strip()
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    proc = subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_bench_bert_tiny(tmp_path):
    import transformers  # noqa: F401  (test extra)

    out_json = tmp_path / "bert.json"
    stdout = _run(
        [
            os.path.join(BENCH, "bench_bert.py"),
            "--tiny",
            "--batch-sizes",
            "2",
            "--methods",
            "jax.grad,Real,MaxProduct,Entropy",
            "--json",
            str(out_json),
        ]
    )
    assert "| batch | method |" in stdout
    res = json.loads(out_json.read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["jax.grad", "Real", "MaxProduct", "Entropy"]
    for r in res["rows"]:
        assert r["median_s"] > 0 and r["compile_s"] > 0 and r["batch"] == 2
        assert r["time_ratio"] > 0


def test_bench_depth_tiny(tmp_path):
    import matplotlib  # noqa: F401  (test extra)

    png, js = tmp_path / "depth.png", tmp_path / "depth.json"
    _run([os.path.join(BENCH, "bench_depth.py"), "--tiny", "--out", str(png), "--json", str(js)])
    assert png.stat().st_size > 1000
    res = json.loads(js.read_text())
    assert [r["depth"] for r in res["rows"]] == [2, 4, 8]
    assert res["brute_force"] and res["brute_force"][0]["paths"] > 0
