"""Reading a data set: one input per line, plain text or JSON Lines.

A line of a JSON Lines file is an object with a ``"text"`` string and any per-example fields
(target tokens such as ``"good"``/``"bad"``, a mask position, …). Empty (blank) lines are
skipped and reported; a malformed JSON line is a bad input (reported by line number and
skipped), never a crash. ``index`` is the 0-based line number, so results stay addressable
by line whatever was skipped.

>>> data = read_inputs(['{"text": "the keys", "good": "are"}', "", "{oops"])
>>> [(e.index, e.text, e.fields.get("good")) for e in data.examples]
[(0, 'the keys', 'are')]
>>> data.empty, data.invalid
([1], {2: 'not valid JSON (Expecting property name enclosed in double quotes, column 2)'})
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import NamedTuple, Sequence

__all__ = ["InputError", "DatasetError", "Example", "Inputs", "read_inputs", "FORMATS"]

FORMATS = ("auto", "text", "jsonl")


class InputError(ValueError):
    """One input the computation cannot take (too long for the model, a target token not in
    the vocabulary, …). The message is one line; the run reports it with the line number and
    goes on."""


class DatasetError(Exception):
    """The run cannot go on (unreadable input, unwritable or mismatched results directory).
    The message is one line naming the problem and the fix; the command line exits with 2."""


class Example(NamedTuple):
    """One input: ``index`` (0-based line number), ``text``, and ``fields`` (the JSON object of
    a JSON Lines input; ``{"text": text}`` for plain text)."""

    index: int
    text: str
    fields: dict

    @property
    def line(self) -> int:
        """The 1-based line number (what an editor shows)."""
        return self.index + 1


class Inputs(NamedTuple):
    """A read data set: the valid ``examples``; the indices of ``empty`` lines; ``invalid``
    lines (index → one-line message); ``lines`` (how many); ``format`` (``"text"`` or
    ``"jsonl"``); ``digest`` (sha256 of the content: what a results directory is bound to);
    ``name`` (the file, for messages)."""

    examples: list
    empty: list
    invalid: dict
    lines: int
    format: str
    digest: str
    name: str


def _json_example(index: int, line: str) -> Example | str:
    """The example of one JSON line, or why it is not one."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg}, column {e.colno})"
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return 'a JSON Lines input must be an object with a "text" string, e.g. {"text": "..."}'
    return Example(index, obj["text"], obj)


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{name} is not UTF-8 text (line {line}, byte {e.start}); convert it, "
            f"e.g. iconv -t utf-8."
        ) from None


def read_inputs(source: str | os.PathLike | Sequence[str | dict], format: str = "auto") -> Inputs:
    """Read ``source``: a file path, or a sequence of lines (strings, or dicts for JSON Lines
    objects). ``format``: ``"text"``, ``"jsonl"``, or ``"auto"`` (JSON Lines when the file
    name ends in ``.jsonl``/``.ndjson`` or the first non-empty line starts with ``{``).
    Raises :class:`DatasetError` when the file cannot be read."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: use one of {', '.join(FORMATS)}.")
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            with open(name, "rb") as fh:
                raw = fh.read()
        except OSError as e:
            raise DatasetError(f"cannot read {name}: {e.strerror or e}.") from None
        text = _decode(raw, name)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # a final newline ends the last line; it does not start one
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        digest = hashlib.sha256(raw).hexdigest()
        named_jsonl = name.endswith((".jsonl", ".ndjson"))
    else:
        name = "<inputs>"
        items = list(source)
        lines = [
            json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else str(x) for x in items
        ]
        digest = hashlib.sha256(json.dumps(lines, ensure_ascii=False).encode()).hexdigest()
        named_jsonl = any(isinstance(x, dict) for x in items)
    if format == "auto":
        first = next((ln.strip() for ln in lines if ln.strip()), "")
        format = "jsonl" if named_jsonl or first.startswith("{") else "text"
    examples, empty, invalid = [], [], {}
    for i, line in enumerate(lines):
        if not line.strip():
            empty.append(i)
        elif format == "text":
            examples.append(Example(i, line, {"text": line}))
        else:
            got = _json_example(i, line)
            if isinstance(got, str):
                invalid[i] = got
            else:
                examples.append(got)
    return Inputs(examples, empty, invalid, len(lines), format, digest, name)
