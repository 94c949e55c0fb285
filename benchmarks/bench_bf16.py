"""bf16 models: accuracy and time of semiring flows on a bf16 copy of a float32 model, with
the primals kept bf16 (the library's policy: docs/semantics.md, "Low-precision models") and
with the primals upcast (bf16-rounded weights, float32 arithmetic).

Model: ``paper.transformer.TransformerClassifier`` (``--layers``, hidden 32, 10 tokens), target
``logits[1] - logits[0]``, flows w.r.t. the embeddings. For each semiring and variant: the
value dtypes, whether the values are finite where the float32 model's are, the error against
the float32 model (Real: relative L2 against its ``jax.grad``; others: max |Δ| of the first
field where both are finite), and the jitted time (min of ``--repeats``) as a ratio to
``jax.grad`` of the same variant in the same run.

    python benchmarks/bench_bf16.py --layers 8 [--json bf16.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpr_semiring as js
from jaxpr_semiring.paper.transformer import (
    TransformerClassifier,
    embed_tokens,
    init_params,
    logits_from_embeddings_fn,
)


def _cast(tree, dtype):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _timed(fn, x, repeats):
    out = jax.block_until_ready(fn(x))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        ts.append(time.perf_counter() - t)
    return out, min(ts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model = TransformerClassifier(
        num_layers=args.layers, hidden=32, heads=4, vocab_size=21, max_len=10
    )
    p32 = init_params(model)
    p16 = _cast(p32, jnp.bfloat16)
    variants = {"float32": p32, "bf16": p16, "upcast": _cast(p16, jnp.float32)}
    tokens = jnp.array([1, 5, 2, 7, 3, 9, 4, 11, 6, 8])
    fns = {}
    for name, params in variants.items():
        logits = logits_from_embeddings_fn(model, params)
        fns[name] = (lambda h, lg=logits: lg(h)[1] - lg(h)[0], embed_tokens(model, params, tokens))
    grads = {k: _timed(jax.jit(jax.grad(f)), h, args.repeats) for k, (f, h) in fns.items()}
    rows = []
    for S in (js.Real(), js.MaxProduct(), js.Log(), js.Entropy()):
        ref = None
        for name, (f, h) in fns.items():
            v, t = _timed(jax.jit(js.semiring_grad(f, S)), h, args.repeats)
            leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(v)]
            ref = leaves if ref is None else ref
            same = all((np.isfinite(a) == np.isfinite(b)).all() for a, b in zip(leaves, ref))
            if isinstance(S, js.Real):
                err = _rel(leaves[0], grads["float32"][0])
            else:
                ok = np.isfinite(leaves[0]) & np.isfinite(ref[0])
                err = float(np.abs(leaves[0] - ref[0])[ok].max())
            rows.append(
                dict(
                    semiring=S.name,
                    variant=name,
                    dtypes=[str(x.dtype) for x in jax.tree.leaves(v)],
                    finite_where_float32=bool(same),
                    error_vs_float32=err,
                    ms=t * 1e3,
                    ratio_to_own_jax_grad=t / grads[name][1],
                )
            )
            r = rows[-1]
            print(
                f"{r['semiring']:10s} {name:8s} {','.join(r['dtypes']):16s} finite-as-f32 "
                f"{same!s:5s} err {err:.2e}  {r['ms']:7.2f} ms  "
                f"{r['ratio_to_own_jax_grad']:5.1f}x jax.grad",
                flush=True,
            )
    for name, (g, t) in grads.items():
        print(
            f"jax.grad   {name:8s} rel. error {_rel(g, grads['float32'][0]):.2e}  {t * 1e3:.2f} ms"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(layers=args.layers, rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
