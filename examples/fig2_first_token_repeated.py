"""Paper Fig. 2 (§5.1): max-product gradient flow through skip / queries / keys / values.

A 1-layer Transformer (hidden 16, 2 heads) is trained on ``FirstTokenRepeatedOnce`` (is the
first token repeated somewhere in the sequence?; paper: 10 000 examples, sequence length 10,
vocabulary 20) until validation accuracy reaches 100 % (or ``--epochs`` run out; the reached
accuracy is printed either way). Then, for every validation example, the MaxProduct semiring
gradient of the target (default: the predicted class's logit; ``--target diff``: logit of the
true class minus the other logit) is taken with respect to the input embeddings, with a tap
(:func:`jaxpr_semiring.tap_modules`) on the input of ``layer_0`` -- the branching point where the
hidden state goes into the skip connection (``layer_0/skip``) and into the queries, keys and
values (``layer_0/attention/{query,key,value}``). The per-consumer flows of that tap give, per
token position × branch, the most positive path product (``top_pos``) ⊕-aggregated over the
hidden dimensions with ``S.sum`` (max; paper Eq. 3). A branch with no path to the target (0̄,
e.g. the skip connection and the queries of every token but the first, which the classifier
reads) counts as 0. Everything is batched with ``jax.jit`` + ``jax.vmap`` over the validation
set.

Positions are grouped into *first token* / *repeat token* (the position repeating the first
token; only positive examples have one) / *other tokens* (:func:`token_groups`), values are
averaged per group × branch, printed as a table and drawn as a grouped bar chart like Fig. 2.
Finally the paper's three qualitative expectations are checked and reported (not enforced):

1. the first token's flow is highest through the queries (among queries / keys / values; its
   relation to the skip connection is reported separately);
2. other tokens' flow is highest through the keys;
3. the repeat token's key flow is the highest key flow of all groups.

Usage::

    python examples/fig2_first_token_repeated.py --out fig2.png
    python examples/fig2_first_token_repeated.py --quick --out /tmp/fig2.png
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jaxpr_semiring.models import hf_bert

BRANCHES = ("skip", "query", "key", "value")
BRANCH_LABELS = {"skip": "skip connection", "query": "queries", "key": "keys", "value": "values"}
# consumer module path (relative to the layer) -> branch
_BRANCH_OF = {
    "skip": "skip",
    "attention/query": "query",
    "attention/key": "key",
    "attention/value": "value",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n-train", type=int, default=8000, help="training examples (default 8000)")
    p.add_argument(
        "--n-val",
        type=int,
        default=2000,
        help="validation examples, also the analysed set (default 2000)",
    )
    p.add_argument("--seq-len", type=int, default=10, help="sequence length (paper: 10)")
    p.add_argument("--vocab", type=int, default=20, help="vocabulary size (paper: 20)")
    p.add_argument("--layers", type=int, default=1, help="encoder layers (paper: 1)")
    p.add_argument("--hidden", type=int, default=16, help="model width (paper: 16)")
    p.add_argument("--heads", type=int, default=2, help="attention heads (paper: 2)")
    p.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="maximum training epochs (early stop at 100%% val. accuracy)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=64, help="training minibatch size")
    p.add_argument("--seed", type=int, default=0, help="data / init / shuffling seed")
    p.add_argument(
        "--target",
        choices=("pred", "diff"),
        default="pred",
        help="'pred': logit of the predicted class; 'diff': logit(true) - logit(other)",
    )
    p.add_argument(
        "--eval-batch",
        type=int,
        default=500,
        help="validation examples per jit+vmap semiring-gradient call",
    )
    p.add_argument("--out", default="fig2_first_token_repeated.png", help="output PNG path")
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced configuration (tiny data, few epochs) for smoke tests",
    )
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    return p.parse_args(argv)


def classify_consumer(label: str, layer: str = "layer_0") -> str | None:
    """Branch (skip/query/key/value) of a consumer label of the tap at ``layer``'s input."""
    return hf_bert.classify_consumer(label, layer, _BRANCH_OF)


