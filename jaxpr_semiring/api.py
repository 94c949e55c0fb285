"""Public entry points: ``semiring_grad`` and ``value_and_semiring_grad``, mirroring ``jax.grad``."""
from __future__ import annotations

import operator
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import interpreter
from .semirings import Real, Semiring


def _normalize_argnums(argnums) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, (int, np.integer)):
        return (operator.index(argnums),), True
    return tuple(operator.index(a) for a in argnums), False


def _check_input(x):
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"semiring_grad requires real-valued inputs (input dtype that is a sub-dtype of "
            f"np.floating), but got {np.dtype(dtype).name}. Integer and boolean arguments are "
            f"structure, not data: pass them through a non-differentiated argnum (or close over "
            f"them), as you would with jax.grad.")
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"semiring_grad requires real-valued inputs, but got {np.dtype(dtype).name}: "
                        f"complex-valued paths have no semiring semantics here.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"semiring_grad requires numerical-valued inputs, but got {np.dtype(dtype).name}.")


def _check_output(aval):
    if aval.shape != ():
        raise TypeError(f"Gradient only defined for scalar-output functions. Output had shape: "
                        f"{aval.shape}. Reduce it to a scalar first (e.g. sum it, or pick the "
                        f"logit difference you want to explain).")
    if not jnp.issubdtype(aval.dtype, jnp.floating):
        raise TypeError(f"semiring_grad requires real-valued outputs (output dtype that is a "
                        f"sub-dtype of np.floating), but got {np.dtype(aval.dtype).name}.")


def trace(fun: Callable, args: Sequence, kwargs: dict, argnums: tuple[int, ...], has_aux: bool):
    """Trace ``fun`` as a function of the flattened differentiated arguments.

    Returns (closed_jaxpr, flat_diff_args, diff_treedef, aux_treedef).
    """
    if argnums and max(argnums) >= len(args):
        raise TypeError(f"differentiating with respect to argnums={argnums if len(argnums) > 1 else argnums[0]} "
                        f"requires at least {max(argnums) + 1} positional arguments to be passed by "
                        f"the caller, but got only {len(args)} positional arguments.")
    diff_args = tuple(args[i] for i in argnums)
    flat, treedef = jax.tree.flatten(diff_args)
    for x in flat:
        _check_input(x)
    aux_tree = []

    def flat_fun(*flat_diff):
        new_args = list(args)
        for i, a in zip(argnums, jax.tree.unflatten(treedef, flat_diff)):
            new_args[i] = a
        out = fun(*new_args, **kwargs)
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(f"expected function with aux output to return a two-element tuple, "
                                f"but got type {type(out)} with value {out!r}")
            out, aux = out
        else:
            aux = None
        aux_flat, aux_def = jax.tree.flatten(aux)
        aux_tree.append(aux_def)
        return [out, *aux_flat]

    closed = jax.make_jaxpr(flat_fun)(*flat)
    _check_output(closed.out_avals[0])
    return closed, flat, treedef, aux_tree[0]


def run(fun, semiring: Semiring, args, kwargs, argnums, has_aux, recorder=None):
    """Trace, evaluate and run the semiring backward pass.

    Returns (value, flat cotangents, diff treedef, aux, graph, env).
    """
    closed, flat, treedef, aux_def = trace(fun, args, kwargs, argnums, has_aux)
    flat = [jnp.asarray(x) for x in flat]
    graph = interpreter.flatten(closed.jaxpr, closed.consts)
    env = interpreter.forward(graph, flat)
    outs = [interpreter._value(env, a) for a in graph.outvars]
    sources = list(graph.invars)
    if recorder is not None and hasattr(recorder, "start"):
        # taps (jaxpr_semiring.taps.FlowRecorder): every tapped variable is also a source
        sources += list(recorder.start(graph, env) or ())
    wanted = interpreter.reachable(graph, sources)
    seed = semiring.ones((), outs[0].dtype)
    cts = interpreter.backward(semiring, graph, env, [seed] + [None] * (len(outs) - 1), wanted, recorder)
    flat_cts = [cts.get(r.key) if r.key in cts else semiring.zeros(np.shape(x), jnp.result_type(x))
                for r, x in zip(graph.invars, flat)]
    aux = jax.tree.unflatten(aux_def, outs[1:]) if has_aux else None
    return outs[0], flat_cts, treedef, aux


