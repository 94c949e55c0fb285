"""Paper Fig. 4 (§5.2): top gradient path (max-product) of BERT on subject–verb agreement.

For each sentence the scalar target is the SVA target of an
:class:`jaxpr_semiring.paper.sva_models.SVAModel` (``logit(correct) − logit(wrong)`` at
``[MASK]`` for a masked LM; the logit of the correct number for the MiniLM verb-number head).
:func:`jaxpr_semiring.models.hf_bert.branch_flows_fn` gives, per layer × token × branch (skip,
queries, keys, values), the max-product value (``top_pos``: the most positive path product)
arriving at the layer input through that branch, ⊕-aggregated (max) over hidden dims (a branch
with no path to the target, 0̄, counts as 0: e.g. the last layer's skip connection of every
token but ``[MASK]``). These are
averaged over sentences for (a) the subject, (b) the attractors (nouns of the opposite number
preceding the verb) and (c) all tokens, and plotted as three panels of lines (one per branch)
over layers, like Fig. 4. Also printed: the share of the subject's last-layer flow through the
keys among the self-attention branches (paper: 76 %). Batched with ``jax.jit`` + ``jax.vmap``.

Models (``--model``): ``minilm`` (default; pretrained MiniLM-L6-H384 encoder + verb-number
head fitted on generated sentences), ``small-mlm`` (a small BERT MLM trained from scratch on
generated sentences), or a path to a local HF ``FlaxBertForMaskedLM`` checkpoint directory.
Sentences come from :func:`jaxpr_semiring.paper.sva.generate` (1–4 attractors), whose subject
and attractor positions are known by construction.

Usage::

    python examples/fig4_sva.py --out fig4.png [--n 200] [--model small-mlm]
    python examples/fig4_sva.py --quick --out /tmp/fig4.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

BRANCH_LABELS = {"skip": "skip connection", "query": "queries", "key": "keys", "value": "values"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig4_sva.png")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--model",
        default="minilm",
        help="'minilm', 'small-mlm' or a local FlaxBertForMaskedLM directory",
    )
    p.add_argument("--n", type=int, default=200, help="number of sentences")
    p.add_argument("--batch", type=int, default=8, help="sentences per vmapped batch")
    p.add_argument("--head-train", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--correct-only", action="store_true", help="keep only sentences the model gets right"
    )
    return p.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = parse_args(argv)
    if args.quick:
        args.n, args.head_train, args.batch = 8, 64, 4

    import jax
    from tqdm.auto import tqdm

    from jaxpr_semiring.models.hf_bert import BRANCHES, branch_flows_fn
    from jaxpr_semiring.semirings import MaxProduct
    from jaxpr_semiring.paper import sva
    from jaxpr_semiring.paper.batching import map_batches
    from jaxpr_semiring.paper.sva_models import load_sva_model

    t0 = time.time()
    model, tok, rep = load_sva_model(
        args.model,
        head_train=args.head_train,
        head_steps=50 if args.quick else 300,
        mlm_epochs=1 if args.quick else 30,
        seed=args.seed,
    )
    if rep is not None:
        print(
            f"model {args.model}: held-out agreement accuracy {rep.heldout_accuracy:.3f} "
            f"[{time.time() - t0:.0f} s]"
        )
    items = sva.tokenize(
        tok, sva.generate(args.n, seed=args.seed + 3, min_attractors=1, max_attractors=4)
    )
    batch = sva.collate(items, pad_to=max(t.length for t in items))
    if hasattr(model, "register_batch"):
        model.register_batch(batch)
    targets = model.batch_targets(batch)
    print(f"{len(batch)} sentences, agreement accuracy {np.mean(targets > 0):.3f}")
    if args.correct_only:
        batch = batch.select(targets > 0)

    fn = branch_flows_fn(model.encoder, target=model.target_from_outputs, semiring=MaxProduct())

    def one(params, ids, am, mpos, good, bad):
        return fn(params, ids, mpos, good, bad, attention_mask=am).flows.top_pos  # [L, S, 4]

    batched = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0)))
    bar = tqdm(total=-(-len(batch) // args.batch), desc="branch flows", leave=False)

    def chunk_flows(*chunk):
        bar.update()
        return batched(model.params, *chunk)

    flows = map_batches(chunk_flows, batch.target_args(), args.batch)  # [n, layers, S, 4]
    bar.close()
    # 0̄ = -inf: no path through this branch reaches the target (e.g. a non-mask token's skip
    # connection in the last layer) -- zero gradient flow
    flows = np.where(np.isneginf(flows), 0.0, flows)
    n_layers = flows.shape[1]

    groups = {}
    for name in ("subject", "attractors", "tokens"):
        mask = batch.position_mask(name)  # [n, S]
        v = np.where(mask[:, None, :, None], flows, np.nan)
        # mean over the group's tokens within a sentence, then over sentences
        with warnings.catch_warnings():  # sentences without the group: all-NaN slices
            warnings.simplefilter("ignore", RuntimeWarning)
            per_sentence = np.nanmean(v, axis=2)  # [n, layers, 4]
            groups[name] = np.nanmean(per_sentence, axis=0)  # [layers, 4]

    res = {
        "model": args.model,
        "n_sentences": int(len(batch)),
        "branches": list(BRANCHES),
        "groups": {k: v.tolist() for k, v in groups.items()},
    }
    ki, qi, vi = BRANCHES.index("key"), BRANCHES.index("query"), BRANCHES.index("value")
    print(f"{'group':10s} {'layer':>5s} " + " ".join(f"{b:>10s}" for b in BRANCHES))
    for name, g in groups.items():
        for layer in range(n_layers):
            print(f"{name:10s} {layer:5d} " + " ".join(f"{x:10.4g}" for x in g[layer]))
    for name in ("subject", "attractors", "tokens"):
        last = groups[name][-1]
        attn = last[qi] + last[ki] + last[vi]
        share = float(last[ki] / attn) if attn > 0 else float("nan")
        res[f"{name}_last_layer_key_share"] = share
        top = BRANCHES[int(np.nanargmax(last))]
        print(f"{name}: last-layer share of keys among q/k/v = {share:.1%} (top branch: {top})")
    res["runtime_s"] = time.time() - t0

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    layers = np.arange(1, n_layers + 1)
    for ax, (name, title) in zip(
        axes,
        (
            ("attractors", "(b) attractors"),
            ("subject", "(a) subject"),
            ("tokens", "(c) all tokens"),
        ),
    ):
        for j, b in enumerate(BRANCHES):
            ax.plot(layers, groups[name][:, j], marker="o", label=BRANCH_LABELS[b])
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
    axes[0].set_ylabel("max-product value (top_pos)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(
        f"Top gradient path through BERT branches on SVA ({args.model}, {len(batch)} sentences)"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}; total {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh)
    return res


if __name__ == "__main__":
    main()
