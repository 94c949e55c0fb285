"""Synthetic sequence-classification tasks of the paper (App. C, Tables 1 and 2).

Every task is a small frozen dataclass (keyword-only arguments) with

* ``generate(n, seed) -> (tokens, labels)``: ``tokens`` is ``int32[n, seq_len]``, ``labels`` is
  ``int32[n]``; generation is vectorized with a seeded :class:`numpy.random.Generator` (same seed
  ⇒ identical arrays; different seeds ⇒ different data);
* ``label(tokens) -> labels``: the task's ground-truth labelling function (vectorized numpy);
  ``generate`` checks its own output against it;
* ``num_classes``, ``vocab_size``, ``seq_len`` and ``embedding_size`` (= ``vocab_size + 1``).

Conventions shared by all tasks (document these when reporting results):

* **Token ids.** Content tokens take the values ``1 .. vocab_size`` (as in the paper: "a sequence
  of S numbers valued from 1 to vocab size"). Id ``0`` is reserved as a padding id
  (:data:`PAD_ID`) and is **never produced**; a model therefore needs an embedding table with
  ``embedding_size = vocab_size + 1`` rows. There is **no CLS token**: a classifier reads the
  first position (which for the FirstToken* tasks is the token the decision is about) or pools.
* **Fixed length.** Every example has exactly ``seq_len`` tokens (no padding).
* **Balanced labels.** Labels are ``arange(n) % num_classes`` randomly permuted, so every class
  occurs ``n // num_classes`` or ``n // num_classes + 1`` times (exact balance for binary tasks
  when ``n`` is even). Each example is then sampled conditionally on its label, as described per
  task. Positives and negatives differ minimally: both use the same "background" distribution
  (uniform tokens) and differ only in the planted / removed feature.
* Defaults: ``seq_len=10``, ``vocab_size=20`` (paper §5.1; §5.3 uses ``seq_len=36``).

Example:
    >>> from jaxpr_semiring.paper.synthetic import make_task
    >>> task = make_task("FirstTokenRepeatedOnce", seq_len=10, vocab_size=20)
    >>> tokens, labels = task.generate(1000, seed=0)
    >>> tokens.shape, labels.shape, int(labels.sum())
    ((1000, 10), (1000,), 500)
    >>> bool((task.label(tokens) == labels).all())
    True
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "PAD_ID",
    "DEFAULT_SEQ_LEN",
    "DEFAULT_VOCAB_SIZE",
    "FIRST_TOKEN",
    "REPEAT_TOKEN",
    "OTHER_TOKEN",
    "TOKEN_GROUP_NAMES",
    "Task",
    "FirstTokenRepeatedOnce",
    "ContainsTokenSet",
    "Contains1",
    "AdjacentDuplicate",
    "FirstTokenRepeatedImmediately",
    "FirstTokenRepeatedLast",
    "BinCountOnes",
    "TASKS",
    "make_task",
    "balanced_labels",
    "repeat_positions",
    "token_groups",
]

PAD_ID: int = 0
"""Reserved padding id; never produced by any generator (content ids are ``1..vocab_size``)."""
DEFAULT_SEQ_LEN: int = 10
DEFAULT_VOCAB_SIZE: int = 20

FIRST_TOKEN: int = 0
"""Group id of position 0 in :func:`token_groups`."""
REPEAT_TOKEN: int = 1
"""Group id of the position repeating the first token in :func:`token_groups`."""
OTHER_TOKEN: int = 2
"""Group id of all remaining positions in :func:`token_groups`."""
TOKEN_GROUP_NAMES: tuple[str, str, str] = ("first token", "repeat token", "other tokens")
"""Names of the groups returned by :func:`token_groups`, indexed by group id."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_int(value: Any, name: str) -> int:
    """Return ``value`` as a Python int or raise ValueError naming the parameter."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer, got {value!r} of type {type(value).__name__}"
        ) from None


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_as_int(seed, "seed"))


def balanced_labels(n: int, num_classes: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A random permutation of ``arange(n) % num_classes`` (class counts differ by at most 1).

    Example:
        >>> np.bincount(balanced_labels(7, 2, seed=0)).tolist()
        [4, 3]
    """
    n = _as_int(n, "n")
    if n < 0:
        raise ValueError(f"n (number of examples) must be >= 0, got {n}")
    rng = _rng(seed)
    return rng.permutation(np.arange(n, dtype=np.int64) % num_classes).astype(np.int32)