def _assemble(flat_cts, treedef, single):
    grads = jax.tree.unflatten(treedef, flat_cts)
    return grads[0] if single else grads


def value_and_semiring_grad(fun: Callable, semiring: Semiring | None = None,
                            argnums: int | Sequence[int] = 0, has_aux: bool = False,
                            *, taps: bool = False) -> Callable:
    """Like :func:`semiring_grad` but also returns ``fun``'s value: ``(value, grad)`` or
    ``((value, aux), grad)`` with ``has_aux``.

    With ``taps=True`` the result above comes paired with a
    :class:`jaxpr_semiring.taps.FlowReport`: ``((value, grad), report)``.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> v, g = js.value_and_semiring_grad(lambda x: jnp.sum(x ** 2), js.Real())(jnp.ones(2))
    >>> float(v), g.tolist()
    (2.0, [2.0, 2.0])
    """
    semiring = Real() if semiring is None else semiring
    argnums_t, single = _normalize_argnums(argnums)

    def value_and_grad_f(*args, **kwargs):
        recorder = None
        if taps:
            from .taps import FlowRecorder
            recorder = FlowRecorder(semiring)
        value, flat_cts, treedef, aux = run(fun, semiring, args, kwargs, argnums_t, has_aux,
                                            recorder)
        grads = _assemble(flat_cts, treedef, single)
        out = ((value, aux), grads) if has_aux else (value, grads)
        return (out, recorder.report()) if taps else out

    return value_and_grad_f


def semiring_grad(fun: Callable, semiring: Semiring | None = None,
                  argnums: int | Sequence[int] = 0, has_aux: bool = False,
                  *, taps: bool = False) -> Callable:
    """Semiring gradient of a scalar function: ⊕ over all paths input → output of ⊗ of the
    lifted local derivatives (paper Eq. 2), for every element of the differentiated arguments.

    Mirrors ``jax.grad``: ``argnums`` an int or a tuple, pytree arguments, the result shaped like
    the differentiated arguments (each leaf a value of ``semiring``: an array for ``Real``, a
    ``MaxProductValue(top_pos, top_neg)`` for ``MaxProduct``, …), ``has_aux`` returning
    ``(grad, aux)``. ``semiring_grad(f, Real())`` equals ``jax.grad(f)``. The result is
    jittable and vmappable.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x, y: jnp.exp(x) + (x - y) * y      # paper Fig. 1
    >>> g = js.semiring_grad(f, js.MaxProduct(), argnums=(0, 1))(0.0, 1.0)
    >>> float(g[0].top_pos), float(g[1].top_pos), float(g[1].top_neg)
    (1.0, -1.0, -1.0)

    With ``taps=True`` (see :mod:`jaxpr_semiring.taps`) it returns ``(result, report)``:
    ``result`` as above and a :class:`~jaxpr_semiring.taps.FlowReport` giving, for every
    variable marked with :func:`jaxpr_semiring.tap`, the total semiring value and the
    ⊕-contribution arriving from each consumer equation (labelled by module path and
    primitive). ``jaxpr_semiring.flows(fun, semiring, argnums)`` is the same thing.

    >>> def h(x):
    ...     t = js.tap(x, "t")
    ...     return jnp.sum(2.0 * t) + jnp.sum(jnp.exp(t))
    >>> g, rep = js.semiring_grad(h, js.MaxProduct(), taps=True)(jnp.zeros(2))
    >>> {k: v.top_pos.tolist() for k, v in rep["t"].consumers.items()}
    {'[mul]': [2.0, 2.0], '[exp]': [1.0, 1.0]}
    """
    vg = value_and_semiring_grad(fun, semiring, argnums, has_aux, taps=taps)

    def grad_f(*args, **kwargs):
        if taps:
            (out, grads), report = vg(*args, **kwargs)
            return ((grads, out[1]) if has_aux else grads), report
        out, grads = vg(*args, **kwargs)
        return (grads, out[1]) if has_aux else grads

    return grad_f
