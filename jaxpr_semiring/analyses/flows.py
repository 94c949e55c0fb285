"""Flow reports: how much semiring gradient arrives at each tapped variable from each consumer.

``tap(x, name)`` (:mod:`jaxpr_semiring.markers`) is the identity (values, ``jax.grad``,
``jit``, ``vmap`` and lowering are unchanged): it emits a marker equation, an identity node of
the graph.

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

``tap_modules(...)`` (:mod:`jaxpr_semiring.flax_hooks`) taps the inputs and/or outputs of Flax
linen modules selected by path pattern or type, without editing the model.

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

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..api import backprop
from ..flax_hooks import path_matcher
from ..graph import Ref, is_float
from ..interpreter import Observer
from ..markers import tap_name
from ..semirings import Real

__all__ = ["flows", "FlowReport", "TapFlow", "FlowObserver", "OUTPUT_LABEL", "consumer_label"]

OUTPUT_LABEL = "<output>"


# ----------------------------------------------------------------------------- labels


def consumer_label(node) -> str:
    """The label of a consumer equation: ``"<module path> [<primitive>]"``."""
    if node is None:
        return OUTPUT_LABEL
    tn = tap_name(node)
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
        match = path_matcher(pattern)
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
                parts.append(
                    f"{f}={np.array2string(a, precision=4) if a.ndim else format(float(a), '.4g')}"
                )
            return " ".join(parts)
        a = np.asarray(agg)
        return np.array2string(a, precision=4) if a.ndim else format(a.item(), ".4g")
    except Exception:  # traced values
        return "<traced>"


jax.tree_util.register_pytree_node(
    FlowReport,
    lambda r: ((tuple(r.taps.values()), r.value), (tuple(r.taps), r.semiring)),
    lambda aux, ch: FlowReport(dict(zip(aux[0], ch[0])), aux[1], ch[1]),
)


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
            name = tap_name(node)
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


def flows(
    fun: Callable, semiring=None, argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> Callable:
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
