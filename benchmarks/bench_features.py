"""What paths through features cost next to building the graph: ``attribution_graph`` (one
recorded forward pass + batched VJPs, circuit-tracer's cost) vs ``node_influence`` (Real),
``top_paths`` (TopK, k=10, with the node lists read back) and ``path_entropy`` (Entropy +
Log) on the same graph. A random tiny HF Flax GPT-2 with initialised ReLU transcoders at every
MLP, sized so that about ``--features`` features are active; every timing includes tracing and
compilation (each call builds its program once, as the CLI does), and is the median of
``--repeat`` runs of the whole call. Prints a markdown table; ``--json`` writes the numbers.

    python benchmarks/bench_features.py --features 1000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxpr_semiring.features import paths as P  # noqa: E402
from jaxpr_semiring.features.attribution import attribution_graph  # noqa: E402
from jaxpr_semiring.features.dictionary import Dictionary  # noqa: E402
from jaxpr_semiring.features.splice import ReplacementModel  # noqa: E402

# (layers, positions, d_sae): about half the features are active (b_enc > 0, random inputs)
SIZES = {1000: (2, 16, 64), 10000: (4, 32, 160)}


def setup(n_features: int, d: int = 32):
    from transformers import FlaxGPT2LMHeadModel, GPT2Config

    layers, n_pos, d_sae = SIZES.get(n_features, (2, 16, max(8, n_features // 16)))
    cfg = GPT2Config(vocab_size=64, n_positions=n_pos, n_embd=d, n_layer=layers, n_head=4)
    model = FlaxGPT2LMHeadModel(cfg, seed=0)
    ds = []
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(0), layers)):
        k1, k2 = jax.random.split(key)
        ds.append(
            Dictionary(
                W_enc=jax.random.normal(k1, (d, d_sae)) / np.sqrt(d),
                b_enc=0.01 * jnp.ones(d_sae),
                W_dec=0.1 * jax.random.normal(k2, (d_sae, d)) / np.sqrt(d_sae),
                b_dec=jnp.zeros(d),
                kind="transcoder",
                site=f"transformer/h/{i}/mlp:in",
                out_site=f"transformer/h/{i}/mlp:out",
            )
        )
    tokens = jnp.arange(n_pos) % 64
    return model, ds, tokens


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(jax.tree.leaves(out) if not isinstance(out, np.ndarray) else out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(n_features: int, repeat: int) -> dict:
    model, ds, tokens = setup(n_features)
    rm = ReplacementModel(model, model.params, tokens, ds)
    t_graph, g = timed(
        lambda: attribution_graph(model, model.params, tokens, ds, target=None, replacement=rm),
        repeat,
    )
    t_infl, _ = timed(lambda: P.node_influence(g), repeat)
    t_topk, top = timed(lambda: P.top_paths(g, 10), repeat)
    t_ent, ent = timed(lambda: P.path_entropy(g), repeat)
    return {
        "features": g.n_features,
        "nodes": g.n_nodes,
        "edges": int(np.count_nonzero(g.adjacency)),
        "graph_s": t_graph,
        "influence_s": t_infl,
        "top10_s": t_topk,
        "entropy_s": t_ent,
        "entropy": ent["entropy"],
        "log_n_paths": ent["log_n_paths"],
        "best_path": top[0][0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, nargs="+", default=[1000])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [run(n, args.repeat) for n in args.features]
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, repeat {args.repeat}")
    print(
        "| features | nodes | edges | graph (s) | influence (s, ×graph) | top-10 (s, ×graph) | "
        "entropy + log #paths (s, ×graph) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        g = r["graph_s"]
        print(
            f"| {r['features']} | {r['nodes']} | {r['edges']} | {g:.2f} | "
            f"{r['influence_s']:.2f} ({r['influence_s'] / g:.2f}) | "
            f"{r['top10_s']:.2f} ({r['top10_s'] / g:.2f}) | "
            f"{r['entropy_s']:.2f} ({r['entropy_s'] / g:.2f}) |"
        )
    if args.json:
        from jaxpr_semiring.outputs import write_output

        write_output(args.json, json.dumps(rows, indent=1) + "\n", option="--json")


if __name__ == "__main__":
    main()
