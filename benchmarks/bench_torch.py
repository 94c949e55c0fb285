"""The PyTorch bridge: component flows of a bridged 4-layer Llama-style and Qwen 3-style model
against ``jax.grad`` of the same bridged function, and that ``jax.grad`` against PyTorch's own
eager ``backward()`` on the same CPU, in one process. Target: next-token logit difference;
gradient w.r.t. the embedding output; jitted; median of ``--repeats`` calls.

    python benchmarks/bench_torch.py [--tokens 32] [--hidden 256] [--repeats 5] [--torch-threads 1]
"""

import argparse
import importlib.util
import os
import pathlib
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from jaxpr_semiring.models import components, targets, torch_bridge  # noqa: E402
from jaxpr_semiring.semirings import registry  # noqa: E402

_EX = pathlib.Path(__file__).resolve().parents[1] / "examples" / "make_tiny_qwen3.py"
_spec = importlib.util.spec_from_file_location("make_tiny_qwen3", _EX)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def median_ms(f, *args, repeats):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def torch_backward_ms(module, ids, args, repeats):
    """PyTorch eager forward + backward() of the same target w.r.t. the embedding output."""
    emb = module.get_input_embeddings()
    x = torch.tensor(np.asarray(ids)[None].astype(np.int64))

    def once():
        e = emb(x).detach().requires_grad_(True)
        logits = module(inputs_embeds=e, use_cache=False).logits
        (logits[0, args[0], args[1]] - logits[0, args[0], args[2]]).backward()
        return e.grad

    once()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--semirings", default="max-product,entropy")
    ap.add_argument("--torch-threads", type=int, default=1)
    a = ap.parse_args()
    # one thread: on a shared 2-core machine torch's OpenMP workers spin and thrash (2 threads
    # measured 120-1000 ms for what takes 40 ms on one)
    torch.set_num_threads(a.torch_threads)
    size = dict(
        hidden_size=a.hidden,
        intermediate_size=4 * a.hidden,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=a.hidden // 8,
        max_position_embeddings=max(64, a.tokens),
    )
    ids = np.arange(a.tokens, dtype=np.int32) % 250 + 5
    args = (a.tokens - 1, 11, 7)
    print(f"jax {jax.__version__}, torch {torch.__version__}, {a.tokens} tokens, hidden {a.hidden}")
    print(f"{'model':14s} {'torch bwd':>10s} {'jax.grad':>9s} {'grad/torch':>10s}", end="")
    names = a.semirings.split(",")
    print("".join(f" {n + ' ÷grad':>18s}" for n in names))
    for family in ("llama", "qwen3"):
        m = torch_bridge.TorchModel(tiny.model(family, seed=0, vocab_size=256, **size))
        f, e0 = components.embedding_target(
            m, m.params, {"input_ids": ids}, targets.logit_diff, args
        )
        g_ms = median_ms(jax.jit(jax.grad(f)), e0, repeats=a.repeats)
        t_ms = torch_backward_ms(m.module, ids, args, a.repeats)
        row = f"{family:14s} {t_ms:9.1f}ms {g_ms:8.1f}ms {g_ms / t_ms:9.2f}×"
        for n in names:
            fn = jax.jit(components.component_flows_fn(m, targets.logit_diff, registry.parse(n)))
            s_ms = median_ms(fn, m.params, {"input_ids": ids}, *args, repeats=a.repeats)
            row += f" {s_ms:9.1f}ms {s_ms / g_ms:6.2f}×"
        print(row, flush=True)


if __name__ == "__main__":
    main()
