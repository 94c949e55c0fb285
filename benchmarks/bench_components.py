"""Component flows at the cost of one semiring pass: timings against ``jax.grad`` and against the
plain semiring gradient of the same target, in one process. MiniLM-L6 (offline; cosine-similarity
target) and a random GPT-2 6L-512 (next-token logit difference); ``--tokens`` tokens; jitted;
median of ``--repeats`` calls.

    python benchmarks/bench_components.py [--tokens 12] [--repeats 7]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.cli import loading
from jaxpr_semiring.models import components, targets  # noqa: E402


def median_ms(f, *args, repeats):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def models(n_tokens):
    from transformers import FlaxGPT2LMHeadModel, GPT2Config

    mini = loading.load("minilm").model
    yield (
        "MiniLM-L6-H384",
        mini,
        targets.similarity,
        (jax.random.normal(jax.random.PRNGKey(0), (384,)),),
    )
    yield (
        "GPT-2 6L-512",
        FlaxGPT2LMHeadModel(GPT2Config(n_embd=512, n_layer=6, n_head=8), seed=0),
        targets.logit_diff,
        (n_tokens - 1, 11, 7),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    ids = jnp.arange(args.tokens, dtype=jnp.int32) + 1000
    print(
        f"{'model':16s} {'semiring':10s} {'jax.grad':>9s} {'plain':>9s} {'flows':>9s} {'heads':>9s}"
        f"   flows/plain  heads/plain  flows/grad  (ms, median of {args.repeats})"
    )
    for name, model, target, targs in models(args.tokens):
        inputs = {"input_ids": ids}

        def f(p, *t):
            return components.embedding_target(model, p, inputs, target, t)

        t_grad = median_ms(
            jax.jit(lambda p, *t: jax.grad(f(p, *t)[0])(f(p, *t)[1])),
            model.params,
            *targs,
            repeats=args.repeats,
        )
        for S in (js.Real(), js.MaxProduct(), js.Entropy()):
            plain = jax.jit(lambda p, *t: js.semiring_grad(f(p, *t)[0], S)(f(p, *t)[1]))
            t_plain = median_ms(plain, model.params, *targs, repeats=args.repeats)
            t_flows, t_heads = (
                median_ms(
                    jax.jit(components.component_flows_fn(model, target, S, heads=h)),
                    model.params,
                    inputs,
                    *targs,
                    repeats=args.repeats,
                )
                for h in (False, True)
            )
            print(
                f"{name:16s} {S.name:10s} {t_grad:9.1f} {t_plain:9.1f} {t_flows:9.1f} "
                f"{t_heads:9.1f}"
                f"   {t_flows / t_plain:11.2f}  {t_heads / t_plain:11.2f}  {t_flows / t_grad:10.2f}"
            )


if __name__ == "__main__":
    main()
