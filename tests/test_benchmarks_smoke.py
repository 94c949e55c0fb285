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


def test_before_after_table_reads_each_step():
    """bench_before_after's table: the issue's ratios from each step's JSON, before and after."""
    sys.path.insert(0, BENCH)
    import bench_before_after as ba

    depth = dict(
        rows=[
            dict(depth=d, method=m, compile_cpu_s=c, cpu_ratio=c / g, call_ratio=1.0)
            for d, g, row in ((6, 2.0, {"Log": 6.0}), (12, 2.5, {"Log": 7.5}))
            for m, c in {"jax.grad": g, **row}.items()
        ]
    )
    bert = dict(
        rows=[
            dict(batch=1, method="MaxProduct", compile_s=2.0, median_s=0.1, xla_memory_bytes=100),
            dict(batch=1, method="top_path", compile_s=5.0, median_s=0.3, xla_memory_bytes=250),
        ]
    )
    topk = dict(
        rows=[
            dict(k=1, lower_s=1.0, compile_s=1.0, call_ratio_to_max_product=1.5),
            dict(k=32, lower_s=1.0, compile_s=3.0, call_ratio_to_max_product=9.0),
        ]
    )
    after = dict(depth=depth, bert=bert, topk=topk, sampling=None)
    r = ba._ratios(after)
    assert r["compile Log 6L ÷ jax.grad (CPU s)"] == 3.0
    assert r["compile Log 12L ÷ 6L (CPU s)"] == 1.25
    assert r["top_path ÷ MaxProduct XLA memory, batch 1"] == 2.5
    assert abs(r["top_path ÷ MaxProduct runtime, batch 1"] - 3.0) < 1e-12
    assert r["TopK k=32 ÷ k=1 trace + compile"] == 2.0
    text = ba.table({"depth": None}, after)
    assert "| TopK k=32 runtime ÷ MaxProduct | ≤ 111 (k ln k) | — | 9.00 |" in text
    assert "| compile Log 12L ÷ 6L (CPU s) | ≤ 1.2 | — | 1.25 |" in text
