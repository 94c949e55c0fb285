"""A results directory that loses nothing: append-only parts, resume, fingerprint, merge.

Layout of ``out_dir``::

    run.json                 what the results are of: options, input digest, inputs expected
    parts/part-00000.jsonl   one per process, appended batch by batch (write, fsync)
    process-00000.lock       held (``flock``) by the process writing part-00000.jsonl
    flows.jsonl              the merged records, in input order (written once all are there)
    skipped.jsonl            the inputs that failed a check: index, line, text, error

A part is a sequence of blocks, one per input: a header line ``{"index": i, "records": n}``
followed by the input's ``n`` record lines (exactly as they will appear in ``flows.jsonl``),
or a header ``{"index": i, "records": 0, "line": …, "text": …, "error": …}`` for a skipped
input. A block is complete when its header and all its record lines end in a newline; after a
crash (``kill -9`` mid-write) the incomplete tail of a part is ignored, and cut off by its own
process before it appends again. So an input is either fully on disk or recomputed; never
half, never twice. A later block of an input supersedes a *skipped* one (a resume that
computes a line an earlier run skipped, or skips it for another reason); a computed block is
final. ``run.json`` binds the directory to one set of options and one input: a run with
different ones is refused, never mixed in. One writer per part: the process writing
``parts/part-N.jsonl`` holds an advisory lock (``fcntl.flock``) on ``process-N.lock``; a
second process for the same part is refused with the first's pid. A write that fails (a
read-only or full file system) is a :class:`DatasetError` naming the file; what was on disk
stays valid, so the same run resumes once the directory is writable.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> s = ResultStore(d, {"options": {"semiring": "max-product"}, "expected": 2})
>>> s.append([Block(1, ['{"index": 1, "x": 2}']), Block(0, [], "too long", "a b c")])
>>> sorted(s.scan()), s.merge()[-11:]
([0, 1], 'flows.jsonl')
>>> open(s.merge()).read()
'{"index": 1, "x": 2}\\n'
>>> ResultStore(d, {"options": {"semiring": "max-product"}, "expected": 2})
Traceback (most recent call last):
...
jaxpr_semiring.dataset.inputs.DatasetError: ... is in use by another run (pid ...); wait for it ...
>>> s.close()
>>> ResultStore(d, {"options": {"semiring": "entropy"}, "expected": 2})
Traceback (most recent call last):
...
jaxpr_semiring.dataset.inputs.DatasetError: ... holds results of another run (options differ:
semiring 'max-product' there, 'entropy' here); use another --out-dir, or delete it to start over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import tempfile
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..outputs import fsync_dir
from .inputs import DatasetError

__all__ = ["ResultStore", "Block", "Entry", "FORMAT", "to_json_line", "jsonable"]

# 2: a later block of an input supersedes a skipped one (version 1 kept the first block)
FORMAT = "jaxpr_semiring.dataset/2"


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
        a = a.astype(np.float64)  # exact; then one pass instead of one call per number
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


def _keep(found: dict, index: int, entry: Entry) -> None:
    """Record ``entry`` for ``index`` unless a computed block is there already: a computed
    block is final, a later block supersedes a skipped one."""
    old = found.get(index)
    if old is None or old.skipped is not None:
        found[index] = entry


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
            skipped = (
                None
                if count or "error" not in h
                else {
                    "index": index,
                    "line": h.get("line", index + 1),
                    "text": h.get("text", ""),
                    "error": h["error"],
                }
            )
            _keep(found, index, Entry(path, start + len(header), size, count, skipped))
            offset += size
            good = offset
    return found, good


class ResultStore:
    """The results directory ``out_dir`` for this process (see the module docstring).

    ``fingerprint``: JSON-able; everything that defines the results (the options, the input
    digest, ``"expected"``: how many inputs, valid or not, a complete run accounts for).
    ``about``: JSON-able notes for people (e.g. the model's path as given), written into
    ``run.json`` by the run that creates it and never compared. Raises :class:`DatasetError`
    when the directory cannot be written, holds another run, or another process is writing
    this process's part. Close it (or use it as a context manager) to release the lock.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        fingerprint: dict,
        process: int = 0,
        name: str = "flows",
        about: dict | None = None,
    ):
        self.dir = os.fspath(out_dir)
        self.name = name
        self.parts = os.path.join(self.dir, "parts")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint, format=FORMAT, name=name)))
        self.about = json.loads(json.dumps(about or {}))
        self.expected = int(fingerprint["expected"])
        self.part = os.path.join(self.parts, f"part-{process:05d}.jsonl")
        self.process = process
        self._fd = self._lock_fd = None
        try:
            try:
                os.makedirs(self.parts, exist_ok=True)
                self._lock(os.path.join(self.dir, f"process-{process:05d}.lock"))
                self._bind()
                if os.path.exists(self.part):  # cut the incomplete tail a crash may have left
                    _, end = _scan_part(self.part)
                    if end < os.path.getsize(self.part):
                        os.truncate(self.part, end)
                self._fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise DatasetError(
                    f"cannot write to {self.dir}: {e.strerror or e}; choose a writable --out-dir."
                ) from None
        except BaseException:
            self.close()
            raise
        fsync_dir(self.parts)

    # -- one writer per part
    def _lock(self, path: str) -> None:
        """Hold an exclusive ``flock`` on ``path`` (this process's part's lock file) and write
        our pid and host into it; DatasetError naming the holder's if another process has it."""
        self._lock_fd = fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return  # no locks on this file system (ENOLCK, EOPNOTSUPP): go on
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 200).decode("utf-8", "replace").split()
            who = (
                f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
                if holder
                else "pid unknown"
            )
            if self.process:
                who += f", process {self.process}"
            raise DatasetError(
                f"{self.dir} is in use by another run ({who}); wait for it to "
                f"finish, or use another --out-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    # -- binding the directory to one run
    def _bind(self) -> None:
        path = os.path.join(self.dir, "run.json")
        if not os.path.exists(path):
            text = (
                json.dumps(dict(self.fingerprint, about=self.about), indent=1, sort_keys=True)
                + "\n"
            )
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".run-")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # exclusive: another process may be binding too
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                if not os.path.exists(path):
                    os.replace(tmp, path)
            if os.path.exists(tmp):
                os.unlink(tmp)
            fsync_dir(self.dir)
        try:
            with open(path) as fh:
                there = json.load(fh)
        except ValueError:
            raise DatasetError(f"{path} is damaged; delete {self.dir} to start over.") from None
        if isinstance(there, dict):
            self.about = there.pop("about", self.about)
        if there != self.fingerprint:
            raise DatasetError(
                f"{self.dir} holds results of another run "
                f"({_difference(there, self.fingerprint)}); "
                f"use another --out-dir, or delete it to start over."
            )

    def _cannot(self, path: str, error: OSError) -> DatasetError:
        """A failed write as one line: the file, the reason, the fix (then resume)."""
        fix = (
            f"free space on {self.dir}"
            if error.errno in (errno.ENOSPC, errno.EDQUOT)
            else f"make {self.dir} writable"
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else f"check {self.dir}"
        )
        return DatasetError(
            f"cannot write {path}: {error.strerror or error}; {fix} and re-run "
            f"the same command: it resumes, keeping every input on disk."
        )

    # -- reading
    def scan(self) -> dict:
        """index → :class:`Entry` of every input's block in every process's part: its computed
        block if there is one, else its latest skipped block."""
        found: dict = {}
        for name in sorted(os.listdir(self.parts)):
            if name.startswith("part-") and name.endswith(".jsonl"):
                for index, entry in _scan_part(os.path.join(self.parts, name))[0].items():
                    _keep(found, index, entry)
        return found

    # -- writing
    def append(self, blocks: Sequence[Block]) -> None:
        """Append complete blocks durably (one write, fsync); :class:`DatasetError` naming
        the part if the file system refuses (what was on disk before stays valid)."""
        out = []
        for b in blocks:
            if b.error is None:
                out.append(json.dumps({"index": b.index, "records": len(b.records)}))
                out += b.records
            else:
                out.append(
                    json.dumps(
                        {
                            "index": b.index,
                            "records": 0,
                            "line": b.index + 1,
                            "text": b.text,
                            "error": b.error,
                        },
                        ensure_ascii=False,
                    )
                )
        if any("\n" in line for line in out):
            raise ValueError("a record must be one line of JSON (no newline characters).")
        data = memoryview("".join(line + "\n" for line in out).encode("utf-8"))
        if self._fd is None:
            raise ValueError("this ResultStore is closed.")
        start = None
        try:
            start = os.fstat(self._fd).st_size
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as e:
            if start is not None:  # leave no torn block behind (a resume would cut it)
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
            raise self._cannot(self.part, e) from None

    def merge(self, found: dict | None = None) -> str | None:
        """Write ``<name>.jsonl`` (records in input order) and ``skipped.jsonl`` atomically
        when every expected input is accounted for; their path (None if some are missing).
        :class:`DatasetError` naming the file if it cannot be written."""
        found = self.scan() if found is None else found
        if len(found) < self.expected:
            return None
        target = os.path.join(self.dir, self.name + ".jsonl")
        writing = target
        handles: dict = {}
        try:
            try:
                with _atomic(target) as out:
                    for index in sorted(found):
                        e = found[index]
                        if e.count:
                            fh = handles.get(e.path) or handles.setdefault(
                                e.path, open(e.path, "rb")
                            )
                            fh.seek(e.offset)
                            out.write(fh.read(e.size))
            finally:
                for fh in handles.values():
                    fh.close()
            writing = os.path.join(self.dir, "skipped.jsonl")
            with _atomic(writing) as out:
                for index in sorted(found):
                    if found[index].skipped:
                        out.write(
                            (json.dumps(found[index].skipped, ensure_ascii=False) + "\n").encode()
                        )
        except OSError as e:
            raise self._cannot(writing, e) from None
        fsync_dir(self.dir)
        return target

    def close(self) -> None:
        """Close the part and release the lock (idempotent)."""
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr, None)
            setattr(self, attr, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class _atomic:
    """``with _atomic(path) as fh``: write a temporary file beside ``path``, fsync, rename."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".merge-")
        self.fh = os.fdopen(fd, "wb")
        return self.fh

    def __exit__(self, kind, *_):
        done = False
        try:
            if kind is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            self.fh.close()
            if kind is None:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.path)
                done = True
        finally:
            if not done:  # an error here or in the with-block: no stray file
                try:
                    self.fh.close()
                except OSError:
                    pass
                try:
                    os.unlink(self.tmp)
                except OSError:
                    pass


def _short(x: Any) -> str:
    """``repr(x)``, cut when long (a sha256 to its first 12 digits)."""
    text = repr(x)
    if len(text) <= 40:
        return text
    return (text[:13] if isinstance(x, str) else text[:37]) + "…" + text[-1]


def _leaves(a: Any, b: Any, path: str):
    """(path, a, b) of every place two JSON values differ (dicts compared key by key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in dict.fromkeys(list(a) + list(b)):
            yield from _leaves(a.get(k), b.get(k), f"{path}/{k}" if path else str(k))
    elif a != b:
        yield path, a, b


def _difference(there: dict, here: dict) -> str:
    """What differs between two fingerprints, in a few words."""
    if there.get("format") != here.get("format"):
        return f"written by another version: {there.get('format')}"
    if there.get("inputs") != here.get("inputs"):
        return "computed from a different input file"
    diff = list(_leaves(there.get("options") or {}, here.get("options") or {}, ""))
    if diff:
        return (
            "options differ: "
            + "; ".join(f"{k} {_short(a)} there, {_short(b)} here" for k, a, b in diff[:3])
            + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        )
    keys = [k for k in dict.fromkeys(list(there) + list(here)) if there.get(k) != here.get(k)]
    return "settings differ: " + ", ".join(keys)