def branch_flow_fn(model, params, target: str = "pred"):
    """``fn(tokens int[S], label) -> (flows float[S, 4], logits [C])`` for one example:
    max-product ``top_pos`` per position × branch at ``layer_0``'s input (0̄ → 0)."""
    import jax
    import jax.numpy as jnp

    import jaxpr_semiring as js
    from jaxpr_semiring.paper.transformer import TransformerClassifier

    S = js.MaxProduct()

    def fn(tokens, label):
        h0 = model.apply(params, tokens, method=TransformerClassifier.embed)
        logits = model.apply(params, h0, method=TransformerClassifier.encode_from_embeddings)
        pred = jnp.argmax(logits)

        def f(h):
            with js.tap_modules("layer_0"):
                lg = model.apply(params, h, method=TransformerClassifier.encode_from_embeddings)
            if target == "pred":
                return lg[pred]
            return lg[label] - lg[1 - label]

        _, report = js.flows(f, S)(h0)
        tf = report["layer_0:input"]
        by_branch: dict = {}
        for lab, v in tf.consumers.items():
            b = classify_consumer(lab)
            if b is None:
                raise RuntimeError(f"unexpected consumer of the layer_0 input: {lab!r}")
            by_branch[b] = v if b not in by_branch else S.add(by_branch[b], v)
        cols = []
        for b in BRANCHES:
            if b in by_branch:
                top = S.sum(by_branch[b], axes=-1).top_pos  # ⊕ over hidden dims: [S]
                cols.append(jnp.where(jnp.isfinite(top), top, 0.0))
            else:
                cols.append(jnp.zeros(tokens.shape[-1], h0.dtype))
        return jnp.stack(cols, axis=-1), logits

    return jax.jit(jax.vmap(fn))


