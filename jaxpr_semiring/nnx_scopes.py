"""Flax NNX module paths in the jaxpr: every NNX submodule call gets a ``jax.named_scope`` with
its attribute path (``layers/3/attn/q_proj``, list indices included), so graph nodes carry
module paths as they do for Flax linen, whose name stacks NNX does not write.

Inside :func:`nnx_module_scopes` the NNX calls also run the Flax linen method interceptors
(``flax.linen.intercept_methods``), with a stand-in module whose ``path`` is the attribute
path: :func:`~jaxpr_semiring.tap_modules`, :func:`~jaxpr_semiring.atomic_modules` and the
component-flows instrumentation work on NNX models unchanged. :class:`NnxApply` gives an NNX
model the linen ``apply(params, *args)`` shape that
:func:`jaxpr_semiring.models.components.component_flows` calls.

>>> import jax, jax.numpy as jnp
>>> from flax import nnx
>>> class Net(nnx.Module):
...     def __init__(self, rngs):
...         self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(2)])
...     def __call__(self, x):
...         return jnp.sum(self.layers[1](self.layers[0](x)))
>>> net = Net(nnx.Rngs(0))
>>> def f(x):
...     with nnx_module_scopes(net):
...         return net(x)
>>> eqns = jax.make_jaxpr(f)(jnp.ones(2)).eqns
>>> sorted({str(e.source_info.name_stack) for e in eqns if e.primitive.name == "dot_general"})
['layers/0', 'layers/1']
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Sequence

import jax

__all__ = ["nnx_module_scopes", "nnx_module_paths", "NnxApply"]


def nnx_module_paths(model) -> dict[int, tuple]:
    """``{id(submodule): attribute path}`` of every NNX module reachable from ``model`` (the
    root's path is ``()``; a module reachable twice keeps its first path).

    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...     def __init__(self):
    ...         self.blocks = nnx.List([nnx.Linear(1, 1, rngs=nnx.Rngs(0))])
    >>> net = Net()
    >>> nnx_module_paths(net)[id(net.blocks[0])]
    ('blocks', 0)
    """
    from flax import nnx

    return {
        id(node): tuple(path)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module)
    }


class _Frame:
    __slots__ = ("paths", "path", "key")

    def __init__(self, paths: dict, path: tuple, key: tuple):
        self.paths, self.path, self.key = paths, path, key


class _Calls(threading.local):
    def __init__(self):
        self.frames: list[_Frame] = []


_CALLS = _Calls()
_PATCHED: dict = {}  # (class, method name) -> [original function, number of active contexts]
_LOCK = threading.Lock()


class _Called:
    """What a linen interceptor sees as ``context.module`` for an NNX call: ``path`` is the
    attribute path (``flax_hooks.module_path`` reads it); other attributes, and ``isinstance``
    (through ``__class__``), are the NNX module's."""

    def __init__(self, module, path: tuple):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "path", path)

    @property
    def __class__(self):  # isinstance(stand_in, nnx.Linear) is the module's answer
        return type(object.__getattribute__(self, "_module"))

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_module"), name)


def _scope(outer: tuple, path: tuple) -> str:
    """The name-stack segment pushed for a call at ``path`` inside a call at ``outer``: the
    relative path, so the stack reads as the full path; a call outside the caller's subtree
    (a module handed to a sibling) pushes its full path under the caller's."""
    rel = path[len(outer) :] if path[: len(outer)] == outer else path
    return "/".join(str(p) for p in rel)


def _wrap(orig, method_name: str):
    from flax.linen.module import run_interceptors  # runs intercept_methods' stack

    @functools.wraps(orig)
    def method(self, *args, **kwargs):
        frames = _CALLS.frames
        key = (id(self), method_name)
        if frames and frames[-1].key == key:  # super().__call__ of a hooked subclass: one call
            return orig(self, *args, **kwargs)
        if frames:
            paths, outer = frames[-1].paths, frames[-1].path
        else:  # the outermost call: paths are relative to this module
            paths, outer = nnx_module_paths(self), ()
        path = paths.get(id(self))
        if path is None:  # not part of the called model (built on the fly): left alone
            return orig(self, *args, **kwargs)

        def call(_stand_in, *a, **k):
            return orig(self, *a, **k)

        call.__name__ = method_name
        frames.append(_Frame(paths, path, key))
        try:
            segment = _scope(outer, path)
            with jax.named_scope(segment) if segment else contextlib.nullcontext():
                return run_interceptors(call, _Called(self, path), *args, **kwargs)
        finally:
            frames.pop()

    method.__wrapped_by_nnx_scopes__ = True
    return method


