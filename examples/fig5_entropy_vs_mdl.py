"""Paper Fig. 5 (§5.3): gradient-graph entropy vs. task difficulty (online MDL).

For each synthetic task of App. C (ContainsTokenSet variants, Contains1, AdjacentDuplicate,
FirstTokenRepeatedImmediately, FirstTokenRepeatedLast, BinCountOnes with every C dividing S)
and each seed:

1. MDL: prequential code length of the task's training labels
   (:func:`jaxpr_semiring.paper.mdl.online_codelength`, Voita & Titov blocks, a fresh model
   per block, first block coded uniformly with the task's true number of classes);
2. a model trained on the full training set (2-layer Transformer, hidden 64, 4 heads, 36 output
   classes -- paper §5.3); runs with validation accuracy <= 90 % are dropped (paper);
3. mean path entropy: ``semiring_grad`` with :class:`jaxpr_semiring.Entropy` of the logit of
   the predicted (``--target pred``, default) or true class w.r.t. the input embeddings,
   ⊕-aggregated over hidden dims per position (``S.sum(value, axes=-1)``, paper Eq. 3), then
   averaged over positions and examples (``jax.jit`` + ``jax.vmap`` over examples).

Writes a scatter plot (x: MDL in kbits, y: mean entropy; marker ``x`` for BinCountOnes, ``o``
for the binary tasks; hue = number of classes) and prints a table (and ``--json``).

CPU defaults (documented deviation from the paper): sequence length **12** (paper: 36, pass
``--seq-len 36``; on 2 CPU cores a 2-layer step at S=36 costs ~0.1 s and one task × seed, MDL
included, ~2–4 min), 1000 training / 200 validation examples per task, 3 seeds, at most 30 epochs
(paper: 50; early stop at 100 % validation accuracy), BinCountOnes for every C dividing S,
entropy on 100 validation examples. ``--quick`` (CI smoke test): 2 tasks, 1 seed, tiny data.

Usage::

    python examples/fig5_entropy_vs_mdl.py --out fig5.png [--json fig5.json]
    python examples/fig5_entropy_vs_mdl.py --quick --out /tmp/fig5.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny run for CI (seconds)")
    p.add_argument("--out", default="fig5_entropy_vs_mdl.png", help="output PNG")
    p.add_argument("--json", default=None, help="also write the results table as JSON")
    p.add_argument("--seq-len", type=int, default=12, help="sequence length S (paper: 36)")
    p.add_argument("--vocab-size", type=int, default=20)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3, help="model seeds per task")
    p.add_argument("--max-epochs", type=int, default=30, help="paper: 50 epochs")
    p.add_argument(
        "--mdl-min-steps", type=int, default=100, help="minimum Adam steps per MDL block model"
    )
    p.add_argument(
        "--n-entropy", type=int, default=100, help="validation examples for the mean entropy"
    )
    p.add_argument(
        "--target",
        choices=("pred", "true"),
        default="pred",
        help="explain the logit of the predicted or the true class",
    )
    p.add_argument(
        "--min-val-acc",
        type=float,
        default=0.9,
        help="drop runs with validation accuracy <= this (paper: 90 %%)",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated BinCountOnes class counts (default: all C | S)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def build_tasks(seq_len, vocab_size, classes=None, quick=False):
    from jaxpr_semiring.paper.synthetic import (
        AdjacentDuplicate,
        BinCountOnes,
        Contains1,
        ContainsTokenSet,
        FirstTokenRepeatedImmediately,
        FirstTokenRepeatedLast,
    )

    kw = dict(seq_len=seq_len, vocab_size=vocab_size)
    if quick:
        return [Contains1(**kw), BinCountOnes(num_classes=3, **kw)]
    tasks = [ContainsTokenSet(token_set=ts, **kw) for ts in ((1, 2), (1, 2, 3), (1, 2, 3, 4))]
    tasks += [
        Contains1(**kw),
        AdjacentDuplicate(**kw),
        FirstTokenRepeatedImmediately(**kw),
        FirstTokenRepeatedLast(**kw),
    ]
    cs = (
        [int(c) for c in classes.split(",")]
        if classes
        else [c for c in range(2, seq_len + 1) if seq_len % c == 0]
    )
    tasks += [BinCountOnes(num_classes=c, **kw) for c in cs]
    return tasks


def task_label(task):
    if task.name == "BinCountOnes":
        return f"BinCountOnes(C={task.num_classes})"
    if task.name == "ContainsTokenSet":
        return f"ContainsTokenSet{set(task.token_set)}"
    return task.name


def make_entropy_fn(model):
    """jit(vmap(...)): per example, the per-position path entropy [S] of the logit of class
    ``cls`` w.r.t. the input embeddings (⊕ over hidden dims, paper Eq. 3)."""
    import jax

    import jaxpr_semiring as js
    from jaxpr_semiring.paper.transformer import embed_tokens, logits_from_embeddings_fn

    S = js.Entropy()

    def one(params, tokens, cls):
        h0 = embed_tokens(model, params, tokens)
        f = lambda h: logits_from_embeddings_fn(model, params)(h)[cls]  # noqa: E731
        e = js.semiring_grad(f, S)(h0)  # EntropyValue, fields [S, hidden]
        return S.sum(e, axes=-1).entropy  # [S]

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def run(args):
    import jax.numpy as jnp

    from jaxpr_semiring.paper.transformer import model_for_task
    from jaxpr_semiring.paper.mdl import online_codelength
    from jaxpr_semiring.paper.training import train_classifier, train_val_split

    tasks = build_tasks(args.seq_len, args.vocab_size, args.classes, args.quick)
    rows = []
    entropy_fns = {}
    t_start = time.time()
    for task in tasks:
        tokens, labels = task.generate(args.n_train + args.n_val, seed=0)
        train, val = train_val_split(tokens, labels, args.n_val)
        model = model_for_task(task, num_layers=2, hidden=64, heads=4, num_classes=36)
        for seed in range(args.seeds):
            t0 = time.time()
            mdl = online_codelength(
                train[0],
                train[1],
                task.num_classes,
                model=model,
                max_epochs=args.max_epochs,
                min_steps=args.mdl_min_steps,
                seed=seed,
            )
            params, hist = train_classifier(
                model, train, val, max_epochs=args.max_epochs, seed=seed, progress=False
            )
            if model not in entropy_fns:
                entropy_fns[model] = make_entropy_fn(model)
            xe = val[0][: args.n_entropy]
            logits = np.asarray(model.apply(params, jnp.asarray(xe)))
            cls = logits.argmax(-1) if args.target == "pred" else val[1][: args.n_entropy]
            ent = np.asarray(
                entropy_fns[model](params, jnp.asarray(xe), jnp.asarray(cls, jnp.int32))
            )
            if not np.all(np.isfinite(ent)):
                print(
                    f"WARNING: non-finite entropies for {task_label(task)} seed {seed}",
                    file=sys.stderr,
                )
            row = dict(
                task=task_label(task),
                family=task.name,
                num_classes=task.num_classes,
                seed=seed,
                val_acc=float(hist.best_val_acc),
                mdl_bits=mdl.codelength,
                uniform_bits=mdl.uniform_codelength,
                compression=mdl.compression,
                entropy=float(np.nanmean(ent)),
                kept=bool(hist.best_val_acc > args.min_val_acc),
                seconds=round(time.time() - t0, 1),
            )
            rows.append(row)
            if not args.no_progress:
                print(
                    f"{row['task']:32s} seed={seed} val_acc={row['val_acc']:.3f} "
                    f"MDL={row['mdl_bits']:9.1f} bits (x{row['compression']:.2f}) "
                    f"H={row['entropy']:.4f} {'kept' if row['kept'] else 'DROPPED'} "
                    f"[{row['seconds']} s]",
                    flush=True,
                )
    return rows, time.time() - t_start


def summarize(rows):
    lines = [
        f"{'task':32s} {'C':>3s} {'seeds':>5s} {'val_acc':>8s} {'MDL bits':>10s} "
        f"{'compr.':>7s} {'entropy':>8s}"
    ]
    for name in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == name and r["kept"]]
        if not rs:
            lines.append(f"{name:32s} (all runs dropped: val acc <= threshold)")
            continue
        m = lambda k: np.mean([r[k] for r in rs])  # noqa: E731
        lines.append(
            f"{name:32s} {rs[0]['num_classes']:3d} {len(rs):5d} {m('val_acc'):8.3f} "
            f"{m('mdl_bits'):10.1f} {m('compression'):7.2f} {m('entropy'):8.4f}"
        )
    kept = [r for r in rows if r["kept"]]
    stats = {}
    if len(kept) >= 3:
        from scipy.stats import spearmanr

        for fam, sel in (
            ("all", kept),
            ("binary", [r for r in kept if r["num_classes"] == 2]),
            ("BinCountOnes", [r for r in kept if r["family"] == "BinCountOnes"]),
        ):
            if len(sel) >= 3:
                rho, p = spearmanr([r["mdl_bits"] for r in sel], [r["entropy"] for r in sel])
                stats[fam] = (float(rho), float(p), len(sel))
                lines.append(
                    f"Spearman(MDL, entropy) {fam:13s}: rho={rho:+.3f} p={p:.3g} (n={len(sel)})"
                )
    return "\n".join(lines), stats


def plot(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis_r")
    cmax = max([r["num_classes"] for r in rows] + [2])
    norm = matplotlib.colors.LogNorm(vmin=2, vmax=max(cmax, 3))
    for r in rows:
        marker = "x" if r["family"] == "BinCountOnes" else "o"
        color = cmap(norm(r["num_classes"]))
        if r["kept"]:
            ax.scatter(r["mdl_bits"] / 1000, r["entropy"], marker=marker, color=color, s=36)
        else:  # dropped runs: faint
            ax.scatter(r["mdl_bits"] / 1000, r["entropy"], marker=marker, color="0.8", s=20)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="number of classes")
    ax.scatter([], [], marker="x", color="k", label="BinCountOnes")
    ax.scatter([], [], marker="o", color="k", label="other tasks")
    ax.scatter([], [], marker="o", color="0.8", label="dropped (val acc ≤ 90 %)")
    ax.legend(fontsize=8)
    ax.set_xlabel("online MDL (kbits)")
    ax.set_ylabel("mean path entropy of input embeddings")
    ax.set_title("Gradient-graph entropy vs. task difficulty (Fig. 5)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.seq_len, args.vocab_size = 12, 10
        args.n_train, args.n_val, args.seeds = 200, 64, 1
        args.max_epochs, args.mdl_min_steps, args.n_entropy = 3, 10, 8
    rows, secs = run(args)
    table, stats = summarize(rows)
    print(table)
    print(f"total runtime: {secs:.0f} s")
    plot(rows, args.out)
    print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "rows": rows, "spearman": stats, "runtime_s": secs},
                fh,
                indent=1,
            )
    return rows


if __name__ == "__main__":
    main()