def _uniform_tokens(
    rng: np.random.Generator, shape: tuple[int, ...], vocab_size: int, low: int = 1
) -> np.ndarray:
    """Uniform ids in ``low .. vocab_size``."""
    return rng.integers(low, vocab_size + 1, size=shape, dtype=np.int64)


def _uniform_excluding(
    rng: np.random.Generator, shape: tuple[int, ...], excluded: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Uniform ids in ``1 .. vocab_size`` except ``excluded`` (broadcastable to ``shape``)."""
    draw = rng.integers(1, vocab_size, size=shape, dtype=np.int64)  # 1 .. V-1
    return draw + (draw >= excluded)  # skip the excluded id


def _distinct_positions(
    rng: np.random.Generator, n: int, low: int, high: int, k: int
) -> np.ndarray:
    """``int[n, k]``: per row, ``k`` distinct positions drawn uniformly from ``low .. high-1``."""
    keys = rng.random((n, high - low))
    return np.argsort(keys, axis=1)[:, :k] + low


def _check_tokens(tokens: Any, seq_len: int | None = None) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [n, seq_len], got shape {tokens.shape}")
    if seq_len is not None and tokens.shape[1] != seq_len:
        raise ValueError(
            f"tokens has sequence length {tokens.shape[1]} but the task has seq_len={seq_len}"
        )
    return tokens


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Task:
    """Base class of the synthetic tasks (binary unless a subclass overrides ``num_classes``).

    Attributes:
        seq_len: number of tokens per example ``S``.
        vocab_size: number of content token ids; tokens take values ``1 .. vocab_size``.

    Subclasses implement ``label`` (vectorized ground truth) and ``_sample`` (draw tokens given
    labels). Use :meth:`generate` to draw a dataset.
    """

    seq_len: int = DEFAULT_SEQ_LEN
    vocab_size: int = DEFAULT_VOCAB_SIZE

    name: ClassVar[str] = "Task"
    num_classes: ClassVar[int] = 2
    min_seq_len: ClassVar[int] = 2
    min_vocab_size: ClassVar[int] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq_len", _as_int(self.seq_len, "seq_len"))
        object.__setattr__(self, "vocab_size", _as_int(self.vocab_size, "vocab_size"))
        if self.seq_len < self.min_seq_len:
            raise ValueError(
                f"seq_len={self.seq_len} is too small for {self.name}: it needs "
                f"seq_len >= {self.min_seq_len}; pass a larger seq_len"
            )
        if self.vocab_size < self.min_vocab_size:
            raise ValueError(
                f"vocab_size={self.vocab_size} is too small for {self.name}: it needs "
                f"vocab_size >= {self.min_vocab_size}; pass a larger vocab_size"
            )

    @property
    def embedding_size(self) -> int:
        """Rows needed in an embedding table: ``vocab_size + 1`` (id 0 is the unused pad id)."""
        return self.vocab_size + 1

    def label(self, tokens: np.ndarray) -> np.ndarray:
        """Ground-truth labels ``int32[n]`` of ``tokens`` (``int[n, seq_len]``)."""
        raise NotImplementedError

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def generate(
        self, n: int, seed: int | np.random.Generator = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` examples with balanced labels.

        Args:
            n: number of examples (``>= 0``).
            seed: an integer seed (or a ``numpy.random.Generator``, which is advanced).

        Returns:
            ``(tokens, labels)``: ``int32[n, seq_len]`` with values in ``1..vocab_size`` and
            ``int32[n]`` with values in ``0..num_classes-1``.

        Example:
            >>> t, y = Contains1(seq_len=6, vocab_size=9).generate(4, seed=1)
            >>> t.shape, y.dtype.name
            ((4, 6), 'int32')
        """
        n = _as_int(n, "n")
        if n < 0:
            raise ValueError(f"n (number of examples) must be >= 0, got {n}")
        rng = _rng(seed)
        labels = balanced_labels(n, self.num_classes, rng)
        tokens = self._sample(rng, labels).astype(np.int32)
        # Self-check: construction and labelling function agree (cheap, vectorized).
        if not np.array_equal(self.label(tokens), labels):  # pragma: no cover - internal bug
            raise RuntimeError(f"{self.name}: generated tokens disagree with their labels")
        return tokens, labels

    def describe(self) -> str:
        """One-line human readable description, e.g. for plot titles."""
        params = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.init
        )
        return f"{self.name}({params})"


