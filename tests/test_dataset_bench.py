"""benchmarks/bench_dataset.py runs end to end in --tiny mode (no timing assertions): the
in-process path (flows, one device) and the forced-device subprocess path (jax.grad, 4 host
devices), with XLA's CPU optimizations lowered (compile time dominates tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_dataset_tiny(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        " --xla_llvm_disable_expensive_passes=true"
    ).strip()
    out = tmp_path / "r.json"
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "bench_dataset.py"),
            "--tiny",
            "--runs",
            "flows,grad-4dev",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| run | devices | batch/device |" in p.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["run"], r["devices"], r["inputs"]) for r in rows] == [
        ("flows", 1, 12),
        ("grad-4dev", 4, 12),
    ]
    assert all(r["compile_s"] > 0 and r["inputs_per_s"] > 0 for r in rows)
