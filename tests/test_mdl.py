"""Prequential (online) MDL: per-example code lengths, uniform first block, easy < random."""

import math

import numpy as np
import pytest

from jaxpr_semiring.paper import mdl


def test_default_boundaries_are_voita_titov():
    assert mdl.VOITA_TITOV_FRACTIONS == (
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.0625,
        0.125,
        0.25,
        0.5,
        1.0,
    )
    assert mdl.block_boundaries(10000) == (10, 20, 40, 80, 160, 320, 625, 1250, 2500, 5000, 10000)
    b = mdl.block_boundaries(37)
    assert b[0] >= 1 and b[-1] == 37 and list(b) == sorted(set(b))
    with pytest.raises(ValueError):
        mdl.block_boundaries(10, (0.5, 0.2))
    with pytest.raises(ValueError):
        mdl.block_boundaries(0)


def test_codelengths_bits():
    p = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(mdl.codelengths_bits(np.log(p), [0, 2]), [1.0, -math.log2(0.8)])
    # logits are normalised: a shift does not matter
    np.testing.assert_allclose(
        mdl.codelengths_bits(np.log(p) + 7.0, [1, 1]), [2.0, -math.log2(0.1)]
    )


def test_per_example_sum_matches_hand_computation():
    """A fake learner: p(y) = (count_y in the training prefix + 1) / (n + C_model), with 5
    model outputs while the task has K=3 classes."""
    calls = []

    def fit(x, y, block):
        calls.append((block, x[:, 0].tolist(), y.tolist()))
        counts = np.bincount(y, minlength=5) + 1.0
        logp = np.log(counts / counts.sum())
        # the prediction also depends on x, to check the right rows are coded
        return lambda xs: np.log(np.exp(logp)[None] * (1 + 0.1 * (xs[:, :1] % 2 == 0)))

    x = np.arange(10)[:, None]
    y = np.array([0, 2, 2, 1, 2, 2, 0, 2, 2, 1])
    r = mdl.online_codelength(x, y, 3, fit=fit, block_fractions=(0.2, 0.5, 1.0))
    assert r.boundaries == (2, 5, 10)
    # the learner saw exactly the prefixes
    assert calls == [(0, [0, 1], [0, 2]), (1, [0, 1, 2, 3, 4], [0, 2, 2, 1, 2])]
    # hand computation, example by example
    want = [math.log2(3)] * 2
    for lo, hi in ((2, 5), (5, 10)):
        counts = np.bincount(y[:lo], minlength=5) + 1.0
        for j in range(lo, hi):
            p = counts / counts.sum() * (1 + 0.1 * (j % 2 == 0))
            want.append(-math.log2(p[y[j]] / p.sum()))
    np.testing.assert_allclose(r.example_codelengths, want)
    assert r.codelength == pytest.approx(sum(want))
    assert r.block_codelengths == pytest.approx([sum(want[:2]), sum(want[2:5]), sum(want[5:])])
    # first block: uniform code with the task's true number of classes (3, not 5 outputs)
    assert r.block_codelengths[0] == pytest.approx(2 * math.log2(3))
    assert r.uniform_codelength == pytest.approx(10 * math.log2(3))
    assert r.compression == pytest.approx(r.uniform_codelength / r.codelength)
    # per-example sum, not (block mean) x (number of blocks)
    assert r.codelength != pytest.approx(
        sum(np.mean(want[a:b]) for a, b in ((0, 2), (2, 5), (5, 10)))
    )


def test_argument_errors():
    x, y = np.zeros((4, 2)), np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="fit=.*model="):
        mdl.online_codelength(x, y, 2)
    with pytest.raises(ValueError, match="labels"):
        mdl.online_codelength(x, np.array([0, 1, 2, 0]), 2, fit=lambda *a: None)
    with pytest.raises(ValueError, match="fewer than"):
        mdl.online_codelength(
            x,
            y,
            2,
            block_fractions=(0.5, 1.0),
            fit=lambda xs, ys, b: lambda q: np.zeros((len(q), 1)),
        )


def test_easy_task_has_shorter_code_than_random_labels():
    from jaxpr_semiring.paper.transformer import TransformerClassifier

    # easy: the label is whether the first token (read by the classifier) is > 3
    rng = np.random.default_rng(0)
    x = rng.integers(1, 7, size=(192, 5)).astype(np.int32)
    y = (x[:, 0] > 3).astype(np.int32)
    y_rand = rng.integers(0, 2, size=len(y)).astype(np.int32)
    model = TransformerClassifier(num_layers=1, hidden=16, heads=2, vocab_size=7, max_len=5)
    kw = dict(
        block_fractions=(0.125, 0.25, 0.5, 1.0), max_epochs=10, min_steps=60, learning_rate=3e-3
    )
    easy = mdl.online_codelength(x, y, 2, model=model, **kw)
    rand = mdl.online_codelength(x, y_rand, 2, model=model, **kw)
    assert easy.boundaries == rand.boundaries == (24, 48, 96, 192)
    assert easy.block_codelengths[0] == rand.block_codelengths[0] == pytest.approx(24.0)
    assert easy.codelength < rand.codelength
    assert easy.compression > 1.0 and rand.uniform_codelength == pytest.approx(192.0)
    assert len(easy.block_info) == 3 and easy.block_info[0]["train_size"] == 24
