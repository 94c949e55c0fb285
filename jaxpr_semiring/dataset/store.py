"""A results directory that loses nothing: append-only parts, resume, fingerprint, merge.

Layout of ``out_dir``::

    run.json                 what the results are of: options, input digest, inputs expected
    parts/part-00000.jsonl   one per process, appended batch by batch (write, flush, fsync)
    flows.jsonl              the merged records, in input order (written once all are there)
    skipped.jsonl            the inputs that failed a check: index, line, text, error

A part is a sequence of blocks, one per input: a header line ``{"index": i, "records": n}``
followed by the input's ``n`` record lines (exactly as they will appear in ``flows.jsonl``),
or a header ``{"index": i, "records": 0, "line": …, "text": …, "error": …}`` for a skipped
input. A block is complete when its header and all its record lines end in a newline; after a
crash (``kill -9`` mid-write) the incomplete tail of a part is ignored, and cut off by its own
process before it appends again. So an input is either fully on disk or recomputed; never
half, never twice. ``run.json`` binds the directory to one set of options and one input: a
run with different ones is refused, never mixed in.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> s = ResultStore(d, {"options": {"semiring": "max-product"}, "expected": 2})
>>> s.append([Block(1, ['{"index": 1, "x": 2}']), Block(0, [], "too long", "a b c")])
>>> sorted(s.scan()), s.merge()[-11:]
([0, 1], 'flows.jsonl')
>>> open(s.merge()).read()
'{"index": 1, "x": 2}\\n'
>>> ResultStore(d, {"options": {"semiring": "entropy"}, "expected": 2})
Traceback (most recent call last):
...
jaxpr_semiring.dataset.inputs.DatasetError: ... holds results of another run (options differ: semiring 'max-product' there, 'entropy' here); use another --out-dir, or delete it to start over.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, NamedTuple, Sequence

import numpy as np

from .inputs import DatasetError

__all__ = ["ResultStore", "Block", "Entry", "FORMAT", "to_json_line", "jsonable"]

FORMAT = "jaxpr_semiring.dataset/1"


def jsonable(x: Any) -> Any:
    """``x`` with numpy arrays and scalars as lists and numbers, and non-finite floats as the
    strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON; docs/report_format.md)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray) or type(x).__module__.startswith("jax"):
        a = np.asarray(x)
        if a.dtype.kind != "f":
            return jsonable(a.tolist())
        a = a.astype(np.float64)       # exact; then one pass instead of one call per number
        bad = ~np.isfinite(a)
        if not bad.any():
            return a.tolist()
        out = a.astype(object)
        out[bad] = np.where(np.isnan(a[bad]), "nan", np.where(a[bad] > 0, "inf", "-inf"))
        return out.tolist()
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    return x


def to_json_line(record: dict) -> str:
    """One record as one line of strict JSON (see :func:`jsonable`); floats exact."""
    return json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False)


class Block(NamedTuple):
    """One input's results to append: its record lines, or the error that skipped it."""
    index: int
    records: Sequence[str]
    error: str | None = None
    text: str = ""


class Entry(NamedTuple):
    """Where one input's complete block is: part file, byte offset and size of its record
    lines, how many; for a skipped input, the header (line, text, error)."""
    path: str
    offset: int
    size: int
    count: int
    skipped: dict | None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _scan_part(path: str) -> tuple[dict, int]:
    """The complete blocks of a part (index → :class:`Entry`) and where the complete part
    ends (the offset of an incomplete or damaged tail)."""
    found, good = {}, 0
    with open(path, "rb") as fh:
        offset = 0
        lines = iter(fh)
        for header in lines:
            start = offset
            offset += len(header)
            try:
                h = json.loads(header) if header.endswith(b"\n") else None
                index, count = int(h["index"]), int(h["records"])
            except (ValueError, TypeError, KeyError):
                break
            size = 0
            for _ in range(count):
                line = next(lines, b"")
                if not line.endswith(b"\n"):
                    return found, start
                size += len(line)
            skipped = None if count or "error" not in h else {
                "index": index, "line": h.get("line", index + 1), "text": h.get("text", ""),
                "error": h["error"]}
            found.setdefault(index, Entry(path, start + len(header), size, count, skipped))
            offset += size
            good = offset
    return found, good


