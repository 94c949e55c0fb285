"""The rule registry: how each primitive's local derivatives enter the semiring backward pass.

A rule has the signature ::

    rule(ctx, primals_in, primals_out, cts_out, **params) -> cts_in

``ctx`` carries the semiring (``ctx.semiring``), which operands want a cotangent
(``ctx.wanted``), the equation's module path (``ctx.path``) and, for higher-order rules,
``ctx.backward`` to recurse into a sub-jaxpr. ``cts_out`` holds one semiring value per output
(``None`` = 0̄, nothing arrived); the rule returns one per input (``None`` = no edge).

Register a rule for a new primitive in one line::

    from jaxpr_semiring.rules import register, elementwise
    register("my_elementwise_prim")(elementwise)

Rules are grouped by kind: :mod:`.elementwise` (one generic rule from JVP diagonals, no-edge and
identity rules), :mod:`.structural` (data movement, gathers and scatters), :mod:`.reductions`
(reductions and cumulative reductions), :mod:`.contractions` (``dot_general`` and convolutions),
:mod:`.windows` (pooling), :mod:`.sorting` and :mod:`.control_flow` (``scan``, ``cond``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence


RULES: dict[str, Callable] = {}
# Graph rewrites applied to every flattened graph, in order: ``rewrite(nodes, keep) -> nodes``
# (``keep``: keys of the graph's outputs, whose values must stay), e.g. folding a transpose
# into the contraction that consumes it. Each must preserve every path's product.
REWRITES: list[Callable] = []


@dataclasses.dataclass(frozen=True)
class Ctx:
    """What a rule knows about the equation it handles beyond its operands."""

    semiring: Any
    wanted: Sequence[bool]
    path: str = ""
    primitive: Any = None
    backward: Callable | None = None


def _name(prim) -> str:
    return prim if isinstance(prim, str) else prim.name


def register(*prims) -> Callable[[Callable], Callable]:
    """Decorator registering ``rule`` for primitives (objects or names).

    >>> from jaxpr_semiring.rules import register, elementwise
    >>> _ = register("my_softplus")(elementwise)
    """

    def deco(rule):
        for p in prims:
            RULES[_name(p)] = rule
        return rule

    return deco


def register_rewrite(rewrite: Callable) -> Callable:
    """Decorator adding a graph rewrite (``(nodes, keep) -> nodes``) run after flattening."""
    REWRITES.append(rewrite)
    return rewrite


def lookup(prim, path: str = "") -> Callable:
    """The rule for ``prim``, or a NotImplementedError saying how to add one."""
    name = _name(prim)
    try:
        return RULES[name]
    except KeyError:
        where = f" (in equation at module path '{path}')" if path else ""
        raise NotImplementedError(
            f"jaxpr_semiring has no semiring backward rule for primitive '{name}'{where}. "
            f"If it is elementwise, register the generic rule: "
            f"`jaxpr_semiring.rules.register('{name}')(jaxpr_semiring.rules.elementwise)`; "
            f"otherwise write `rule(ctx, primals_in, primals_out, cts_out, **params)` returning "
            f"one semiring cotangent per input and register it with "
            f"`jaxpr_semiring.rules.register('{name}')(rule)` (see "
            "jaxpr_semiring/rules/__init__.py)."
        ) from None


# registration side effects
from . import elementwise, structural, reductions, contractions  # noqa: E402,F401
from . import slices, windows, sorting, control_flow  # noqa: E402,F401
from .elementwise import elementwise, no_edges, identity  # noqa: E402,F811

__all__ = [
    "RULES",
    "REWRITES",
    "Ctx",
    "register",
    "register_rewrite",
    "lookup",
    "elementwise",
    "no_edges",
    "identity",
]
