"""Everything that depends on how a particular JAX release spells its higher-order primitives.

JAX renames primitives and their parameters between releases (``pjit`` → ``jit``,
``checkpoint`` → ``remat2``, ``custom_vjp_call_jaxpr`` → ``custom_vjp_call``, scan's
``jaxpr``/``linear``/``_split_transpose``…). This module is the one place that knows; the
interpreter and the rules ask it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from jax.extend import core as jcore

# Primitives whose primal body defines the graph: inlined by the interpreter.
# name → parameter holding the body (a ClosedJaxpr or an open Jaxpr).
_CALL_BODY_PARAM = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "eval_jaxpr": "call_jaxpr",  # jax >= 0.11: a call parameterized by an open jaxpr
    "custom_lin": None,  # only inside AD; never in a user's jaxpr
}

# ``custom_jvp`` functions of JAX whose primal body subtracts a running maximum only for
# numerical stability (the function is invariant to that shift). Releases differ in whether the
# body wraps the maximum in ``stop_gradient`` (jax 0.10: yes; 0.12 ``jax.nn.softmax``: no), which
# would add or remove paths through the maximum. The graph is the same on every release: inside
# these bodies the maximum is a constant (docs/semantics.md, "Library functions").
# name (the function name in the body's debug info, as jaxprs print it) → primitives whose outputs
# are the shift.
SHIFT_INVARIANT_BODIES = {
    "_softmax": ("reduce_max",),  # jax.nn.softmax, jax >= 0.12
    "_logsumexp_impl": ("reduce_max",),  # jax.nn.logsumexp / jax.scipy.special.logsumexp
}


class Body(NamedTuple):
    jaxpr: jcore.Jaxpr
    consts: Sequence[Any]


def as_body(j) -> Body:
    """A (jaxpr, consts) pair from a ClosedJaxpr or an open Jaxpr."""
    if isinstance(j, jcore.ClosedJaxpr):
        return Body(j.jaxpr, j.consts)
    return Body(j, ())


def call_body(eqn_or_name, params=None) -> Body | None:
    """The body to inline for a call-like equation, or None if it is not one."""
    name = eqn_or_name if isinstance(eqn_or_name, str) else eqn_or_name.primitive.name
    params = params if params is not None else eqn_or_name.params
    key = _CALL_BODY_PARAM.get(name)
    if key is None or key not in params:
        return None
    return as_body(params[key])


class ScanParams(NamedTuple):
    body: Body
    num_consts: int
    num_carry: int
    length: int
    reverse: bool


def scan_params(params) -> ScanParams:
    """Scan's parameters in one spelling. jax >= 0.11.2 replaced ``num_consts``/``num_carry``
    by flat trees ``ft_in = (consts, carry, xs)``; their leaf counts are the same numbers."""
    body = as_body(params["jaxpr"])
    if "num_consts" in params:
        nc, ncar = params["num_consts"], params["num_carry"]
    else:
        consts, carry, _ = params["ft_in"].update(list(range(len(body.jaxpr.invars)))).unpack()
        nc, ncar = len(list(consts)), len(list(carry))
    return ScanParams(body, nc, ncar, params["length"], params["reverse"])


def shift_primitives(eqn) -> tuple[str, ...]:
    """For a ``custom_jvp_call`` of a shift-invariant JAX function (see
    ``SHIFT_INVARIANT_BODIES``), the primitives whose outputs are its stability shift."""
    if eqn.primitive.name != "custom_jvp_call":
        return ()
    body = eqn.params.get("call_jaxpr")
    info = getattr(getattr(body, "jaxpr", body), "debug_info", None)
    return SHIFT_INVARIANT_BODIES.get(str(getattr(info, "func_name", "")), ())


def cond_branches(params) -> list[Body]:
    return [as_body(b) for b in params["branches"]]


def name_stack(eqn) -> str:
    """The equation's module path (Flax scopes, ``jax.named_scope``), '' if none."""
    try:
        return str(eqn.source_info.name_stack)
    except AttributeError:
        return ""


def join_path(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix and rel else (prefix or rel)


def bind(primitive, args: Sequence, params: dict) -> list:
    """Apply a primitive to values as ``eval_jaxpr`` does; always returns a list of outputs."""
    bind_params = primitive.get_bind_params(params)
    if isinstance(bind_params, tuple):  # jax < 0.9: (subfuns, params)
        subfuns, bind_params = bind_params
        outs = primitive.bind(*subfuns, *args, **bind_params)
    else:  # as jax.core.eval_jaxpr does: ``subfuns`` (custom_jvp/vjp calls) stay a parameter
        outs = primitive.bind(*args, **bind_params)
    return list(outs) if primitive.multiple_results else [outs]


def scan_unroll(params) -> int | bool:
    """Scan's ``unroll`` parameter (1 when the release does not record it)."""
    return params.get("unroll", 1)


def eval_jaxpr(jaxpr: jcore.Jaxpr, consts: Sequence, *args) -> list:
    """Evaluate an open jaxpr with its consts (``jax.core.eval_jaxpr`` moved between releases)."""
    try:
        from jax.core import eval_jaxpr as _eval
    except ImportError:  # pragma: no cover
        from jax._src.core import eval_jaxpr as _eval
    return list(_eval(jaxpr, list(consts), *args))


def cond_index_and_operands(primals_in) -> tuple[Any, list]:
    """``cond``'s operands: the branch index first, then the branch operands."""
    return primals_in[0], list(primals_in[1:])


def sort_params(params) -> tuple[int, bool, int]:
    """(dimension, is_stable, num_keys) of a ``sort`` equation."""
    return params["dimension"], params.get("is_stable", True), params.get("num_keys", 1)


def top_k_axis(params, ndim: int) -> int:
    """The axis ``top_k`` selects along (older releases: always the last)."""
    return params.get("axis", -1) % ndim
