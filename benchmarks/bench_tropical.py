"""The MaxProduct (signed max-times) contraction per kernel, against a float32 HIGHEST matmul.

Times ``[B, M, C] (top_pos, top_neg) ⊗ [B, C, N]`` for every kernel available on the backend —
``xla`` (the chunked broadcast-reduce, ``kernels.xla``), ``auto`` (what ``kernel="auto"`` runs,
dispatch included), ``numba`` (CPU, behind ``pure_callback``), ``pallas`` (GPU, with a sweep over
its tile sizes) — and ``matmul``: ``lax.dot_general`` at ``Precision.HIGHEST`` on the same
shapes, the cost of the real-valued contraction. Every kernel's output is compared with the XLA
path's (exactly: products of float32 values and max/min are exact) before it is timed. Inputs
are random with 0̄ entries (−inf, +inf) and zero weights; never all zeros.

Shapes: one BERT-6L FFN layer, [M×2048]·[2048×512] and [M×512]·[512×2048], for
M = 2048, 256, 32 rows (64, 8, 1 sentences of ~30 tokens; the largest first). Results are
written to ``--json``
after every measurement (atomically), so a run stopped by ``--budget-s`` or a time limit keeps
what it measured.

    python benchmarks/bench_tropical.py --json tropical.json            # GPU: full sweep
    python benchmarks/bench_tropical.py --tiny --pallas-interpret       # CPU rehearsal, seconds
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpr_semiring import kernels

SHAPES = [(1, m, c, n) for c, n in ((2048, 512), (512, 2048)) for m in (2048, 256, 32)]
TINY_SHAPES = [(1, 30, 64, 48), (2, 33, 40, 70)]
# Pallas tiles (block_m, block_n, block_c): the design study saw bm ≥ 64 10–50× slower on an H100
SWEEP = [
    dict(block_m=m, block_n=n, block_c=c)
    for m, n, c in itertools.product((16, 32, 64), (32, 64, 128), (4, 8, 16))
]
QUICK_SWEEP = [
    dict(block_m=32, block_n=64, block_c=8),
    dict(block_m=16, block_n=64, block_c=8),
    dict(block_m=32, block_n=128, block_c=4),
    dict(block_m=16, block_n=32, block_c=16),
]


def make_inputs(shape, seed=0, dtype=np.float32):
    """(top_pos, top_neg) [B, M, C] with ~20 % 0̄ entries and w [B, C, N] with ~10 % zeros."""
    B, M, C, N = shape
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((B, M, C)), rng.standard_normal((B, M, C))
    p, n = np.maximum(a, b), np.minimum(a, b)
    dead = rng.random((B, M, C)) < 0.2
    p[dead], n[dead] = -np.inf, np.inf
    w = rng.standard_normal((B, C, N))
    w[rng.random((B, C, N)) < 0.1] = 0.0
    return tuple(jnp.asarray(x, dtype) for x in (p, n, w))


def matmul(p, n, w):
    """The real-valued contraction of the same shapes, full float32 (no TF32)."""
    return lax.dot_general(p, w, (((2,), (1,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)


def candidates(backend, pallas_interpret=False):
    """name -> function(p, n, w) for the kernels that run on ``backend``."""
    # matmul first (the baseline of every ratio), xla second (the reference of every result)
    out = {
        "matmul": matmul,
        "xla": kernels.xla.maxproduct,
        "auto": lambda p, n, w: kernels.dispatch.maxproduct(p, n, w, kernel="auto"),
    }
    if backend == "cpu" and kernels.cpu.available():
        out["numba"] = kernels.cpu.maxproduct
    if backend == "gpu" or pallas_interpret:
        out["pallas"] = None  # one entry per tile configuration: pallas_variant
    return out


def pallas_variant(tiles, interpret):
    def fn(p, n, w):
        return tuple(kernels.gpu.maxproduct(p, n, w, interpret=interpret, **tiles))

    return fn


def time_fn(fn, args, repeats, min_time):
    """(compile_s, median_s, min_s, n, result): jitted, warmed up, timed to completion."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    times, start = [], time.perf_counter()
    while len(times) < repeats or (
        time.perf_counter() - start < min_time and len(times) < 20 * repeats
    ):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times), min(times), len(times), out


def same(a, b):
    """Bitwise-equal results (nan never passes)."""
    a, b = (np.asarray(x) for x in a), (np.asarray(x) for x in b)
    return all(
        x.shape == y.shape and np.array_equal(x, y) and not np.isnan(x).any() for x, y in zip(a, b)
    )


