"""Public entry points: ``semiring_grad`` and ``value_and_semiring_grad``, mirroring ``jax.grad``,
and :func:`backprop`, the one traced backward pass they (and flow reports, top paths) run.

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> @js.semiring_grad(semiring=js.MaxProduct())
... def f(x):
...     return jnp.sum(jnp.tanh(x) * 3.0)
>>> f(jnp.zeros(2)).top_pos.tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import interpreter
from .semirings import Real, Semiring
from .semirings.product import Product, as_semiring, split

__all__ = [
    "semiring_grad",
    "value_and_semiring_grad",
    "backprop",
    "Backprop",
    "normalize_argnums",
    "trace",
]


def normalize_argnums(argnums) -> tuple[tuple[int, ...], bool]:
    """``argnums`` as a tuple, and whether it was a single int (results not wrapped in a tuple)."""
    if isinstance(argnums, (int, np.integer)):
        return (operator.index(argnums),), True
    return tuple(operator.index(a) for a in argnums), False


def _check_input(x):
    key_dtype = getattr(x, "dtype", None)
    if key_dtype is not None and jnp.issubdtype(key_dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"semiring_grad cannot differentiate a PRNG key (dtype {x.dtype}): a key is "
            "randomness, "
            f"not data; pass it through a non-differentiated argnum (e.g. argnums=1 for f(key, x)) "
            f"or close over it, as you would with jax.grad."
        )
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"semiring_grad requires real-valued inputs (input dtype that is a sub-dtype of "
            f"np.floating), but got {np.dtype(dtype).name}. Integer and boolean arguments are "
            f"structure, not data: pass them through a non-differentiated argnum (or close over "
            f"them), as you would with jax.grad."
        )
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"semiring_grad requires real-valued inputs, but got {np.dtype(dtype).name}: "
            f"complex-valued paths have no semiring semantics here."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"semiring_grad requires numerical-valued inputs, but got {np.dtype(dtype).name}."
        )


def _check_output(aval):
    if aval.shape != ():
        raise TypeError(
            f"Gradient only defined for scalar-output functions. Output had shape: "
            f"{aval.shape}. Reduce it to a scalar first (e.g. sum it, or pick the "
            f"logit difference you want to explain)."
        )
    if not jnp.issubdtype(aval.dtype, jnp.floating):
        raise TypeError(
            f"semiring_grad requires real-valued outputs (output dtype that is a "
            f"sub-dtype of np.floating), but got {np.dtype(aval.dtype).name}."
        )


def trace(fun: Callable, args: Sequence, kwargs: dict, argnums: tuple[int, ...], has_aux: bool):
    """Trace ``fun`` as a function of the flattened differentiated arguments.

    Returns (closed_jaxpr, flat_diff_args, diff_treedef, aux_treedef).
    """
    if argnums and max(argnums) >= len(args):
        raise TypeError(
            f"differentiating with respect to "
            f"argnums={argnums if len(argnums) > 1 else argnums[0]} "
            f"requires at least {max(argnums) + 1} positional arguments to be passed by "
            f"the caller, but got only {len(args)} positional arguments."
        )
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
                raise TypeError(
                    f"expected function with aux output to return a two-element tuple, "
                    f"but got type {type(out)} with value {out!r}"
                )
            out, aux = out
        else:
            aux = None
        aux_flat, aux_def = jax.tree.flatten(aux)
        aux_tree.append(aux_def)
        return [out, *aux_flat]

    closed = jax.make_jaxpr(flat_fun)(*flat)
    _check_output(closed.out_avals[0])
    return closed, flat, treedef, aux_tree[0]


class Backprop(NamedTuple):
    """Everything one semiring backward pass produced (see :func:`backprop`)."""

    value: Any  # fun's output (the first one with has_aux)
    grads: Any  # semiring values shaped like the differentiated arguments
    aux: Any  # the auxiliary output (has_aux), else None
    graph: Any  # the flattened interpreter.Graph
    cotangents: dict  # every variable's semiring cotangent, by Ref key
    env: dict  # every variable's primal, by Ref key


def _instance_hint(cls: type) -> str:
    """``"TopK(k)"``: how to call a semiring class (its required arguments by name)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        params = []
    need = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return f"{cls.__name__}({', '.join(need)})"


def _check_semiring(semiring) -> None:
    """A semiring class where an instance belongs (``js.MaxProduct``): a one-line TypeError."""
    for s in semiring if isinstance(semiring, (tuple, list)) else (semiring,):
        if isinstance(s, type) and issubclass(s, Semiring):
            raise TypeError(
                f"got the semiring class {s.__name__}, not a semiring: pass an "
                f"instance: {_instance_hint(s)}."
            )


def backprop(
    fun: Callable,
    semiring: Semiring | Sequence[Semiring] | None = None,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    observer: interpreter.Observer | None = None,
) -> Callable[..., Backprop]:
    """Trace ``fun`` and run the semiring backward pass once, optionally with an ``observer``
    (:class:`jaxpr_semiring.interpreter.Observer`); returns a function of ``fun``'s arguments
    giving a :class:`Backprop`. The building block of :func:`semiring_grad`, flow reports and
    top paths. Several semirings (a tuple, or a :class:`~jaxpr_semiring.semirings.product.
    Product`) share the pass; ``grads`` is then a tuple with one entry per semiring.

    ``cotangents`` holds every variable's: only inside ``interpreter.scan_repeats()`` is a run
    of repeated blocks walked as one ``lax.scan`` here (its inner variables then hold none),
    where :func:`semiring_grad`, which reads only the inputs', scans from 12 blocks on.

    >>> import jax.numpy as jnp
    >>> b = backprop(lambda x: jnp.sum(x * x))(jnp.array([1.0, 2.0]))
    >>> float(b.value), b.grads.tolist()
    (5.0, [2.0, 4.0])
    """
    return _backprop(fun, semiring, argnums, has_aux, observer, inner=True)


