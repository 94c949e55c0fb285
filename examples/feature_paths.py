"""Paths through transcoder features, end to end on a tiny GPT-2 (docs/features.md).

1. A tiny GPT-2 (2 layers, width 16, a byte-level BPE tokenizer trained on a few sentences) is
   saved with ``save_pretrained``; it is randomly initialised (the example is about the
   machinery, not about what this model has learnt).
2. One ReLU transcoder per MLP (64 features) is trained with optax (Adam, MSE + L1, a few
   hundred steps on the MLPs' inputs and outputs over the corpus) and saved in SAELens' format
   (``cfg.json`` + ``sae_weights.safetensors``).
3. ``jaxpr-semiring feature-paths`` builds the attribution graph of one prompt, finds the top
   signed paths and writes the Neuronpedia graph JSON.
4. The figure: the graph's nodes by position (x) and layer (y), the top paths drawn over them
   (red: positive product, blue: negative; width ∝ |product|).

    python examples/feature_paths.py [--out-dir DIR] [--figure docs/feature_paths.png]
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

CORPUS = [
    "The keys to the cabinet are on the table.",
    "The cat sat on the mat and the dog sat on the rug.",
    "She said that the report would be ready by Monday.",
    "Most of the students in the class passed the exam.",
    "The author that the guards like laughs at the joke.",
]
PROMPT = "The keys to the cabinet are on the"


def build_model(directory: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import FlaxGPT2LMHeadModel, GPT2Config, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 20,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    cfg = GPT2Config(
        vocab_size=len(fast),
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = FlaxGPT2LMHeadModel(cfg, seed=0)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return model, fast


def mlp_data(model, tokenizer):
    """Every MLP's inputs and outputs over the corpus: {layer: (x [N, d], y [N, d])}."""
    xs, ys = {}, {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        if context.method_name == "__call__" and path.endswith("/mlp"):
            layer = int(path.split("/")[-2])
            xs.setdefault(layer, []).append(np.asarray(args[0][0]))
            ys.setdefault(layer, []).append(np.asarray(out[0]))
        return out

    for text in CORPUS:
        ids = np.asarray(tokenizer(text).input_ids)[None]
        with nn.intercept_methods(grab):
            model(ids)
    return {k: (np.concatenate(xs[k]), np.concatenate(ys[k])) for k in xs}


def train_transcoder(x, y, d_sae=64, steps=300, l1=3e-2, seed=0):
    import optax

    scale = float(y.std())  # fit the outputs at unit scale (a random GPT-2's MLPs are ~1e-2)
    y = y / scale
    d = x.shape[1]
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    p = {
        "W_enc": jax.random.normal(k1, (d, d_sae)) / np.sqrt(d),
        "b_enc": jnp.zeros(d_sae),
        "W_dec": jax.random.normal(k2, (d_sae, d)) / np.sqrt(d_sae),
        "b_dec": jnp.asarray(y.mean(0)),
    }
    opt = optax.adam(1e-2)
    state = opt.init(p)

    def loss(p):
        a = jax.nn.relu(x @ p["W_enc"] + p["b_enc"])
        return jnp.mean((a @ p["W_dec"] + p["b_dec"] - y) ** 2) + l1 * jnp.mean(jnp.abs(a))

    @jax.jit
    def step(p, state):
        val, g = jax.value_and_grad(loss)(p)
        upd, state = opt.update(g, state)
        return optax.apply_updates(p, upd), state, val

    for _ in range(steps):
        p, state, val = step(p, state)
    fvu = float(
        jnp.mean((jax.nn.relu(x @ p["W_enc"] + p["b_enc"]) @ p["W_dec"] + p["b_dec"] - y) ** 2)
        / jnp.var(y)
    )
    p["W_dec"], p["b_dec"] = p["W_dec"] * scale, p["b_dec"] * scale
    return {k: np.asarray(v, np.float32) for k, v in p.items()}, fvu


def save_saelens(folder, weights, layer):
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    save_file(weights, os.path.join(folder, "sae_weights.safetensors"))
    d, d_sae = weights["W_enc"].shape
    cfg = {
        "architecture": "transcoder",
        "d_in": d,
        "d_sae": d_sae,
        "d_out": d,
        "metadata": {
            "hook_name": f"blocks.{layer}.hook_mlp_in",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out",
        },
    }
    with open(os.path.join(folder, "cfg.json"), "w") as fh:
        json.dump(cfg, fh)


def figure(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = {n["node_id"]: n for n in doc["nodes"]}
    n_pos = len(doc["metadata"]["prompt_tokens"])
    n_layers = (
        max(
            int(n["layer"])
            for n in nodes.values()
            if n["feature_type"] != "logit" and n["layer"] != "E"
        )
        + 1
    )
    styles = {
        "cross layer transcoder": ("o", "#444"),
        "mlp reconstruction error": ("s", "#bbb"),
        "embedding": ("D", "#2a7"),
        "logit": ("^", "#a52"),
    }
    fig, ax = plt.subplots(figsize=(8, 4.2))
    cells: dict = {}
    for nid, n in nodes.items():
        kind = n["feature_type"]
        y = -1 if kind == "embedding" else n_layers if kind == "logit" else int(n["layer"])
        cells.setdefault((n["ctx_idx"], y), []).append(nid)
    pos = {}
    for (x, y), ids in cells.items():  # spread a cell's nodes in rows of 5, centred
        for k, nid in enumerate(ids):
            row = min(5, len(ids))
            pos[nid] = (x + 0.14 * ((k % 5) - (row - 1) / 2), y + 0.15 * (k // 5))
            kind = nodes[nid]["feature_type"]
            ax.scatter(*pos[nid], marker=styles[kind][0], c=styles[kind][1], s=18, zorder=3)
    paths = doc["semiring"]["paths"]
    biggest = max(abs(p["product"]) for p in paths)
    for i, p in enumerate(paths):
        value = p["product"]
        pts = np.array([pos[nid] for nid in p["node_ids"]])
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            "-",
            color="#c33" if value > 0 else "#36c",
            lw=0.8 + 4 * abs(value) / biggest,
            alpha=0.75,
            zorder=2,
            label=f"{i + 1}: {value:+.3g}" if i < 5 else None,
        )
    toks = doc["metadata"]["prompt_tokens"]
    ax.set_xticks(range(n_pos), [t.replace("Ġ", "␣") for t in toks], rotation=30)
    ax.set_yticks(range(-1, n_layers + 1), ["emb"] + [f"L{i}" for i in range(n_layers)] + ["logit"])
    ax.set_title(f"top {len(paths)} signed paths into the top logit (feature graph)")
    ax.legend(fontsize=7, loc="upper left", title="path: product", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="/tmp/feature-paths")
    ap.add_argument("--figure", default="docs/feature_paths.png")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    model_dir = os.path.join(args.out_dir, "gpt2-tiny")
    model, tok = build_model(model_dir)
    saes = []
    for layer, (x, y) in sorted(mlp_data(model, tok).items()):
        w, fvu = train_transcoder(x, y, seed=layer)
        print(f"transcoder {layer}: fraction of variance unexplained {fvu:.3f}")
        saes.append(os.path.join(args.out_dir, f"transcoder-{layer}"))
        save_saelens(saes[-1], w, layer)
    from jaxpr_semiring.cli import commands

    out = os.path.join(args.out_dir, "graph.json")
    argv = ["feature-paths", model_dir, "--text", PROMPT]
    argv += [a for s in saes for a in ("--sae", s)]
    argv += ["--semiring", "top-k:10", "--out", out, "--html", out.replace(".json", ".html")]
    print("$ jaxpr-semiring " + " ".join(a if " " not in a else repr(a) for a in argv))
    assert commands.main(argv) == 0
    with open(out) as fh:
        figure(json.load(fh), args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