def group_means(
    flows: np.ndarray, groups: np.ndarray, n_groups: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``flows [n, S, B]`` per group id ``groups [n, S]`` → ``([G, B], counts [G])``."""
    means = np.full((n_groups, flows.shape[-1]), np.nan)
    counts = np.zeros(n_groups, dtype=int)
    for g in range(n_groups):
        sel = groups == g
        counts[g] = int(sel.sum())
        if counts[g]:
            means[g] = flows[sel].mean(axis=0)
    return means, counts


def format_table(means: np.ndarray, counts: np.ndarray, group_names) -> str:
    head = f"{'group':<14s} {'n':>6s} " + " ".join(f"{BRANCH_LABELS[b]:>16s}" for b in BRANCHES)
    lines = [head, "-" * len(head)]
    for g, name in enumerate(group_names):
        vals = " ".join(f"{v:>16.4f}" for v in means[g])
        lines.append(f"{name:<14s} {counts[g]:>6d} {vals}")
    return "\n".join(lines)


def check_expectations(means: np.ndarray) -> list[tuple[str, bool, str]]:
    """The paper's three expectations → ``[(statement, holds, detail)]``."""
    from jaxpr_semiring.paper.synthetic import FIRST_TOKEN, OTHER_TOKEN, REPEAT_TOKEN

    bi = {b: i for i, b in enumerate(BRANCHES)}
    attn = ("query", "key", "value")
    out = []
    first = means[FIRST_TOKEN]
    best = max(attn, key=lambda b: first[bi[b]])
    skip_cmp = "above" if first[bi["skip"]] > first[bi["query"]] else "below"
    out.append(
        (
            "(1) first token: highest flow through the queries (among q/k/v)",
            best == "query",
            f"argmax over q/k/v = {BRANCH_LABELS[best]}; queries {first[bi['query']]:.4f}, "
            f"skip {first[bi['skip']]:.4f} ({skip_cmp} queries; highest over all 4 "
            f"branches: {BRANCH_LABELS[BRANCHES[int(np.argmax(first))]]})",
        )
    )
    other = means[OTHER_TOKEN]
    best_o = BRANCHES[int(np.argmax(other))]
    out.append(
        (
            "(2) other tokens: highest flow through the keys",
            best_o == "key",
            f"argmax = {BRANCH_LABELS[best_o]} ("
            + ", ".join(f"{b} {other[bi[b]]:.4f}" for b in BRANCHES)
            + ")",
        )
    )
    keys = means[:, bi["key"]]
    finite = np.where(np.isnan(keys), -np.inf, keys)
    top_g = int(np.argmax(finite))
    holds = top_g == REPEAT_TOKEN and not np.isnan(keys[REPEAT_TOKEN])
    out.append(
        (
            "(3) repeat token: highest key flow of all groups",
            bool(holds),
            "key flows: first {:.4f}, repeat {:.4f}, other {:.4f}".format(*keys),
        )
    )
    return out


def plot(means: np.ndarray, group_names, out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    n_b = len(BRANCHES)
    width = 0.8 / n_b
    x = np.arange(len(group_names))
    for j, b in enumerate(BRANCHES):
        ax.bar(
            x + (j - (n_b - 1) / 2) * width,
            np.nan_to_num(means[:, j]),
            width,
            label=BRANCH_LABELS[b],
        )
    ax.set_xticks(x)
    ax.set_xticklabels(group_names)
    ax.set_ylabel("mean max-product gradient (top_pos)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.epochs = (
            min(args.n_train, 256),
            min(args.n_val, 64),
            min(args.epochs, 2),
        )
        args.eval_batch = min(args.eval_batch, 64)
    t0 = time.time()

    import jax.numpy as jnp

    from jaxpr_semiring.paper.synthetic import (
        TOKEN_GROUP_NAMES,
        FirstTokenRepeatedOnce,
        token_groups,
    )
    from jaxpr_semiring.paper.training import train_on_task

    task = FirstTokenRepeatedOnce(seq_len=args.seq_len, vocab_size=args.vocab)
    run = train_on_task(
        task,
        n_train=args.n_train,
        n_val=args.n_val,
        data_seed=args.seed,
        model_kwargs=dict(num_layers=args.layers, hidden=args.hidden, heads=args.heads),
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        target_val_acc=1.0,
        seed=args.seed,
        progress=not args.no_progress,
    )
    h = run.history
    t_train = time.time() - t0
    print(
        f"FirstTokenRepeatedOnce: n_train={args.n_train} n_val={args.n_val} "
        f"seq_len={args.seq_len} vocab={args.vocab}; model layers={args.layers} "
        f"hidden={args.hidden} heads={args.heads}"
    )
    print(
        f"training: {len(h.epoch)} epoch(s), best validation accuracy "
        f"{h.best_val_acc * 100:.2f} % at epoch {h.best_epoch}"
        f"{'' if h.best_val_acc >= 1.0 else ' (target 100 % NOT reached)'}; "
        f"{t_train:.1f} s"
    )

    x_val, y_val = run.val
    fn = branch_flow_fn(run.model, run.params, args.target)
    flows, logits = [], []
    for s in range(0, len(y_val), args.eval_batch):
        fl, lg = fn(
            jnp.asarray(x_val[s : s + args.eval_batch]), jnp.asarray(y_val[s : s + args.eval_batch])
        )
        flows.append(np.asarray(fl))
        logits.append(np.asarray(lg))
    flows = np.concatenate(flows)  # [n, S, 4]
    acc = float((np.concatenate(logits).argmax(-1) == y_val).mean())
    groups = token_groups(x_val)
    means, counts = group_means(flows, groups, len(TOKEN_GROUP_NAMES))
    t_flow = time.time() - t0 - t_train

    target_desc = (
        "logit of the predicted class" if args.target == "pred" else "logit(true) - logit(other)"
    )
    print(
        f"\nmax-product flow at the layer_0 input (target: {target_desc}; top_pos, max over "
        f"hidden dims, mean over positions in each group; validation accuracy "
        f"{acc * 100:.2f} %; {t_flow:.1f} s)"
    )
    table = format_table(means, counts, TOKEN_GROUP_NAMES)
    print(table)

    verdicts = check_expectations(means)
    print("\npaper expectations:")
    for stmt, holds, detail in verdicts:
        print(f"  {stmt}: {'HOLDS' if holds else 'does NOT hold'} -- {detail}")

    plot(
        means,
        TOKEN_GROUP_NAMES,
        args.out,
        f"FirstTokenRepeatedOnce, {args.layers}-layer Transformer (val acc {acc * 100:.1f} %)",
    )
    print(f"\nwrote {args.out}  (total {time.time() - t0:.1f} s)")
    return {
        "means": means,
        "counts": counts,
        "val_acc": acc,
        "history": h.as_dict(),
        "verdicts": verdicts,
        "table": table,
        "out": args.out,
    }


if __name__ == "__main__":
    main()
