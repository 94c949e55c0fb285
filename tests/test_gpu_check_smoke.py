"""benchmarks/gpu_check.sh rehearsed on the CPU (GPU_CHECK_DRY_RUN=1): every stage runs at tiny
sizes and writes the files the device tool brings back; failures are loud and named."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
FILES = [
    "env_gpu.txt",
    "gpu_check.log",
    "pytest_gpu.log",
    "pytest_gpu.xml",
    "results_gpu.json",
    "results_gpu.md",
    "tropical_gpu.json",
]


# The stage budgets are the GPU's; a loaded CPU rehearsal checks the steps, not the budgets.
GENEROUS = {
    "GPU_CHECK_TESTS_S": "1200",
    "GPU_CHECK_BENCH_S": "1200",
    "GPU_CHECK_TROPICAL_S": "1200",
}


def _run(args, out, timeout=3000, script=SCRIPT, **env):
    e = dict(
        os.environ,
        OUT=str(out),
        PYTHON=sys.executable,
        **{"GPU_CHECK_DRY_RUN": "1", **GENEROUS, **env},
    )
    e.pop("JAXPR_SEMIRING_GPU_TEST_INTERPRET", None)
    return subprocess.run(
        ["bash", script] + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
    )


def test_dry_run_all_stages_write_the_results(tmp_path):
    out = tmp_path / "out"
    proc = _run(
        ["all"],
        out,
        GPU_CHECK_BATCHES="1",
        GPU_CHECK_TROPICAL_SHAPES="1x30x64x48",
        GPU_CHECK_TESTS="tests/test_gpu.py::test_pallas_equals_xla",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # what the device tool returns: at most 8 plain files, names of letters, digits, . _ -
    assert sorted(os.listdir(out)) == FILES
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in FILES)
    log = (out / "gpu_check.log").read_text()
    assert "all stages ok" in log and "tests: ok" in log and "bench batch 1: ok" in log

    bert = json.loads((out / "results_gpu.json").read_text())
    assert [r["method"] for r in bert["rows"]] == ["jax.grad", "Real"]
    assert all(r["batch"] == 1 and r["median_s"] > 0 for r in bert["rows"])
    assert bert["meta"]["dry_run"] is True and bert["meta"]["batches"] == [1]
    assert "transformers" in bert["meta"]["versions"]
    assert "| batch | method |" in (out / "results_gpu.md").read_text()

    trop = json.loads((out / "tropical_gpu.json").read_text())
    assert trop["meta"]["complete"] is True
    kernels = {r["kernel"] for r in trop["rows"]}
    assert {"matmul", "xla", "pallas"} <= kernels  # pallas in interpret mode on CPU
    assert all(r["equal_to_xla"] for r in trop["rows"] if r["kernel"] != "matmul")

    suite = ET.parse(out / "pytest_gpu.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    assert (
        int(suite.get("tests")) > 0
        and int(suite.get("failures")) == 0
        and int(suite.get("errors")) == 0
    )
    assert int(suite.get("skipped")) < int(suite.get("tests"))  # the interpret-mode tests ran


def test_failures_are_loud(tmp_path):
    proc = _run(["nonsense"], tmp_path / "a")
    assert proc.returncode == 2 and "unknown stage 'nonsense'" in proc.stderr

    proc = _run(["tests"], tmp_path / "b", GPU_CHECK_TESTS="tests/test_no_such_file.py")
    assert proc.returncode == 1
    said = proc.stdout + proc.stderr  # after the start, stderr goes to the log and stdout too
    assert "tests: FAILED, exit code 4" in said and "FAILED or incomplete stages" in said


def test_missing_wheels_stop_the_gpu_setup(tmp_path):
    """Outside a dry run the first thing checked is the carried wheels (here: none)."""
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "gpu_check.sh"
    shutil.copy(SCRIPT, script)
    proc = _run(["tests"], tmp_path / "out", script=str(script), GPU_CHECK_DRY_RUN="0")
    assert proc.returncode == 1
    assert (
        "no wheels in .whl/: run 'bash benchmarks/fetch_gpu_wheels.sh'" in proc.stdout + proc.stderr
    )
