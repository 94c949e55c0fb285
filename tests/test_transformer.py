"""Tests for jaxpr_semiring.paper.transformer, jaxpr_semiring.paper.training (the one training
loop and the classifier on it) and jaxpr_semiring.paper.batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params

from jaxpr_semiring.paper.transformer import (
    TransformerClassifier,
    embed_tokens,
    init_params,
    logits_from_embeddings_fn,
    model_for_task,
)
from jaxpr_semiring.paper.batching import map_batches
from jaxpr_semiring.paper.synthetic import BinCountOnes, FirstTokenRepeatedOnce
from jaxpr_semiring.paper.training import (
    TrainHistory,
    evaluate,
    Minibatches,
    fit,
    load_params,
    save_params,
    train_classifier,
    train_on_task,
    train_val_split,
)


def all_eqns(jaxpr):
    """Every equation of ``jaxpr`` and, recursively, of its sub-jaxprs (jit, custom_jvp, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)


def name_stacks(closed_jaxpr) -> list[str]:
    return [str(e.source_info.name_stack) for e in all_eqns(closed_jaxpr.jaxpr)]


@pytest.fixture(scope="module")
def small():
    model = TransformerClassifier(num_layers=2, hidden=16, heads=2, vocab_size=11, max_len=8)
    params = init_params(model, seed=0)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 11, (5, 8)), jnp.int32)
    return model, params, tokens


# ---------------------------------------------------------------------------------------------
# shapes and equivalences
# ---------------------------------------------------------------------------------------------


def test_output_shapes(small):
    model, params, tokens = small
    assert model.apply(params, tokens).shape == (5, 2)
    assert model.apply(params, tokens[0]).shape == (2,)  # unbatched
    assert model.apply(params, tokens[:, :5]).shape == (5, 2)  # shorter than max_len
    h = embed_tokens(model, params, tokens)
    assert h.shape == (5, 8, 16) and h.dtype == jnp.float32
    hid = model.apply(params, h, method=TransformerClassifier.encode)
    assert hid.shape == (5, 8, 16)
    wide = TransformerClassifier(num_classes=36, vocab_size=11, max_len=8, mlp_dim=24)
    assert wide.apply(init_params(wide), tokens).shape == (5, 36)
    p = init_params(wide)["params"]
    assert p["layer_0"]["mlp"]["dense_in"]["kernel"].shape == (16, 24)
    assert p["token_embed"]["embedding"].shape == (11, 16)
    assert p["position_embedding"].shape == (8, 16)


def test_embeddings_path_matches_tokens_path(small):
    model, params, tokens = small
    f = logits_from_embeddings_fn(model, params)
    h = embed_tokens(model, params, tokens)
    np.testing.assert_allclose(f(h), model.apply(params, tokens), rtol=1e-6, atol=1e-6)
    # unbatched rows agree with the batch
    np.testing.assert_allclose(f(h[2]), model.apply(params, tokens)[2], rtol=1e-5, atol=1e-5)
    g = jax.grad(lambda e: f(e)[1])(h[0])
    assert g.shape == (8, 16) and bool(jnp.isfinite(g).all()) and float(jnp.abs(g).sum()) > 0