# --------------------------------------------------------------------------------------------
# FirstTokenRepeatedOnce (paper §5.1)
# --------------------------------------------------------------------------------------------


def repeat_positions(tokens: np.ndarray) -> np.ndarray:
    """Per example, the position (``>= 1``) where the first token occurs again, else ``-1``.

    If the first token occurs several times (not possible in FirstTokenRepeatedOnce data) the
    earliest repeat is returned.

    Example:
        >>> repeat_positions(np.array([[1, 3, 6, 1, 7, 8], [1, 3, 6, 7, 7, 8]])).tolist()
        [3, -1]
    """
    tokens = _check_tokens(tokens)
    match = tokens[:, 1:] == tokens[:, :1]
    return np.where(match.any(axis=1), match.argmax(axis=1) + 1, -1).astype(np.int32)


def token_groups(tokens: np.ndarray) -> np.ndarray:
    """``int32[n, seq_len]`` group id per position for the §5.1 analysis (paper Fig. 2).

    :data:`FIRST_TOKEN` (0) for position 0, :data:`REPEAT_TOKEN` (1) for the position returned
    by :func:`repeat_positions` (if any) and :data:`OTHER_TOKEN` (2) elsewhere; names are in
    :data:`TOKEN_GROUP_NAMES`.

    Example:
        >>> token_groups(np.array([[1, 3, 1, 2]])).tolist()
        [[0, 2, 1, 2]]
    """
    tokens = _check_tokens(tokens)
    n, s = tokens.shape
    groups = np.full((n, s), OTHER_TOKEN, dtype=np.int32)
    if s:
        groups[:, 0] = FIRST_TOKEN
    rep = repeat_positions(tokens)
    rows = np.nonzero(rep >= 0)[0]
    groups[rows, rep[rows]] = REPEAT_TOKEN
    return groups


@dataclass(frozen=True, kw_only=True)
class FirstTokenRepeatedOnce(Task):
    """True iff the first token occurs again; it occurs again **at most once** (paper §5.1).

    Sampling: the first token is uniform on ``1..V``; positions ``1..S-1`` are uniform on
    ``1..V`` minus the first token (so other tokens may repeat among themselves, as in the
    paper's negative example ``[1,3,6,7,7,8]``). For a positive, one position drawn uniformly
    from ``1..S-1`` is overwritten with the first token. Paper setting: 10 000 examples,
    ``seq_len=10``, ``vocab_size=20``.

    Example:
        >>> task = FirstTokenRepeatedOnce()
        >>> task.label(np.array([[1, 3, 6, 1, 7, 8, 2, 2, 2, 2]])).tolist()
        [1]
    """

    name: ClassVar[str] = "FirstTokenRepeatedOnce"

    def label(self, tokens: np.ndarray) -> np.ndarray:
        tokens = _check_tokens(tokens, self.seq_len)
        return (tokens[:, 1:] == tokens[:, :1]).any(axis=1).astype(np.int32)

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        n, s, v = labels.shape[0], self.seq_len, self.vocab_size
        first = _uniform_tokens(rng, (n, 1), v)
        rest = _uniform_excluding(rng, (n, s - 1), first, v)
        tokens = np.concatenate([first, rest], axis=1)
        pos = rng.integers(1, s, size=n)
        rows = np.nonzero(labels == 1)[0]
        tokens[rows, pos[rows]] = first[rows, 0]
        return tokens

    repeat_positions = staticmethod(repeat_positions)
    token_groups = staticmethod(token_groups)


