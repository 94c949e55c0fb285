"""Top gradient path (max-product semiring) per time step of a small Flax LSTM language model.

A 2-layer ``nn.RNN(nn.LSTMCell)`` LM (random weights) reads a sequence of token embeddings; we
explain the logit of the next-token prediction at the last step. ``semiring_grad`` with
``MaxProduct`` gives, for every input element, the most positive and most negative product of
local derivatives along any path to that logit (the scan over time is differentiated as a reverse
scan, not unrolled); ``S.sum`` over the hidden axis aggregates a time step (paper Eq. 3).

    python examples/lstm_top_paths.py --steps 8 --hidden 16
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxpr_semiring as js


class LSTMLM(nn.Module):
    vocab: int
    hidden: int
    layers: int = 2

    @nn.compact
    def __call__(self, emb):
        h = emb
        for i in range(self.layers):
            h = nn.RNN(nn.LSTMCell(self.hidden), name=f"lstm{i}")(h)
        return nn.Dense(self.vocab, name="head")(h)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=8, help="sequence length")
    p.add_argument("--hidden", type=int, default=16, help="LSTM width (= embedding width)")
    p.add_argument("--vocab", type=int, default=20)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    key = jax.random.PRNGKey(args.seed)
    k_emb, k_tok, k_init = jax.random.split(key, 3)
    table = jax.random.normal(k_emb, (args.vocab, args.hidden)) * 0.5
    tokens = jax.random.randint(k_tok, (args.steps,), 0, args.vocab)
    emb = table[tokens][None]  # [1, T, H]
    model = LSTMLM(args.vocab, args.hidden, args.layers)
    params = model.init(k_init, emb)
    target = int(jnp.argmax(model.apply(params, emb)[0, -1]))

    def logit(emb):
        return model.apply(params, emb)[0, -1, target]

    S = js.MaxProduct()
    t0 = time.time()
    g = jax.jit(js.semiring_grad(logit, S))(emb)  # per element: MaxProductValue
    per_step = S.sum(g, axes=(0, 2))  # ⊕ over batch and hidden dims
    jax.block_until_ready(per_step)
    real = jax.grad(logit)(emb)
    print(
        f"LSTM LM: {args.layers} layers, hidden {args.hidden}, {args.steps} steps; "
        f"explaining logit of token {target} ({time.time() - t0:.2f}s incl. compile)"
    )
    print(f"{'step':>4} {'token':>5} {'top_pos':>12} {'top_neg':>12} {'|grad|_1':>10}")
    for t in range(args.steps):
        print(
            f"{t:>4} {int(tokens[t]):>5} {float(per_step.top_pos[t]):>12.4e} "
            f"{float(per_step.top_neg[t]):>12.4e} {float(jnp.abs(real[0, t]).sum()):>10.4f}"
        )
    best = int(np.argmax(np.maximum(np.asarray(per_step.top_pos), -np.asarray(per_step.top_neg))))
    print(f"time step holding the strongest single path: {best}")


if __name__ == "__main__":
    main()
