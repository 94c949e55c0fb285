"""Granularity and sampled paths on the pretrained MiniLM (BERT: 6 layers, hidden 384).

1. The same statistics with LayerNorm, attention softmax and GELU **decomposed** (the
   jaxpr's own equations) and **atomic** (each one node with its Jacobian edges,
   ``jaxpr_semiring.atomic_modules`` / ``atomic_functions``):
   * top-path branch shares: at every layer input, which branch (skip, query, key, value)
     carries each token's best path (``MaxProduct``), as a share of layers × tokens;
   * path entropy of the paths from each token's word embedding (``Entropy``, ⊕ over the
     hidden dimensions), averaged over tokens, and Σ|path product| (``Log``).
2. ``sample_paths`` from the input element with the largest flow: the share of sampled paths
   that take each branch at a layer input (the distribution behind the top path), and the
   Monte-Carlo path entropy next to the ``Entropy`` semiring's.

The target is the mean-pooled sentence embedding · a fixed random vector (MiniLM has no MLM
head). Prints markdown tables (docs/atomic_and_sampling.md shows them).

    python examples/atomic_and_sampling.py [--samples 400] [--sentence "..."]
"""

import argparse
import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.models import hf_bert  # noqa: E402

SENTENCES = [
    "The keys to the old cabinet are on the kitchen table.",
    "The author that the guards like laughs.",
    "Most of the students in the class passed the exam.",
    "She said that the report would be ready by Monday.",
]
GRANULARITIES = ("decomposed", "atomic")


def load_minilm():
    from tokenizers import Tokenizer
    from transformers import FlaxBertModel
    from jaxpr_semiring.paper.sva_models import minilm_dir

    tok = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return FlaxBertModel.from_pretrained(minilm_dir()), tok


def granularity(name):
    """LayerNorm, attention softmax and GELU atomic (or nothing changed)."""
    stack = contextlib.ExitStack()
    if name == "atomic":
        import flax.linen as nn
        from transformers.modeling_flax_utils import ACT2FN

        stack.enter_context(js.atomic_modules(types=nn.LayerNorm))
        stack.enter_context(js.atomic_functions((jax.nn, "softmax"), (ACT2FN, "gelu")))
    return stack


def traced_with(name, fn):
    """``fn`` jitted, traced with the granularity ``name`` active."""

    def g(*a):
        with granularity(name):
            return fn(*a)

    return jax.jit(g)


def target(out, v):
    return jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), v)


def granularity_table(model, tok, vec, sentences):
    S = js.Entropy()
    rows = {}
    for name in GRANULARITIES:
        branch = traced_with(
            name, hf_bert.branch_flows_fn(model, target=target, semiring=js.MaxProduct())
        )
        ent = traced_with(name, hf_bert.embedding_flows_fn(model, target=target, semiring=S))
        log = traced_with(name, hf_bert.embedding_flows_fn(model, target=target, semiring=js.Log()))
        wins, ents, logs = np.zeros(4), [], []
        for text in sentences:
            ids = jnp.array(tok.encode(text).ids)
            flows = np.asarray(branch(model.params, ids, vec).flows.top_pos)  # [L, T, 4]
            wins += np.bincount(flows.argmax(-1).ravel(), minlength=4)
            _, e = ent(model.params, ids, vec)
            ents.append(float(np.mean(S.sum(e, axes=-1).entropy)))
            _, lg = log(model.params, ids, vec)
            logs.append(float(js.Log().sum(lg)))
        rows[name] = (wins / wins.sum(), np.mean(ents), np.mean(logs))
    print(
        "| granularity | "
        + " | ".join(f"top paths via {b}" for b in hf_bert.BRANCHES)
        + " | path entropy per token | log Σ\\|product\\| |"
    )
    print("|---|" + "---:|" * 6)
    for name, (share, h, lz) in rows.items():
        print(
            f"| {name} | "
            + " | ".join(f"{100 * s:.1f}%" for s in share)
            + f" | {h:.2f} | {lz:.2f} |"
        )
    return rows


def sampled_table(model, tok, vec, sentence, n):
    from transformers.models.bert.modeling_flax_bert import FlaxBertLayer

    ids = jnp.array(tok.encode(sentence).ids)
    emb0 = jnp.take(hf_bert.word_embedding_table(model.params), ids, axis=0)

    def f(emb):
        with hf_bert.word_embeddings_replaced_by(emb[None]), js.tap_modules(types=FlaxBertLayer):
            return target(model(ids[None], params=model.params), vec)

    print(
        f"\nsentence: {sentence!r}; {n} sampled paths from the input element with the largest "
        f"total flow"
    )
    print(
        "| granularity | layer | paths via skip | via query | via key | via value | "
        "top path's branch |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    summary = {}
    for name in GRANULARITIES:
        with granularity(name):
            s = js.sample_paths(f, n=n, key=jax.random.PRNGKey(0))(emb0)
            top = js.top_path(f, at=s[0].start["index"])(emb0)
            h_exact = js.semiring_grad(f, js.Entropy())(emb0).entropy.ravel()[int(s.start)]
        shares = s.branch_shares()
        top_branch = _top_path_branches(top)
        for label, bs in shares.items():
            if "[tap:" not in label:  # the taps on every layer input
                continue
            layer_path = label.split("[tap:")[1].rstrip("]").rsplit(":", 1)[0]
            layer = layer_path.rsplit("/", 1)[1]
            per = dict.fromkeys(hf_bert.BRANCHES, 0.0)
            for cons, share in bs.shares.items():
                b = hf_bert.classify_consumer(cons, layer_path)
                if b is not None:
                    per[b] += share
            print(
                f"| {name} | {layer} | "
                + " | ".join(f"{100 * per[b]:.0f}%" for b in hf_bert.BRANCHES)
                + f" | {top_branch.get(layer, '-')} |"
            )
        est, err = s.entropy()
        summary[name] = (est, err, float(h_exact))
    print("\n| granularity | Monte-Carlo path entropy | Entropy semiring |")
    print("|---|---:|---:|")
    for name, (est, err, h) in summary.items():
        print(f"| {name} | {est:.2f} ± {err:.2f} | {h:.2f} |")


def _top_path_branches(path):
    """layer → branch of the top path's step right after that layer's input tap."""
    out = {}
    steps = path.steps
    for a, b in zip(steps, steps[1:]):
        if a.primitive == "name" and "layer/" in a.path and b.path:
            layer = a.path.split("layer/")[1].split("/")[0]
            br = hf_bert.classify_consumer(f"{b.path} [{b.primitive}]", f"encoder/layer/{layer}")
            out.setdefault(layer, br or b.primitive)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--sentence", default=SENTENCES[0])
    args = ap.parse_args()
    model, tok = load_minilm()
    vec = jax.random.normal(jax.random.PRNGKey(0), (model.config.hidden_size,))
    granularity_table(model, tok, vec, SENTENCES)
    sampled_table(model, tok, vec, args.sentence, args.samples)


if __name__ == "__main__":
    main()
