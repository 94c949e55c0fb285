"""All semirings on paper Fig. 1 and on a small BERT, printed as tables.

    python examples/quickstart.py

Paper Fig. 1: f(x, y) = exp(x) + (x − y)·y at (x, y) = (1, 2). From x there are two paths
(e^x, and y through the product); from y two (−y through x − y, and x − y directly).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax
import jax.numpy as jnp

import jaxpr_semiring as js

SEMIRINGS = [
    js.Real(),
    js.MaxProduct(),
    js.MaxAbs(),
    js.Log(),
    js.Entropy(),
    js.Expectation(),
    js.Counting(),
    js.Boolean(),
]


def describe(value) -> str:
    if hasattr(value, "_fields"):
        parts = [f"{k}={float(v):.4g}" for k, v in zip(value._fields, value)]
        if hasattr(value, "entropy"):
            parts.append(f"entropy={float(value.entropy):.4g}")
        return " ".join(parts)
    return f"{value.item():.4g}" if value.dtype != bool else str(bool(value))


def fig1() -> None:
    f = lambda x, y: jnp.exp(x) + (x - y) * y
    print("Paper Fig. 1: f(x, y) = exp(x) + (x - y) * y at x = 1, y = 2")
    print(f"{'semiring':<12} {'d/dx':<48} d/dy")
    for S in SEMIRINGS:
        gx, gy = js.semiring_grad(f, S, argnums=(0, 1))(1.0, 2.0)
        print(f"{S.name:<12} {describe(gx):<48} {describe(gy)}")
    print()


def small_bert(layers: int) -> None:
    from transformers import BertConfig, FlaxBertForMaskedLM

    from jaxpr_semiring.models.hf_bert import word_embeddings_replaced_by

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = FlaxBertForMaskedLM(cfg, seed=0)
    ids = jnp.array([[2, 17, 45, 3, 61, 9, 4]])
    mask_pos, good, bad = 3, 12, 40
    emb = jnp.take(model.params["bert"]["embeddings"]["word_embeddings"]["embedding"], ids, axis=0)

    def logit_difference(emb):
        with word_embeddings_replaced_by(emb):  # the input representation replaces the lookup
            logits = model(ids, params=model.params).logits
        return logits[0, mask_pos, good] - logits[0, mask_pos, bad]

    print(
        f"Random {layers}-layer BERT (hidden 32): logit({good}) - logit({bad}) at position "
        f"{mask_pos}, "
        "semiring gradient w.r.t. each token's embedding, aggregated over hidden dims (paper "
        "Eq. 3)"
    )
    header = "semiring     " + " ".join(f"{'tok' + str(t):>10}" for t in range(ids.shape[1]))
    print(header)
    for S in SEMIRINGS:
        g = jax.jit(js.semiring_grad(logit_difference, S))(emb)
        per_token = S.map(lambda a: a[0], S.sum(g, axes=-1))  # ⊕ over hidden dims, sentence 0
        if S.name == "Real":  # Σ over hidden dims cancels after LayerNorm: show Σ|g| instead
            row = jnp.abs(g[0]).sum(-1)
        elif S.name == "MaxProduct":
            row = per_token.top_pos
        elif S.name == "MaxAbs":
            row = per_token.log_abs
        elif S.name in ("Entropy", "Expectation"):
            row = per_token.entropy
        else:
            row = per_token
        label = {
            "Real": "|Real|",
            "MaxProduct": "MaxProd.pos",
            "MaxAbs": "MaxAbs.log",
            "Entropy": "Entropy.H",
            "Expectation": "Expect.H",
        }.get(S.name, S.name)
        cells = " ".join(
            f"{str(bool(v)) if row.dtype == bool else f'{float(v):.3g}':>10}" for v in row
        )
        print(f"{label:<12} {cells}")
    print(
        "\n|Real| = Σ|jax.grad| over hidden dims; MaxProd.pos = best path product; Log and "
        "Counting are log Σ|g(p)| and "
        "log #paths; Entropy.H is the path entropy."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=2, help="BERT layers (default 2)")
    args = parser.parse_args()
    fig1()
    small_bert(args.layers)


if __name__ == "__main__":
    main()
