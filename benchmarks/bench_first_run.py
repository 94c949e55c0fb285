"""What a user waits for: the README's first command (``jaxpr-semiring flows minilm …``) run as
a fresh process, phase by phase (its ``--profile`` lines: import, load, tokenize, target,
trace, lower, compile, run, write), in these settings:

* ``cold``: empty compilation cache and empty numba cache (the first run after installing);
* ``warm``: the same caches, filled by the cold run (every later run);
* ``no-cache``: ``--no-cache`` with numba's cache warm (what every run cost before the CLI
  enabled JAX's persistent cache);
* ``no-numba cold`` / ``no-numba warm``: numba hidden from the process (the install without
  the ``cpu`` extra: the XLA max-product contraction runs).

Each setting runs ``--repeat`` times (``cold`` and ``no-numba cold`` once each: a cold run
empties its caches first); medians of wall-clock and CPU seconds (user + system of the child)
are reported, since the machine may be shared. Caches live in a temporary directory
(``XDG_CACHE_HOME``, ``NUMBA_CACHE_DIR``): the user's own are never touched. Where torch is
installed, transformers imports it (3 s of CPU); the README's install has no torch, so the runs
set ``USE_TORCH=0`` unless ``--with-torch``.

    python benchmarks/bench_first_run.py --repeat 3 --no-numba --json benchmarks/first_run_cpu.json
    python benchmarks/bench_first_run.py --model DIR --text "…" --target "logit-diff:is,are"
    python benchmarks/bench_first_run.py --settings cold,warm --source /tmp/older-worktree
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TEXT = "The keys to the cabinet are on the table."
TARGET = 'similarity:"A key is in the drawer."'
# The command line, started as a fresh interpreter; "import numba" fails in the no-numba runs.
LAUNCH = "import sys\n{hide}from jaxpr_semiring.cli import main\nraise SystemExit(main())"
HIDE_NUMBA = "sys.modules['numba'] = None\n"
PHASE = re.compile(r"^profile: (\S+)\s+([0-9.]+) s \(CPU\s+([0-9.]+) s\)$")
CACHE = re.compile(r"^profile: compilation cache .*\((\d+) hits, (\d+) misses\)$")


def run_once(cmd_args, env, numba=True, cwd=None):
    """One fresh process: ``{"wall": s, "cpu": s, phase: s, …, "hits": n, "misses": n}``."""
    code = LAUNCH.format(hide="" if numba else HIDE_NUMBA)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *cmd_args, "--profile"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the command failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    row = {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    }
    for line in proc.stderr.splitlines():
        if m := PHASE.match(line):
            row[m.group(1)] = float(m.group(2))
            row[m.group(1) + " CPU"] = float(m.group(3))
        elif m := CACHE.match(line):
            row["hits"], row["misses"] = int(m.group(1)), int(m.group(2))
    return row


def median_row(rows):
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: statistics.median(r[k] for r in rows) for k in keys} | {"n": len(rows)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--target", default=TARGET)
    ap.add_argument(
        "--no-files", action="store_true", help="leave out --out flows.png --html flows.html"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per warm setting (median)")
    ap.add_argument("--no-numba", action="store_true", help="also run without numba")
    ap.add_argument(
        "--with-torch",
        action="store_true",
        help="let transformers import torch if installed (the README install has no torch)",
    )
    ap.add_argument(
        "--settings",
        default="cold,warm,no-cache",
        help="subset of cold, warm, no-cache (and the no-numba ones with --no-numba)",
    )
    ap.add_argument(
        "--source",
        help="run the package from this source tree (PYTHONPATH), e.g. a worktree of an older "
        "commit, to compare versions on one machine",
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    cmd = ["flows", args.model, "--text", args.text]
    if args.target:
        cmd += ["--target", args.target]
    root = tempfile.mkdtemp(prefix="bench_first_run_")
    if not args.no_files:  # the README's first command writes both
        cmd += [
            "--out",
            os.path.join(root, "flows.png"),
            "--html",
            os.path.join(root, "flows.html"),
        ]
    try:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if not args.with_torch:  # as in the README's install (transformers imports torch: +3 s)
            env["USE_TORCH"] = "0"
        for k in ("JAX_COMPILATION_CACHE_DIR", "JAXPR_SEMIRING_NO_CACHE"):
            env.pop(k, None)
        if args.source:
            env["PYTHONPATH"] = os.path.abspath(args.source)
        plan = [("cold", True, 1, True), ("warm", True, args.repeat, False)]
        plan.append(("no-cache", True, max(1, args.repeat - 1), False))
        wanted = set(args.settings.split(","))
        if args.no_numba:
            plan += [
                ("no-numba cold", False, 1, True),
                ("no-numba warm", False, args.repeat, False),
            ]
            wanted |= {"no-numba cold", "no-numba warm"}
        plan = [p for p in plan if p[0] in wanted]
        results = {}
        for name, numba, n, cold in plan:
            tag = "nonumba" if not numba else "numba"
            env_s = dict(
                env,
                XDG_CACHE_HOME=os.path.join(root, tag, "xdg"),
                NUMBA_CACHE_DIR=os.path.join(root, tag, "numba"),
            )
            if cold:
                shutil.rmtree(os.path.join(root, tag), ignore_errors=True)
            extra = ["--no-cache"] if name == "no-cache" else []
            rows = [run_once(cmd + extra, env_s, numba, cwd=root) for _ in range(n)]
            results[name] = median_row(rows)
            print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[name].items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = ["import", "load", "tokenize", "target", "trace", "lower", "compile", "run", "write"]
    print("\nper phase: CPU seconds of the process (all threads); other: outside the phases")
    head = " | ".join([*phases, "other"])
    print(f"\n| setting | wall (s) | CPU (s) | {head} | cache hits/misses |")
    print("|---|" + "---:|" * (len(phases) + 4))
    for name, r in results.items():
        other = r["cpu"] - r.get("total CPU", 0)
        cells = " | ".join([*(f"{r.get(p + ' CPU', 0):.2f}" for p in phases), f"{other:.2f}"])
        hm = f"{int(r['hits'])}/{int(r['misses'])}" if "hits" in r else "off"
        print(f"| {name} (n={r['n']}) | {r['wall']:.1f} | {r['cpu']:.1f} | {cells} | {hm} |")
    if args.json:
        from jaxpr_semiring import outputs

        doc = {
            "command": cmd,
            "source": args.source or "installed",
            "machine_cpus": os.cpu_count(),
            "results": results,
        }
        outputs.write_output(args.json, json.dumps(doc, indent=1) + "\n", option="--json")


if __name__ == "__main__":
    main()
