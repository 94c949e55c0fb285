"""Control flow. ``jit``/``closed_call``/``remat``/``custom_jvp_call``/``custom_vjp_call`` never
reach a rule: the interpreter inlines their primal bodies. ``scan`` and ``cond`` recurse into
their bodies through ``ctx.backward`` (the semiring interpreter applied to a sub-jaxpr), so the
graph is that of the unrolled steps / the taken branch, computed without unrolling. ``while``
has no static trip count and raises a clear error.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from .. import _compat
from ..graph import is_float
from . import register


class WhileLoopError(TypeError):
    pass


@register("while")
def while_loop(ctx, primals_in, primals_out, cts_out, **params):
    where = f" (at module path '{ctx.path}')" if ctx.path else ""
    raise WhileLoopError(
        "Reverse-mode semiring differentiation does not work for lax.while_loop or lax.fori_loop "
        f"with dynamic start/stop values{where}: the trip count is not known when the backward "
        "pass is built. Try using lax.scan, or lax.fori_loop with constant (Python int) "
        "start/stop values, which lowers to a scan."
    )


# ---------------------------------------------------------------------------------- helpers


def _match(S, ct, tmpl):
    """``ct`` (or 0̄ when None) with exactly the dtypes and shapes of the template ``tmpl``, so
    that loop-carried and branch-returned cotangents have one fixed type."""
    if ct is None:
        return tmpl
    return jax.tree.map(
        lambda a, t: lax.convert_element_type(jnp.broadcast_to(a, t.shape), t.dtype), ct, tmpl
    )


def _zeros_like(S, x):
    return S.zeros(jnp.shape(x), jnp.result_type(x))


def _live_outputs(jaxpr: jcore.Jaxpr, live_in: Sequence[bool]) -> list[bool]:
    """Which float outputs of ``jaxpr`` depend on some live input (conservative through
    sub-jaxprs: any live operand makes every float output of an equation live)."""
    live = {v for v, l in zip(jaxpr.invars, live_in) if l}
    for eqn in jaxpr.eqns:
        if any(not isinstance(x, jcore.Literal) and x in live for x in eqn.invars):
            live.update(v for v in eqn.outvars if is_float(v.aval))
    return [
        not isinstance(v, jcore.Literal) and v in live and is_float(v.aval) for v in jaxpr.outvars
    ]


# ------------------------------------------------------------------------------------- scan


@register("scan")
def scan(ctx, primals_in, primals_out, cts_out, **params):
    """Reverse ``lax.scan`` whose body is the semiring backward pass of the scan body.

    The backward scan carries the semiring cotangents of the carries (0̄ rather than None, so
    the loop-carried type is fixed) and ⊕-accumulates those of the consts; per-step xs
    cotangents are its outputs. Each step's backward needs the primal carries *entering* that
    step. They are **stored**: a forward scan re-runs the body and also outputs every step's
    incoming carry as an extra ``ys`` (memory: length × carry size, like JAX's own scan VJP).
    Recomputing them from the initial carry at every step instead would be quadratic in the
    length. Within a step the body's intermediates are recomputed by the sub-interpreter from
    that step's inputs (one extra body evaluation per step).
    """
    S = ctx.semiring
    sp = _compat.scan_params(params)
    body, nc, ncar, length, reverse = sp.body, sp.num_consts, sp.num_carry, sp.length, sp.reverse
    unroll = _compat.scan_unroll(params)
    consts = list(primals_in[:nc])
    init = list(primals_in[nc : nc + ncar])
    xs = list(primals_in[nc + ncar :])
    n_in = len(primals_in)
    float_in = [is_float(x) for x in primals_in]

    # Which carries can hold a path: fixed point of the body's dependencies.
    live = [bool(w) and f for w, f in zip(ctx.wanted, float_in)]
    while True:
        outs_live = _live_outputs(body.jaxpr, live)
        new = list(live)
        for i in range(ncar):
            new[nc + i] = new[nc + i] or outs_live[i]
        if new == live:
            break
        live = new
    carry_live = live[nc : nc + ncar]
    const_w = [bool(ctx.wanted[i]) and float_in[i] for i in range(nc)]
    xs_w = [bool(ctx.wanted[i]) and float_in[i] for i in range(nc + ncar, n_in)]
    if not any(const_w) and not any(carry_live) and not any(xs_w):
        return [None] * n_in

    # Forward: the primal carry entering every step, stored as extra ys.
    def fwd(carry, x):
        outs = _compat.eval_jaxpr(body.jaxpr, body.consts, *consts, *carry, *x)
        return list(outs[:ncar]), list(carry)

    _, carries = lax.scan(fwd, init, xs, length=length, reverse=reverse, unroll=unroll)

    carry_tmpl = [_zeros_like(S, c) if l else None for c, l in zip(init, carry_live)]
    ct_carry0 = [
        _match(S, ct, t) if l else None for ct, t, l in zip(cts_out[:ncar], carry_tmpl, carry_live)
    ]
    ys_out = primals_out[ncar:]
    ct_ys = [
        ct if (ct is not None and is_float(y)) else None for ct, y in zip(cts_out[ncar:], ys_out)
    ]
    ct_ys = [
        None if ct is None else _match(S, ct, _zeros_like(S, y)) for ct, y in zip(ct_ys, ys_out)
    ]
    const_tmpl = [_zeros_like(S, c) if w else None for c, w in zip(consts, const_w)]
    wanted_body = tuple(const_w) + tuple(carry_live) + tuple(xs_w)
    x_tmpl = [_zeros_like(S, x[0]) if w else None for x, w in zip(xs, xs_w)] if length else []

    def bwd(state, inp):
        ct_carry, ct_consts = state
        carry_t, x_t, ct_y_t = inp
        cts_in = ctx.backward(
            S,
            body.jaxpr,
            body.consts,
            [*consts, *carry_t, *x_t],
            wanted_body,
            [*ct_carry, *ct_y_t],
            ctx.path,
        )
        c_in, car_in, x_in = cts_in[:nc], cts_in[nc : nc + ncar], cts_in[nc + ncar :]
        new_consts = [
            acc if (acc is None or c is None) else S.add(acc, _match(S, c, acc))
            for acc, c in zip(ct_consts, c_in)
        ]
        new_carry = [
            _match(S, c, t) if l else None for c, t, l in zip(car_in, carry_tmpl, carry_live)
        ]
        ct_x = [_match(S, c, t) if w else None for c, t, w in zip(x_in, x_tmpl, xs_w)]
        return (new_carry, new_consts), ct_x

    if length == 0:
        ct_init, ct_consts = ct_carry0, const_tmpl
        ct_xs = [_zeros_like(S, x) if w else None for x, w in zip(xs, xs_w)]
    else:
        (ct_init, ct_consts), ct_xs = lax.scan(
            bwd,
            (ct_carry0, const_tmpl),
            (carries, xs, ct_ys),
            length=length,
            reverse=not reverse,
            unroll=unroll,
        )
    ct_init = [
        c if (ctx.wanted[nc + i] and float_in[nc + i]) else None for i, c in enumerate(ct_init)
    ]
    return list(ct_consts) + list(ct_init) + list(ct_xs)


# ------------------------------------------------------------------------------------- cond


@register("cond")
def cond(ctx, primals_in, primals_out, cts_out, **params):
    """Backward through the taken branch only, chosen at run time by ``lax.switch`` on the
    (structural, integer) branch index. Every branch returns the same structure: 0̄ of the
    operand's shape where that branch has no path from an operand."""
    S = ctx.semiring
    branches = _compat.cond_branches(params)
    index, ops = _compat.cond_index_and_operands(primals_in)
    wanted = tuple(bool(w) and is_float(x) for w, x in zip(ctx.wanted[1:], ops))
    if not any(wanted):
        return [None] * len(primals_in)
    tmpl = [_zeros_like(S, x) if w else None for x, w in zip(ops, wanted)]
    cts = [ct if (ct is not None and is_float(y)) else None for ct, y in zip(cts_out, primals_out)]

    def make(branch):
        def run(ops_, cts_):
            res = ctx.backward(
                S, branch.jaxpr, branch.consts, list(ops_), wanted, list(cts_), ctx.path
            )
            return [_match(S, c, t) if w else None for c, t, w in zip(res, tmpl, wanted)]

        return run

    if len(branches) == 1:
        res = make(branches[0])(ops, cts)
    else:
        res = lax.switch(index, [make(b) for b in branches], list(ops), cts)
    return [None] + list(res)
