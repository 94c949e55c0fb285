"""Where the seconds of one command go: ``jaxpr-semiring flows … --profile`` prints one line per
phase to stderr — ``import`` (process start to the command line's first line: Python, jax,
jaxpr_semiring), ``load`` (weights, tokenizer), ``tokenize``, ``target`` (resolving the target,
which may run the model once), ``trace``, ``lower``, ``compile`` (an XLA compile, or a read from
the persistent compilation cache: :mod:`.cache`), ``run``, ``write`` (the document, the table
and the output files); ``top-path`` has ``compute`` for its three programs — then the total
and what the compilation cache did (hits and misses, from JAX's monitoring events).

Phases are recorded only after :func:`enable`; otherwise :func:`phase` costs one test.

>>> enable(); reset()
>>> with phase("tokenize"):
...     pass
>>> [name for name, wall, cpu in phases()]
['tokenize']
>>> disable()
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO, Iterator

__all__ = [
    "enable",
    "disable",
    "reset",
    "phase",
    "record",
    "phases",
    "since_process_start",
    "cache_events",
    "report",
]

_STATE: dict = {"on": False, "phases": {}, "hits": 0, "misses": 0, "listening": False}
_HIT, _MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"


def _on_event(event: str, **_kwargs) -> None:
    if not _STATE["on"]:
        return
    if event == _HIT:
        _STATE["hits"] += 1
    elif event == _MISS:
        _STATE["misses"] += 1


def enable() -> None:
    """Start recording phases and compilation-cache events (of this process)."""
    if not _STATE["listening"]:  # JAX keeps listeners for the process: register one, once
        import jax.monitoring

        jax.monitoring.register_event_listener(_on_event)
        _STATE["listening"] = True
    _STATE["on"] = True


def disable() -> None:
    """Stop recording (what was recorded stays until :func:`reset`)."""
    _STATE["on"] = False


def reset() -> None:
    """Forget the recorded phases and cache events."""
    _STATE.update(phases={}, hits=0, misses=0)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` (added up when it recurs) while recording is on."""
    if not _STATE["on"]:
        yield
        return
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record(name, time.perf_counter() - start, time.process_time() - cpu)


def record(name: str, seconds: float, cpu: float) -> None:
    """Add ``seconds`` (wall clock) and ``cpu`` (this process's CPU seconds, all threads) to
    phase ``name`` while recording is on."""
    if _STATE["on"]:
        wall, used = _STATE["phases"].get(name, (0.0, 0.0))
        _STATE["phases"][name] = (wall + seconds, used + cpu)


def phases() -> list[tuple[str, float, float]]:
    """``[(phase, wall seconds, CPU seconds), …]`` in the order they first ran."""
    return [(name, wall, cpu) for name, (wall, cpu) in _STATE["phases"].items()]


def cache_events() -> tuple[int, int]:
    """``(hits, misses)`` of JAX's persistent compilation cache while recording was on."""
    return _STATE["hits"], _STATE["misses"]


def since_process_start() -> tuple[float, float] | None:
    """``(wall, CPU)`` seconds since this process started (Linux: from ``/proc``; elsewhere
    None): the time spent before any of our code ran — the interpreter and the imports."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, ticks since boot
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - start, 0.0), time.process_time()
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def report(stream: IO[str] | None = None, cache: str | None = None) -> None:
    """Print one ``profile: PHASE SECONDS s (CPU SECONDS s)`` line per phase, the total and
    the cache line (``cache``: where the compilation cache is, or None when it is off). On a
    shared machine the CPU seconds say what the phase costs; the wall clock, what it took."""
    stream = sys.stderr if stream is None else stream
    rows = phases()
    total = ("total", sum(r[1] for r in rows), sum(r[2] for r in rows))
    for name, wall, cpu in [*rows, total]:
        print(f"profile: {name:<9} {wall:7.2f} s (CPU {cpu:6.2f} s)", file=stream)
    hits, misses = cache_events()
    where = f"{cache} ({hits} hits, {misses} misses)" if cache else "off"
    print(f"profile: compilation cache {where}", file=stream, flush=True)
