"""Paper Fig. 6 and App. B: entropy sanity checks, and entropy vs. number of attractors.

(a) Entropy vs. sentence length on the pretrained MiniLM-L6-H384 encoder (with the
    verb-number head of :mod:`jaxpr_semiring.paper.sva_models`; the target is the logit of the
    correct verb number at ``[MASK]``). Reported per sentence: the entropy of *all* paths from
    the input word embeddings (⊕ over tokens and hidden dims) and the mean per-token entropy
    (⊕ over hidden dims, averaged over tokens). Expectation (paper): both grow with length.
(b) App. B.1: 4 features uniform in [0, 1], label = [x_0 > 0.5]. MLPs (``--mlp-layers`` hidden
    ReLU layers of width h, 2 output logits) are trained for each hidden size h; the path
    entropy of the predicted-class logit w.r.t. each input feature is averaged over test
    examples: the relevant feature x_0 vs. the mean of the irrelevant x_1..x_3. Expectation
    (paper): entropy grows with h, and is higher for the relevant feature.
(c) App. B.2: sentences with 1–4 attractors (balanced); mean per-token entropy of the input
    representations vs. number of attractors, binned by token length; Spearman correlation per
    bin (scipy). Expectation (paper): little to no correlation.

All entropies use ``semiring_grad(..., js.Entropy())`` under ``jax.jit`` + ``jax.vmap``;
sentences are padded to one length with an attention mask (padding keys get exactly zero
attention, so they add only zero-weight paths and change no entropy).

By default (a) and (c) use generated sentences (:func:`jaxpr_semiring.paper.sva.generate`);
``--tsv PATH`` uses the Linzen et al. / Goldberg TSV for (c) instead (paper bins 10–20, 20–30,
30–40, 40–50 tokens). ``--checkpoint DIR`` explains a local BERT masked LM instead of MiniLM.

Usage::

    python examples/fig6_entropy_sanity.py --out fig6.png
    python examples/fig6_entropy_sanity.py --quick --out /tmp/fig6.png
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny run for CI")
    p.add_argument("--out", default="fig6_entropy_sanity.png")
    p.add_argument("--json", default=None)
    p.add_argument("--parts", default="abc", help="which panels to compute (subset of 'abc')")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="local HF BERT masked-LM directory (default: MiniLM + verb head)",
    )
    p.add_argument("--tsv", default=None, help="Linzen/Goldberg TSV for panel (c)")
    p.add_argument("--head-train", type=int, default=2000, help="sentences to fit the head")
    p.add_argument("--n-length", type=int, default=120, help="sentences for panel (a)")
    p.add_argument("--n-attractors", type=int, default=400, help="sentences for panel (c)")
    p.add_argument(
        "--bins",
        default=None,
        help="token-length bin edges for (c), e.g. 10,15,20,25,30 (generated data "
        "default) or 10,20,30,40,50 (paper / TSV default)",
    )
    p.add_argument("--hidden-sizes", default="2,4,8,16,32,64,128")
    p.add_argument("--mlp-layers", type=int, default=2)
    p.add_argument("--mlp-seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="sentences per vmapped batch")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
# BERT sentence entropies
# ------------------------------------------------------------------------------------------


def sentence_entropy_fn(model):
    """jit(vmap(...)) over sentences -> (per-token entropy [L], whole-input entropy [])."""
    import jax

    import jaxpr_semiring as js

    S = js.Entropy()

    def one(params, ids, am, mpos, good, bad):
        emb = model.word_embeddings(params, ids)
        f = lambda e: model.target_from_embeddings(params, e, ids, am, mpos, good, bad)  # noqa
        g = js.semiring_grad(f, S)(emb)  # [L, H]
        per_token = S.sum(g, axes=-1).entropy  # ⊕ over hidden dims
        keep = am.astype(bool)[:, None]  # only real tokens
        masked = js.EntropyValue(
            jax.numpy.where(keep, g.log_z, -jax.numpy.inf),
            jax.numpy.where(keep, g.mean_log_abs, 0.0),
        )
        whole = S.sum(masked, axes=(0, 1)).entropy  # ⊕ over tokens and hidden dims
        return per_token, whole

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0)))


def batch_entropies(model, fn, batch, bs):
    from jaxpr_semiring.paper.batching import map_batches

    per_tok, whole = map_batches(lambda *c: fn(model.params, *c), batch.target_args(), bs)
    am = batch.attention_mask.astype(bool)
    mean_tok = np.array([per_tok[i][am[i]].mean() for i in range(len(batch))])
    return mean_tok, whole


def data_a(args, tok):
    from jaxpr_semiring.paper import sva

    return sva.tokenize(tok, sva.generate(args.n_length, seed=args.seed + 1, max_attractors=4))


def part_a(args, model, items, fn, pad_to):
    from jaxpr_semiring.paper import sva

    batch = sva.collate(items, pad_to=pad_to)
    if hasattr(model, "register_batch"):
        model.register_batch(batch)
    mean_tok, whole = batch_entropies(model, fn, batch, args.batch)
    lengths = batch.lengths
    from scipy.stats import spearmanr

    r1 = spearmanr(lengths, whole)
    r2 = spearmanr(lengths, mean_tok)
    return dict(
        lengths=lengths.tolist(),
        whole=whole.tolist(),
        mean_token=mean_tok.tolist(),
        spearman_whole=(float(r1.statistic), float(r1.pvalue)),
        spearman_mean_token=(float(r2.statistic), float(r2.pvalue)),
    )


def data_c(args, tok):
    from jaxpr_semiring.paper import sva

    if args.tsv:
        exs = sva.load_tsv(args.tsv)
        rng = np.random.default_rng(args.seed)
        by = {k: [e for e in exs if e.n_attractors == k] for k in range(1, 5)}
        per = args.n_attractors // 4
        exs = [
            e
            for k in range(1, 5)
            for e in (
                list(np.array(by[k], dtype=object)[rng.permutation(len(by[k]))[:per]])
                if by[k]
                else []
            )
        ]
        bins = args.bins or "10,20,30,40,50"
    else:
        exs = sva.generate(
            args.n_attractors, seed=args.seed + 2, min_attractors=1, max_attractors=4
        )
        bins = args.bins or "10,15,20,25,30"
    edges = [int(b) for b in bins.split(",")]
    items = sva.tokenize(tok, exs)
    return [t for t in items if edges[0] <= t.length < edges[-1]], edges


def part_c(args, model, items, edges, fn, pad_to):
    from scipy.stats import spearmanr

    from jaxpr_semiring.paper import sva

    batch = sva.collate(items, pad_to=pad_to)
    if hasattr(model, "register_batch"):
        model.register_batch(batch)
    mean_tok, _ = batch_entropies(model, fn, batch, args.batch)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (batch.lengths >= lo) & (batch.lengths < hi)
        k = batch.n_attractors[sel]
        if sel.sum() >= 3 and len(np.unique(k)) > 1:
            r = spearmanr(k, mean_tok[sel])
            rho, p = float(r.statistic), float(r.pvalue)
        else:
            rho = p = float("nan")
        rows.append(dict(bin=f"{lo}-{hi}", n=int(sel.sum()), rho=rho, p=p))
    # stricter length control: within a length bin the number of attractors still correlates
    # with the exact length (each attractor adds >= 3 words); use exact-length groups and the
    # entropy residual after a linear fit on length
    L = batch.lengths.astype(float)
    k = batch.n_attractors
    exact = []
    for length in np.unique(batch.lengths):
        sel = batch.lengths == length
        if sel.sum() >= 8 and len(np.unique(k[sel])) > 1:
            r = spearmanr(k[sel], mean_tok[sel])
            exact.append(
                dict(
                    length=int(length), n=int(sel.sum()), rho=float(r.statistic), p=float(r.pvalue)
                )
            )
    A = np.stack([L, np.ones_like(L)], 1)
    resid = mean_tok - A @ np.linalg.lstsq(A, mean_tok, rcond=None)[0]
    r = spearmanr(k, resid) if len(np.unique(k)) > 1 else None
    return dict(
        n_attractors=k.tolist(),
        lengths=batch.lengths.tolist(),
        entropy=mean_tok.tolist(),
        bins=rows,
        exact_length=exact,
        residual_spearman=(float(r.statistic), float(r.pvalue)) if r else None,
    )


# ------------------------------------------------------------------------------------------
# (b) MLP complexity
# ------------------------------------------------------------------------------------------


def part_b(args):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    import jaxpr_semiring as js
    from jaxpr_semiring.paper.training import fit

    class MLP(nn.Module):
        width: int
        layers: int

        @nn.compact
        def __call__(self, x):
            for _ in range(self.layers):
                x = nn.relu(nn.Dense(self.width)(x))
            return nn.Dense(2)(x)

    rng = np.random.default_rng(args.seed)
    n_train, n_test = (512, 64) if args.quick else (4000, 500)
    x = rng.random((n_train + n_test, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    sizes = [int(h) for h in args.hidden_sizes.split(",")]
    S = js.Entropy()
    out = []
    for h in sizes:
        model = MLP(h, args.mlp_layers)
        for seed in range(args.mlp_seeds):

            def loss(p, batch, model=model):
                xb, yb = batch
                return optax.softmax_cross_entropy_with_integer_labels(
                    model.apply(p, xb), yb
                ).mean()

            # one epoch: 1500 (--quick: 100) minibatches of 128 rows drawn with replacement
            r = np.random.default_rng(seed)
            draws = (r.integers(0, n_train, 128) for _ in range(100 if args.quick else 1500))
            params, _ = fit(
                loss,
                model.init(jax.random.key(seed), xtr[:1]),
                ((xtr[i], ytr[i]) for i in draws),
                learning_rate=1e-2,
            )
            logits = np.asarray(model.apply(params, xte))
            acc = float((logits.argmax(-1) == yte).mean())
            cls = jnp.asarray(logits.argmax(-1), jnp.int32)

            def ent(p, xi, c):
                g = js.semiring_grad(lambda v: model.apply(p, v)[c], S)(xi)  # fields [4]
                # no path of nonzero weight (all ReLUs dead): entropy undefined -> NaN
                return jnp.where(g.log_z > -jnp.inf, g.entropy, jnp.nan)

            e = np.asarray(jax.jit(jax.vmap(ent, in_axes=(None, 0, 0)))(params, xte, cls))
            out.append(
                dict(
                    hidden=h,
                    seed=seed,
                    test_acc=acc,
                    dead_fraction=float(np.isnan(e).mean()),
                    relevant=float(np.nanmean(e[:, 0])),
                    irrelevant=float(np.nanmean(e[:, 1:])),
                )
            )
    return out


# ------------------------------------------------------------------------------------------


def plot(res, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in "abc" if k in res]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, k in zip(axes[0], panels):
        r = res[k]
        if k == "a":
            L = np.array(r["lengths"])
            ax.scatter(L, r["whole"], s=12, label="all paths from the input")
            ax.scatter(L, r["mean_token"], s=12, marker="x", label="mean per-token")
            ax.set_xlabel("sentence length (tokens)")
            ax.set_ylabel("path entropy")
            ax.set_title("(a) entropy vs sentence length")
            ax.legend(fontsize=8)
        elif k == "b":
            hs = sorted({d["hidden"] for d in r})
            for key, lab in (
                ("relevant", "relevant feature"),
                ("irrelevant", "irrelevant features"),
            ):
                m = [np.mean([d[key] for d in r if d["hidden"] == h]) for h in hs]
                sd = [np.std([d[key] for d in r if d["hidden"] == h]) for h in hs]
                ax.errorbar(hs, m, yerr=sd, marker="o", capsize=3, label=lab)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("MLP hidden size")
            ax.set_ylabel("path entropy")
            ax.set_title("(b) entropy vs model complexity")
            ax.legend(fontsize=8)
        else:
            k_att = np.array(r["n_attractors"])
            ent = np.array(r["entropy"])
            L = np.array(r["lengths"])
            for b in r["bins"]:
                lo, hi = (int(v) for v in b["bin"].split("-"))
                sel = (L >= lo) & (L < hi)
                if not sel.any():
                    continue
                ks = sorted(set(k_att[sel].tolist()))
                ax.plot(
                    ks,
                    [ent[sel & (k_att == kk)].mean() for kk in ks],
                    marker="o",
                    label=f"{b['bin']} tok (ρ={b['rho']:+.2f})",
                )
            ax.set_xlabel("number of attractors")
            ax.set_ylabel("mean per-token entropy")
            ax.set_title("(c) entropy vs attractors (App. B.2)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = parse_args(argv)
    if args.quick:
        args.head_train, args.n_length, args.n_attractors = 64, 8, 16
        args.hidden_sizes, args.mlp_seeds, args.batch = "2,8", 1, 8
    t0 = time.time()
    res: dict = {}
    if "b" in args.parts:
        tb = time.time()
        res["b"] = part_b(args)
        print("(b) hidden  relevant  irrelevant  test_acc")
        for h in sorted({d["hidden"] for d in res["b"]}):
            ds = [d for d in res["b"] if d["hidden"] == h]
            print(
                f"    {h:6d} {np.mean([d['relevant'] for d in ds]):9.4f} "
                f"{np.mean([d['irrelevant'] for d in ds]):10.4f} "
                f"{np.mean([d['test_acc'] for d in ds]):9.3f}"
            )
        print(f"    [{time.time() - tb:.0f} s]")
    if "a" in args.parts or "c" in args.parts:
        from jaxpr_semiring.paper.sva_models import load_sva_model

        tm = time.time()
        model, tok, rep = load_sva_model(
            args.checkpoint or "minilm",
            head_train=args.head_train,
            head_steps=50 if args.quick else 300,
            seed=args.seed,
        )
        if rep is not None:
            print(
                f"verb-number head: train acc {rep.train_accuracy:.3f}, held-out acc "
                f"{rep.heldout_accuracy:.3f} [{time.time() - tm:.0f} s]"
            )
            res["head"] = dict(
                train_accuracy=rep.train_accuracy, heldout_accuracy=rep.heldout_accuracy
            )
        fn = sentence_entropy_fn(model)
        # one padded length for (a) and (c): a single compilation of the semiring pass
        items_a = data_a(args, tok) if "a" in args.parts else []
        items_c, edges = data_c(args, tok) if "c" in args.parts else ([], None)
        pad_to = max(t.length for t in items_a + items_c)
        if "a" in args.parts:
            ta = time.time()
            res["a"] = part_a(args, model, items_a, fn, pad_to)
            L = np.array(res["a"]["lengths"])
            print("(a) length-bin  n  whole-input-H  mean-token-H")
            for lo in range(0, int(L.max()) + 1, 5):
                sel = (L >= lo) & (L < lo + 5)
                if sel.any():
                    print(
                        f"    {lo:3d}-{lo + 4:<3d} {sel.sum():4d} "
                        f"{np.mean(np.array(res['a']['whole'])[sel]):13.4f} "
                        f"{np.mean(np.array(res['a']['mean_token'])[sel]):13.4f}"
                    )
            print(
                f"    Spearman(length, whole H) = {res['a']['spearman_whole'][0]:+.3f}; "
                f"(length, mean-token H) = {res['a']['spearman_mean_token'][0]:+.3f} "
                f"[{time.time() - ta:.0f} s]"
            )
        if "c" in args.parts:
            tc = time.time()
            res["c"] = part_c(args, model, items_c, edges, fn, pad_to)
            print("(c) length-bin  n  spearman_rho  p")
            for b in res["c"]["bins"]:
                print(f"    {b['bin']:8s} {b['n']:4d} {b['rho']:+.3f} {b['p']:.3g}")
            ex = res["c"]["exact_length"]
            if ex:
                print(
                    "    exact-length groups: median rho "
                    f"{np.median([d['rho'] for d in ex]):+.3f} over {len(ex)} lengths, "
                    f"{sum(d['p'] < 0.05 for d in ex)} with p < 0.05"
                )
            if res["c"]["residual_spearman"]:
                rho, pv = res["c"]["residual_spearman"]
                print(
                    f"    Spearman(#attractors, length-residualised entropy) = {rho:+.3f} "
                    f"(p={pv:.3g})"
                )
            k = np.array(res["c"]["n_attractors"])
            e = np.array(res["c"]["entropy"])
            print(
                "    mean entropy by #attractors: "
                + ", ".join(f"{kk}: {e[k == kk].mean():.4f}" for kk in sorted(set(k.tolist())))
                + f" [{time.time() - tc:.0f} s]"
            )
    plot(res, args.out)
    print(f"wrote {args.out}; total {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh)
    return res


if __name__ == "__main__":
    main()