def test_mean_pooling_and_mask(small):
    _, _, tokens = small
    model = TransformerClassifier(vocab_size=11, max_len=8, pooling="mean")
    params = init_params(model)
    assert model.apply(params, tokens).shape == (5, 2)
    # masking out the last two positions == dropping them (no position-dependent padding leaks)
    mask = jnp.arange(8) < 6
    masked = model.apply(params, tokens, jnp.broadcast_to(mask, tokens.shape))
    np.testing.assert_allclose(masked, model.apply(params, tokens[:, :6]), rtol=1e-5, atol=1e-5)
    # attention weights are available through the intermediates collection
    _, state = model.apply(params, tokens, mutable=["intermediates"])
    w = state["intermediates"]["layer_0"]["attention"]["attention_weights"][0]
    assert w.shape == (5, 2, 8, 8)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_model_for_task():
    task = FirstTokenRepeatedOnce()
    m = model_for_task(task)
    assert (m.num_layers, m.hidden, m.heads, m.vocab_size, m.max_len, m.num_classes) == (
        1,
        16,
        2,
        21,
        10,
        2,
    )
    m36 = model_for_task(
        BinCountOnes(num_classes=6, seq_len=36), num_layers=2, hidden=64, heads=4, num_classes=36
    )
    assert (m36.max_len, m36.num_classes) == (36, 36)
    with pytest.raises(ValueError, match="num_classes=3 is smaller than the task's 6"):
        model_for_task(BinCountOnes(num_classes=6, seq_len=36), num_classes=3)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(hidden=10, heads=3), r"hidden=10 must be divisible by heads=3"),
        (dict(pooling="cls"), r"pooling must be one of"),
        (dict(hidden=0), r"hidden must be an integer >= 1"),
    ],
)
def test_invalid_model_config(kwargs, pattern):
    model = TransformerClassifier(vocab_size=5, max_len=4, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        init_params(model)


def test_sequence_longer_than_max_len(small):
    model, params, _ = small
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_len=8"):
        model.apply(params, jnp.ones((1, 9), jnp.int32))


# ---------------------------------------------------------------------------------------------
# name stacks in the jaxpr (what the semiring tap report labels flows with)
# ---------------------------------------------------------------------------------------------


def test_name_stacks_in_forward_jaxpr(small):
    model, params, tokens = small
    stacks = name_stacks(jax.make_jaxpr(lambda t: model.apply(params, t))(tokens))
    for layer in ("layer_0", "layer_1"):
        for part in (
            "attention/query",
            "attention/key",
            "attention/value",
            "attention/out",
            "skip",
            "mlp/dense_in",
            "mlp/dense_out",
            "mlp_residual",
            "attention_norm",
        ):
            assert any(f"{layer}/{part}" in s for s in stacks), (layer, part)
    assert any(s.endswith("classifier") for s in stacks)
    assert any("token_embed" in s for s in stacks)
    # the name stacks survive jit (they then live inside the jit equation's sub-jaxpr)
    jitted = name_stacks(jax.make_jaxpr(jax.jit(lambda t: model.apply(params, t)))(tokens))
    assert any("layer_0/attention/query" in s for s in jitted)
    assert any("layer_0/skip" in s for s in jitted)


def test_layer_input_branch_point(small):
    """The embeddings h feed exactly query, key, value (dot_general) and the skip add."""
    model, params, tokens = small
    h = embed_tokens(model, params, tokens)
    closed = jax.make_jaxpr(logits_from_embeddings_fn(model, params))(h)
    (h_var,) = closed.jaxpr.invars
    consumers = [e for e in closed.jaxpr.eqns if any(v is h_var for v in e.invars)]
    got = sorted(
        (str(e.primitive), str(e.source_info.name_stack).rsplit("/", 1)[-1]) for e in consumers
    )
    assert got == [
        ("add", "skip"),
        ("dot_general", "key"),
        ("dot_general", "query"),
        ("dot_general", "value"),
    ]
    for e in consumers:
        assert "layer_0/" in str(e.source_info.name_stack)
    skip = [e for e in consumers if e.primitive.name == "add"][0]
    assert "layer_0/skip" in str(skip.source_info.name_stack)
    # "skip" labels only the residual at the layer input (the MLP residual is named differently)
    skips = [s for s in name_stacks(closed) if "skip" in s]
    assert {s.rsplit("/", 1)[-1] for s in skips} == {"skip"}
    assert len({s for s in skips}) == 2  # one per layer


# ---------------------------------------------------------------------------------------------
# training and checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """Paper §5.1 model (1 layer, hidden 16, 2 heads) on a small FirstTokenRepeatedOnce."""
    task = FirstTokenRepeatedOnce(seq_len=8, vocab_size=10)
    run = train_on_task(
        task,
        n_train=2000,
        n_val=500,
        data_seed=0,
        seed=0,
        learning_rate=3e-3,
        batch_size=32,
        max_epochs=60,
        target_val_acc=0.99,
        progress=False,
    )
    return run


def test_trains_to_high_validation_accuracy(trained):
    h = trained.history
    assert h.best_val_acc >= 0.95
    assert len(h.epoch) == len(h.val_acc) == len(h.train_loss) == len(h.train_acc)
    assert h.epoch == list(range(1, len(h.epoch) + 1))
    assert h.train_loss[-1] < h.train_loss[0]
    _, acc = evaluate(trained.model, trained.params, *trained.val)
    assert acc == pytest.approx(h.best_val_acc, abs=1e-6)
    assert acc >= 0.95
    assert h.as_dict()["best_epoch"] == h.best_epoch


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "sub" / "params.msgpack"
    save_params(path, trained.params)
    assert path.read_bytes()[:1] != b"\x80"  # msgpack, not a pickle stream
    template = init_params(trained.model, seed=123)
    restored = load_params(path, template)
    flat_a = jax.tree_util.tree_leaves_with_path(trained.params)
    flat_b = jax.tree_util.tree_leaves_with_path(restored)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (_, a), (_, b) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = trained.val[0][:16]
    np.testing.assert_array_equal(
        trained.model.apply(trained.params, x), trained.model.apply(restored, x)
    )


def test_training_is_seeded_and_early_stops():
    task = FirstTokenRepeatedOnce(seq_len=4, vocab_size=4)
    x, y = task.generate(96, seed=0)
    train, val = train_val_split(x, y, 32)
    model = model_for_task(task, hidden=8, heads=2)
    kw = dict(max_epochs=2, seed=1, batch_size=32, progress=False, target_val_acc=None)
    p1, h1 = train_classifier(model, train, val, **kw)
    p2, h2 = train_classifier(model, train, val, **kw)
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    assert len(h1.epoch) == 2 and not h1.stopped_early
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)
    # a target of 0 stops after the first epoch
    _, h3 = train_classifier(
        model, train, val, max_epochs=5, batch_size=32, progress=False, target_val_acc=0.0
    )
    assert h3.epoch == [1] and h3.stopped_early


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(max_epochs=0), "max_epochs must be >= 1"),
        (dict(target_val_acc=1.5), r"target_val_acc must lie in \[0, 1\]"),
    ],
)
def test_training_invalid_arguments(kwargs, pattern):
    task = FirstTokenRepeatedOnce(seq_len=4, vocab_size=4)
    data = task.generate(8, seed=0)
    with pytest.raises(ValueError, match=pattern):
        train_classifier(model_for_task(task), data, data, progress=False, **kwargs)
    with pytest.raises(ValueError, match="share the leading dimension"):
        train_classifier(model_for_task(task), (data[0], data[1][:3]), data, progress=False)


