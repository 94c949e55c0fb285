"""benchmarks/bench_atomic.py runs end to end in --tiny mode (no timing assertions), in a
subprocess with XLA's CPU optimizations lowered like tests/test_benchmarks_smoke.py."""

import json
import os

from test_benchmarks_smoke import BENCH, _run


def test_bench_atomic_tiny(tmp_path):
    import transformers  # noqa: F401  (test extra)

    out_json = tmp_path / "atomic.json"
    stdout = _run(
        [
            os.path.join(BENCH, "bench_atomic.py"),
            "--tiny",
            "--semirings",
            "Log,MaxProduct",
            "--json",
            str(out_json),
        ]
    )
    assert "| batch | semiring | decomposed (ms) | atomic (ms) |" in stdout
    res = json.loads(out_json.read_text())
    assert [r["semiring"] for r in res["rows"]] == ["Log", "MaxProduct"]
    assert res["meta"]["parts"] == ["layernorm", "softmax", "gelu"]
    for r in res["rows"]:
        assert r["ratio"] > 0 and r["atomic"]["median_s"] > 0
