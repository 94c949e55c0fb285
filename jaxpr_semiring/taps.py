"""Taps: mark nodes of a model and report how much semiring gradient arrives from each consumer.

``tap(x, name)`` is the identity (values, ``jax.grad``, ``jit``, ``vmap`` and lowering are
unchanged): it emits a ``checkpoint_name`` equation whose name starts with :data:`TAP_PREFIX`
(an identity node of the graph).

``flows(fun, semiring, argnums)(*args)`` runs the semiring backward pass with a
:class:`FlowObserver` and returns ``(grads, FlowReport)``; ``report.value`` is ``fun``'s value.
For every tapped variable the report holds

* ``total``: the ⊕ of everything arriving at the variable (its semiring gradient), and
* ``consumers``: the ⊕-contribution arriving from each consumer equation, keyed by a label
  ``"<module path> [<primitive>]"`` (several equations with one label are ⊕-combined; the
  function output itself is labelled ``"<output>"``, a tap feeding another tap
  ``"<path> [tap:<name>]"``).

⊕ over ``consumers`` equals ``total``. At a Transformer layer's input this separates the skip
connection (the residual ``add`` in ``.../attention/output``) from the queries, keys and values
(the ``dot_general`` in ``.../attention/self/query`` …), as in the paper's Fig. 2–4.

Every tap is also a source of the backward pass: its flows are reported even when no
differentiated argument reaches it.

``tap_modules(...)`` taps the inputs and/or outputs of Flax linen modules selected by path
pattern or type, without editing the model (built on ``flax.linen.intercept_methods``).

Taps inside ``scan`` bodies or ``cond`` branches are not reported (their variables live in a
sub-graph traced per step).

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> def f(x):
...     h = js.tap(x, "h")
...     return jnp.sum(3.0 * h + h * h)
>>> g, rep = js.flows(f, js.Real())(jnp.ones(2))
>>> rep["h"].total.tolist()
[5.0, 5.0]
>>> sorted(rep["h"].consumers)
['[mul]']
"""
from __future__ import annotations

import contextlib
import fnmatch
import re
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from .api import backprop
from .interpreter import Observer, Ref
from .rules import is_float
from .semirings import Real

__all__ = ["tap", "flows", "FlowReport", "TapFlow", "FlowObserver", "tap_modules", "module_selector",
           "module_path", "OUTPUT_LABEL", "TAP_PREFIX", "consumer_label"]

OUTPUT_LABEL = "<output>"
TAP_PREFIX = "jaxpr_semiring.tap:"  # checkpoint_name prefix marking a tap


# ----------------------------------------------------------------------------------- tap

def tap(x, name: str):
    """Mark ``x`` (an array or a pytree of arrays) as a node whose flows are reported.

    The identity: no effect on values, ``jax.grad``, ``jit`` or ``vmap``. For a pytree each
    leaf is tapped as ``name + keystr(leaf path)`` (e.g. ``"out[0]"``).
    """
    name = str(name)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(x)
    if len(leaves) == 1 and not leaves[0][0]:
        return checkpoint_name(x, TAP_PREFIX + name)
    tapped = [checkpoint_name(leaf, TAP_PREFIX + name + jax.tree_util.keystr(p)) for p, leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, tapped)


def _tap_name(node) -> str | None:
    if getattr(node.primitive, "name", None) != "name":
        return None
    n = str(node.params.get("name", ""))
    return n[len(TAP_PREFIX):] if n.startswith(TAP_PREFIX) else None


def consumer_label(node) -> str:
    """The label of a consumer equation: ``"<module path> [<primitive>]"``."""
    if node is None:
        return OUTPUT_LABEL
    tn = _tap_name(node)
    prim = f"tap:{tn}" if tn is not None else node.primitive.name
    return f"{node.path} [{prim}]" if node.path else f"[{prim}]"


# ------------------------------------------------------------------------------ the report