# ---------------------------------------------------------------------------------------------
# the one training loop (fit), minibatches, map_batches
# ---------------------------------------------------------------------------------------------


def _regression(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3
    return x, y


def _sq_loss(p, batch):
    x, y = batch
    err = x @ p["w"] + p["b"] - y
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


_P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def test_fit_equals_a_hand_written_optax_loop():
    """Oracle: the same seeded permutations and Adam updates written out directly."""
    import optax

    x, y = _regression()
    params, hist = fit(
        _sq_loss, _P0, Minibatches((x, y), 16, seed=3), epochs=3, has_aux=True, learning_rate=0.05
    )
    tx = optax.adam(0.05)
    p, opt = _P0, tx.init(_P0)
    rng = np.random.default_rng(3)
    losses = []
    for _ in range(3):
        perm, tot = rng.permutation(len(y)), 0.0
        for s in range(0, len(y), 16):
            i = perm[s : s + 16]
            (loss, _), g = jax.value_and_grad(_sq_loss, has_aux=True)(p, (x[i], y[i]))
            u, opt = tx.update(g, opt, p)
            p = optax.apply_updates(p, u)
            tot += float(loss) * len(i)
        losses.append(tot / len(y))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), params, p)
    np.testing.assert_allclose(hist.train_loss, losses, rtol=1e-6)
    assert hist.epoch == [1, 2, 3] and hist.steps == 9 and len(hist.train_mae) == 3
    assert hist.train_loss[-1] < hist.train_loss[0]


def test_fit_full_batch_list_and_custom_optimizer():
    import optax

    x, y = _regression()
    loss = lambda p, b: _sq_loss(p, b)[0]  # noqa: E731
    p, h = fit(loss, _P0, [(x, y)], epochs=200, optimizer=optax.sgd(0.1))
    np.testing.assert_allclose(np.asarray(p["w"]), [1.0, -2.0, 0.5], atol=1e-3)
    assert h.steps == 200 and h.monitor is None and not h.stopped_early


