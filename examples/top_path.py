"""The top gradient path through the pretrained MiniLM encoder, with module names.

    python examples/top_path.py [--sentence "..."] [--chain top_pos|top_neg]

Starts at the input-embedding element with the largest max-product value for a scalar target
(mean-pooled sentence embedding · fixed vector) and prints every edge of the path to the output:
primitive, Flax module path, element index, edge weight and running product. The path comes from
one jitted MaxProduct backward pass and a forward walk that takes, at each element, the edge
whose weight times the best product beyond it is largest.
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxpr_semiring as js  # noqa: E402
from jaxpr_semiring.models import hf_bert  # noqa: E402

from bert_branch_flows import load_minilm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentence", default="The keys are on the table.")
    ap.add_argument("--chain", default="top_pos", choices=["top_pos", "top_neg"])
    args = ap.parse_args()
    model, tok = load_minilm()
    enc = tok.encode(args.sentence)
    ids = jnp.array(enc.ids)
    vec = jax.random.normal(jax.random.PRNGKey(0), (model.config.hidden_size,))
    emb = hf_bert.word_embedding_table(model.params)[ids]

    def f(e):
        with hf_bert.word_embeddings_replaced_by(e[None]):
            out = model(ids[None])
        return jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), vec)

    t0 = time.perf_counter()
    path = jax.jit(js.top_path(f, chain=args.chain))(emb)
    jax.block_until_ready(path.ids)
    took = time.perf_counter() - t0
    tokpos = path.start["index"][0]
    print(
        f"sentence {args.sentence!r}; path starts at token {enc.tokens[tokpos]!r} "
        f"(position {tokpos}), hidden dim {path.start['index'][1]}"
    )
    print(path)
    print(
        f"\nproduct of edge weights {path.product:.6g} vs max-product value {path.value:.6g} "
        f"({took:.1f} s including compilation)"
    )


if __name__ == "__main__":
    main()
