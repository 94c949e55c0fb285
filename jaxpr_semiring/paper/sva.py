"""Subject–verb number agreement (SVA) data: a TSV loader, a seeded generator, tokenization.

Paper §5.2 / App. B.2 cast SVA as a cloze task: the verb is masked and the model compares the
correct and the wrong verb form at the mask, target ``logit(correct) − logit(wrong)``.

* :func:`load_tsv` reads the Linzen et al. (2016) / Goldberg (2019) TSV format
  (``distractor_count  sentence  masked_sentence  good_word  bad_word``, the verb written as
  ``***mask***`` in ``masked_sentence``; a header line and extra columns are tolerated). That
  format does not say which words are the subject and the attractors (the paper used spaCy), so
  loaded examples have ``subject_index=None`` and no attractor positions, only their count.
* :func:`generate` draws agreement sentences from a small grammar with 0–4 *attractors*
  (nouns between subject and verb whose number is opposite to the subject's) built from
  prepositional phrases (``the author near the guards``), object relative clauses
  (``the author that the guards like``) and subject relative clauses
  (``the author that likes the guards``). Subject and attractor **word** positions are recorded
  by construction. Verb pairs: ``is/are``, ``was/were``, ``has/have`` and regular verbs
  (``writes/write``, ...). Everything is lower case (the MiniLM / BERT-uncased vocabulary).
* :func:`tokenize` maps words to BERT word pieces with a Hugging Face ``tokenizers.Tokenizer``
  and word positions to token positions; sentences whose subject or an attractor splits into
  several word pieces are dropped (paper §5.2), as are those whose verb forms are not single
  vocabulary entries. :func:`collate` pads to arrays with attention masks (:class:`SVABatch`).

Example:
    >>> exs = generate(4, seed=0)
    >>> ex = exs[0]
    >>> ex.words[ex.mask_index]
    '[MASK]'
    >>> all(ex.words[i] in NOUN_FORMS for i in ex.attractor_indices)
    True
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "MASK_WORD",
    "TSV_MASK",
    "SVAExample",
    "TokenizedSVA",
    "SVABatch",
    "load_tsv",
    "parse_tsv",
    "generate",
    "tokenize",
    "collate",
    "encode",
    "load_tokenizer",
    "verb_is_plural",
    "SUBJECT_NOUNS",
    "OBJECT_NOUNS",
    "NOUN_FORMS",
    "MASK_VERBS",
    "RC_VERBS",
    "PLURAL_VERB_FORMS",
    "SINGULAR_VERB_FORMS",
]

MASK_WORD = "[MASK]"
"""The word that stands for the masked verb in :attr:`SVAExample.words`."""
TSV_MASK = "***mask***"
"""How the Linzen / Goldberg TSV marks the verb in ``masked_sentence``."""

# ---------------------------------------------------------------------------------------------
# vocabulary of the generator (every form below is one word piece in the BERT-uncased vocab)
# ---------------------------------------------------------------------------------------------

SUBJECT_NOUNS: tuple[tuple[str, str], ...] = tuple(
    tuple(p.split("/"))
    for p in (  # type: ignore
        "author/authors guard/guards senator/senators teacher/teachers student/students "
        "doctor/doctors pilot/pilots farmer/farmers lawyer/lawyers officer/officers "
        "manager/managers driver/drivers singer/singers dancer/dancers player/players "
        "writer/writers artist/artists friend/friends neighbor/neighbors king/kings "
        "soldier/soldiers worker/workers owner/owners customer/customers painter/painters "
        "actor/actors minister/ministers judge/judges nurse/nurses engineer/engineers "
        "scientist/scientists captain/captains child/children man/men woman/women"
    ).split()
)
"""Animate nouns (singular, plural): subjects and relative-clause attractors."""

OBJECT_NOUNS: tuple[tuple[str, str], ...] = SUBJECT_NOUNS + tuple(
    tuple(p.split("/"))
    for p in (  # type: ignore
        "book/books table/tables car/cars house/houses tree/trees door/doors window/windows "
        "garden/gardens office/offices school/schools building/buildings machine/machines "
        "picture/pictures letter/letters report/reports cabinet/cabinets bridge/bridges "
        "city/cities village/villages company/companies"
    ).split()
)
"""Nouns usable inside prepositional phrases (animate and inanimate)."""

NOUN_FORMS: frozenset[str] = frozenset(w for pair in OBJECT_NOUNS for w in pair)
"""Every noun form the generator can place as a subject or attractor."""

# (singular, plural, kind); kind picks the continuation after the masked verb
MASK_VERBS: tuple[tuple[str, str, str], ...] = (
    ("is", "are", "adj"),
    ("was", "were", "adj"),
    ("has", "have", "participle"),
    ("writes", "write", "object"),
    ("likes", "like", "object"),
    ("reads", "read", "object"),
    ("knows", "know", "object"),
    ("sees", "see", "object"),
    ("wants", "want", "object"),
    ("needs", "need", "object"),
    ("loves", "love", "object"),
    ("hates", "hate", "object"),
)
"""Masked verb pairs (singular, plural, continuation kind)."""

RC_VERBS: tuple[tuple[str, str], ...] = (
    ("likes", "like"),
    ("sees", "see"),
    ("knows", "know"),
    ("meets", "meet"),
    ("helps", "help"),
    ("visits", "visit"),
    ("calls", "call"),
    ("watches", "watch"),
    ("remembers", "remember"),
    ("loves", "love"),
    ("hates", "hate"),
)
"""Transitive verbs inside relative clauses (singular, plural)."""

SINGULAR_VERB_FORMS = frozenset(s for s, _p, *_ in MASK_VERBS + RC_VERBS)
PLURAL_VERB_FORMS = frozenset(p for _s, p, *_ in MASK_VERBS + RC_VERBS)

_ADJECTIVES = ("happy", "tired", "ready", "here", "late", "busy", "old", "young", "famous", "angry")
_PARTICIPLES = ("left", "arrived", "won", "slept", "changed", "returned")
_PREPOSITIONS = (
    ("near",),
    ("behind",),
    ("beside",),
    ("with",),
    ("of",),
    ("from",),
    ("next", "to"),
    ("above",),
)
_SUBJECT_DETS = ("the", "the", "the", "my", "our", "his", "her")
_NOUN_DETS = ("the", "the", "the", "my", "our", "his")
_SUBJECT_ADJS = ("old", "young", "new", "famous", "tired")
_PREFIXES = (
    ("i", "think", "that"),
    ("she", "said", "that"),
    ("we", "know", "that"),
    ("apparently", ","),
    ("he", "believes", "that"),
)
_RELATIVIZERS = ("that", "that", "who")


def verb_is_plural(good: str, bad: str) -> bool:
    """Whether ``good`` is the plural form of the pair ``(good, bad)``.

    Known forms (:data:`PLURAL_VERB_FORMS`, :data:`SINGULAR_VERB_FORMS`) decide first; otherwise
    the English 3rd-person-singular heuristic: the form that ends in ``s`` while the other does
    not (``writes``/``write``) is singular; if that does not decide, the longer form
    (``does``/``do``) is singular.

    Example:
        >>> (verb_is_plural("are", "is"), verb_is_plural("goes", "go"),
        ...  verb_is_plural("fly", "flies"))
        (True, False, True)
    """
    g, b = good.lower(), bad.lower()
    if g in PLURAL_VERB_FORMS and b in SINGULAR_VERB_FORMS:
        return True
    if g in SINGULAR_VERB_FORMS and b in PLURAL_VERB_FORMS:
        return False
    if g.endswith("s") != b.endswith("s"):
        return not g.endswith("s")
    return len(g) < len(b)


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SVAExample:
    """One agreement example at the word level.

    Attributes:
        words: the sentence's words; the verb slot holds :data:`MASK_WORD`.
        mask_index: word index of the masked verb.
        good: the verb form with correct number; ``bad``: the one with the wrong number.
        subject_index: word index of the subject's head noun (``None`` if unknown, TSV data).
        attractor_indices: word indices of the attractors (empty if unknown).
        n_attractors: number of attractors (TSV: the ``distractor_count`` column).
        plural: subject number (True = plural), inferred from the verbs for TSV data.
        sentence: the original unmasked sentence when known.
        structure: short description of how the generator built it (e.g. ``"pp,pp,orc"``).
    """

    words: tuple[str, ...]
    mask_index: int
    good: str
    bad: str
    subject_index: int | None = None
    attractor_indices: tuple[int, ...] = ()
    n_attractors: int = 0
    plural: bool = False
    sentence: str | None = None
    structure: str = ""

    @property
    def masked_sentence(self) -> str:
        """The words joined by spaces (with ``[MASK]`` at the verb)."""
        return " ".join(self.words)

    @property
    def unmasked_words(self) -> tuple[str, ...]:
        """The words with the correct verb form in the mask slot."""
        w = list(self.words)
        w[self.mask_index] = self.good
        return tuple(w)


def _split_columns(line: str) -> list[str]:
    return next(csv.reader(io.StringIO(line), delimiter="\t", quoting=csv.QUOTE_NONE))


def parse_tsv(lines: Iterable[str], *, lowercase: bool = True) -> list[SVAExample]:
    """Parse Linzen / Goldberg TSV lines (see :func:`load_tsv`)."""
    out: list[SVAExample] = []
    header_seen = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        cols = _split_columns(line)
        if len(cols) < 5:
            raise ValueError(
                f"line {lineno}: expected at least 5 tab-separated columns (distractor_count, "
                f"sentence, masked_sentence, good_word, bad_word), got {len(cols)}: {line!r}"
            )
        count_s, sentence, masked, good, bad = (c.strip() for c in cols[:5])
        try:
            count = int(count_s)
        except ValueError:
            if not out and not header_seen:
                header_seen = True
                continue  # a header line
            raise ValueError(f"line {lineno}: distractor_count {count_s!r} is not an integer")
        if lowercase:
            sentence, masked, good, bad = (s.lower() for s in (sentence, masked, good, bad))
        words = masked.split()
        hits = [i for i, w in enumerate(words) if w == TSV_MASK]
        if len(hits) != 1:
            raise ValueError(
                f"line {lineno}: masked_sentence must contain {TSV_MASK!r} exactly "
                f"once, got {len(hits)} in {masked!r}"
            )
        words[hits[0]] = MASK_WORD
        out.append(
            SVAExample(
                words=tuple(words),
                mask_index=hits[0],
                good=good,
                bad=bad,
                subject_index=None,
                attractor_indices=(),
                n_attractors=count,
                plural=verb_is_plural(good, bad),
                sentence=sentence,
                structure="tsv",
            )
        )
    return out


def load_tsv(
    path: str | os.PathLike[str], *, lowercase: bool = True, max_examples: int | None = None
) -> list[SVAExample]:
    """Load the Linzen et al. (2016) agreement data in Goldberg's (2019) TSV layout.

    Columns (tab separated): ``distractor_count``, ``sentence``, ``masked_sentence`` (words
    separated by spaces, the verb replaced by ``***mask***``), ``good_word``, ``bad_word``.
    A first line whose ``distractor_count`` is not an integer is treated as a header; columns
    after the fifth are ignored; blank lines are skipped.

    Args:
        path: the TSV file (e.g. Goldberg's ``lgd_dataset.tsv``).
        lowercase: lower-case everything (for uncased BERT vocabularies).
        max_examples: keep only the first this many examples.

    Returns:
        :class:`SVAExample` list with ``subject_index=None`` (the format has no parse) and
        ``n_attractors`` from the first column.
    """
    with open(os.fspath(path), encoding="utf8") as fh:
        exs = parse_tsv(fh, lowercase=lowercase)
    return exs if max_examples is None else exs[:max_examples]


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _generate_one(
    rng: np.random.Generator, n_attr: int, plural: bool, prefix_prob: float, adj_prob: float
) -> SVAExample:
    words: list[str] = []
    if rng.random() < prefix_prob:
        words += list(_pick(rng, _PREFIXES))
    words.append(_pick(rng, _SUBJECT_DETS))
    if rng.random() < adj_prob:
        words.append(_pick(rng, _SUBJECT_ADJS))
    subj = _pick(rng, SUBJECT_NOUNS)
    subject_index = len(words)
    words.append(subj[int(plural)])
    attr_num = int(not plural)  # attractors have the opposite number
    attractors: list[int] = []
    # relative clause: none, subject RC first ("that likes the guards"), object RC last
    rc = "none"
    if n_attr >= 1:
        rc = _pick(rng, ("none", "none", "src", "orc"))
    kinds = ["pp"] * n_attr
    if rc == "src":
        kinds[0] = "src"
    elif rc == "orc":
        kinds[-1] = "orc"
    for kind in kinds:
        if kind == "pp":
            words += list(_pick(rng, _PREPOSITIONS))
            words.append(_pick(rng, _NOUN_DETS))
            attractors.append(len(words))
            words.append(_pick(rng, OBJECT_NOUNS)[attr_num])
        elif kind == "src":  # RC verb agrees with the subject
            words.append(_pick(rng, _RELATIVIZERS))
            words.append(_pick(rng, RC_VERBS)[int(plural)])
            words.append(_pick(rng, _NOUN_DETS))
            attractors.append(len(words))
            words.append(_pick(rng, SUBJECT_NOUNS)[attr_num])
        else:  # orc: RC verb agrees with the attractor
            words.append("that")
            words.append(_pick(rng, _NOUN_DETS))
            attractors.append(len(words))
            words.append(_pick(rng, SUBJECT_NOUNS)[attr_num])
            words.append(_pick(rng, RC_VERBS)[attr_num])
    sing, plur, kind = _pick(rng, MASK_VERBS)
    good, bad = (plur, sing) if plural else (sing, plur)
    mask_index = len(words)
    words.append(MASK_WORD)
    if kind == "adj":
        words.append(_pick(rng, _ADJECTIVES))
    elif kind == "participle":
        words.append(_pick(rng, _PARTICIPLES))
    else:
        words.append(_pick(rng, _NOUN_DETS))
        words.append(_pick(rng, OBJECT_NOUNS)[int(rng.integers(2))])
    words.append(".")
    ex = SVAExample(
        words=tuple(words),
        mask_index=mask_index,
        good=good,
        bad=bad,
        subject_index=subject_index,
        attractor_indices=tuple(attractors),
        n_attractors=len(attractors),
        plural=plural,
        structure=",".join(kinds) or "plain",
    )
    return replace(ex, sentence=" ".join(ex.unmasked_words))


def generate(
    n: int,
    seed: int | np.random.Generator = 0,
    *,
    min_attractors: int = 0,
    max_attractors: int = 4,
    prefix_prob: float = 0.25,
    adj_prob: float = 0.2,
) -> list[SVAExample]:
    """Draw ``n`` agreement sentences, balanced over attractor counts and subject number.

    Attractor counts cycle through ``min_attractors .. max_attractors`` and subject number
    alternates (then the order is shuffled), so every (count, number) cell is (near) equally
    frequent. Each attractor is a noun of the opposite number placed between subject and verb:
    in a prepositional phrase (``near the guards``), a subject relative clause (first modifier;
    ``that likes the guards``) or an object relative clause (last modifier; ``that the guards
    like``). An optional noun-free prefix (``i think that``) and subject adjective vary the
    subject's position. The same seed gives identical examples.

    Example:
        >>> [e.n_attractors for e in generate(5, seed=0, max_attractors=2)]  # doctest: +SKIP
        [1, 0, 2, ...]
        >>> generate(3, seed=1) == generate(3, seed=1)
        True
    """
    if not 0 <= min_attractors <= max_attractors:
        raise ValueError(
            f"need 0 <= min_attractors <= max_attractors, got {min_attractors}, {max_attractors}"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    counts = np.arange(min_attractors, max_attractors + 1)
    n_cells = len(counts) * 2
    cell = rng.permutation(np.arange(n) % n_cells)
    return [
        _generate_one(rng, int(counts[c // 2]), bool(c % 2), prefix_prob, adj_prob) for c in cell
    ]


# ---------------------------------------------------------------------------------------------
# tokenization
# ---------------------------------------------------------------------------------------------


def load_tokenizer(model_dir: str | os.PathLike[str]):
    """``tokenizers.Tokenizer`` from ``model_dir/tokenizer.json`` (padding/truncation off)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(os.fspath(model_dir), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@dataclass(frozen=True)
class TokenizedSVA:
    """An :class:`SVAExample` mapped to word pieces (``[CLS] … [SEP]``).

    ``word_to_tokens[w]`` lists the token positions of word ``w``; ``subject_pos`` /
    ``attractor_pos`` are token positions (``-1`` / empty when unknown).
    """

    example: SVAExample
    input_ids: tuple[int, ...]
    mask_pos: int
    good_id: int
    bad_id: int
    subject_pos: int
    attractor_pos: tuple[int, ...]
    word_to_tokens: tuple[tuple[int, ...], ...]

    @property
    def length(self) -> int:
        return len(self.input_ids)


def _single_piece_id(tokenizer, word: str) -> int | None:
    ids = tokenizer.encode(word, add_special_tokens=False).ids
    return ids[0] if len(ids) == 1 else None


def _tokenize_one(
    tokenizer, ex: SVAExample, max_length: int | None
) -> tuple[TokenizedSVA | None, str]:
    good_id, bad_id = _single_piece_id(tokenizer, ex.good), _single_piece_id(tokenizer, ex.bad)
    if good_id is None or bad_id is None:
        return None, "verb"
    enc = tokenizer.encode(list(ex.words), is_pretokenized=True)
    ids = tuple(enc.ids)
    w2t: list[list[int]] = [[] for _ in ex.words]
    for pos, w in enumerate(enc.word_ids):
        if w is not None:
            w2t[w].append(pos)
    if any(not t for t in w2t):
        return None, "empty-word"
    mask_tokens = w2t[ex.mask_index]
    mask_id = tokenizer.token_to_id(MASK_WORD)
    if len(mask_tokens) != 1 or ids[mask_tokens[0]] != mask_id:
        return None, "mask"
    if ex.subject_index is not None and len(w2t[ex.subject_index]) != 1:
        return None, "subject"
    if any(len(w2t[a]) != 1 for a in ex.attractor_indices):
        return None, "attractor"
    if max_length is not None and len(ids) > max_length:
        return None, "length"
    subj = -1 if ex.subject_index is None else w2t[ex.subject_index][0]
    return TokenizedSVA(
        ex,
        ids,
        mask_tokens[0],
        good_id,
        bad_id,
        subj,
        tuple(w2t[a][0] for a in ex.attractor_indices),
        tuple(tuple(t) for t in w2t),
    ), "ok"


def tokenize(
    tokenizer,
    examples: Sequence[SVAExample],
    *,
    max_length: int | None = 512,
    return_stats: bool = False,
):
    """Word pieces for each example; drops unusable sentences (paper §5.2).

    Dropped: the subject or an attractor splits into several word pieces; the good or bad
    verb is not a single vocabulary entry; the mask does not map to the ``[MASK]`` token; more
    than ``max_length`` tokens.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` of a BERT word-piece vocabulary (e.g.
            :func:`load_tokenizer`). Its padding/truncation settings are ignored (a copy with
            them disabled is used).
        examples: :class:`SVAExample` list.
        return_stats: also return a dict ``{reason: count}`` of kept (``"ok"``) and dropped
            examples.

    Returns:
        list of :class:`TokenizedSVA` (and the stats dict if ``return_stats``).
    """
    from tokenizers import Tokenizer

    if tokenizer.padding is not None or tokenizer.truncation is not None:
        tokenizer = Tokenizer.from_str(tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.no_truncation()
    out, stats = [], {}
    for ex in examples:
        t, why = _tokenize_one(tokenizer, ex, max_length)
        stats[why] = stats.get(why, 0) + 1
        if t is not None:
            out.append(t)
    return (out, stats) if return_stats else out


@dataclass
class SVABatch:
    """Padded arrays for a list of :class:`TokenizedSVA` (``n`` sentences, ``L`` tokens).

    Attributes:
        input_ids, attention_mask: ``int32[n, L]`` (pad id 0, mask 0 on padding).
        mask_pos, good_id, bad_id, subject_pos, n_attractors, lengths: ``int32[n]``
            (``subject_pos`` is -1 when unknown).
        plural: ``int32[n]``, 1 for plural subjects.
        attractor_pos: ``int32[n, A]`` token positions, padded with -1 (``A >= 1``).
        examples: the tokenized examples, in order.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    mask_pos: np.ndarray
    good_id: np.ndarray
    bad_id: np.ndarray
    subject_pos: np.ndarray
    attractor_pos: np.ndarray
    n_attractors: np.ndarray
    plural: np.ndarray
    lengths: np.ndarray
    examples: list[TokenizedSVA] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, index: Any) -> "SVABatch":
        """Rows ``index`` (slice, int array or boolean mask) as a new batch (no re-padding)."""
        idx = np.arange(len(self))[index]
        arrays = {k: getattr(self, k)[idx] for k in _ARRAY_FIELDS}
        return SVABatch(**arrays, examples=[self.examples[i] for i in np.atleast_1d(idx)])

    def target_args(self) -> tuple[np.ndarray, ...]:
        """``(input_ids, attention_mask, mask_pos, good_id, bad_id)`` for a model's target."""
        return (self.input_ids, self.attention_mask, self.mask_pos, self.good_id, self.bad_id)

    def position_mask(self, which: str) -> np.ndarray:
        """bool ``[n, L]``: ``"subject"``, ``"attractors"`` or ``"tokens"`` (all real tokens)."""
        n, L = self.input_ids.shape
        m = np.zeros((n, L), bool)
        if which == "subject":
            rows = np.nonzero(self.subject_pos >= 0)[0]
            m[rows, self.subject_pos[rows]] = True
        elif which == "attractors":
            r, c = np.nonzero(self.attractor_pos >= 0)
            m[r, self.attractor_pos[r, c]] = True
        elif which == "tokens":
            m = self.attention_mask.astype(bool)
        else:
            raise ValueError(f"which must be 'subject', 'attractors' or 'tokens', got {which!r}")
        return m


_ARRAY_FIELDS = (
    "input_ids",
    "attention_mask",
    "mask_pos",
    "good_id",
    "bad_id",
    "subject_pos",
    "attractor_pos",
    "n_attractors",
    "plural",
    "lengths",
)


def collate(
    items: Sequence[TokenizedSVA],
    *,
    pad_to: int | None = None,
    pad_id: int = 0,
    max_attractors: int | None = None,
) -> SVABatch:
    """Pad tokenized examples to ``int32`` arrays (right padding, attention mask 1 on tokens).

    ``pad_to`` fixes the padded length (default: the longest sentence); a fixed length avoids
    recompiling jitted functions for every batch.
    """
    if not items:
        raise ValueError("collate needs at least one tokenized example")
    n = len(items)
    L = max(t.length for t in items)
    if pad_to is not None:
        if pad_to < L:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest sentence ({L} tokens)")
        L = pad_to
    A = (
        max(1, max(len(t.attractor_pos) for t in items))
        if max_attractors is None
        else max(1, max_attractors)
    )
    ids = np.full((n, L), pad_id, np.int32)
    am = np.zeros((n, L), np.int32)
    att = np.full((n, A), -1, np.int32)
    for i, t in enumerate(items):
        ids[i, : t.length] = t.input_ids
        am[i, : t.length] = 1
        a = t.attractor_pos[:A]
        att[i, : len(a)] = a
    col = lambda f: np.asarray([f(t) for t in items], np.int32)  # noqa: E731
    return SVABatch(
        input_ids=ids,
        attention_mask=am,
        mask_pos=col(lambda t: t.mask_pos),
        good_id=col(lambda t: t.good_id),
        bad_id=col(lambda t: t.bad_id),
        subject_pos=col(lambda t: t.subject_pos),
        attractor_pos=att,
        n_attractors=col(lambda t: t.example.n_attractors),
        plural=col(lambda t: int(t.example.plural)),
        lengths=col(lambda t: t.length),
        examples=list(items),
    )


def encode(
    tokenizer,
    examples: Sequence[SVAExample],
    *,
    pad_to: int | None = None,
    max_length: int | None = 512,
) -> SVABatch:
    """:func:`tokenize` then :func:`collate`."""
    return collate(tokenize(tokenizer, examples, max_length=max_length), pad_to=pad_to)
