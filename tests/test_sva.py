"""SVA data (loader, generator, tokenization) and SVA models (checkpoint path, targets)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_semiring.paper import sva
from jaxpr_semiring.paper import sva_models as M

SING = {s for s, _ in sva.OBJECT_NOUNS}
PLUR = {p for _, p in sva.OBJECT_NOUNS}


@pytest.fixture(scope="module")
def tok():
    return sva.load_tokenizer(M.minilm_dir())


# ------------------------------------------------------------------------------------------
# TSV loader
# ------------------------------------------------------------------------------------------

TSV = (
    "distractors\tsentence\tmasked\tgood\tbad\textra\n"
    "1\tthe keys to the cabinet are here .\tthe keys to the cabinet ***mask*** here .\tare\tis\tx\n"
    "\n"
    "2\tThe Author that the guards like laughs .\tThe Author that the guards like ***mask*** .\t"
    "laughs\tlaugh\n"
)


def test_load_tsv_header_extra_columns_and_blank_lines(tmp_path):
    p = tmp_path / "agr.tsv"
    p.write_text(TSV, encoding="utf8")
    exs = sva.load_tsv(p)
    assert len(exs) == 2
    a, b = exs
    assert a.n_attractors == 1 and b.n_attractors == 2
    assert a.words == ("the", "keys", "to", "the", "cabinet", "[MASK]", "here", ".")
    assert a.mask_index == 5 and a.good == "are" and a.bad == "is" and a.plural
    assert b.words[0] == "the" and b.words[1] == "author"  # lower-cased
    assert b.good == "laughs" and not b.plural  # heuristic: -s is singular
    assert a.subject_index is None and a.attractor_indices == ()
    assert a.sentence == "the keys to the cabinet are here ."
    assert sva.load_tsv(p, max_examples=1) == exs[:1]
    # without a header the first line is data
    p2 = tmp_path / "nohdr.tsv"
    p2.write_text("\n".join(TSV.splitlines()[1:]), encoding="utf8")
    assert sva.load_tsv(p2) == exs


def test_load_tsv_errors(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("1\ta b c\ta b c\tis\tare\n", encoding="utf8")
    with pytest.raises(ValueError, match="mask"):
        sva.load_tsv(p)
    p.write_text("1\ta b\n", encoding="utf8")
    with pytest.raises(ValueError, match="5 tab-separated"):
        sva.load_tsv(p)
    p.write_text("1\ta\ta ***mask***\tis\tare\nx\ta\ta ***mask***\tis\tare\n", encoding="utf8")
    with pytest.raises(ValueError, match="not an integer"):
        sva.load_tsv(p)


def test_loaded_tsv_tokenizes(tmp_path, tok):
    p = tmp_path / "agr.tsv"
    p.write_text(TSV, encoding="utf8")
    items, stats = sva.tokenize(tok, sva.load_tsv(p), return_stats=True)
    assert stats == {"ok": 2}
    b = sva.collate(items)
    assert (b.subject_pos == -1).all() and (b.attractor_pos == -1).all()
    assert b.input_ids[0, b.mask_pos[0]] == tok.token_to_id("[MASK]")


# ------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------


def test_generator_deterministic_and_seeded():
    assert sva.generate(50, seed=3) == sva.generate(50, seed=3)
    assert sva.generate(50, seed=3) != sva.generate(50, seed=4)
    assert sva.generate(0, seed=1) == []
    with pytest.raises(ValueError):
        sva.generate(3, min_attractors=3, max_attractors=1)


def test_generator_balanced_counts_and_numbers():
    exs = sva.generate(400, seed=0, min_attractors=0, max_attractors=4)
    counts = np.bincount([e.n_attractors for e in exs], minlength=5)
    assert counts.tolist() == [80] * 5
    assert sum(e.plural for e in exs) == 200
    exs = sva.generate(40, seed=1, min_attractors=2, max_attractors=3)
    assert {e.n_attractors for e in exs} == {2, 3}


def test_generator_positions_correct_by_construction():
    exs = sva.generate(500, seed=7)
    structures = set()
    for e in exs:
        w = e.words
        structures.update(e.structure.split(","))
        assert w[e.mask_index] == sva.MASK_WORD and w.count(sva.MASK_WORD) == 1
        # subject: a noun of the subject's number
        assert w[e.subject_index] in (PLUR if e.plural else SING)
        # attractors: nouns of the opposite number between subject and verb
        assert len(e.attractor_indices) == e.n_attractors
        assert list(e.attractor_indices) == sorted(e.attractor_indices)
        for a in e.attractor_indices:
            assert e.subject_index < a < e.mask_index
            assert w[a] in (SING if e.plural else PLUR)
        # every noun between subject and verb is an attractor; none before the subject
        between = [i for i in range(e.subject_index + 1, e.mask_index) if w[i] in sva.NOUN_FORMS]
        assert between == list(e.attractor_indices)
        assert not any(x in sva.NOUN_FORMS for x in w[: e.subject_index])
        # verb forms
        pair = {e.good, e.bad}
        assert any(pair == {s, p} for s, p, _ in sva.MASK_VERBS)
        assert sva.verb_is_plural(e.good, e.bad) == e.plural
        assert e.unmasked_words[e.mask_index] == e.good
        assert e.sentence == " ".join(e.unmasked_words)
    assert structures == {"plain", "pp", "src", "orc"}


# ------------------------------------------------------------------------------------------
# tokenization
# ------------------------------------------------------------------------------------------


def test_tokenize_maps_word_positions(tok):
    exs = sva.generate(60, seed=2)
    items, stats = sva.tokenize(tok, exs, return_stats=True)
    assert stats == {"ok": 60}
    vocab_inv = {i: t for t, i in tok.get_vocab().items()}
    for t in items:
        e = t.example
        assert t.input_ids[0] == tok.token_to_id("[CLS]")
        assert t.input_ids[-1] == tok.token_to_id("[SEP]")
        assert vocab_inv[t.input_ids[t.subject_pos]] == e.words[e.subject_index]
        assert [vocab_inv[t.input_ids[p]] for p in t.attractor_pos] == [
            e.words[a] for a in e.attractor_indices
        ]
        assert t.input_ids[t.mask_pos] == tok.token_to_id("[MASK]")
        assert vocab_inv[t.good_id] == e.good and vocab_inv[t.bad_id] == e.bad


def test_tokenize_drops_multipiece_subject_and_attractor(tok):
    base = sva.SVAExample(
        words=("the", "zookeepers", "near", "the", "guard", "[MASK]", "here", "."),
        mask_index=5,
        good="are",
        bad="is",
        subject_index=1,
        attractor_indices=(4,),
        n_attractors=1,
        plural=True,
    )
    assert len(tok.encode("zookeepers", add_special_tokens=False).ids) > 1
    ok = sva.SVAExample(
        words=("the", "guards", "near", "the", "author", "[MASK]", "here", "."),
        mask_index=5,
        good="are",
        bad="is",
        subject_index=1,
        attractor_indices=(4,),
        n_attractors=1,
        plural=True,
    )
    bad_attr = sva.SVAExample(
        words=("the", "guards", "near", "the", "zookeeper", "[MASK]", "here", "."),
        mask_index=5,
        good="are",
        bad="is",
        subject_index=1,
        attractor_indices=(4,),
        n_attractors=1,
        plural=True,
    )
    bad_verb = sva.SVAExample(
        words=("the", "guards", "[MASK]", "."),
        mask_index=2,
        good="zookeep",
        bad="zookeeps",
        subject_index=1,
        plural=True,
    )
    items, stats = sva.tokenize(tok, [base, ok, bad_attr, bad_verb], return_stats=True)
    assert [t.example for t in items] == [ok]
    assert stats == {"subject": 1, "ok": 1, "attractor": 1, "verb": 1}
    # a multi-piece word elsewhere is fine and shifts token positions
    shifted = sva.SVAExample(
        words=("zookeepers", "said", "the", "guards", "[MASK]", "here", "."),
        mask_index=4,
        good="are",
        bad="is",
        subject_index=3,
        plural=True,
    )
    (t,) = sva.tokenize(tok, [shifted])
    assert t.subject_pos == 5 and t.mask_pos == 6


def test_tokenize_ignores_tokenizer_padding_settings(tok):
    from tokenizers import Tokenizer

    padded = Tokenizer.from_file(os.path.join(M.minilm_dir(), "tokenizer.json"))
    assert padded.padding is not None
    exs = sva.generate(5, seed=0)
    assert [t.input_ids for t in sva.tokenize(padded, exs)] == [
        t.input_ids for t in sva.tokenize(tok, exs)
    ]
    assert padded.padding is not None  # the user's tokenizer is not modified


def test_collate_pads_and_masks(tok):
    items = sva.tokenize(tok, sva.generate(30, seed=5))
    b = sva.collate(items)
    L = max(t.length for t in items)
    assert b.input_ids.shape == (30, L) and b.input_ids.dtype == np.int32
    assert (b.attention_mask.sum(1) == b.lengths).all()
    assert (b.input_ids[b.attention_mask == 0] == 0).all()
    assert b.attractor_pos.shape == (30, max(1, b.n_attractors.max()))
    assert ((b.attractor_pos >= 0).sum(1) == b.n_attractors).all()
    b2 = sva.collate(items, pad_to=L + 3)
    assert b2.input_ids.shape == (30, L + 3)
    with pytest.raises(ValueError):
        sva.collate(items, pad_to=L - 1)
    sub = b.select(b.n_attractors >= 2)
    assert len(sub) == int((b.n_attractors >= 2).sum()) and len(sub.examples) == len(sub)
    m = b.position_mask("subject")
    assert m.sum() == 30 and (m[np.arange(30), b.subject_pos]).all()
    assert b.position_mask("attractors").sum() == b.n_attractors.sum()


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


def _tiny_config(vocab_size):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )


@pytest.mark.parametrize("safe", [False, True])
def test_mlm_checkpoint_path(tmp_path, tok, safe):
    from transformers import FlaxBertForMaskedLM

    cfg = _tiny_config(tok.get_vocab_size())
    hf = FlaxBertForMaskedLM(cfg, seed=1)
    hf.save_pretrained(tmp_path / "ckpt", safe_serialization=safe)
    files = os.listdir(tmp_path / "ckpt")
    assert ("model.safetensors" if safe else "flax_model.msgpack") in files
    model = M.load_mlm_checkpoint(tmp_path / "ckpt")
    batch = sva.encode(tok, sva.generate(6, seed=0))
    ref = hf(batch.input_ids, attention_mask=batch.attention_mask).logits
    r = np.arange(6)
    want = np.asarray(ref[r, batch.mask_pos, batch.good_id] - ref[r, batch.mask_pos, batch.bad_id])
    got = model.batch_targets(batch, batch_size=4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    i = 2
    args = [a[i] for a in batch.target_args()]
    t = model.target(model.params, *args)
    np.testing.assert_allclose(float(t), want[i], rtol=1e-4, atol=1e-5)
    # unpadded sentence: same target
    n = batch.lengths[i]
    t2 = model.target(model.params, args[0][:n], args[1][:n], *args[2:])
    np.testing.assert_allclose(float(t2), want[i], rtol=1e-4, atol=1e-5)
    # target from the word embeddings (the entry point for input-representation semirings)
    emb = model.word_embeddings(model.params, args[0])
    t3 = model.target_from_embeddings(model.params, emb, *args)
    np.testing.assert_allclose(float(t3), want[i], rtol=1e-4, atol=1e-5)
    # target_from_outputs on the encoder outputs
    out = model.encoder(
        jnp.asarray(args[0])[None], attention_mask=jnp.asarray(args[1])[None], params=model.params
    )
    np.testing.assert_allclose(
        float(model.target_from_outputs(out, *args[2:])), want[i], rtol=1e-4, atol=1e-5
    )
    assert 0.0 <= model.accuracy(batch) <= 1.0
    # round trip through MLMSVAModel.save_pretrained
    model.save_pretrained(tmp_path / "again")
    np.testing.assert_allclose(
        M.load_mlm_checkpoint(tmp_path / "again").batch_targets(batch), got, rtol=1e-5, atol=1e-6
    )


def test_mlm_target_is_semiring_differentiable(tok):
    import jaxpr_semiring as js

    model = M.MLMSVAModel.from_config(_tiny_config(tok.get_vocab_size()), seed=0)
    batch = sva.encode(tok, sva.generate(2, seed=1))
    args = [a[0] for a in batch.target_args()]
    emb = model.word_embeddings(model.params, args[0])
    f = lambda e: model.target_from_embeddings(model.params, e, *args)  # noqa: E731
    g = js.semiring_grad(f, js.Real())(emb)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(f)(emb)), rtol=2e-3, atol=1e-5)


def test_verb_head_target_sign(tok):
    from transformers import FlaxBertModel

    enc = FlaxBertModel(_tiny_config(tok.get_vocab_size()), seed=0)
    rng = np.random.default_rng(0)
    head = {"w": rng.normal(size=16).astype(np.float32), "b": np.float32(0.3)}
    model = M.VerbNumberHeadModel(enc, head, tok)
    batch = sva.encode(tok, sva.generate(8, seed=3))
    t = model.batch_targets(batch, batch_size=8)
    h = jax.vmap(lambda i, a: model.hidden(model.params, i, a))(
        batch.input_ids, batch.attention_mask
    )
    z = np.asarray(h[np.arange(8), batch.mask_pos] @ head["w"] + head["b"])
    np.testing.assert_allclose(t, np.where(batch.plural == 1, z, -z), rtol=1e-4, atol=1e-5)
    # swapping good and bad flips the target
    args = [a[0] for a in batch.target_args()]
    a = float(model.target(model.params, *args))
    b = float(model.target(model.params, *args[:3], args[4], args[3]))
    assert a == pytest.approx(-b)


def test_padding_does_not_change_entropy_under_jit(tok):
    """Padded keys get exactly zero attention: per-token path entropies of the real tokens must
    equal those of the unpadded sentence (HF's finfo.min bias once overflowed the Entropy
    semiring to NaN under jit; the semirings handle it now, with no patch of transformers)."""
    import jaxpr_semiring as js

    model = M.MLMSVAModel.from_config(_tiny_config(tok.get_vocab_size()), seed=0)
    batch = sva.encode(tok, sva.generate(1, seed=1))
    ids, am, *rest = [a[0] for a in batch.target_args()]
    S = js.Entropy()

    def ent(ids, am):
        emb = model.word_embeddings(model.params, ids)
        f = lambda e: model.target_from_embeddings(model.params, e, ids, am, *rest)  # noqa
        return S.sum(js.semiring_grad(f, S)(emb), axes=-1).entropy

    n = len(ids)
    plain = np.asarray(jax.jit(ent)(ids, am))
    padded = np.asarray(jax.jit(ent)(np.pad(ids, (0, 2)), np.pad(am, (0, 2))))
    assert np.isfinite(plain).all() and np.isfinite(padded[:n]).all()
    np.testing.assert_allclose(padded[:n], plain, rtol=1e-4)


def test_load_sva_model_checkpoint_and_its_tokenizer(tmp_path, tok):
    from tokenizers import Tokenizer, models
    from transformers import FlaxBertForMaskedLM

    FlaxBertForMaskedLM(_tiny_config(tok.get_vocab_size()), seed=1).save_pretrained(tmp_path)
    model, tok2, rep = M.load_sva_model(str(tmp_path))
    assert isinstance(model, M.MLMSVAModel) and rep is None
    assert tok2.get_vocab_size() == tok.get_vocab_size()  # no tokenizer.json: MiniLM's
    Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json")
    )
    _, tok3, _ = M.load_sva_model(str(tmp_path))
    assert tok3.get_vocab_size() == 2  # the checkpoint's own tokenizer