# --------------------------------------------------------------------------------------------
# ContainsTokenSet / Contains1
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContainsTokenSet(Task):
    """True iff the sequence contains every token of ``token_set`` (paper Table 1).

    Sampling (``m = len(token_set)``): *positives* are uniform on ``1..V`` with the ``m`` tokens
    of the set written at ``m`` distinct uniformly drawn positions. *Negatives* pick one
    "missing" token of the set uniformly, draw every position uniformly from ``1..V`` minus the
    missing token and write the other ``m-1`` set tokens at distinct random positions -- so a
    negative misses exactly the one token (hard negatives; counting set members is not enough).

    Args:
        token_set: the distinct token ids ``T`` (each in ``1..vocab_size``,
            ``1 <= |T| <= seq_len``);
            stored sorted as a tuple. Default ``(1, 2, 3)`` as in the paper's example.

    Example:
        >>> task = ContainsTokenSet(token_set={1, 2, 3}, seq_len=6, vocab_size=9)
        >>> task.label(np.array([[1, 3, 4, 2, 5, 2], [1, 5, 9, 2, 2, 4]])).tolist()
        [1, 0]
    """

    token_set: tuple[int, ...] = (1, 2, 3)

    name: ClassVar[str] = "ContainsTokenSet"

    def __post_init__(self) -> None:
        super().__post_init__()
        raw = self.token_set
        if isinstance(raw, (int, np.integer, str, bytes)):
            raise ValueError(
                f"token_set must be an iterable of token ids, got {raw!r}; e.g. pass {{{raw!r}}}"
            )
        try:
            items = [_as_int(t, "token_set element") for t in raw]
        except TypeError:
            raise ValueError(
                f"token_set must be an iterable of token ids, got {self.token_set!r}"
            ) from None
        if not items:
            raise ValueError("token_set must not be empty; pass at least one token id, e.g. {1}")
        if len(set(items)) != len(items):
            raise ValueError(f"token_set={items} contains duplicate ids; pass distinct ids")
        bad = [t for t in items if not 1 <= t <= self.vocab_size]
        if bad:
            raise ValueError(
                f"token_set contains out-of-range ids {bad}: ids must lie in 1..vocab_size="
                f"{self.vocab_size} (0 is the padding id); increase vocab_size or change token_set"
            )
        if len(items) > self.seq_len:
            raise ValueError(
                f"token_set has {len(items)} tokens but seq_len={self.seq_len}: a sequence cannot "
                "contain them all; use a smaller token_set or a larger seq_len"
            )
        object.__setattr__(self, "token_set", tuple(sorted(items)))

    def label(self, tokens: np.ndarray) -> np.ndarray:
        tokens = _check_tokens(tokens, self.seq_len)
        has = np.stack([(tokens == t).any(axis=1) for t in self.token_set], axis=1)
        return has.all(axis=1).astype(np.int32)

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        n, s, v = labels.shape[0], self.seq_len, self.vocab_size
        tset = np.asarray(self.token_set, dtype=np.int64)
        m = tset.size
        # background: positives uniform on 1..V; negatives avoid one missing set token
        missing_idx = rng.integers(0, m, size=n)
        missing = tset[missing_idx]
        tokens = np.where(
            labels[:, None] == 1,
            _uniform_tokens(rng, (n, s), v),
            _uniform_excluding(rng, (n, s), missing[:, None], v),
        )
        # planted tokens: column j holds set token (missing_idx + j) % m, so column m-1 is the
        # missing token; it is planted for positives only.
        planted = tset[(missing_idx[:, None] + 1 + np.arange(m)) % m]
        pos = _distinct_positions(rng, n, 0, s, m)
        keep = np.ones((n, m), dtype=bool)
        keep[:, m - 1] = labels == 1
        rows = np.broadcast_to(np.arange(n)[:, None], (n, m))
        tokens[rows[keep], pos[keep]] = planted[keep]
        return tokens


@dataclass(frozen=True, kw_only=True)
class Contains1(ContainsTokenSet):
    """True iff the sequence contains the token ``1`` (Lovering et al., 2021; paper Table 1).

    Same sampler as :class:`ContainsTokenSet` with ``token_set=(1,)``: positives have a ``1`` at
    a uniform position (others uniform on ``1..V``, so more 1s may occur); negatives are uniform
    on ``2..V``.

    Example:
        >>> Contains1(seq_len=6, vocab_size=9).label(np.array([[1, 3, 4, 2, 5, 2],
        ...                                                    [6, 5, 9, 2, 2, 4]])).tolist()
        [1, 0]
    """

    token_set: tuple[int, ...] = field(default=(1,), init=False)

    name: ClassVar[str] = "Contains1"


