"""Every file the command line and the data-set runner write, under one discipline.

* ``-`` is standard output.
* A regular file, or a path that does not exist yet, is **replaced atomically**: written to a
  temporary file in the same directory, flushed and fsynced, then renamed over the path
  (``os.replace``). A reader sees the old file or the new one, never half of one; a failed or
  interrupted write leaves the old file and no temporary. A replaced file keeps its permission
  bits; a new one gets what ``open`` would give it (0666 less the umask).
* A symbolic link is followed: its final target is replaced as above when it is a regular
  file (or does not exist yet); the link itself stays.
* Anything else — a FIFO, a character device (``/dev/null``, ``/dev/full``, a terminal), a
  socket, ``/dev/stdout``, ``/dev/fd/N`` (anything reached through ``/proc/*/fd``) — is opened
  and **written through**, never replaced.

:func:`check_output_path` tells, before any work is done, whether a path can be written
(a missing or read-only directory, a directory given as a file, …); :func:`write_output`
writes. Both raise :class:`OutputError`: a ValueError whose message is one line naming the
path, the problem and the fix, never a temporary file's name.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> write_output(os.path.join(d, "a.json"), '{"x": 1}', option="--json")
>>> open(os.path.join(d, "a.json")).read(), os.listdir(d)
('{"x": 1}', ['a.json'])
>>> check_output_path(os.path.join(d, "no", "a.json"), "--json")
Traceback (most recent call last):
...
jaxpr_semiring.outputs.OutputError: --json .../no/a.json: directory .../no does not exist: ...
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from typing import BinaryIO, Callable, Union

__all__ = [
    "OutputError",
    "check_output_path",
    "check_output_dir",
    "write_output",
    "is_stdout",
    "shown",
]

Data = Union[bytes, str, Callable[[BinaryIO], None]]

_REPLACE, _THROUGH, _STDOUT, _DIR = "replace", "through", "stdout", "dir"


class OutputError(ValueError):
    """An output path that cannot be written: one line naming the path, the problem, the fix."""


def shown(text) -> str:
    """``text`` for a one-line message: control characters (and lone surrogates) escaped."""
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _label(path, option) -> str:
    return f"{option} {shown(path)}" if option else shown(path)


def _fix(err: OSError) -> str:
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return "free some space or choose another path"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a writable path"
    return "choose another path"


def _in_proc(folder: str) -> bool:
    return folder == "/proc" or folder.startswith("/proc/") or folder == "/dev/fd"


def _classify(path: str) -> tuple[str, str]:
    """(how to write ``path``, the file to replace for ``_REPLACE``); follows symbolic links
    itself, so that a link through ``/proc/*/fd`` (``/dev/stdout``) is never resolved to the
    file behind a descriptor."""
    if path == "-":
        return _STDOUT, path
    cur = os.path.abspath(path)
    for _ in range(40):
        folder = os.path.realpath(os.path.dirname(cur))
        cur = os.path.join(folder, os.path.basename(cur))
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return _REPLACE, cur
        except NotADirectoryError:
            return _REPLACE, cur  # check_output_path names the file in the way
        if _in_proc(folder):
            return (_DIR if stat.S_ISDIR(os.stat(cur).st_mode) else _THROUGH), cur
        if stat.S_ISLNK(st.st_mode):
            cur = os.path.join(folder, os.readlink(cur))
            continue
        if stat.S_ISREG(st.st_mode):
            return _REPLACE, cur
        if stat.S_ISDIR(st.st_mode):
            return _DIR, cur
        return _THROUGH, cur
    raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)


def is_stdout(path) -> bool:
    """Whether writing ``path`` writes standard output (``-``, ``/dev/stdout``, the file or
    pipe stdout is): the command line then prints its table to stderr instead."""
    if path is None:
        return False
    if os.fspath(path) == "-":
        return True
    try:
        fd = sys.stdout.fileno()
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except (OSError, ValueError, AttributeError):
        return False


def _plain_checks(path, option) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise OutputError(f"{option or 'output path'} {path!r} is not a path: pass a file name.")
    p = os.fsdecode(os.fspath(path))
    if p == "":
        raise OutputError(
            f"{option or 'output path'}: the path is empty: give a file name "
            f"(or - for standard output)."
        )
    if "\0" in p:
        raise OutputError(
            f"{_label(p, option)}: the path contains a NUL character: give a file name without it."
        )
    return p


def check_output_path(path, option: str | None = None) -> None:
    """Raise :class:`OutputError` unless ``path`` can be written as an output file (see the
    module docstring); ``option`` (``"--json"``) names it in the message. Creates nothing
    that stays: whether the directory takes new files is tried with a temporary file."""
    p = _plain_checks(path, option)
    if p == "-":
        return
    what = _label(p, option)
    if p.endswith(os.sep) or os.path.basename(p) in (".", ".."):
        raise OutputError(f"{what} is a directory: give a file name inside it.")
    try:
        how, target = _classify(p)
    except OSError as e:
        raise OutputError(f"{what}: {e.strerror or e}: choose another path.") from None
    if how == _DIR:
        raise OutputError(
            f"{what} is a directory: give a file name inside it, e.g. "
            f"{shown(os.path.join(p, 'flows' + _default_ext(option)))}."
        )
    if how == _THROUGH:
        if not os.access(target, os.W_OK):
            raise OutputError(f"{what}: permission denied: choose a writable path.")
        return
    _check_folder(os.path.dirname(target), what)


def _default_ext(option) -> str:
    return {"--out": ".png", "--html": ".html"}.get(option, ".json")


def _check_folder(folder: str, what: str) -> None:
    folder = folder or "."
    if not os.path.isdir(folder):
        up = folder
        while up and not os.path.lexists(up):
            parent = os.path.dirname(up)
            if parent == up:
                break
            up = parent
        if os.path.lexists(up) and not os.path.isdir(up):
            raise OutputError(
                f"{what}: {shown(up)} is a file, not a directory: choose another path."
            )
        raise OutputError(
            f"{what}: directory {shown(folder)} does not exist: create it "
            f"(mkdir -p {shown(folder)}) or choose another path."
        )
    try:
        _probe(folder)
    except OSError as e:
        raise OutputError(
            f"{what}: cannot write in {shown(folder)} ({e.strerror or e}): {_fix(e)}."
        ) from None


def _probe(folder: str) -> None:
    """Create and remove a file in ``folder``: the OSError a real write would meet, if any."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-check-")
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path, option: str | None = "--out-dir") -> None:
    """Raise :class:`OutputError` unless ``path`` is, or can be made, a directory this process
    can create files in (its missing parents are made by the writer)."""
    p = _plain_checks(path, option)
    what = _label(p, option)
    up = os.path.abspath(p)
    while not os.path.lexists(up):
        parent = os.path.dirname(up)
        if parent == up:
            break
        up = parent
    if not os.path.isdir(up):
        raise OutputError(
            f"{what}: cannot write to {shown(p)}: Not a directory ({shown(up)} is "
            f"a file): choose another --out-dir."
        )
    try:
        _probe(up)
    except OSError as e:
        raise OutputError(
            f"{what}: cannot write to {shown(p)} ({e.strerror or e} in "
            f"{shown(up)}): choose a writable --out-dir."
        ) from None


def _emit(fh: BinaryIO, data: Data) -> None:
    if callable(data):
        data(fh)
    else:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(target: str, data: Data) -> None:
    folder = os.path.dirname(target) or "."
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(target)[1])
    try:
        with os.fdopen(fd, "wb") as fh:
            _emit(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def _through(path: str, data: Data) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "wb") as fh:
        _emit(fh, data)


def _stdout(data: Data) -> None:
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (an IDE's, a test's)
        import io

        raw = io.BytesIO()
        _emit(raw, data)
        sys.stdout.write(raw.getvalue().decode("utf-8", "replace"))
    else:
        _emit(buffer, data)
        buffer.flush()
    sys.stdout.flush()


def write_output(path, data: Data, option: str | None = None) -> None:
    """Write ``data`` (bytes, str as UTF-8, or a function writing to a binary file object) to
    ``path`` by the rules of the module docstring; :class:`OutputError` (one line naming
    ``path``) when it cannot: the old file, if any, is then untouched."""
    p = _plain_checks(path, option)
    what = _label(p, option)
    try:
        how, target = _classify(p)
        if how == _DIR:
            raise OutputError(f"{what} is a directory: give a file name inside it.")
        if how == _STDOUT or (how == _THROUGH and is_stdout(p)):
            _stdout(data)
        elif how == _THROUGH:
            _through(p, data)
        else:
            _replace(target, data)
    except OSError as e:
        where = f"{what} (standard output)" if p == "-" else what
        raise OutputError(f"{where}: cannot write: {e.strerror or e}: {_fix(e)}.") from None
