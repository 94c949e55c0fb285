"""Elementwise primitives: one generic rule from JVP diagonals, plus no-edge and identity rules.

For an elementwise primitive the local Jacobian w.r.t. each operand is diagonal, so a single JVP
with a tangent of ones gives every edge weight ∂out_k/∂in_k at once, with JAX's own convention
at kinks and ties. An operand broadcast implicitly (rank 0, or size-1 axes) feeds several output
elements: its cotangent is the ⊕ over them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _compat
from . import register


# Local derivatives in closed form, from the primals (no JVP to trace and compile). ``1`` means
# the edge passes the cotangent unchanged (lift(1) = 1̄ in every semiring); a weight may be
# shaped like the operand it comes from (broadcasting like the primitive did).
CLOSED_FORM = {
    "add": lambda xs, out, i: 1,
    "add_any": lambda xs, out, i: 1,
    "sub": lambda xs, out, i: 1 if i == 0 else -1,
    "neg": lambda xs, out, i: -1,
    "mul": lambda xs, out, i: xs[1 - i],
    "exp": lambda xs, out, i: out,
    # nextafter(x, y) moves x by one ulp: an identity edge from x, none from y (jax >= 0.12's
    # JVP; older releases have none, and the graph is the same on every release)
    "nextafter": lambda xs, out, i: 1 if i == 0 else None,
}


def local_derivative(prim, params, primals_in, i):
    """∂out/∂in_i elementwise (shaped like the output) by one JVP of the primitive (a
    ``custom_jvp_call`` node: by its own JVP rule)."""
    x = primals_in[i]

    def along_i(xi):
        args = list(primals_in)
        args[i] = xi
        return _compat.bind(prim, args, params)[0]

    _, w = jax.jvp(along_i, (x,), (jnp.ones_like(x),))
    return w


def unbroadcast(S, v, shape, out_shape):
    """⊕ over the output elements an implicitly broadcast operand (rank 0, or size-1 axes
    as jax ≥ 0.10 allows) feeds."""
    if tuple(shape) == tuple(out_shape):
        return v
    if len(shape) == 0:
        return S.sum(v, axes=tuple(range(len(out_shape))))
    axes = tuple(d for d, (n, m) in enumerate(zip(shape, out_shape)) if n == 1 and m != 1)
    return S.map(lambda a: a.reshape(shape), S.sum(v, axes=axes))


def elementwise(ctx, primals_in, primals_out, cts_out, **params):
    S = ctx.semiring
    (ct,) = cts_out
    out_shape = primals_out[0].shape
    cts_in = []
    for i, x in enumerate(primals_in):
        if not ctx.wanted[i]:
            cts_in.append(None)
            continue
        closed_form = CLOSED_FORM.get(ctx.primitive.name)
        if closed_form is None:
            w = local_derivative(ctx.primitive, params, primals_in, i)
        else:
            w = closed_form(primals_in, primals_out[0], i)
            if w is None:  # no edge from this operand
                cts_in.append(None)
                continue
        if isinstance(w, int):
            w = None if w == 1 else jnp.asarray(w, primals_out[0].dtype)
        contrib = ct if w is None else S.scale(w, ct)
        cts_in.append(unbroadcast(S, contrib, x.shape, out_shape))
    return cts_in


def no_edges(ctx, primals_in, primals_out, cts_out, **params):
    """Derivative identically zero (or integer/boolean): the equation adds no edges."""
    return [None] * len(primals_in)


def identity(ctx, primals_in, primals_out, cts_out, **params):
    """out_i = in_i: every element passes its cotangent straight through."""
    return list(cts_out)


register(
    "abs",
    "acos",
    "acosh",
    "add",
    "add_any",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bessel_i0e",
    "bessel_i1e",
    "cbrt",
    "clamp",
    "cos",
    "cosh",
    "digamma",
    "div",
    "erf",
    "erf_inv",
    "erfc",
    "exp",
    "exp2",
    "expm1",
    "igamma",
    "igammac",
    "igamma_grad_a",
    "integer_pow",
    "lgamma",
    "log",
    "log1p",
    "logistic",
    "max",
    "min",
    "mul",
    "neg",
    "polygamma",
    "pow",
    "random_gamma",
    "random_gamma_grad",
    "reduce_precision",
    "regularized_incomplete_beta",
    "rem",
    "rsqrt",
    "sin",
    "sinh",
    "sqrt",
    "square",
    "sub",
    "tan",
    "tanh",
    "zeta",
    # jax >= 0.11
    "acospi",
    "asinpi",
    "atan2pi",
    "atanpi",
    "cospi",
    "sinpi",
    "tanpi",
    "exp2m1",
    "log2",
    "log2p1",
    "fma",
    "fmuladd",
    "one_minus_square",
    "polynomial",
    "nextafter",
    # a custom_jvp function computed by bit manipulation stays one node (interpreter.flatten)
    "custom_jvp_call",
)(elementwise)

register(
    "sign",
    "floor",
    "ceil",
    "round",
    "is_finite",
    "stop_gradient",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "argmax",
    "argmin",
    "iota",
    "and",
    "or",
    "not",
    "xor",
    "shift_left",
    "shift_right_logical",
    "shift_right_arithmetic",
    "population_count",
    "clz",
    "random_bits",
    "random_seed",
    "random_wrap",
    "random_unwrap",
    "random_fold_in",
    "random_split",
    "threefry2x32",
    "rng_bit_generator",
    "rng_uniform",
    "bitcast_convert_type",
    "reduce_and",
    "reduce_or",
    "reduce_xor",
    "axis_index",
    "platform_index",
    "mulhi",
    "eq_to",
    "le_to",
    "lt_to",
)(no_edges)

register(
    "name",
    "copy",
    "copy_p",
    "device_put",
    "optimization_barrier",
    "sharding_constraint",
    "mesh_cast",
    "reshard",
    "pvary",
)(identity)
