"""The paper authors' MLP (784-512-512-10, ReLU, float64): four semirings vs one ``jax.grad``.

Du et al. measure their semirings on an MNIST-sized MLP; the four statistics they report (the
gradient ``Real``, ``MaxProduct``, ``Log`` and ``Entropy``) are timed here against one
``jax.grad`` of the same function, in the same process, batch 1 and batch 32 (``jax.vmap``).
The scalar output is the logit of each example's label; derivatives w.r.t. the input image.
Random weights (timings do not depend on them), float64 (``jax_enable_x64``), everything
``jax.jit``-ed. Ways of asking for the four semirings:

* ``separate``: four jitted functions, one per semiring, called one after the other;
* ``one jit``: one jitted function returning the four ``semiring_grad``\\ s (four traces and
  walks, XLA deduplicates what it can);
* ``product``: ``semiring_grad(f, (Real(), MaxProduct(), Log(), Entropy()))``: one trace, one
  forward pass, one walk, one program.

Reported: median time per call (batch), ratio to ``jax.grad``, compile time.

    python benchmarks/bench_mlp.py --json mlp.json
    python benchmarks/bench_mlp.py --tiny            # CI smoke test: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxpr_semiring as js  # noqa: E402

SIZES = (784, 512, 512, 10)
TINY = (16, 8, 8, 3)
SEMIRINGS = (js.Real(), js.MaxProduct(), js.Log(), js.Entropy())
WAYS = ("separate", "one jit", "product")


def make_mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = [
        (
            jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float64),
            jnp.asarray(0.01 * rng.standard_normal(b), jnp.float64),
        )
        for a, b in zip(sizes[:-1], sizes[1:])
    ]

    def logit(x, params, label):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return h[label]

    return logit, params


def timed(fn, args, repeats, min_time):
    """(compile seconds, median seconds per call, calls) of ``fn`` jitted; ``fn`` may be a
    list of functions called in turn (one "call" runs them all)."""
    fns = fn if isinstance(fn, list) else [fn]
    t0 = time.perf_counter()
    compiled = [jax.jit(f).lower(*args).compile() for f in fns]
    compile_s = time.perf_counter() - t0
    run = lambda: [jax.block_until_ready(c(*args)) for c in compiled]
    run()
    times, start = [], time.perf_counter()
    while len(times) < repeats or (
        time.perf_counter() - start < min_time and len(times) < 100 * repeats
    ):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return compile_s, statistics.median(times), len(times)


def run(args):
    sizes = TINY if args.tiny else SIZES
    logit, params = make_mlp(sizes)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(1)
    rows = []
    per = lambda g: jax.vmap(g, in_axes=(0, None, 0))
    for b in batches:
        x = jnp.asarray(rng.standard_normal((b, sizes[0])), jnp.float64)
        label = jnp.asarray(rng.integers(0, sizes[-1], size=b), jnp.int32)
        fargs = (x, params, label)
        methods = {
            "jax.grad": per(jax.grad(logit)),
            "separate": [per(js.semiring_grad(logit, S)) for S in SEMIRINGS],
            "one jit": per(lambda *a: tuple(js.semiring_grad(logit, S)(*a) for S in SEMIRINGS)),
            "product": per(js.semiring_grad(logit, SEMIRINGS)),
        }
        base = None
        for name in ("jax.grad",) + tuple(args.ways.split(",")):
            c, t, n = timed(methods[name], fargs, args.repeats, args.min_time)
            base = base or (c, t)
            row = dict(
                batch=b,
                method=name,
                compile_s=c,
                median_s=t,
                n=n,
                time_ratio=t / base[1],
                compile_ratio=c / base[0],
            )
            rows.append(row)
            print(
                f"#   batch {b:3d} {name:9s} median {1e3 * t:8.3f} ms ({row['time_ratio']:6.2f}x "
                f"jax.grad)  compile {c:6.2f} s ({row['compile_ratio']:5.2f}x)",
                flush=True,
            )
    meta = dict(
        jax=jax.__version__,
        backend=jax.default_backend(),
        sizes=sizes,
        kernels=js.kernels.describe(),
        cpu_count=os.cpu_count(),
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
    )
    return meta, rows


def markdown(meta, rows):
    lines = [
        f"MLP {'-'.join(map(str, meta['sizes']))} float64, {meta['backend']}, jax {meta['jax']}",
        "",
        "| batch | method | median (ms) | × jax.grad | compile (s) | compile × |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        label = r["method"] if r["method"] == "jax.grad" else f"4 semirings, {r['method']}"
        lines.append(
            f"| {r['batch']} | {label} | {1e3 * r['median_s']:.3f} | {r['time_ratio']:.2f} "
            f"| {r['compile_s']:.2f} | {r['compile_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--repeats", type=int, default=20, help="timed calls (at least)")
    p.add_argument("--min-time", type=float, default=2.0, help="keep timing at least this long (s)")
    p.add_argument(
        "--ways", default=",".join(WAYS), help=f"comma-separated subset of {','.join(WAYS)}"
    )
    p.add_argument("--tiny", action="store_true", help="16-8-8-3, for CI")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    unknown = set(args.ways.split(",")) - set(WAYS)
    if unknown:
        p.error(f"unknown --ways {', '.join(sorted(unknown))}; choose from {','.join(WAYS)}")
    if args.tiny:
        args.repeats, args.min_time = 2, 0.0
    meta, rows = run(args)
    print(markdown(meta, rows))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=2)
        os.replace(tmp, args.json)
    return meta, rows


if __name__ == "__main__":
    main()
