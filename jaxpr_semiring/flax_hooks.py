"""Flax linen hooks: a bound module's path, and selecting module calls by path pattern or
type, without editing the model (``flax.linen.intercept_methods``). :func:`tap_modules` taps
the selected modules' inputs/outputs (flow reports); :func:`module_selector` is shared with
:func:`jaxpr_semiring.atomic_modules`.

Flax linen also records each module's path in the equations' name stack, which is where the
graph's node paths (``"bert/encoder/layer/0/attention/self/query"``) come from.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from .markers import tap

__all__ = ["module_path", "path_matcher", "module_selector", "tap_modules"]


def module_path(module) -> str:
    """A bound Flax linen module's path, e.g. ``"bert/encoder/layer/0"`` ('' for the root)."""
    try:
        p = module.path
    except Exception:
        p = getattr(getattr(module, "scope", None), "path", ())
    return "/".join(str(x) for x in (p or ()))


def path_matcher(pattern) -> Callable[[str], bool]:
    """``path -> bool`` for a pattern: an fnmatch pattern (``*`` crosses ``/``), a compiled
    regex (searched) or a predicate (returned as is).

    >>> path_matcher("*/layer/*")("bert/encoder/layer/0")
    True
    """
    if callable(pattern) and not isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, re.Pattern):
        return lambda s: pattern.search(s) is not None
    return lambda s: fnmatch.fnmatchcase(s, pattern)


def module_selector(
    select: Any = None, *, types: type | Sequence[type] = (), methods: Sequence[str] = ("__call__",)
) -> Callable[[Any, str], str | None]:
    """``(module, method_name) -> path | None``: the module's path when the call matches
    ``select``/``types``/``methods`` as :func:`tap_modules` documents them, else None (shared by
    :func:`tap_modules` and :func:`jaxpr_semiring.atomic_modules`).

    >>> import flax.linen as nn
    >>> module_selector(types=nn.Dense)(nn.Dense(2), "__call__")
    ''
    """
    types = tuple(types) if isinstance(types, (list, tuple)) else ((types,) if types else ())
    patterns = select if isinstance(select, (list, tuple)) else ([] if select is None else [select])
    matchers = [path_matcher(s) for s in patterns]

    def chosen(module, method_name) -> str | None:
        if method_name not in methods:
            return None
        if types and not isinstance(module, types):
            return None
        path = module_path(module)
        if matchers and not any(m(path) for m in matchers):
            return None
        return path

    return chosen


def _is_float_array(x) -> bool:
    try:
        return jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    except Exception:
        return False


def _tap_floats(x, name):
    """Tap the float leaves of ``x`` (integers/booleans are structure: left alone)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(x)
    if len(leaves) == 1 and not leaves[0][0]:
        return tap(x, name) if _is_float_array(x) else x
    out = [
        tap(leaf, name + jax.tree_util.keystr(p)) if _is_float_array(leaf) else leaf
        for p, leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


@contextlib.contextmanager
def tap_modules(
    select: Any = None,
    *,
    types: type | Sequence[type] = (),
    inputs: bool | int | Sequence[int] = True,
    outputs: bool = False,
    methods: Sequence[str] = ("__call__",),
    prefix: str = "",
):
    """Tap inputs and/or outputs of Flax linen modules without editing the model.

    Args:
      select: which modules, by path (``module_path``, e.g. ``"bert/encoder/layer/0"``): an
        fnmatch pattern (``"*/layer/*"`` — ``*`` crosses ``/``), a compiled regex (searched),
        a predicate ``path -> bool``, or a list of those (any matches). ``None``: no path
        condition.
      types: module classes (``isinstance``); both conditions must hold when both are given.
      inputs: ``True`` taps the first positional argument, an int / ints the arguments at
        those positions, ``False`` none. Tap name: ``f"{prefix}{path}:input"`` (first argument)
        or ``f"{prefix}{path}:input{i}"``.
      outputs: tap the method's return value as ``f"{prefix}{path}:output"`` (pytrees: one tap
        per float leaf, ``":output[0]"`` …).
      methods: the intercepted method names.

    Non-float arguments and leaves are never tapped. Use around the model call (inside the
    function given to :func:`flows`).

    >>> import flax.linen as nn, jax.numpy as jnp, jaxpr_semiring as js
    >>> class M(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return jnp.sum(nn.Dense(2, name="d")(x))
    >>> m = M(); p = m.init(jax.random.PRNGKey(0), jnp.ones(3))
    >>> def f(x):
    ...     with js.tap_modules("d"):
    ...         return m.apply(p, x)
    >>> _, rep = js.flows(f, js.MaxProduct())(jnp.ones(3))
    >>> list(rep)
    ['d:input']
    """
    import flax.linen as nn

    chosen = module_selector(select, types=types, methods=methods)
    if inputs is True:
        positions: tuple = (0,)
    elif inputs is False or inputs is None:
        positions = ()
    elif isinstance(inputs, int):
        positions = (inputs,)
    else:
        positions = tuple(inputs)

    def interceptor(next_fun, args, kwargs, context):
        path = chosen(context.module, context.method_name)
        if path is None:
            return next_fun(*args, **kwargs)
        if positions:
            args = list(args)
            for i in positions:
                if i < len(args):
                    label = "input" if positions == (0,) else f"input{i}"
                    args[i] = _tap_floats(args[i], f"{prefix}{path}:{label}")
            args = tuple(args)
        out = next_fun(*args, **kwargs)
        if outputs:
            out = _tap_floats(out, f"{prefix}{path}:output")
        return out

    with nn.intercept_methods(interceptor):
        yield
