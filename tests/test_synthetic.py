"""Tests for jaxpr_semiring.paper.synthetic (paper App. C).

Labels are checked against independent, per-example pure-Python predicates written here (not
the module's vectorized ``label`` functions).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpr_semiring.paper import synthetic as syn
from jaxpr_semiring.paper.synthetic import (
    TASKS,
    AdjacentDuplicate,
    BinCountOnes,
    Contains1,
    ContainsTokenSet,
    FirstTokenRepeatedImmediately,
    FirstTokenRepeatedLast,
    FirstTokenRepeatedOnce,
    make_task,
    repeat_positions,
    token_groups,
)

# ---------------------------------------------------------------------------------------------
# independent reference predicates (plain Python on lists)
# ---------------------------------------------------------------------------------------------


def py_first_repeated(x: list[int]) -> int:
    return int(x[0] in x[1:])


def py_contains_set(x: list[int], tset) -> int:
    return int(all(t in x for t in tset))


def py_contains1(x: list[int]) -> int:
    return int(1 in x)


def py_adjacent_duplicate(x: list[int]) -> int:
    return int(any(a == b for a, b in zip(x, x[1:])))


def py_first_immediately(x: list[int]) -> int:
    return int(x[0] == x[1])


def py_first_last(x: list[int]) -> int:
    return int(x[0] == x[-1])


def py_bin_count_ones(x: list[int], num_classes: int) -> int:
    count = sum(1 for t in x if t == 1)
    raw = math.ceil(Fraction(count) / Fraction(len(x), num_classes)) - 1
    return max(raw, 0)


def reference(task) -> callable:
    if isinstance(task, FirstTokenRepeatedOnce):
        return py_first_repeated
    if isinstance(task, Contains1):
        return py_contains1
    if isinstance(task, ContainsTokenSet):
        return lambda x: py_contains_set(x, task.token_set)
    if isinstance(task, AdjacentDuplicate):
        return py_adjacent_duplicate
    if isinstance(task, FirstTokenRepeatedImmediately):
        return py_first_immediately
    if isinstance(task, FirstTokenRepeatedLast):
        return py_first_last
    if isinstance(task, BinCountOnes):
        return lambda x: py_bin_count_ones(x, task.num_classes)
    raise AssertionError(task)


TASK_INSTANCES = [
    FirstTokenRepeatedOnce(),
    FirstTokenRepeatedOnce(seq_len=2, vocab_size=2),
    FirstTokenRepeatedOnce(seq_len=36, vocab_size=5),
    ContainsTokenSet(),
    ContainsTokenSet(token_set={4, 7}, seq_len=6, vocab_size=9),
    ContainsTokenSet(token_set=[1, 2, 3, 4, 5], seq_len=5, vocab_size=5),
    Contains1(),
    Contains1(seq_len=36, vocab_size=20),
    AdjacentDuplicate(),
    AdjacentDuplicate(seq_len=2, vocab_size=2),
    FirstTokenRepeatedImmediately(),
    FirstTokenRepeatedLast(),
    FirstTokenRepeatedLast(seq_len=2, vocab_size=3),
    BinCountOnes(),
    BinCountOnes(num_classes=5, seq_len=10),
    BinCountOnes(num_classes=10, seq_len=10, vocab_size=3),
    BinCountOnes(num_classes=12, seq_len=36),
    BinCountOnes(num_classes=36, seq_len=36),
]
IDS = [t.describe() for t in TASK_INSTANCES]


@pytest.mark.parametrize("task", TASK_INSTANCES, ids=IDS)
def test_labels_match_independent_predicate(task):
    tokens, labels = task.generate(601, seed=123)
    assert tokens.dtype == np.int32 and labels.dtype == np.int32
    assert tokens.shape == (601, task.seq_len) and labels.shape == (601,)
    assert tokens.min() >= 1 and tokens.max() <= task.vocab_size  # pad id 0 never used
    pred = reference(task)
    expected = [pred(row) for row in tokens.tolist()]
    assert labels.tolist() == expected
    assert task.label(tokens).tolist() == expected


@pytest.mark.parametrize("task", TASK_INSTANCES, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 400, 401])
def test_class_balance(task, n):
    _, labels = task.generate(n, seed=7)
    counts = np.bincount(labels, minlength=task.num_classes)
    assert counts.sum() == n
    assert counts.max() - counts.min() <= 1
    assert set(labels.tolist()) <= set(range(task.num_classes))


@pytest.mark.parametrize("task", TASK_INSTANCES, ids=IDS)
def test_determinism(task):
    a = task.generate(200, seed=5)
    b = task.generate(200, seed=5)
    c = task.generate(200, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # a Generator can be passed too and is advanced
    rng = np.random.default_rng(5)
    x1, _ = task.generate(50, seed=rng)
    x2, _ = task.generate(50, seed=rng)
    assert not np.array_equal(x1, x2)


def test_registry_and_make_task():
    assert set(TASKS) == {
        "FirstTokenRepeatedOnce",
        "ContainsTokenSet",
        "Contains1",
        "AdjacentDuplicate",
        "FirstTokenRepeatedImmediately",
        "FirstTokenRepeatedLast",
        "BinCountOnes",
    }
    for name, cls in TASKS.items():
        task = make_task(name)
        assert isinstance(task, cls) and task.name == name
        assert task.seq_len == 10 and task.vocab_size == 20 and task.embedding_size == 21
    t = make_task("BinCountOnes", num_classes=5, seq_len=10)
    assert t.num_classes == 5 and t.bin_width == 2
    assert make_task("ContainsTokenSet", token_set={3, 1}).token_set == (1, 3)
    assert Contains1().token_set == (1,)
    with pytest.raises(ValueError, match="unknown task name 'Nope'.*available tasks"):
        make_task("Nope")


# ---------------------------------------------------------------------------------------------
# the paper's example tables (S = 6)
# ---------------------------------------------------------------------------------------------

TABLE1 = [  # task, positive example, negative example
    (
        ContainsTokenSet(token_set={1, 2, 3}, seq_len=6, vocab_size=9),
        [1, 3, 4, 2, 5, 2],
        [1, 5, 9, 2, 2, 4],
    ),
    (Contains1(seq_len=6, vocab_size=9), [1, 3, 4, 2, 5, 2], [6, 5, 9, 2, 2, 4]),
    (
        FirstTokenRepeatedImmediately(seq_len=6, vocab_size=9),
        [3, 3, 2, 6, 7, 8],
        [5, 3, 2, 6, 7, 8],
    ),
    (FirstTokenRepeatedLast(seq_len=6, vocab_size=9), [8, 3, 2, 6, 7, 8], [8, 3, 2, 6, 7, 4]),
    (AdjacentDuplicate(seq_len=6, vocab_size=9), [1, 3, 6, 6, 7, 8], [1, 3, 6, 8, 7, 8]),
    (FirstTokenRepeatedOnce(seq_len=6, vocab_size=9), [1, 3, 6, 1, 7, 8], [1, 3, 6, 7, 7, 8]),
]


@pytest.mark.parametrize("task,pos,neg", TABLE1, ids=[t[0].name for t in TABLE1])
def test_paper_table1_examples(task, pos, neg):
    assert task.label(np.array([pos, neg])).tolist() == [1, 0]


def test_paper_table2_examples():
    task = BinCountOnes(num_classes=3, seq_len=6, vocab_size=9)
    rows = [
        [1, 3, 4, 2, 5, 2],
        [1, 3, 4, 2, 3, 1],
        [1, 3, 4, 2, 1, 1],
        [1, 3, 1, 1, 5, 1],
        [1, 3, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
    ]
    assert task.label(np.array(rows)).tolist() == [0, 0, 1, 1, 2, 2]
    # no 1s at all: the literal formula gives -1; we put it in class 0 (documented)
    assert task.label(np.array([[2, 3, 4, 5, 6, 7]])).tolist() == [0]
    # the 2-class description: 0 iff at most S/2 ones
    two = BinCountOnes(num_classes=2, seq_len=6, vocab_size=9)
    assert two.label(np.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 2, 2]])).tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------
# task-specific structure
# ---------------------------------------------------------------------------------------------


def test_first_token_repeated_once_constraint_and_groups():
    task = FirstTokenRepeatedOnce()
    tokens, labels = task.generate(1000, seed=0)
    rows = tokens.tolist()
    # the first token occurs again at most once, exactly once for positives
    assert [row[1:].count(row[0]) for row in rows] == labels.tolist()
    pos = repeat_positions(tokens)
    expected_pos = [row.index(row[0], 1) if row[0] in row[1:] else -1 for row in rows]
    assert pos.tolist() == expected_pos
    assert task.repeat_positions(tokens).tolist() == expected_pos  # also exposed on the task
    groups = token_groups(tokens)
    assert groups.shape == tokens.shape and groups.dtype == np.int32
    for row, p, g in zip(rows, expected_pos, groups.tolist()):
        want = [syn.OTHER_TOKEN] * len(row)
        want[0] = syn.FIRST_TOKEN
        if p >= 0:
            want[p] = syn.REPEAT_TOKEN
        assert g == want
    assert syn.TOKEN_GROUP_NAMES[syn.REPEAT_TOKEN] == "repeat token"
    # the repeat position is spread over all of 1..S-1
    assert set(pos[pos >= 0].tolist()) == set(range(1, task.seq_len))


def test_contains_token_set_negatives_miss_exactly_one_token():
    task = ContainsTokenSet(token_set=(2, 5, 7), seq_len=8, vocab_size=10)
    tokens, labels = task.generate(500, seed=1)
    for row, y in zip(tokens.tolist(), labels.tolist()):
        missing = [t for t in task.token_set if t not in row]
        assert len(missing) == (0 if y else 1)


def test_bin_count_ones_counts_cover_each_bin():
    task = BinCountOnes(num_classes=5, seq_len=10)
    tokens, labels = task.generate(2000, seed=3)
    counts = (tokens == 1).sum(axis=1)
    for c in range(5):
        got = set(counts[labels == c].tolist())
        want = set(range(0, 3)) if c == 0 else {2 * c + 1, 2 * c + 2}
        assert got == want


@settings(max_examples=30, deadline=None)
@given(
    seq_len=st.integers(2, 24),
    vocab_size=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_random_parameters_property(seq_len, vocab_size, seed, data):
    divisors = [c for c in range(2, seq_len + 1) if seq_len % c == 0]
    k = data.draw(st.integers(1, min(seq_len, vocab_size)))
    tset = data.draw(st.lists(st.integers(1, vocab_size), min_size=k, max_size=k, unique=True))
    tasks = [
        FirstTokenRepeatedOnce(seq_len=seq_len, vocab_size=vocab_size),
        ContainsTokenSet(token_set=tset, seq_len=seq_len, vocab_size=vocab_size),
        Contains1(seq_len=seq_len, vocab_size=vocab_size),
        AdjacentDuplicate(seq_len=seq_len, vocab_size=vocab_size),
        FirstTokenRepeatedImmediately(seq_len=seq_len, vocab_size=vocab_size),
        FirstTokenRepeatedLast(seq_len=seq_len, vocab_size=vocab_size),
        BinCountOnes(
            num_classes=data.draw(st.sampled_from(divisors)), seq_len=seq_len, vocab_size=vocab_size
        ),
    ]
    for task in tasks:
        tokens, labels = task.generate(41, seed=seed)
        pred = reference(task)
        assert labels.tolist() == [pred(r) for r in tokens.tolist()], task.describe()
        assert tokens.min() >= 1 and tokens.max() <= vocab_size
        counts = np.bincount(labels, minlength=task.num_classes)
        assert counts.max() - counts.min() <= 1


# ---------------------------------------------------------------------------------------------
# invalid parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,pattern",
    [
        (
            lambda: BinCountOnes(num_classes=3, seq_len=10),
            r"num_classes=3 must divide seq_len=10.*\[2, 5, 10\]",
        ),
        (
            lambda: BinCountOnes(num_classes=1, seq_len=10),
            r"num_classes=1 must lie in 2\.\.seq_len=10",
        ),
        (
            lambda: BinCountOnes(num_classes=20, seq_len=10),
            r"num_classes=20 must lie in 2\.\.seq_len=10",
        ),
        (lambda: BinCountOnes(num_classes=2.5), r"num_classes must be an integer"),
        (
            lambda: ContainsTokenSet(token_set=range(1, 12), seq_len=10),
            r"token_set has 11 tokens but seq_len=10",
        ),
        (lambda: ContainsTokenSet(token_set={0, 1}), r"out-of-range ids \[0\].*1\.\.vocab_size=20"),
        (lambda: ContainsTokenSet(token_set={21}), r"out-of-range ids \[21\].*increase vocab_size"),
        (lambda: ContainsTokenSet(token_set=[]), r"token_set must not be empty"),
        (lambda: ContainsTokenSet(token_set=[2, 2]), r"duplicate ids"),
        (lambda: ContainsTokenSet(token_set=["a"]), r"token_set element must be an integer"),
        (lambda: ContainsTokenSet(token_set=5), r"token_set must be an iterable"),
        (
            lambda: FirstTokenRepeatedOnce(seq_len=1),
            r"seq_len=1 is too small for FirstTokenRepeatedOnce.*seq_len >= 2",
        ),
        (
            lambda: FirstTokenRepeatedOnce(vocab_size=1),
            r"vocab_size=1 is too small.*vocab_size >= 2",
        ),
        (lambda: AdjacentDuplicate(seq_len=0), r"seq_len=0 is too small"),
        (lambda: FirstTokenRepeatedLast(seq_len="10"), r"seq_len must be an integer"),
        (lambda: Contains1(seq_len=True), r"seq_len must be an integer, got the bool"),
        (lambda: FirstTokenRepeatedOnce().generate(-1), r"n \(number of examples\) must be >= 0"),
        (lambda: FirstTokenRepeatedOnce().generate(2.5), r"n must be an integer"),
        (
            lambda: FirstTokenRepeatedOnce().label(np.ones((3, 4), int)),
            r"sequence length 4.*seq_len=10",
        ),
        (lambda: repeat_positions(np.ones(4, int)), r"shape \[n, seq_len\]"),
    ],
)
def test_invalid_parameters_raise(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_contains1_token_set_is_fixed():
    with pytest.raises(TypeError):
        Contains1(token_set=(2,))  # not an init parameter


def test_tasks_are_frozen_and_hashable():
    t = BinCountOnes(num_classes=5)
    with pytest.raises(Exception):
        t.num_classes = 2
    assert hash(t) == hash(BinCountOnes(num_classes=5))
