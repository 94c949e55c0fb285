"""JAX's persistent compilation cache for the command line: the compiled flows program of a
model and text length is written to disk once and read back by every later run, so a second
``jaxpr-semiring flows`` skips XLA's compile (seconds) — on by default.

Where (:func:`resolve`): ``--no-cache``, ``JAXPR_SEMIRING_NO_CACHE=1`` or JAX's own
``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off; a directory JAX was already told
(``JAX_COMPILATION_CACHE_DIR`` or ``jax.config.update("jax_compilation_cache_dir", …)``) is
kept; otherwise ``$XDG_CACHE_HOME/jaxpr_semiring/jax`` (``~/.cache/jaxpr_semiring/jax`` when
that is unset or not absolute, as the XDG base-directory spec says; ``~/Library/Caches/…`` on
macOS, ``%LOCALAPPDATA%\\jaxpr_semiring\\Cache\\jax`` on Windows). Entries are keyed by the
program, the JAX/XLA versions and the devices, so upgrading JAX never reads a stale entry;
delete the directory to reclaim the space (about 1 MB per model and text length).

Every program is cached (:data:`MIN_COMPILE_SECS`): JAX's default threshold, 1 s, leaves out
the hundred small programs a Flax model compiles while it initialises (cached, MiniLM's load
fell from 7.1 to 3.2 s of CPU). The numba max-product kernel runs through XLA's FFI
(:mod:`jaxpr_semiring.kernels.ffi`), whose programs cache like any other; JAX refuses programs
that call Python (``jax.pure_callback``: the ``numba-callback`` fallback, ``jax.debug.print``).

>>> resolve(no_cache=True, environ={})
(None, '--no-cache')
>>> resolve(environ={"JAXPR_SEMIRING_NO_CACHE": "1"})
(None, 'JAXPR_SEMIRING_NO_CACHE=1')
>>> default_dir({"XDG_CACHE_HOME": "/var/cache/me"}, platform="linux")
'/var/cache/me/jaxpr_semiring/jax'
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Mapping

__all__ = ["ENV_OFF", "MIN_COMPILE_SECS", "default_dir", "resolve", "enabled"]

ENV_OFF = "JAXPR_SEMIRING_NO_CACHE"
# Everything: loading a Flax model initialises it op by op (~100 small programs, 10-50 ms each);
# reading them back cut the load from 7-9 s to 2-3 s of CPU time (benchmarks/RESULTS.md).
MIN_COMPILE_SECS = 0.0
_FALSE = ("", "0", "false", "no", "off")


def default_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The user's cache directory for compiled programs (see the module docstring)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    base = env.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the spec: a relative path is invalid, ignore it
        home = os.path.expanduser("~")
        if platform == "darwin":
            base = os.path.join(home, "Library", "Caches")
        elif platform == "win32":
            local = env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
            return os.path.join(local, "jaxpr_semiring", "Cache", "jax")
        else:
            base = os.path.join(home, ".cache")
    return os.path.join(base, "jaxpr_semiring", "jax")


def resolve(
    no_cache: bool = False, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """``(directory or None, why)``: where the command line caches compiled programs."""
    env = os.environ if environ is None else environ
    if no_cache:
        return None, "--no-cache"
    off = env.get(ENV_OFF, "")
    if off.strip().lower() not in _FALSE:
        return None, f"{ENV_OFF}={off}"
    jax_off = env.get("JAX_ENABLE_COMPILATION_CACHE")
    if jax_off is not None and jax_off.strip().lower() in _FALSE:
        return None, f"JAX_ENABLE_COMPILATION_CACHE={jax_off}"
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return env["JAX_COMPILATION_CACHE_DIR"], "JAX_COMPILATION_CACHE_DIR"
    if environ is None:
        import jax

        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir, "jax_compilation_cache_dir"
    return default_dir(env), "default"


@contextlib.contextmanager
def enabled(no_cache: bool = False) -> Iterator[str | None]:
    """Within the block JAX caches compiled programs where :func:`resolve` says (the
    directory is yielded; None: off); JAX's settings are restored afterwards. A directory
    that cannot be created turns the cache off quietly (it only saves time)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    directory, _ = resolve(no_cache)
    if directory is not None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            directory = None
    new = {"jax_enable_compilation_cache": directory is not None}
    if directory is not None:
        new["jax_compilation_cache_dir"] = directory
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            new["jax_persistent_cache_min_compile_time_secs"] = MIN_COMPILE_SECS
    old = {n: getattr(jax.config, n) for n in new}
    changed = old != new
    try:
        for n, v in new.items():
            jax.config.update(n, v)
        if changed:  # JAX decides once per process whether (and where) it caches: ask again
            compilation_cache.reset_cache()
        yield directory
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        if changed:
            compilation_cache.reset_cache()
