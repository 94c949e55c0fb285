"""The cost of choosing the granularity: BERT-6L with LayerNorm, attention softmax and GELU
atomic vs decomposed, per semiring, in one run.

Model, sentences and target as in ``bench_bert.py`` (``FlaxBertForMaskedLM`` with the
google/bert_uncased_L-6_H-512_A-8 configuration, random init, 30 tokens, logit difference at
the mask, derivatives w.r.t. the input embeddings, ``jax.vmap`` over sentences, ``jax.jit``).
"atomic" makes every ``nn.LayerNorm`` (14 blocks, the MLM head's included: one per token
each), every attention softmax (one per head × query) and every GELU (elementwise) one node of
the graph (:func:`jaxpr_semiring.atomic_modules`, :func:`jaxpr_semiring.atomic_functions`).
Reported per semiring and batch: median time of each granularity, the ratio atomic /
decomposed (the issue's goal: at most 2), and both against ``jax.grad``. Results are written
to ``--json`` after every measurement (atomically), so an interrupted run keeps what it
measured.

    python benchmarks/bench_atomic.py --batch-sizes 1 --json benchmarks/atomic_cpu.json
    python benchmarks/bench_atomic.py --tiny          # CI smoke test: seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import jax
import numpy as np

import jaxpr_semiring as js
from bench_bert import BERT_6L, TINY, build_model, make_batch, make_target, measure

SEMIRINGS = {"Real": js.Real, "Log": js.Log, "Entropy": js.Entropy, "MaxProduct": js.MaxProduct}
PARTS = ("layernorm", "softmax", "gelu")


def atomic_context(parts):
    """The context manager that makes the chosen BERT parts atomic."""
    import contextlib
    import flax.linen as nn
    from transformers.modeling_flax_utils import ACT2FN

    stack = contextlib.ExitStack()
    if "layernorm" in parts:
        stack.enter_context(js.atomic_modules(types=nn.LayerNorm))
    funcs = ([(jax.nn, "softmax")] if "softmax" in parts else []) + (
        [(ACT2FN, "gelu")] if "gelu" in parts else []
    )
    if funcs:
        stack.enter_context(js.atomic_functions(*funcs))
    return stack


def granular(f, parts):
    """``f`` traced with ``parts`` atomic (the patches are active while it is traced)."""

    def g(*args):
        with atomic_context(parts):
            return f(*args)

    return g


def _write(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def run(args):
    cfg = TINY if args.tiny else BERT_6L
    seq_len = 8 if args.tiny else args.seq_len
    batches = [int(b) for b in args.batch_sizes.split(",")]
    repeats = args.repeats or (2 if args.tiny else 7)
    min_time = 0.0 if args.tiny else args.min_time
    parts = tuple(args.parts.split(","))
    semirings = args.semirings.split(",")
    model = build_model(cfg)
    params = model.params
    table = np.asarray(params["bert"]["embeddings"]["word_embeddings"]["embedding"])
    f = make_target(model, seq_len)
    fa = granular(f, parts)
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax=jax.__version__,
        backend=jax.default_backend(),
        platform=platform.platform(),
        config=cfg,
        seq_len=seq_len,
        parts=parts,
        load=os.getloadavg(),
    )
    rows = []
    rng = np.random.default_rng(0)
    for b in batches:
        batch = make_batch(rng, b, seq_len, cfg["hidden_size"], cfg["vocab_size"], table)
        call_args = (batch[0], params) + batch[1:]
        grad = measure(
            jax.vmap(jax.grad(f), in_axes=(0, None, 0, 0, 0, 0)), call_args, repeats, min_time
        )
        print(f"# batch {b}: jax.grad {1e3 * grad['median_s']:.1f} ms", flush=True)
        for name in semirings:
            S = SEMIRINGS[name]()
            r = {"batch": b, "semiring": name, "grad_s": grad["median_s"]}
            for label, fun in (("decomposed", f), ("atomic", fa)):
                m = measure(
                    jax.vmap(js.semiring_grad(fun, S), in_axes=(0, None, 0, 0, 0, 0)),
                    call_args,
                    repeats,
                    min_time,
                )
                r[label] = m
            r["ratio"] = r["atomic"]["median_s"] / r["decomposed"]["median_s"]
            rows.append(r)
            print(
                f"#   {name:10s} decomposed {1e3 * r['decomposed']['median_s']:9.1f} ms  atomic "
                f"{1e3 * r['atomic']['median_s']:9.1f} ms  atomic/decomposed {r['ratio']:.2f}  "
                f"(compile {r['decomposed']['compile_s']:.1f} s / "
                f"{r['atomic']['compile_s']:.1f} s)",
                flush=True,
            )
            if args.json:
                _write(args.json, dict(meta=meta, rows=rows))
    return meta, rows


def markdown(meta, rows):
    lines = [
        f"{meta['backend']}, jax {meta['jax']}, {meta['config']['num_hidden_layers']} layers, "
        f"hidden {meta['config']['hidden_size']}, {meta['seq_len']} tokens; atomic: "
        f"{', '.join(meta['parts'])}; load average at start {meta['load'][0]:.1f}",
        "",
        "| batch | semiring | decomposed (ms) | atomic (ms) | atomic / decomposed | "
        "decomposed × jax.grad | atomic × jax.grad | compile decomposed / atomic (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, a = r["decomposed"], r["atomic"]
        lines.append(
            f"| {r['batch']} | {r['semiring']} | {1e3 * d['median_s']:.1f} | "
            f"{1e3 * a['median_s']:.1f} | {r['ratio']:.2f} | "
            f"{d['median_s'] / r['grad_s']:.2f} | {a['median_s'] / r['grad_s']:.2f} | "
            f"{d['compile_s']:.1f} / {a['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1")
    p.add_argument("--tiny", action="store_true", help="2 layers, hidden 32, vocab 100, 8 tokens")
    p.add_argument("--json", default=None, help="write the results here (after every measurement)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--seq-len", type=int, default=30)
    p.add_argument("--parts", default=",".join(PARTS), help=f"atomic parts, of {','.join(PARTS)}")
    p.add_argument("--semirings", default="Real,Log,Entropy,MaxProduct")
    args = p.parse_args(argv)
    meta, rows = run(args)
    print(markdown(meta, rows))
    return meta, rows


if __name__ == "__main__":
    main()
