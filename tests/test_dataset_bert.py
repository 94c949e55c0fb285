"""Padding exactness on a real model: a tiny random Hugging Face Flax BERT (masked LM).

Per-token flows of logit(a) − logit(b) at the [MASK] w.r.t. the input embeddings (⊕ over hidden
dims), for Real, MaxProduct and Entropy in one jitted function: a record is the same (1e-5
relative) whether its sentence ran alone (unpadded, outside the dataset layer), in a batch, or
in another bucket. Counting counts the zero-weight paths through padded keys (tested), so it
runs with ``buckets="exact"`` (no padding), which is exact again.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring.dataset import InputError, Prepared, read_inputs, run_dataset, unpad
from jaxpr_semiring.models.hf_bert import word_embedding_table, word_embeddings_replaced_by

from test_dataset import assert_same_records, load_records

CLS, SEP, MASK, VOCAB = 1, 2, 3, 50
SEMIRINGS = {"real": js.Real(), "max_product": js.MaxProduct(), "entropy": js.Entropy()}
# 8 and 9 tokens sit on both sides of the bucket boundary (buckets 8, 16)
SENTENCES = [
    "one",
    "the keys to the cabinet",
    "the keys to the old cabinet",
    "",
    "keys to cabinets are on the table",
    "a b",
]


@pytest.fixture(scope="module")
def bert():
    from transformers import BertConfig, FlaxBertForMaskedLM

    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return FlaxBertForMaskedLM(cfg, seed=0)


def prepare(ex):
    words = ex.text.split()
    if len(words) + 2 > 32:
        raise InputError("too long for the model")
    ids = [CLS, MASK] + [4 + sum(map(ord, w)) % (VOCAB - 4) for w in words[1:]] + [SEP]
    return Prepared({"input_ids": np.array(ids, np.int32)}, {"a": 5, "b": 6})


def make_compute(model, semirings):
    def compute(params, row):
        ids, mask = row["input_ids"], row["attention_mask"]
        emb = jnp.take(word_embedding_table(params), ids, axis=0)

        def f(e):
            with word_embeddings_replaced_by(e[None]):
                logits = model(ids[None], attention_mask=mask[None], params=params).logits
            return logits[0, 1, row["a"]] - logits[0, 1, row["b"]]

        out = {}
        for name, S in semirings.items():
            value, g = js.value_and_semiring_grad(f, S)(emb)
            out[name] = S.sum(g, axes=-1)
        return dict(out, value=value)

    return compute


def record(ex, prep, out):
    n = prep.length
    fields = {
        "real": lambda v: v,
        "max_product": lambda v: v._asdict(),
        "entropy": lambda v: v._asdict(),
        "counting": lambda v: v,
    }
    return dict(
        value=out["value"], **{k: unpad(f(out[k]), n) for k, f in fields.items() if k in out}
    )


def run(model, compute, src, out_dir, **kw):
    return load_records(
        run_dataset(
            src,
            out_dir,
            prepare=prepare,
            compute=compute,
            record=record,
            params=model.params,
            progress=False,
            stream=io.StringIO(),
            **kw,
        ).output
    )


def alone(model, compute, text):
    """The record of one sentence computed unpadded, outside the dataset layer."""
    ex = read_inputs([text]).examples[0]
    prep = prepare(ex)
    row = dict(prep.tokens, **prep.args, attention_mask=np.ones(prep.length, np.int32))
    return js.dataset.jsonable(
        record(ex, prep, jax.device_get(jax.jit(compute)(model.params, row)))
    )


def test_bert_records_alone_batched_and_across_buckets(bert, tmp_path):
    compute = make_compute(bert, SEMIRINGS)
    src = tmp_path / "s.txt"
    src.write_text("\n".join(SENTENCES) + "\n")
    batched = run(bert, compute, str(src), tmp_path / "a", batch_size=2)  # buckets 8, 16
    other = run(bert, compute, str(src), tmp_path / "b", batch_size=2, buckets=[16])
    assert [len(r["real"]) for r in batched] == [3, 7, 8, 9, 4]
    assert_same_records(batched, other)
    for r in batched[2:4]:  # 8 and 9 tokens: either side of the boundary, alone
        assert_same_records(
            [r], [dict(index=r["index"], text=r["text"], **alone(bert, compute, r["text"]))]
        )


def test_counting_counts_paths_through_padding_so_it_runs_unpadded(bert, tmp_path):
    compute = make_compute(bert, {"counting": js.Counting()})
    src = tmp_path / "s.txt"
    src.write_text("one\nthe keys to\nthe keys to\n")
    padded = run(bert, compute, str(src), tmp_path / "padded", batch_size=2)
    exact = run(bert, compute, str(src), tmp_path / "exact", batch_size=2, buckets="exact")
    for p, e in zip(padded, exact):  # log #paths: padded keys add zero-weight paths
        assert np.all(np.asarray(p["counting"]) > np.asarray(e["counting"]) + 1e-3)
        assert_same_records(
            [e], [dict(index=e["index"], text=e["text"], **alone(bert, compute, e["text"]))]
        )