def write_json(path, payload):
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run(args):
    backend = jax.default_backend()
    shapes = TINY_SHAPES if args.tiny else SHAPES
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    sweep = QUICK_SWEEP if args.sweep == "quick" else SWEEP if args.sweep == "full" else []
    if args.tiny:
        sweep = [dict(block_m=8, block_n=16, block_c=4)]
    interpret = backend != "gpu"
    names = candidates(backend, args.pallas_interpret)
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax=jax.__version__,
        backend=backend,
        device=jax.devices()[0].device_kind,
        platform=platform.platform(),
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        kernels=kernels.describe("auto"),
        pallas_interpret=interpret and "pallas" in names,
        complete=False,
    )
    rows = []
    deadline = time.perf_counter() + args.budget_s
    print(f"# backend {backend}, device {meta['device']}, jax {jax.__version__}", flush=True)
    for shape in shapes:
        B, M, C, N = shape
        args_ = make_inputs(shape, seed=sum(shape))
        ref = base = None
        todo = [(k, None) for k in names if k != "pallas"]
        todo += [("pallas", t) for t in sweep] if "pallas" in names else []
        for name, tiles in todo:
            if time.perf_counter() > deadline:
                print(f"# budget of {args.budget_s:.0f}s spent: stopping", flush=True)
                write_json(args.json, dict(meta=meta, rows=rows))
                return meta, rows
            fn = pallas_variant(tiles, interpret) if name == "pallas" else names[name]
            row = dict(kernel=name, tiles=tiles, B=B, M=M, C=C, N=N)
            try:
                compile_s, med, mn, n_, out = time_fn(fn, args_, args.repeats, args.min_time)
            except Exception as e:  # a tile configuration the compiler refuses: record, go on
                row.update(
                    error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                )
                rows.append(row)
                print(f"#   {shape} {name:7s} {tiles or ''} FAILED {row['error']}", flush=True)
                write_json(args.json, dict(meta=meta, rows=rows))
                continue
            row.update(
                compile_s=compile_s,
                median_s=med,
                min_s=mn,
                n=n_,
                candidates_per_s=B * M * C * N / med,
            )
            base = med if name == "matmul" else base
            ref = out if name == "xla" else ref
            if base:
                row["matmul_ratio"] = med / base
            if name != "matmul" and ref is not None:
                row["equal_to_xla"] = same(out, ref)
            rows.append(row)
            print(
                f"#   {B}x{M}x{C}x{N} {name:7s} {str(tiles or ''):46s} {1e3 * med:9.3f} ms "
                f"{row.get('matmul_ratio', float('nan')):7.2f}x matmul  equal to xla: "
                f"{row.get('equal_to_xla', '-')}",
                flush=True,
            )
            write_json(args.json, dict(meta=meta, rows=rows))
    meta["complete"] = True
    write_json(args.json, dict(meta=meta, rows=rows))
    return meta, rows


def summary(rows):
    """Per shape: the fastest configuration of each kernel, as a markdown table."""
    lines = [
        "| B×M×C×N | kernel | best tiles | median (ms) | × matmul | equal to XLA |",
        "|---|---|---|---:|---:|---|",
    ]
    shapes = list(dict.fromkeys((r["B"], r["M"], r["C"], r["N"]) for r in rows))
    for s in shapes:
        ok = [r for r in rows if (r["B"], r["M"], r["C"], r["N"]) == s and "median_s" in r]
        for k in dict.fromkeys(r["kernel"] for r in ok):
            best = min((r for r in ok if r["kernel"] == k), key=lambda r: r["median_s"])
            lines.append(
                f"| {'×'.join(map(str, s))} | {k} | {best['tiles'] or ''} | "
                f"{1e3 * best['median_s']:.3f} | {best.get('matmul_ratio', float('nan')):.2f} | "
                f"{best.get('equal_to_xla', '')} |"
            )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="write results here (after every measurement)")
    p.add_argument(
        "--tiny", action="store_true", help="two small shapes, one Pallas tile (CPU rehearsal)"
    )
    p.add_argument("--shapes", default=None, help="comma-separated BxMxCxN, e.g. 1x2048x2048x512")
    p.add_argument(
        "--sweep",
        choices=["none", "quick", "full"],
        default="full",
        help="Pallas tile configurations (GPU): none, 4, or all 27",
    )
    p.add_argument(
        "--pallas-interpret",
        action="store_true",
        help="off the GPU, also run the Pallas kernel in interpret mode (slow: tiny shapes)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.5, help="keep timing at least this long (s)")
    p.add_argument(
        "--budget-s", type=float, default=1e9, help="stop starting measurements after this"
    )
    args = p.parse_args(argv)
    meta, rows = run(args)
    print(summary(rows))
    bad = [r for r in rows if r.get("equal_to_xla") is False]
    if bad:
        print(
            f"bench_tropical: {len(bad)} kernel result(s) differ from the XLA path: "
            + ", ".join(
                f"{r['kernel']} {r['tiles'] or ''} {r['B']}x{r['M']}x{r['C']}x{r['N']}" for r in bad
            ),
            file=sys.stderr,
        )
        sys.exit(1)
    return meta, rows


if __name__ == "__main__":
    main()
