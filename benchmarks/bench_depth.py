"""Time vs depth: semiring backprop is linear in depth, path enumeration is exponential; and
compile time vs depth on BERT.

Model: a residual MLP ``x ← x + tanh(x W_l + b_l)`` of depth L and width W, scalar output
``sum(x)``, derivative w.r.t. the input vector. For each semiring (and ``jax.grad``) the jitted
steady-state median time is measured for L in ``--depths``; the brute-force oracle
(``tests/brute_force.py``: explicit enumeration of every input→output path of the gradient
graph) is timed on a narrow model (``--brute-width``) for the small depths until it exceeds
``--brute-budget`` seconds or its path limit. Writes a PNG (``--out``) and optionally JSON.

With ``--bert-compile 2,6,12,24`` it instead measures compile time (trace + lower + XLA
compile of the jitted batch-1 function, wall and process CPU seconds) of ``jax.grad`` and each
semiring on BERT encoders of those depths (the ``bench_bert.py`` model and target, hidden 512
or ``--hidden``), writing ``--json`` after every measurement (atomically; ``--resume`` skips
what it holds). A semiring named ``NAME[scan]`` is traced under
``interpreter.scan_repeats()`` (the repeated layers walked as one ``lax.scan``); ``--calls N``
also times N calls of each compiled function.

    python benchmarks/bench_depth.py --out depth.png
    python benchmarks/bench_depth.py --tiny --out /tmp/depth.png     # CI smoke test
    python benchmarks/bench_depth.py --bert-compile 2,6,12,24 --json depth_compile.json
    python benchmarks/bench_depth.py --bert-compile 6,12 --hidden 64 --calls 5 \
        --semirings Real,Real[scan],Log,Log[scan],Entropy,Entropy[scan],MaxProduct,MaxProduct[scan]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpr_semiring as js
from jaxpr_semiring import interpreter

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")

SEMIRINGS = {
    "Real": js.Real,
    "MaxProduct": js.MaxProduct,
    "MaxAbs": js.MaxAbs,
    "Log": js.Log,
    "Entropy": js.Entropy,
    "Counting": js.Counting,
}


def make_mlp(depth, width, seed=0):
    rng = np.random.default_rng(seed)
    Ws = jnp.asarray(rng.standard_normal((depth, width, width)) / np.sqrt(width), jnp.float32)
    bs = jnp.asarray(0.1 * rng.standard_normal((depth, width)), jnp.float32)
    x = jnp.asarray(rng.standard_normal(width), jnp.float32)

    def f(x, Ws, bs):
        for l in range(depth):  # unrolled: depth equations in the graph
            x = x + jnp.tanh(x @ Ws[l] + bs[l])
        return jnp.sum(x)

    return f, x, Ws, bs


def time_fn(fn, args, repeats):
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def brute_force_times(depths, width, budget, max_paths, n_draws=4):
    """Enumerate every path with the test oracle; time graph construction (one local Jacobian
    per equation: linear in depth) and the path enumeration (DFS: exponential) separately."""
    sys.path.insert(0, TESTS)
    import brute_force as bf

    bf.N_DRAWS = n_draws  # structure probes per equation; the weights come from the primal point
    out = []
    for d in depths:
        f, x, Ws, bs = make_mlp(d, width, seed=1)
        t0 = time.perf_counter()
        graph, in_ids, out_id, _ = bf.build_graph(f, x, Ws, bs)
        t1 = time.perf_counter()
        count = bf._count_paths_to(graph, out_id)
        n_paths = int(sum(count.get(int(s), 0) for s in np.asarray(in_ids[0]).reshape(-1)))
        if n_paths > max_paths:
            print(f"# brute force depth {d}: {n_paths} paths > --max-paths, stopping")
            break
        paths = [
            bf._paths_from(graph, int(s), out_id, count) for s in np.asarray(in_ids[0]).reshape(-1)
        ]
        t2 = time.perf_counter()
        assert sum(len(p) for p in paths) == n_paths
        # the semiring answer on the same narrow graph, for comparison
        ts = time_fn(js.semiring_grad(f, js.MaxProduct()), (x, Ws, bs), 3)
        out.append(
            dict(
                depth=d, build_seconds=t1 - t0, seconds=t2 - t1, paths=n_paths, semiring_seconds=ts
            )
        )
        print(
            f"# brute force depth {d:3d} width {width}: {n_paths:9d} paths, enumeration "
            f"{t2 - t1:8.3f} s (graph construction {t1 - t0:.1f} s); MaxProduct "
            f"semiring_grad {1e3 * ts:.2f} ms",
            flush=True,
        )
        if t2 - t1 > budget:
            break
    return out


def run(args):
    depths = [int(d) for d in args.depths.split(",")]
    names = args.semirings.split(",")
    rows = []
    for d in depths:
        f, x, Ws, bs = make_mlp(d, args.width)
        row = dict(depth=d, times={})
        row["times"]["jax.grad"] = time_fn(jax.grad(f), (x, Ws, bs), args.repeats)
        for name in names:
            row["times"][name] = time_fn(
                js.semiring_grad(f, SEMIRINGS[name]()), (x, Ws, bs), args.repeats
            )
        rows.append(row)
        print(
            f"# depth {d:3d}: "
            + "  ".join(f"{k} {1e3 * v:.2f} ms" for k, v in row["times"].items()),
            flush=True,
        )
    brute = brute_force_times(
        [int(d) for d in args.brute_depths.split(",")],
        args.brute_width,
        args.brute_budget,
        args.max_paths,
    )
    return dict(
        width=args.width,
        rows=rows,
        brute_force=brute,
        brute_width=args.brute_width,
        jax=jax.__version__,
        backend=jax.default_backend(),
    )


def _save(res, path):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(res, fh, indent=2)
        os.replace(tmp, path)


def _scan_repeats(on: bool):
    """``interpreter.scan_repeats(on)``; a source tree from before it existed walks unrolled."""
    if hasattr(interpreter, "scan_repeats"):
        return interpreter.scan_repeats(on)
    if on:
        raise SystemExit("bench_depth: this jaxpr_semiring has no interpreter.scan_repeats")
    return contextlib.nullcontext()


def bert_compile_times(args):
    """Compile seconds of jax.grad and each semiring per BERT depth (see the module docstring)."""
    sys.path.insert(0, HERE)
    import bench_bert as bb

    names = ["jax.grad"] + args.semirings.split(",")
    res = dict(
        kind="bert-compile",
        rows=[],
        jax=jax.__version__,
        backend=jax.default_backend(),
        kernels=js.kernels.describe(),
    )
    if args.resume and args.json and os.path.exists(args.json):
        with open(args.json) as fh:
            res = json.load(fh)
    done = {(r["depth"], r["method"]) for r in res["rows"]}
    for depth in [int(d) for d in args.bert_compile.split(",")]:
        cfg = dict(bb.TINY if args.tiny else bb.BERT_6L, num_hidden_layers=depth)
        if args.hidden:
            h = args.hidden
            cfg.update(hidden_size=h, intermediate_size=4 * h, num_attention_heads=max(1, h // 64))
        model = bb.build_model(cfg)
        table = np.asarray(model.params["bert"]["embeddings"]["word_embeddings"]["embedding"])
        f = bb.make_target(model, 8 if args.tiny else 30)
        batch = bb.make_batch(
            np.random.default_rng(0),
            1,
            8 if args.tiny else 30,
            cfg["hidden_size"],
            cfg["vocab_size"],
            table,
        )
        fargs = (batch[0], model.params) + batch[1:]
        methods = bb.make_methods(f, [n for n in names if n in bb.METHODS])
        for name in names:
            if (depth, name) in done:
                continue
            base_name, scan = name.removesuffix("[scan]"), name.endswith("[scan]")
            fn = (
                methods[base_name]
                if base_name in methods
                else js.semiring_grad(f, SEMIRINGS[base_name]())
            )
            fn = jax.vmap(fn, in_axes=(0, None, 0, 0, 0, 0))
            c0, w0 = time.process_time(), time.perf_counter()
            with _scan_repeats(scan):
                compiled = jax.jit(fn).lower(*fargs).compile()
            row = dict(
                depth=depth,
                method=name,
                compile_s=time.perf_counter() - w0,
                compile_cpu_s=time.process_time() - c0,
            )
            if args.calls:
                jax.block_until_ready(compiled(*fargs))
                ts = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    jax.block_until_ready(compiled(*fargs))
                    ts.append(time.perf_counter() - t0)
                row["call_s"] = statistics.median(ts)
            base = next(
                (r for r in res["rows"] if r["depth"] == depth and r["method"] == "jax.grad"), row
            )
            row.update(
                ratio=row["compile_s"] / base["compile_s"],
                cpu_ratio=row["compile_cpu_s"] / base["compile_cpu_s"],
            )
            if "call_s" in row:
                row["call_ratio"] = row["call_s"] / base["call_s"]
            res["rows"].append(row)
            _save(res, args.json)
            print(
                f"# depth {depth:3d} {name:10s} compile {row['compile_s']:7.2f} s "
                f"({row['ratio']:5.2f}x jax.grad), cpu {row['compile_cpu_s']:7.2f} s "
                f"({row['cpu_ratio']:5.2f}x)"
                + (
                    f", call {1e3 * row['call_s']:.2f} ms ({row['call_ratio']:.2f}x)"
                    if args.calls
                    else ""
                ),
                flush=True,
            )
            jax.clear_caches()
        del model, methods
    return res


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    depths = [r["depth"] for r in res["rows"]]
    for name in res["rows"][0]["times"]:
        ax1.plot(depths, [1e3 * r["times"][name] for r in res["rows"]], "o-", label=name)
    ax1.set_xlabel("depth (residual blocks)")
    ax1.set_ylabel("median time (ms)")
    ax1.set_title(f"semiring backprop, width {res['width']} (jit, {res['backend']})")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    bf = res["brute_force"]
    if bf:
        ax2.semilogy(
            [b["depth"] for b in bf],
            [b["seconds"] for b in bf],
            "s-",
            label="brute-force path enumeration (DFS)",
        )
        ax2.semilogy(
            [b["depth"] for b in bf],
            [b["semiring_seconds"] for b in bf],
            "o-",
            label="semiring_grad (MaxProduct)",
        )
        ax2.legend(fontsize=8)
    ax2.set_xlabel("depth (residual blocks)")
    ax2.set_ylabel("seconds (log scale)")
    ax2.set_title(f"vs. enumerating every path (width {res['brute_width']})")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="2,4,8,16,24,32,48")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--semirings", default="Real,MaxProduct,MaxAbs,Log,Entropy")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--brute-depths", default="2,4,6,8,10,12")
    p.add_argument("--brute-width", type=int, default=2)
    p.add_argument(
        "--brute-budget",
        type=float,
        default=20.0,
        help="stop enumerating at the first depth that takes longer (s)",
    )
    p.add_argument("--max-paths", type=int, default=2_000_000)
    p.add_argument("--tiny", action="store_true", help="few small depths, narrow, for CI")
    p.add_argument("--out", default="bench_depth.png", help="PNG path")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--bert-compile",
        default=None,
        metavar="DEPTHS",
        help="measure BERT compile time at these depths instead (e.g. 2,6,12,24)",
    )
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json")
    p.add_argument(
        "--hidden", type=int, default=0, help="BERT hidden size for --bert-compile (0: 512)"
    )
    p.add_argument(
        "--calls", type=int, default=0, help="also time this many calls (median) per method"
    )
    args = p.parse_args(argv)
    if args.bert_compile:
        if args.semirings == p.get_default("semirings"):
            args.semirings = "Real,MaxProduct,Log,Entropy"
        return bert_compile_times(args)
    if args.tiny:
        args.depths, args.width, args.repeats = "2,4,8", 8, 2
        args.semirings = "Real,MaxProduct,Entropy"
        args.brute_depths, args.brute_width, args.brute_budget = "1,2", 2, 5.0
    res = run(args)
    plot(res, args.out)
    print(f"# wrote {args.out}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
