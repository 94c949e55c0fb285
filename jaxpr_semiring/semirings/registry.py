"""Semirings by name: what ``--semiring`` and a document's ``"semiring"`` entry resolve through.

Every :class:`~jaxpr_semiring.semirings.base.Semiring` subclass that sets ``cli_name`` is
registered when its class statement runs (``Semiring.__init_subclass__``), under its
``cli_name`` and its class name. :func:`parse` accepts any spelling the library writes or a user
types: ``"max-product"``, ``"MaxProduct"``, ``"max_product"``, ``"top-k:3"``, ``"TopK(3)"``,
``"topk3"``; an argument after ``:`` (or in parentheses) goes to the class's ``from_cli``.
Semirings of installed packages register through the entry-point group
``jaxpr_semiring.semirings`` (``name = "package.module:Class"``), loaded on the first name that
is not found otherwise.

>>> from jaxpr_semiring import semirings
>>> parse("top-k:3"), parse("MaxProduct"), parse("max_abs")
(TopK(3), MaxProduct(), MaxAbs())
>>> parse("tropical")
Traceback (most recent call last):
...
ValueError: unknown semiring 'tropical': use one of real, expectation, boolean, log, counting, ...
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

__all__ = ["register", "parse", "names", "REGISTRY", "ENTRY_POINTS"]

#: normalized name → class (cli names and class names)
REGISTRY: dict[str, type] = {}
ENTRY_POINTS = "jaxpr_semiring.semirings"
_classes: list[type] = []  # registration order: how names are listed
_entry_points_loaded = [False]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register(cls: type) -> type:
    """Register ``cls`` under its ``cli_name`` and class name (a later class of the same name
    replaces an earlier one: redefining a class in a session works)."""
    for name in (cls.cli_name, cls.__name__):
        REGISTRY[_key(name)] = cls
    _classes[:] = [c for c in _classes if c.cli_name != cls.cli_name] + [cls]
    return cls


def names() -> list[str]:
    """The command line's names, in registration order (``"top-k:K"`` for one that takes an
    argument)."""
    return [c.cli_name + (f":{c.cli_arg}" if c.cli_arg else "") for c in _classes]


def _load_entry_points() -> None:
    if _entry_points_loaded[0]:
        return
    _entry_points_loaded[0] = True
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        ep.load()  # importing the class registers it


def parse(spec: str) -> Any:
    """The semiring a name stands for (an instance), else a ValueError naming the known ones."""
    text = str(spec).strip()
    m = re.fullmatch(r"(.*?)\s*(?::\s*(.*)|\((.*)\))", text)
    name, arg = (
        (m.group(1), m.group(2) if m.group(2) is not None else m.group(3)) if m else (text, None)
    )
    key = _key(name)
    if key not in REGISTRY:
        _load_entry_points()
    if key not in REGISTRY and arg is None:  # "topk3": trailing digits are the argument
        d = re.fullmatch(r"(.*?)(\d+)", key)
        if d and d.group(1) in REGISTRY:
            key, arg = d.group(1), d.group(2)
    if key not in REGISTRY:
        raise ValueError(f"unknown semiring {text!r}: use one of {', '.join(names())}.")
    return REGISTRY[key].from_cli(None if arg in (None, "") else arg.strip())