# --------------------------------------------------------------------------------------------
# FirstTokenRepeatedImmediately / FirstTokenRepeatedLast
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _FirstTokenEqualsPosition(Task):
    """True iff ``tokens[:, 0] == tokens[:, position]``; other positions uniform on ``1..V``."""

    _position: ClassVar[int] = 1

    def label(self, tokens: np.ndarray) -> np.ndarray:
        tokens = _check_tokens(tokens, self.seq_len)
        return (tokens[:, 0] == tokens[:, self._position]).astype(np.int32)

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        n, s, v = labels.shape[0], self.seq_len, self.vocab_size
        tokens = _uniform_tokens(rng, (n, s), v)
        other = _uniform_excluding(rng, (n,), tokens[:, 0], v)
        tokens[:, self._position] = np.where(labels == 1, tokens[:, 0], other)
        return tokens


@dataclass(frozen=True, kw_only=True)
class FirstTokenRepeatedImmediately(_FirstTokenEqualsPosition):
    """True iff the first two tokens are equal (Lovering et al., 2021; paper Table 1).

    Sampling: all positions uniform on ``1..V``; then position 1 is set to the first token
    (positives) or to a uniform token different from it (negatives).

    Example:
        >>> FirstTokenRepeatedImmediately(seq_len=6, vocab_size=9).label(
        ...     np.array([[3, 3, 2, 6, 7, 8], [5, 3, 2, 6, 7, 8]])).tolist()
        [1, 0]
    """

    name: ClassVar[str] = "FirstTokenRepeatedImmediately"
    _position: ClassVar[int] = 1


@dataclass(frozen=True, kw_only=True)
class FirstTokenRepeatedLast(_FirstTokenEqualsPosition):
    """True iff the first and last tokens are equal (Lovering et al., 2021; paper Table 1).

    Sampling: all positions uniform on ``1..V``; then the last position is set to the first
    token (positives) or to a uniform token different from it (negatives).

    Example:
        >>> FirstTokenRepeatedLast(seq_len=6, vocab_size=9).label(
        ...     np.array([[8, 3, 2, 6, 7, 8], [8, 3, 2, 6, 7, 4]])).tolist()
        [1, 0]
    """

    name: ClassVar[str] = "FirstTokenRepeatedLast"
    _position: ClassVar[int] = -1


# --------------------------------------------------------------------------------------------
# AdjacentDuplicate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdjacentDuplicate(Task):
    """True iff two adjacent tokens are equal somewhere (Lovering et al., 2021; paper Table 1).

    Sampling: *negatives* are uniform sequences without adjacent repeats (each token uniform
    among the ``V-1`` ids differing from its predecessor; vectorized as a cumulative sum of
    offsets modulo ``V``). *Positives* are uniform on ``1..V`` with one uniformly chosen pair
    ``(i, i+1)`` forced equal (other duplicates may occur by chance).

    Example:
        >>> AdjacentDuplicate(seq_len=6, vocab_size=9).label(
        ...     np.array([[1, 3, 6, 6, 7, 8], [1, 3, 6, 8, 7, 8]])).tolist()
        [1, 0]
    """

    name: ClassVar[str] = "AdjacentDuplicate"

    def label(self, tokens: np.ndarray) -> np.ndarray:
        tokens = _check_tokens(tokens, self.seq_len)
        return (tokens[:, 1:] == tokens[:, :-1]).any(axis=1).astype(np.int32)

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        n, s, v = labels.shape[0], self.seq_len, self.vocab_size
        # negatives: x_0 uniform, x_i = x_{i-1} + offset_i (mod V) with offset_i in 1..V-1
        start = rng.integers(0, v, size=(n, 1))
        offsets = rng.integers(1, v, size=(n, s - 1))
        negatives = (np.cumsum(np.concatenate([start, offsets], axis=1), axis=1) % v) + 1
        # positives: uniform, then copy x_i into x_{i+1} for a random i
        positives = _uniform_tokens(rng, (n, s), v)
        i = rng.integers(0, s - 1, size=n)
        rows = np.arange(n)
        positives[rows, i + 1] = positives[rows, i]
        return np.where(labels[:, None] == 1, positives, negatives)