def _backprop(fun, semiring, argnums, has_aux, observer, inner: bool):
    """:func:`backprop`; ``inner``: the caller reads inner variables' cotangents (so no
    automatic scan)."""
    _check_semiring(semiring)
    S = Real() if semiring is None else as_semiring(semiring)
    argnums_t, single = normalize_argnums(argnums)

    def run(*args, **kwargs) -> Backprop:
        closed, flat, treedef, aux_def = trace(fun, args, kwargs, argnums_t, has_aux)
        flat = [jnp.asarray(x) for x in flat]
        outs, cts, graph, env = interpreter.run(S, closed, flat, observer, auto_scan=not inner)
        flat_cts = [
            cts[r.key] if r.key in cts else S.zeros(np.shape(x), jnp.result_type(x))
            for r, x in zip(graph.invars, flat)
        ]
        one = lambda leaves: jax.tree.unflatten(treedef, leaves)[0 if single else slice(None)]
        if isinstance(S, Product):
            grads = tuple(one(c) for c in split(flat_cts, len(S.semirings)))
        else:
            grads = one(flat_cts)
        aux = jax.tree.unflatten(aux_def, outs[1:]) if has_aux else None
        return Backprop(outs[0], grads, aux, graph, cts, env)

    return run


def _decorator_or(fun, semiring, make):
    """``make(fun, semiring)``, or a decorator applying it when ``fun`` is omitted (also when a
    semiring is passed in ``fun``'s place)."""
    _check_semiring(semiring)
    if isinstance(fun, type) and issubclass(fun, Semiring):
        _check_semiring(fun)
    if isinstance(fun, Semiring) or (
        isinstance(fun, (tuple, list)) and fun and all(isinstance(s, Semiring) for s in fun)
    ):
        fun, semiring = None, fun
    if fun is None:
        return lambda f: make(f, semiring)
    return make(fun, semiring)


def value_and_semiring_grad(
    fun: Callable | None = None,
    semiring: Semiring | Sequence[Semiring] | None = None,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
) -> Callable:
    """Like :func:`semiring_grad` but also returns ``fun``'s value: ``(value, grad)`` or
    ``((value, aux), grad)`` with ``has_aux``.

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> v, g = js.value_and_semiring_grad(lambda x: jnp.sum(x ** 2), js.Real())(jnp.ones(2))
    >>> float(v), g.tolist()
    (2.0, [2.0, 2.0])
    """

    def make(fun, semiring):
        run = _backprop(fun, semiring, argnums, has_aux, None, inner=False)

        @functools.wraps(fun)
        def value_and_grad_f(*args, **kwargs):
            b = run(*args, **kwargs)
            return ((b.value, b.aux), b.grads) if has_aux else (b.value, b.grads)

        return value_and_grad_f

    return _decorator_or(fun, semiring, make)


def semiring_grad(
    fun: Callable | None = None,
    semiring: Semiring | Sequence[Semiring] | None = None,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
) -> Callable:
    """Semiring gradient of a scalar function: ⊕ over all paths input → output of ⊗ of the
    lifted local derivatives (paper Eq. 2), for every element of the differentiated arguments.

    Mirrors ``jax.grad``: ``argnums`` an int or a tuple, pytree arguments, the result shaped like
    the differentiated arguments (each leaf a value of ``semiring``: an array for ``Real``, a
    ``MaxProductValue(top_pos, top_neg)`` for ``MaxProduct``, …), ``has_aux`` returning
    ``(grad, aux)``. ``semiring_grad(f, Real())`` equals ``jax.grad(f)``. The result is
    jittable and vmappable. Without ``fun`` it is a decorator:
    ``@semiring_grad(semiring=MaxProduct())``. A tuple of semirings gives a tuple of gradients
    from one shared trace, forward pass and backward walk (one XLA program under ``jit``).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x, y: jnp.exp(x) + (x - y) * y      # paper Fig. 1
    >>> g = js.semiring_grad(f, js.MaxProduct(), argnums=(0, 1))(0.0, 1.0)
    >>> float(g[0].top_pos), float(g[1].top_pos), float(g[1].top_neg)
    (1.0, -1.0, -1.0)
    >>> mp, ent = js.semiring_grad(f, (js.MaxProduct(), js.Entropy()))(0.0, 1.0)
    >>> float(mp.top_pos), round(float(ent.entropy), 4)
    (1.0, 0.6931)
    """

    def make(fun, semiring):
        run = _backprop(fun, semiring, argnums, has_aux, None, inner=False)

        @functools.wraps(fun)
        def grad_f(*args, **kwargs):
            b = run(*args, **kwargs)
            return (b.grads, b.aux) if has_aux else b.grads

        return grad_f

    return _decorator_or(fun, semiring, make)