def _owners(model, methods: Sequence[str]) -> set:
    """``(class, name)``: the class that defines each method of every module in ``model``."""
    from flax import nnx

    owners = set()
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        for name in methods:
            owner = next((c for c in type(node).__mro__ if name in vars(c)), None)
            if owner is not None and owner is not object:
                owners.add((owner, name))
    return owners


@contextlib.contextmanager
def nnx_module_scopes(model, *, methods: Sequence[str] = ("__call__",)):
    """Within the context, every call of ``methods`` of an NNX module of ``model``'s classes
    runs under ``jax.named_scope(path)``, ``path`` its attribute path from the outermost module
    called (``"layers/3/attn/q_proj"``; the root pushes nothing), and through the Flax linen
    method interceptors (``context.module.path`` is the attribute path).

    ``model`` gives the classes to hook (its modules' classes, patched for the duration of the
    context, then restored); the paths are looked up at each outermost call, so a copy of the
    model (``nnx.merge`` of its state inside a traced function) is labelled too. Modules built
    during the call, or rebuilt inside NNX transforms (``nnx.scan``, ``nnx.vmap``), are not
    part of the called graph and get no scope. Use it around the call inside the traced
    function; while it is active, calls of those classes from other threads are labelled too.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> class Block(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.proj = nnx.Linear(2, 2, rngs=rngs)
    ...     def __call__(self, x):
    ...         return x + self.proj(x)
    >>> class Net(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.layers = nnx.List([Block(rngs) for _ in range(2)])
    ...     def __call__(self, x):
    ...         for layer in self.layers:
    ...             x = layer(x)
    ...         return jnp.sum(x)
    >>> net = Net(nnx.Rngs(0))
    >>> def f(x):
    ...     with nnx_module_scopes(net):
    ...         return net(x)
    >>> eqns = jax.make_jaxpr(f)(jnp.ones(2)).eqns
    >>> [str(e.source_info.name_stack) for e in eqns if e.primitive.name == "dot_general"]
    ['layers/0/proj', 'layers/1/proj']
    """
    owners = _owners(model, tuple(methods))
    with _LOCK:
        for cls, name in owners:
            entry = _PATCHED.get((cls, name))
            if entry is None:
                orig = vars(cls)[name]
                _PATCHED[(cls, name)] = [orig, 1]
                setattr(cls, name, _wrap(orig, name))
            else:
                entry[1] += 1
    try:
        yield
    finally:
        with _LOCK:
            for cls, name in owners:
                entry = _PATCHED[(cls, name)]
                entry[1] -= 1
                if entry[1] == 0:
                    setattr(cls, name, entry[0])
                    del _PATCHED[(cls, name)]


class NnxApply:
    """An NNX model as a linen-style pair: ``params`` (its ``nnx.State``, a pytree to
    differentiate) and ``apply(params, *args, **kwargs)``, which calls the model with those
    parameters under :func:`nnx_module_scopes`. Pass it where a linen module is expected
    (:func:`jaxpr_semiring.models.components.component_flows` with an explicit preset).

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> from flax import nnx
    >>> m = NnxApply(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
    >>> f = lambda p, x: m.apply(p, x)[0]
    >>> g = js.semiring_grad(f, js.Real(), argnums=1)(m.params, jnp.ones(2))
    >>> bool(jnp.allclose(g, jax.grad(f, argnums=1)(m.params, jnp.ones(2))))
    True
    """

    def __init__(self, model, *, methods: Sequence[str] = ("__call__",)):
        from flax import nnx

        self.graphdef, self.params = nnx.split(model)
        self.methods = tuple(methods)

    def apply(self, params, *args, **kwargs) -> Any:
        """The model with ``params`` called on ``args``/``kwargs``."""
        from flax import nnx

        model = nnx.merge(self.graphdef, params)
        with nnx_module_scopes(model, methods=self.methods):
            return model(*args, **kwargs)

    def __repr__(self):
        return f"NnxApply({getattr(self.graphdef, 'type', object).__name__})"