# --------------------------------------------------------------------------------------------
# BinCountOnes (multiclass)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BinCountOnes(Task):
    """Label ``ceil(Count1(x) / (S/C)) - 1`` (clipped at 0) -- paper App. C.2, Table 2.

    With ``w = S / C`` ones per bin, class 0 holds counts ``0..w`` (a sequence without any 1
    would give ``-1`` by the literal formula; like the paper's 2-class description, "label 0 if
    it contains <= S/2 ones", we put it in class 0), and class ``k >= 1`` holds counts
    ``k*w+1 .. (k+1)*w``.

    Sampling (balanced over classes): draw the class, draw the count of 1s uniformly from the
    class's count range, put the 1s at distinct uniform positions and fill the rest uniformly
    from ``2..V``.

    Args:
        num_classes: ``C``, with ``2 <= C <= seq_len`` and ``seq_len % C == 0``.

    Example:
        >>> task = BinCountOnes(num_classes=3, seq_len=6, vocab_size=9)
        >>> task.label(np.array([[1, 3, 4, 2, 5, 2], [1, 3, 4, 2, 1, 1],
        ...                      [1, 1, 1, 1, 1, 1]])).tolist()
        [0, 1, 2]
    """

    num_classes: int = 2  # type: ignore[misc]  # a field here, a ClassVar on the base class

    name: ClassVar[str] = "BinCountOnes"

    def __post_init__(self) -> None:
        super().__post_init__()
        c = _as_int(self.num_classes, "num_classes")
        object.__setattr__(self, "num_classes", c)
        if not 2 <= c <= self.seq_len:
            raise ValueError(
                f"num_classes={c} must lie in 2..seq_len={self.seq_len}; choose C between 2 and S"
            )
        if self.seq_len % c:
            divisors = [d for d in range(2, self.seq_len + 1) if self.seq_len % d == 0]
            raise ValueError(
                f"num_classes={c} must divide seq_len={self.seq_len} (each class is a bin of "
                f"seq_len/num_classes counts); valid num_classes for this seq_len: {divisors}, "
                "or change seq_len to a multiple of num_classes"
            )

    @property
    def bin_width(self) -> int:
        """Number of distinct counts of 1s per bin, ``S / C``."""
        return self.seq_len // self.num_classes

    def label(self, tokens: np.ndarray) -> np.ndarray:
        tokens = _check_tokens(tokens, self.seq_len)
        count = (tokens == 1).sum(axis=1)
        # ceil(count / (S/C)) - 1 == ceil(count*C / S) - 1, in exact integer arithmetic
        lab = -((-count * self.num_classes) // self.seq_len) - 1
        return np.maximum(lab, 0).astype(np.int32)

    def _sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        n, s, v, w = labels.shape[0], self.seq_len, self.vocab_size, self.bin_width
        lo = np.where(labels == 0, 0, labels * w + 1)
        hi = (labels + 1) * w
        count = rng.integers(lo, hi + 1)
        ranks = np.argsort(np.argsort(rng.random((n, s)), axis=1), axis=1)
        others = _uniform_tokens(rng, (n, s), v, low=2)
        return np.where(ranks < count[:, None], 1, others)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        FirstTokenRepeatedOnce,
        ContainsTokenSet,
        Contains1,
        AdjacentDuplicate,
        FirstTokenRepeatedImmediately,
        FirstTokenRepeatedLast,
        BinCountOnes,
    )
}
"""Task classes by name (the paper's spelling, e.g. ``"BinCountOnes"``)."""


def make_task(name: str, **kwargs: Any) -> Task:
    """Instantiate the task registered under ``name`` with keyword parameters.

    Example:
        >>> make_task("BinCountOnes", num_classes=5, seq_len=10).num_classes
        5
    """
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task name {name!r}; available tasks: {sorted(TASKS)}") from None
    return cls(**kwargs)
