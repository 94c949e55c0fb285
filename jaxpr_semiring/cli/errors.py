"""The command line's one error type: bad input from the user (exit code 2, one line)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input from the user: the message names the problem and the fix.

    >>> raise UsageError("--buckets must be positive integers: pass e.g. --buckets 32,64.")
    Traceback (most recent call last):
    ...
    jaxpr_semiring.cli.errors.UsageError: --buckets must be positive integers: pass e.g. ...
    """