class TapFlow:
    """Flows at one tapped variable: ``total`` and per-consumer ``consumers`` (label → value).

    A pytree (leaves: the semiring values), so it can be returned from ``jit``/``vmap``.
    """

    def __init__(self, total, consumers: dict, semiring, shape=None):
        self.total = total
        self.consumers = dict(consumers)
        self.semiring = semiring
        self.shape = shape

    def by_path(self) -> dict:
        """Contributions ⊕-combined per module path (primitives merged)."""
        out: dict = {}
        for label, v in self.consumers.items():
            path = label.rsplit(" [", 1)[0] if label != OUTPUT_LABEL else label
            out[path] = v if path not in out else self.semiring.add(out[path], v)
        return out

    def select(self, pattern: str | re.Pattern | Callable[[str], bool]):
        """⊕ of the contributions whose label matches ``pattern`` (fnmatch glob on the label,
        a compiled regex searched in it, or a predicate); 0̄ if none does."""
        match = _matcher(pattern)
        out = None
        for label, v in self.consumers.items():
            if match(label):
                out = v if out is None else self.semiring.add(out, v)
        if out is None:
            out = self.semiring.where(jnp.zeros((), bool), self.total)
        return out

    def combined(self):
        """⊕ over all consumers (equals ``total``)."""
        out = None
        for v in self.consumers.values():
            out = v if out is None else self.semiring.add(out, v)
        return out

    def __repr__(self):
        return f"TapFlow(shape={self.shape}, consumers={list(self.consumers)})"


def _tapflow_flatten(t):
    labels = tuple(t.consumers)
    return (t.total, tuple(t.consumers[l] for l in labels)), (labels, t.semiring, t.shape)


def _tapflow_unflatten(aux, children):
    labels, semiring, shape = aux
    total, vals = children
    return TapFlow(total, dict(zip(labels, vals)), semiring, shape)


jax.tree_util.register_pytree_node(TapFlow, _tapflow_flatten, _tapflow_unflatten)


class FlowReport:
    """Tap name → :class:`TapFlow`, in graph order, and ``value`` (the function's value). A
    pytree; ``str()`` renders a table."""

    def __init__(self, taps: dict, semiring, value=None):
        self.taps = dict(taps)
        self.semiring = semiring
        self.value = value

    def __getitem__(self, name) -> TapFlow:
        return self.taps[name]

    def __contains__(self, name):
        return name in self.taps

    def __iter__(self):
        return iter(self.taps)

    def __len__(self):
        return len(self.taps)

    def keys(self):
        return self.taps.keys()

    def items(self):
        return self.taps.items()

    def values(self):
        return self.taps.values()

    def __str__(self):
        S = self.semiring
        lines = [f"FlowReport ({S!r}): {len(self.taps)} tap(s); values ⊕-aggregated over elements"]
        for name, tf in self.taps.items():
            lines.append(f"tap {name!r} shape {tf.shape}: total {_fmt(S, tf.total)}")
            for label, v in tf.consumers.items():
                lines.append(f"    {label:<70s} {_fmt(S, v)}")
        return "\n".join(lines)

    def __repr__(self):
        return f"FlowReport({list(self.taps)})"


def _fmt(S, v):
    try:
        agg = S.sum(v)
        parts = []
        if hasattr(agg, "_fields"):
            for f in agg._fields:
                a = np.asarray(getattr(agg, f))
                parts.append(f"{f}={np.array2string(a, precision=4) if a.ndim else format(float(a), '.4g')}")
            return " ".join(parts)
        a = np.asarray(agg)
        return np.array2string(a, precision=4) if a.ndim else format(a.item(), ".4g")
    except Exception:  # traced values
        return "<traced>"


jax.tree_util.register_pytree_node(
    FlowReport,
    lambda r: ((tuple(r.taps.values()), r.value), (tuple(r.taps), r.semiring)),
    lambda aux, ch: FlowReport(dict(zip(aux[0], ch[0])), aux[1], ch[1]))


# ---------------------------------------------------------------------------- the observer