class ResultStore:
    """The results directory ``out_dir`` for this process (see the module docstring).

    ``fingerprint``: JSON-able; everything that defines the results (the options, the input
    digest, ``"expected"``: how many inputs, valid or not, a complete run accounts for).
    Raises :class:`DatasetError` when the directory cannot be written or holds another run.
    """

    def __init__(self, out_dir: str | os.PathLike, fingerprint: dict, process: int = 0,
                 name: str = "flows"):
        self.dir = os.fspath(out_dir)
        self.name = name
        self.parts = os.path.join(self.dir, "parts")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint, format=FORMAT, name=name)))
        self.expected = int(fingerprint["expected"])
        try:
            os.makedirs(self.parts, exist_ok=True)
            self._bind()
            self.part = os.path.join(self.parts, f"part-{process:05d}.jsonl")
            if os.path.exists(self.part):   # cut the incomplete tail a crash may have left
                _, end = _scan_part(self.part)
                if end < os.path.getsize(self.part):
                    os.truncate(self.part, end)
            self._fh = open(self.part, "ab")
        except OSError as e:
            raise DatasetError(f"cannot write to {self.dir}: {e.strerror or e}; choose a "
                               f"writable --out-dir.") from None
        _fsync_dir(self.parts)

    # -- binding the directory to one run
    def _bind(self) -> None:
        path = os.path.join(self.dir, "run.json")
        text = json.dumps(self.fingerprint, indent=1, sort_keys=True) + "\n"
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".run-")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)       # exclusive: another process may be binding too
            except FileExistsError:
                pass
            except OSError:              # no hard links on this file system
                if not os.path.exists(path):
                    os.replace(tmp, path)
            if os.path.exists(tmp):
                os.unlink(tmp)
            _fsync_dir(self.dir)
        try:
            with open(path) as fh:
                there = json.load(fh)
        except ValueError:
            raise DatasetError(f"{path} is damaged; delete {self.dir} to start over.") from None
        if there != self.fingerprint:
            raise DatasetError(f"{self.dir} holds results of another run ({_difference(there, self.fingerprint)}); "
                               f"use another --out-dir, or delete it to start over.")

    # -- reading
    def scan(self) -> dict:
        """index → :class:`Entry` of every complete block in every process's part."""
        found: dict = {}
        for name in sorted(os.listdir(self.parts)):
            if name.startswith("part-") and name.endswith(".jsonl"):
                for index, entry in _scan_part(os.path.join(self.parts, name))[0].items():
                    found.setdefault(index, entry)
        return found

    # -- writing
    def append(self, blocks: Sequence[Block]) -> None:
        """Append complete blocks durably (one write, flush, fsync)."""
        out = []
        for b in blocks:
            if b.error is None:
                out.append(json.dumps({"index": b.index, "records": len(b.records)}))
                out += b.records
            else:
                out.append(json.dumps({"index": b.index, "records": 0, "line": b.index + 1,
                                       "text": b.text, "error": b.error}, ensure_ascii=False))
        if any("\n" in line for line in out):
            raise ValueError("a record must be one line of JSON (no newline characters).")
        self._fh.write("".join(line + "\n" for line in out).encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def merge(self, found: dict | None = None) -> str | None:
        """Write ``<name>.jsonl`` (records in input order) and ``skipped.jsonl`` atomically
        when every expected input is accounted for; their path (None if some are missing)."""
        found = self.scan() if found is None else found
        if len(found) < self.expected:
            return None
        target = os.path.join(self.dir, self.name + ".jsonl")
        handles: dict = {}
        try:
            with _atomic(target) as out:
                for index in sorted(found):
                    e = found[index]
                    if e.count:
                        fh = handles.get(e.path) or handles.setdefault(e.path, open(e.path, "rb"))
                        fh.seek(e.offset)
                        out.write(fh.read(e.size))
        finally:
            for fh in handles.values():
                fh.close()
        with _atomic(os.path.join(self.dir, "skipped.jsonl")) as out:
            for index in sorted(found):
                if found[index].skipped:
                    out.write((json.dumps(found[index].skipped, ensure_ascii=False) + "\n").encode())
        _fsync_dir(self.dir)
        return target

    def close(self) -> None:
        self._fh.close()


class _atomic:
    """``with _atomic(path) as fh``: write a temporary file beside ``path``, fsync, rename."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".merge-")
        self.fh = os.fdopen(fd, "wb")
        return self.fh

    def __exit__(self, kind, *_):
        try:
            if kind is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
        finally:
            self.fh.close()
            if kind is None:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.path)
            else:
                os.unlink(self.tmp)


def _difference(there: dict, here: dict) -> str:
    """What differs between two fingerprints, in a few words."""
    if there.get("format") != here.get("format"):
        return f"written by another version: {there.get('format')}"
    if there.get("inputs") != here.get("inputs"):
        return "computed from a different input file"
    a, b = there.get("options") or {}, here.get("options") or {}
    keys = [k for k in dict.fromkeys(list(a) + list(b)) if a.get(k) != b.get(k)]
    if keys:
        return "options differ: " + "; ".join(f"{k} {a.get(k)!r} there, {b.get(k)!r} here"
                                              for k in keys[:3])
    keys = [k for k in dict.fromkeys(list(there) + list(here)) if there.get(k) != here.get(k)]
    return "settings differ: " + ", ".join(keys)