def test_fit_monitor_target_and_restore_best():
    x, y = _regression()
    scores = iter([0.2, 0.9, 0.5, 0.95, 0.1])
    seen = []

    def eval_fn(p):
        seen.append(p)
        return {"score": next(scores)}

    kw = dict(has_aux=True, learning_rate=0.05, eval_fn=eval_fn, monitor="score")
    p, h = fit(_sq_loss, _P0, [(x, y)], epochs=5, restore_best=True, **kw)
    assert h.score == [0.2, 0.9, 0.5, 0.95, 0.1] and h.best_epoch == 4 and h.best_score == 0.95
    assert p is seen[3] and not h.stopped_early
    scores = iter([0.2, 0.9, 0.5])
    seen.clear()
    p, h = fit(_sq_loss, _P0, [(x, y)], epochs=5, target=0.8, **kw)
    assert h.epoch == [1, 2] and h.stopped_early and p is seen[1]
    d = h.as_dict()
    assert d["best_score"] == 0.9 and d["score"] == [0.2, 0.9] and d["steps"] == 2
    assert set(d) == {
        "epoch",
        "train_loss",
        "train_mae",
        "score",
        "stopped_early",
        "best_epoch",
        "best_score",
        "steps",
    }
    with pytest.raises(AttributeError, match="no attribute or metric 'val_acc'"):
        h.val_acc  # noqa: B018


def test_fit_invalid_arguments():
    x, y = _regression()
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        fit(_sq_loss, _P0, [(x, y)], epochs=0, has_aux=True)
    with pytest.raises(ValueError, match="need monitor="):
        fit(_sq_loss, _P0, [(x, y)], target=1.0, has_aux=True)
    with pytest.raises(ValueError, match=r"monitor='acc' is not a metric.*train_mae"):
        fit(_sq_loss, _P0, [(x, y)], monitor="acc", has_aux=True)
    with pytest.raises(ValueError, match="no batch in epoch 2"):
        fit(_sq_loss, _P0, iter([(x, y)]), epochs=2, has_aux=True)


def test_minibatches_cover_every_row_once_per_epoch_and_are_seeded():
    x = np.arange(10)
    mb = Minibatches({"x": x, "y": -x}, 4, seed=1)
    epochs = [[b["x"] for b in mb] for _ in range(3)]
    for e in epochs:
        assert [len(b) for b in e] == [4, 4, 2]
        assert sorted(np.concatenate(e).tolist()) == list(range(10))
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], epochs[1]))
    again = Minibatches({"x": x, "y": -x}, 4, seed=1)
    assert all(np.array_equal(a["x"], b) for a, b in zip(again, epochs[0]))
    assert all((b["y"] == -b["x"]).all() for b in mb)
    dropped = Minibatches((x,), 4, drop_remainder=True)
    assert [len(b[0]) for b in dropped] == [4, 4] and len(dropped) == 2 and len(mb) == 3
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Minibatches((x,), 0)
    with pytest.raises(ValueError, match="share the leading dimension"):
        Minibatches((x, x[:3]), 2)


def test_train_history_is_the_classifier_history():
    h = TrainHistory(monitor="val_acc")
    h.record(1, {"train_loss": 0.5, "val_acc": 0.75})
    assert h.val_acc == [0.75] and h.train_loss == [0.5] and np.isnan(h.best_val_acc)


def test_map_batches_pads_the_last_chunk_and_cuts_it():
    shapes = []

    @jax.jit
    def f(a, b):
        return {"s": a + b, "rowsum": jnp.sum(a, axis=1)}

    def g(a, b):
        shapes.append(a.shape)
        return f(a, b)

    a = np.arange(14.0).reshape(7, 2)
    b = np.ones((7, 2))
    out = map_batches(g, (a, b), 3)
    np.testing.assert_array_equal(out["s"], a + b)
    np.testing.assert_array_equal(out["rowsum"], a.sum(1))
    assert shapes == [(3, 2)] * 3
    assert map_batches(lambda v: (v, 2 * v), (np.arange(2),), 5)[1].tolist() == [0, 2]
    with pytest.raises(ValueError, match="at least one row"):
        map_batches(g, (a[:0], b[:0]), 3)
    with pytest.raises(ValueError, match="share the leading dimension"):
        map_batches(g, (a, b[:3]), 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        map_batches(g, (a, b), 0)
