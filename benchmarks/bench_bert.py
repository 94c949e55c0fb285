"""Semiring statistics at the cost of a gradient: BERT-6L timings against ``jax.grad``.

Model: Hugging Face ``FlaxBertForMaskedLM`` with the configuration of
google/bert_uncased_L-6_H-512_A-8 (6 layers, hidden 512, 8 heads, intermediate 2048, vocab
30522), random init (``seed=0``; timings do not depend on the weights). Sentences of 30 tokens;
the scalar target is logit(correct) − logit(wrong) at the mask position; every derivative is
taken w.r.t. the input embeddings (the word-embedding output is replaced through
``flax.linen.intercept_methods``). Batches are ``jax.vmap`` over sentences; every function is
``jax.jit``-ed. One process, one run: ``jax.grad``, then ``semiring_grad`` with ``Real``,
``MaxProduct``, ``Entropy``, ``Log``, the three paper semirings together (Real, MaxProduct
and Entropy in one jitted function) and ``top_path`` (one top gradient path per sentence; also
reported as a ratio to ``MaxProduct``).

Reported per (method, batch): median steady-state time, compile time (lower + compile, plus
the first call's extra time), peak memory (device ``memory_stats`` on GPU; on CPU the growth of
the process's peak RSS while that method ran, which is a lower bound that is only meaningful
for the first method that reaches a new peak) and the ratios to ``jax.grad`` at the same batch.

    python benchmarks/bench_bert.py --batch-sizes 1,8 --json results.json
    python benchmarks/bench_bert.py --tiny            # CI smoke test: seconds
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxpr_semiring as js  # noqa: E402

BERT_6L = dict(
    vocab_size=30522,
    hidden_size=512,
    num_hidden_layers=6,
    num_attention_heads=8,
    intermediate_size=2048,
    max_position_embeddings=512,
)
TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)

# "MaxProduct[xla]" / "MaxProduct[pallas]" / "MaxProduct[numba]" force a tropical kernel
# (default "auto": kernels.describe() says which runs); "shared3" is the three semirings of
# paper3 from ONE semiring_grad call (a tuple of semirings: one trace, one backward walk).
METHODS = ("jax.grad", "Real", "MaxProduct", "Entropy", "Log", "paper3", "shared3", "top_path")
EXTRA_METHODS = ("MaxProduct[xla]", "MaxProduct[pallas]", "MaxProduct[numba]")
METHOD_LABEL = {
    "paper3": "Real+MaxProduct+Entropy (one jit)",
    "shared3": "(Real, MaxProduct, Entropy) one pass",
    "top_path": "top_path (one path)",
}


def build_model(config_kwargs):
    from transformers import BertConfig, FlaxBertForMaskedLM

    config = BertConfig(**config_kwargs)
    model = FlaxBertForMaskedLM(config, seed=0)
    return model


def make_target(model, seq_len):
    """f(emb [S, H], params, ids [S], mask_pos, correct, wrong) -> scalar.

    The parameters are an argument (not closed-over constants, which XLA would constant-fold).
    """

    from jaxpr_semiring.models.hf_bert import word_embeddings_replaced_by

    def f(emb, params, ids, mask_pos, correct, wrong):
        with word_embeddings_replaced_by(emb[None]):
            out = model(ids[None], params=params)
        logits = out.logits[0, mask_pos]
        return logits[correct] - logits[wrong]

    return f


def make_methods(f, names):
    """name -> per-sentence function (emb, params, ids, mask_pos, correct, wrong) -> pytree."""
    semirings = {
        "Real": js.Real(),
        "MaxProduct": js.MaxProduct(),
        "Entropy": js.Entropy(),
        "Log": js.Log(),
    }
    out = {}
    for name in names:
        if name == "jax.grad":
            out[name] = jax.grad(f)
        elif name == "paper3":

            def three(*a):
                return tuple(
                    js.semiring_grad(f, s)(*a) for s in (js.Real(), js.MaxProduct(), js.Entropy())
                )

            out[name] = three
        elif name == "shared3":
            out[name] = js.semiring_grad(f, (js.Real(), js.MaxProduct(), js.Entropy()))
        elif name == "top_path":
            out[name] = js.top_path(f)
        elif name.startswith("MaxProduct["):
            out[name] = js.semiring_grad(f, js.MaxProduct(kernel=name[len("MaxProduct[") : -1]))
        else:
            out[name] = js.semiring_grad(f, semirings[name])
    return out


def make_batch(rng, batch, seq_len, hidden, vocab, table):
    ids = rng.integers(0, vocab, size=(batch, seq_len)).astype(np.int32)
    emb = np.asarray(table)[ids].astype(np.float32)
    mask_pos = rng.integers(1, seq_len - 1, size=(batch,)).astype(np.int32)
    ids[np.arange(batch), mask_pos] = min(103, vocab - 1)  # [MASK] in the uncased vocab
    emb = np.asarray(table)[ids].astype(np.float32)
    correct = rng.integers(0, vocab, size=(batch,)).astype(np.int32)
    wrong = (correct + 1 + rng.integers(0, vocab - 1, size=(batch,))) % vocab
    return tuple(jnp.asarray(x) for x in (emb, ids, mask_pos, correct, wrong.astype(np.int32)))


def _peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _device_peak():
    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # CPU has none
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"]
    return None


def _reset_device_peak():
    dev = jax.devices()[0]
    for fn in ("reset_memory_stats",):
        if hasattr(dev, fn):
            try:
                getattr(dev, fn)()
            except Exception:
                pass


def measure(fn, args, repeats, min_time):
    """(compile_s, first_call_s, median_s, times, peak_bytes, peak_kind)."""
    gc.collect()
    on_gpu = jax.default_backend() != "cpu"
    if on_gpu:
        _reset_device_peak()
    rss0 = _peak_rss_bytes()
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem_analysis = temp_bytes = None
    try:
        ma = compiled.memory_analysis()
        if ma is not None:
            # peak of the XLA program: arguments (model parameters, batch) + temporaries +
            # outputs; the working memory (temporaries + outputs) is reported separately
            mem_analysis = int(
                ma.argument_size_in_bytes + ma.temp_size_in_bytes + ma.output_size_in_bytes
            )
            temp_bytes = int(ma.temp_size_in_bytes + ma.output_size_in_bytes)
    except Exception:
        pass
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (
        time.perf_counter() - start < min_time and len(times) < 10 * repeats
    ):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    if on_gpu and _device_peak() is not None:
        peak, kind = _device_peak(), "device peak_bytes_in_use"
    else:
        peak, kind = _peak_rss_bytes() - rss0, "peak RSS growth"
    return dict(
        compile_s=compile_s,
        first_call_s=first,
        median_s=statistics.median(times),
        min_s=min(times),
        n=len(times),
        peak_bytes=int(peak),
        peak_kind=kind,
        xla_memory_bytes=mem_analysis,
        xla_temp_bytes=temp_bytes,
    )


def run(args):
    cfg = TINY if args.tiny else BERT_6L
    seq_len = 8 if args.tiny else args.seq_len
    if args.batch_sizes:
        batches = [int(b) for b in args.batch_sizes.split(",")]
    elif args.tiny:
        batches = [1, 2]
    else:
        batches = [1, 64, 512] if jax.default_backend() == "gpu" else [1, 8]
    repeats = args.repeats or (2 if args.tiny else 10)
    min_time = 0.0 if args.tiny else args.min_time
    names = args.methods.split(",") if args.methods else list(METHODS)
    unknown = sorted(set(names) - set(METHODS + EXTRA_METHODS))
    if unknown:
        raise SystemExit(
            f"bench_bert: unknown method(s) {', '.join(unknown)}; choose from "
            f"{', '.join(METHODS + EXTRA_METHODS)}"
        )
    if "jax.grad" not in names:
        names = ["jax.grad"] + names

    t0 = time.perf_counter()
    model = build_model(cfg)
    params = model.params
    table = np.asarray(params["bert"]["embeddings"]["word_embeddings"]["embedding"])
    f = make_target(model, seq_len)
    methods = make_methods(f, names)
    print(
        f"# model built in {time.perf_counter() - t0:.1f}s; backend {jax.default_backend()}, "
        f"device {jax.devices()[0].device_kind}",
        flush=True,
    )

    meta = _meta(cfg, seq_len)
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        batch = make_batch(rng, b, seq_len, cfg["hidden_size"], cfg["vocab_size"], table)
        base = maxprod = None
        for name in names:
            fn = jax.vmap(methods[name], in_axes=(0, None, 0, 0, 0, 0))
            r = measure(fn, (batch[0], params) + batch[1:], repeats, min_time)
            r.update(method=name, label=METHOD_LABEL.get(name, name), batch=b)
            if name == "jax.grad":
                base = r
            if name == "MaxProduct":
                maxprod = r
            if name == "top_path" and maxprod is not None:
                r["maxproduct_ratio"] = r["median_s"] / maxprod["median_s"]
            r["time_ratio"] = r["median_s"] / base["median_s"]
            r["inputs_per_s"] = b / r["median_s"]
            r["compile_ratio"] = r["compile_s"] / base["compile_s"]
            if r["xla_memory_bytes"] and base["xla_memory_bytes"]:
                r["xla_memory_ratio"] = r["xla_memory_bytes"] / base["xla_memory_bytes"]
            if r["xla_temp_bytes"] and base["xla_temp_bytes"]:
                r["xla_temp_ratio"] = r["xla_temp_bytes"] / base["xla_temp_bytes"]
            rows.append(r)
            print(
                f"#   batch {b:4d} {r['label']:36s} median {1e3 * r['median_s']:9.2f} ms "
                f"({r['time_ratio']:6.2f}x)  compile {r['compile_s']:6.2f} s "
                f"({r['compile_ratio']:5.2f}x)  xla mem {_mib(r['xla_memory_bytes'])}"
                + (
                    f"  ({r['maxproduct_ratio']:.2f}x MaxProduct)"
                    if "maxproduct_ratio" in r
                    else ""
                ),
                flush=True,
            )
            if args.json:  # after every row, atomically: a crash keeps what was measured
                _write_json(args.json, meta, rows)
    return meta, rows


def _write_json(path, meta, rows):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=2)
    os.replace(tmp, path)


def _meta(cfg, seq_len):
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax=jax.__version__,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        platform=platform.platform(),
        processor=_cpu_name(),
        cpu_count=os.cpu_count(),
        config=cfg,
        seq_len=seq_len,
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        kernels=_kernel_info(),
    )


def _kernel_info():
    try:
        from jaxpr_semiring import kernels

        return kernels.describe()
    except Exception:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _mib(x):
    return "n/a" if not x else f"{x / 2**20:.0f} MiB"


def markdown(meta, rows):
    lines = [
        f"{meta['device']} ({meta['backend']}), jax {meta['jax']}, seq_len {meta['seq_len']}, "
        f"{meta['config']['num_hidden_layers']} layers, hidden {meta['config']['hidden_size']}",
        "",
        "| batch | method | median (ms) | × jax.grad | inputs/s | compile (s) | compile × | "
        "peak memory (MiB) | memory × | working memory (MiB) | working × | measured peak (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = r.get("xla_memory_bytes")
        tmp = r.get("xla_temp_bytes")
        lines.append(
            f"| {r['batch']} | {r['label']} | {1e3 * r['median_s']:.2f} | {r['time_ratio']:.2f} | "
            f"{r['batch'] / r['median_s']:.1f} | "
            f"{r['compile_s']:.2f} | {r['compile_ratio']:.2f} | "
            f"{'n/a' if not mem else f'{mem / 2**20:.1f}'} | "
            f"{r.get('xla_memory_ratio', float('nan')):.2f} | "
            f"{'n/a' if not tmp else f'{tmp / 2**20:.1f}'} | "
            f"{r.get('xla_temp_ratio', float('nan')):.2f} | {r['peak_bytes'] / 2**20:.0f} |"
        )
    lines += [
        "",
        "peak memory: XLA's memory analysis of the compiled program (arguments incl. the "
        "model parameters + temporaries + outputs); working memory: temporaries + outputs; "
        f"measured peak: {rows[0]['peak_kind']} while the method ran (CPU: growth of the "
        "process's peak RSS, so 0 when an earlier method already reached a higher peak).",
    ]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated (default: 1,64,512 on GPU, 1,8 on CPU, 1,2 with --tiny)",
    )
    p.add_argument("--tiny", action="store_true", help="2 layers, hidden 32, vocab 100, 8 tokens")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (at least)")
    p.add_argument("--min-time", type=float, default=2.0, help="keep timing at least this long (s)")
    p.add_argument("--seq-len", type=int, default=30)
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated subset of {','.join(METHODS + EXTRA_METHODS)}",
    )
    args = p.parse_args(argv)
    meta, rows = run(args)
    table = markdown(meta, rows)
    print(table)
    if args.json:
        _write_json(args.json, meta, rows)
    return meta, rows


if __name__ == "__main__":
    main()
