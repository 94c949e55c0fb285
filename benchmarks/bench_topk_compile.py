"""What ``TopK(k)`` costs to compile and run as k grows, beside ``jax.grad`` of the same target.

Embedding flows of a masked-LM logit difference on a random BERT (default 2 layers, H32, 6
tokens: compile time, not arithmetic, is what grows with k). For each k: trace + lower time,
XLA compile time, and a repeated call, each also as a ratio to ``jax.grad`` of the same
function lowered and compiled in the same process (the call also to one ``MaxProduct`` pass).
TopK's ⊗ merges two sorted lists with one sort per contraction rather than k unrolled steps,
so the compile time stays flat in k (see docs/semantics.md, "TopK"). Writes ``--json``
(atomically) after every k.

    python benchmarks/bench_topk_compile.py --k 1,4,16,32 --json topk_compile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.models import hf_bert  # noqa: E402


def _timed(fn, args, repeats=5):
    """(lower s, compile s, median call s) of ``jax.jit(fn)`` on ``args``."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    calls = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        calls.append(time.perf_counter() - t)
    return t1 - t0, t2 - t1, sorted(calls)[len(calls) // 2]


def _write(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as f:
        json.dump(doc, f, indent=1)
    os.replace(f.name, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="1,4,16,32", help="comma-separated k values")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=a.layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    model = FlaxBertForMaskedLM(cfg, seed=0)
    ids = jnp.array([1, 5, 3, 8, 9, 2])
    emb = jnp.take(hf_bert.word_embedding_table(model.params), ids, axis=0)

    def target(e):
        with hf_bert.word_embeddings_replaced_by(e[None]):
            logits = model(ids[None], params=model.params).logits[0]
        return logits[1, 3] - logits[1, 4]

    doc = dict(
        model=f"random BERT-{a.layers}L-H32, 6 tokens",
        backend=jax.default_backend(),
        jax=jax.__version__,
        machine=platform.processor() or platform.machine(),
        rows=[],
    )
    g = _timed(jax.grad(target), (emb,))
    doc["jax_grad"] = dict(lower_s=g[0], compile_s=g[1], call_s=g[2])
    print(f"jax.grad: lower {g[0]:.2f}s compile {g[1]:.2f}s call {g[2] * 1e3:.2f}ms", flush=True)
    m = _timed(js.semiring_grad(target, js.MaxProduct()), (emb,))  # TopK(1)'s semiring
    doc["max_product"] = dict(lower_s=m[0], compile_s=m[1], call_s=m[2])
    print(f"MaxProduct: lower {m[0]:.2f}s compile {m[1]:.2f}s call {m[2] * 1e3:.2f}ms", flush=True)
    for k in map(int, a.k.split(",")):
        t = _timed(js.semiring_grad(target, js.TopK(k)), (emb,))
        row = dict(
            k=k,
            lower_s=t[0],
            compile_s=t[1],
            call_s=t[2],
            lower_ratio=t[0] / g[0],
            compile_ratio=t[1] / g[1],
            call_ratio=t[2] / g[2],
            call_ratio_to_max_product=t[2] / m[2],
        )
        doc["rows"].append(row)
        print(
            f"TopK({k}): lower {t[0]:.2f}s ({row['lower_ratio']:.1f}×) compile {t[1]:.2f}s "
            f"({row['compile_ratio']:.1f}×) call {t[2] * 1e3:.2f}ms ({row['call_ratio']:.1f}×)",
            flush=True,
        )
        if a.json:
            _write(a.json, doc)


if __name__ == "__main__":
    main()
