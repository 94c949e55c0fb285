"""Issue 23's goals ("answers in seconds"), before and after, in one run on one machine.

The measuring scripts of this folder (``bench_bert.py``, ``bench_depth.py``,
``bench_topk_compile.py``, ``bench_sampling.py``) run once per source tree, each step a fresh
process with ``PYTHONPATH`` set to that tree, so the same measuring code times two versions of
the package. ``--before REV`` checks a commit out into a temporary git worktree (default
``768d9bf``, the last commit before the issue's work; it runs on jax 0.10 only); the "after"
tree is this checkout. Then one table of the issue's ratios:

* compile ÷ ``jax.grad``'s compile for Real/Log/Entropy/MaxProduct on BERT-6L and 12L (hidden
  64, so compile, not arithmetic, dominates; process CPU seconds), and 12L ÷ 6L; "after" also
  with the opt-in ``scan_repeats`` walk, and each method's runtime per call ÷ ``jax.grad``'s;
* ``top_path`` ÷ one MaxProduct pass (compile, XLA peak memory, runtime) on BERT-6L-H512 at
  batch 1 and 8;
* ``TopK(32)`` ÷ ``TopK(1)`` compile on a random BERT-2L;
* ``sample_paths`` compile ÷ one Log pass's compile on MiniLM, and 1,000 paths' runtime.

The first command (``bench_first_run.py``) and data-set flows (``bench_dataset.py``) need the
command line of the after tree; their tables are in RESULTS.md. Raw JSON per step lands in
``--out`` (default ``benchmarks/before_after/``), the table in ``--out``/table.md.

    python benchmarks/bench_before_after.py                     # ~25 min on 2 idle cores
    python benchmarks/bench_before_after.py --steps topk,sampling --before /path/to/tree
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEMIRINGS = "Real,Log,Entropy,MaxProduct"
SCANNED = ",".join(f"{s},{s}[scan]" for s in SEMIRINGS.split(","))
STEPS = {  # name -> (script, arguments before / after)
    "depth": ("bench_depth.py", ["--bert-compile", "6,12", "--hidden", "64", "--calls", "5"]),
    "bert": (
        "bench_bert.py",
        ["--batch-sizes", "1,8", "--methods", "jax.grad,MaxProduct,top_path", "--repeats", "5"],
    ),
    "topk": ("bench_topk_compile.py", ["--k", "1,32"]),
    "sampling": ("bench_sampling.py", ["--samples", "1000"]),
}


def _tree(spec: str, keep: list) -> str:
    """A directory holding the package: ``spec`` itself, or a worktree of commit ``spec``."""
    if os.path.isdir(os.path.join(spec, "jaxpr_semiring")):
        return os.path.abspath(spec)
    d = tempfile.mkdtemp(prefix=f"before-{spec}-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", d, spec], check=True)
    keep.append(d)
    return d


def _run_step(step: str, tree: str, label: str, out: str) -> dict | None:
    script, args = STEPS[step]
    if step == "depth":
        args = args + ["--semirings", SCANNED if label == "after" else SEMIRINGS]
    path = os.path.join(out, f"{label}_{step}.json")
    env = dict(os.environ, PYTHONPATH=tree, TRANSFORMERS_VERBOSITY="error")
    check = "import jaxpr_semiring as j; print(j.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", check],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
    )
    if not where.stdout.startswith(tree):  # an installed copy would shadow the tree
        raise SystemExit(f"{label}: jaxpr_semiring imports from {where.stdout.strip()!r}")
    t0 = time.perf_counter()
    cmd = [sys.executable, os.path.join(HERE, script), *args, "--json", path]
    print(f"# {label} {step}: {' '.join(cmd[1:])}", flush=True)
    r = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir())
    print(f"# {label} {step}: exit {r.returncode} after {time.perf_counter() - t0:.0f} s")
    if r.returncode or not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _ratios(res: dict) -> dict:
    """The issue's ratios from one tree's step results (missing steps give no entries)."""
    out = {}
    depth = res.get("depth")
    if depth:
        rows = {(r["depth"], r["method"]): r for r in depth["rows"]}
        for (d, m), r in rows.items():
            if m != "jax.grad":
                out[f"compile {m} {d}L ÷ jax.grad (CPU s)"] = r["cpu_ratio"]
                if "call_ratio" in r:
                    out[f"runtime {m} {d}L ÷ jax.grad"] = r["call_ratio"]
            if d == 12 and (6, m) in rows:
                out[f"compile {m} 12L ÷ 6L (CPU s)"] = (
                    r["compile_cpu_s"] / rows[6, m]["compile_cpu_s"]
                )
    bert = res.get("bert")
    if bert:
        by = {(r["batch"], r["method"]): r for r in bert["rows"]}
        for b in sorted({r["batch"] for r in bert["rows"]}):
            tp, mp = by.get((b, "top_path")), by.get((b, "MaxProduct"))
            if tp and mp:
                out[f"top_path ÷ MaxProduct compile, batch {b}"] = tp["compile_s"] / mp["compile_s"]
                if tp.get("xla_memory_bytes") and mp.get("xla_memory_bytes"):
                    out[f"top_path ÷ MaxProduct XLA memory, batch {b}"] = (
                        tp["xla_memory_bytes"] / mp["xla_memory_bytes"]
                    )
                out[f"top_path ÷ MaxProduct runtime, batch {b}"] = tp["median_s"] / mp["median_s"]
    topk = res.get("topk")
    if topk:
        ks = {r["k"]: r for r in topk["rows"]}
        if 1 in ks and 32 in ks:
            total = {k: r["lower_s"] + r["compile_s"] for k, r in ks.items()}
            out["TopK k=32 ÷ k=1 trace + compile"] = total[32] / total[1]
            if "call_ratio_to_max_product" in ks[32]:
                out["TopK k=32 runtime ÷ MaxProduct"] = ks[32]["call_ratio_to_max_product"]
    s = res.get("sampling")
    if s:
        out["sample_paths compile ÷ Log compile (MiniLM)"] = s["compile_ratio_to_log"]
        out[f"sample_paths {s['samples']} paths, call s"] = s["call_s"]
    return out


GOALS = {  # the goal per row (a prefix match), for the table
    "compile Real": "≤ 1.5",
    "compile Log": "≤ 1.5",
    "compile Entropy": "≤ 1.5",
    "compile MaxProduct": "≤ 1.5",
    "top_path ÷ MaxProduct compile": "≤ 3",
    "top_path ÷ MaxProduct XLA memory": "≤ 1.5",
    "top_path ÷ MaxProduct runtime": "≤ 2",
    "TopK k=32 ÷ k=1": "≤ 2",
    "TopK k=32 runtime": "≤ 111 (k ln k)",
    "sample_paths compile": "≤ 2",
    "sample_paths 1000": "≤ 3 s",
}


def _goal(key: str) -> str:
    if key.startswith("compile jax.grad"):  # the yardstick itself
        return ""
    if "12L ÷ 6L" in key:
        return "≤ 1.2"
    return next((g for p, g in GOALS.items() if key.startswith(p)), "")


def table(before: dict, after: dict) -> str:
    b, a = _ratios(before), _ratios(after)
    lines = ["| measure | goal | before | after |", "|---|---|---:|---:|"]
    for key in list(dict.fromkeys([*b, *a])):
        cells = [f"{d[key]:.2f}" if key in d else "—" for d in (b, a)]
        lines.append(f"| {key} | {_goal(key)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="768d9bf", help="a commit, or a source tree's directory")
    ap.add_argument("--after", default=ROOT, help="a source tree's directory (this checkout)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    ap.add_argument("--out", default=os.path.join(HERE, "before_after"))
    ap.add_argument(
        "--table-only", action="store_true", help="rebuild the table from the JSON in --out"
    )
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    if a.table_only:
        results = {label: {} for label in ("before", "after")}
        for label in results:
            for step in a.steps.split(","):
                path = os.path.join(a.out, f"{label}_{step}.json")
                if os.path.exists(path):
                    with open(path) as fh:
                        results[label][step] = json.load(fh)
        print(table(results["before"], results["after"]))
        return
    worktrees: list = []
    try:
        trees = {"before": _tree(a.before, worktrees), "after": os.path.abspath(a.after)}
        results: dict = {"before": {}, "after": {}}
        for step in a.steps.split(","):  # before and after back to back, step by step
            for label, tree in trees.items():
                results[label][step] = _run_step(step, tree, label, a.out)
    finally:
        for d in worktrees:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", d], check=False)
    text = table(results["before"], results["after"])
    with open(os.path.join(a.out, "table.md"), "w") as fh:
        fh.write(f"before: {a.before}; after: {a.after}\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
