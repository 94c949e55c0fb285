"""Refuse up front what cannot fit: a compiled program's memory need against the device's.

A semiring value can be much larger than the primal (``top-k:K`` keeps K slots per element),
so a run that would exhaust memory is stopped after compilation (which does not grow with K)
and before any buffer is allocated, with one line naming the need, the limit and the fix.

>>> import jax, jax.numpy as jnp
>>> compiled = jax.jit(lambda x: x * 2).lower(jnp.ones(4)).compile()
>>> check_fits(compiled, "--semiring real", limit=1 << 30)
>>> check_fits(compiled, "--semiring real", limit=8)
Traceback (most recent call last):
...
jaxpr_semiring.cli.errors.UsageError: --semiring real needs about 32 B for this input...
"""

from __future__ import annotations

import jax

from .errors import UsageError

__all__ = ["needed_bytes", "available_bytes", "check_fits"]


def needed_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of a compiled program (None: the backend does not say)."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # not every backend/runtime implements it: then nothing is refused
        return None
    if ma is None:
        return None
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)


def available_bytes() -> int | None:
    """The default device's memory limit (accelerators), else the host's available memory."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_fits(compiled, what: str, limit: int | None = None, fix: str = "") -> None:
    """A one-line :class:`UsageError` if ``compiled`` needs more memory than ``limit`` (default:
    :func:`available_bytes`); ``what`` names the option responsible, ``fix`` what to change."""
    need = needed_bytes(compiled)
    limit = available_bytes() if limit is None else limit
    if need is None or limit is None or need <= limit:
        return
    raise UsageError(
        f"{what} needs about {_size(need)} for this input, more than the {_size(limit)} "
        f"available: {fix or 'use a smaller setting or a shorter input'}."
    )