class FlowObserver(Observer):
    """Records the ⊕-contributions into tapped variables during the backward walk.

    ``start`` makes every tap a source (so every tap gets its flows), ``contribution`` files
    each contribution under its consumer's label, ``report`` assembles the :class:`FlowReport`.
    """

    def __init__(self, semiring):
        self.semiring = semiring
        self.names: dict[int, str] = {}
        self.refs: dict[int, Any] = {}
        self.contribs: dict[int, dict] = {}
        self.order: dict[int, int] = {}
        self.label_pos: dict[tuple, int] = {}
        self.n_nodes = 0

    def start(self, graph, env) -> list:
        seen: dict[str, int] = {}
        self.order = {id(node): i for i, node in enumerate(graph.nodes)}
        self.n_nodes = len(graph.nodes)
        for node in graph.nodes:
            name = _tap_name(node)
            if name is None:
                continue
            out = node.outvars[0]
            if not isinstance(out, Ref) or not is_float(out.aval):
                continue
            n = seen.get(name, 0)
            seen[name] = n + 1
            self.names[out.key] = name if n == 0 else f"{name}#{n + 1}"
            self.refs[out.key] = out
            self.contribs[out.key] = {}
        return list(self.refs.values())

    def contribution(self, ref, value, consumer) -> None:
        key = ref.key
        if key not in self.names:
            return
        label = consumer_label(consumer)
        pos = self.order.get(id(consumer), self.n_nodes)
        self.label_pos[(key, label)] = min(pos, self.label_pos.get((key, label), pos))
        d = self.contribs[key]
        d[label] = value if label not in d else self.semiring.add(d[label], value)

    def report(self, value=None) -> FlowReport:
        S = self.semiring
        taps = {}
        for key, name in self.names.items():
            aval = self.refs[key].aval
            cons = self.contribs[key]
            cons = {l: cons[l] for l in sorted(cons, key=lambda l: self.label_pos[(key, l)])}
            total = None
            for v in cons.values():
                total = v if total is None else S.add(total, v)
            if total is None:
                total = S.zeros(aval.shape, aval.dtype)
            taps[name] = TapFlow(total, cons, S, tuple(aval.shape))
        return FlowReport(taps, S, value)


# ------------------------------------------------------------------------------- entry point

def flows(fun: Callable, semiring=None, argnums: int | Sequence[int] = 0,
          has_aux: bool = False) -> Callable:
    """Semiring gradients plus a :class:`FlowReport` of every tap: returns ``(grads, report)``
    (``((grads, aux), report)`` with ``has_aux``); ``report.value`` is ``fun``'s value.
    Jittable and vmappable (the report is a pytree).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> def h(x):
    ...     t = js.tap(x, "t")
    ...     return jnp.sum(2.0 * t) + jnp.sum(jnp.exp(t))
    >>> g, rep = js.flows(h, js.MaxProduct())(jnp.zeros(2))
    >>> {k: v.top_pos.tolist() for k, v in rep["t"].consumers.items()}
    {'[mul]': [2.0, 2.0], '[exp]': [1.0, 1.0]}
    """
    S = Real() if semiring is None else semiring

    def flows_f(*args, **kwargs):
        observer = FlowObserver(S)
        b = backprop(fun, S, argnums, has_aux, observer)(*args, **kwargs)
        grads = (b.grads, b.aux) if has_aux else b.grads
        return grads, observer.report(b.value)

    return flows_f


# ------------------------------------------------------------------ taps without editing a model

def module_path(module) -> str:
    """A bound Flax linen module's path, e.g. ``"bert/encoder/layer/0"`` ('' for the root)."""
    try:
        p = module.path
    except Exception:
        p = getattr(getattr(module, "scope", None), "path", ())
    return "/".join(str(x) for x in (p or ()))


def _matcher(pattern) -> Callable[[str], bool]:
    if callable(pattern) and not isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, re.Pattern):
        return lambda s: pattern.search(s) is not None
    return lambda s: fnmatch.fnmatchcase(s, pattern)


def module_selector(select: Any = None, *, types: type | Sequence[type] = (),
                    methods: Sequence[str] = ("__call__",)) -> Callable[[Any, str], str | None]:
    """``(module, method_name) -> path | None``: the module's path when the call matches
    ``select``/``types``/``methods`` as :func:`tap_modules` documents them, else None (shared by
    :func:`tap_modules` and :func:`jaxpr_semiring.atomic_modules`).

    >>> import flax.linen as nn
    >>> module_selector(types=nn.Dense)(nn.Dense(2), "__call__")
    ''
    """
    types = tuple(types) if isinstance(types, (list, tuple)) else ((types,) if types else ())
    patterns = select if isinstance(select, (list, tuple)) else ([] if select is None else [select])
    matchers = [_matcher(s) for s in patterns]

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
    out = [tap(leaf, name + jax.tree_util.keystr(p)) if _is_float_array(leaf) else leaf
           for p, leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, out)


@contextlib.contextmanager
def tap_modules(select: Any = None, *, types: type | Sequence[type] = (),
                inputs: bool | int | Sequence[int] = True, outputs: bool = False,
                methods: Sequence[str] = ("__call__",), prefix: str = ""):
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
