"""Component flows for any Transformer: at every residual branch point of every layer, how much
semiring gradient flows through each component (skip, query, key, value, mlp, …) per token.

One backward pass gives all branch points of all layers: it runs with the tagged semiring
(:class:`~jaxpr_semiring.analyses.tagged.Tagged`, one channel per component) and a
:class:`ComponentObserver` that

* at a *labelled* equation (the first equation of a component in a layer: a query projection,
  a residual ``add``, …) moves the contributions crossing it into that component's channel
  (a fused projection: by output column, and per head with ``heads=True``); walking backwards,
  the last move before a branch point is the first component after it in forward order;
* at a branch point (a tapped module argument, :class:`Preset`) reads the channels, then merges
  them into ``other`` so no tag leaks into earlier layers.

So at a branch point each channel holds exactly the paths whose first step in this layer is
that component; ``other`` holds the rest (nothing for the presets' families), and ⊕ over the
components equals the total. Values are ⊕-aggregated over the hidden dimensions (paper Eq. 3).
A component some of whose paths at a token have product NaN (a NaN weight or activation on
the way) has NaN flows there, and so has the total: NaN is absorbing in every ⊕ and never a
number that wins a comparison (docs/semantics.md, "NaN"); whoever ranks components per token
must count a NaN token as nobody's win.
Cost grows with the number of components at the branch points only, not with the layers.

The component-flows analysis: :func:`instrument` taps the branch points of a model's layers as a
:class:`Preset` (the types here; the families' presets are data in
:mod:`jaxpr_semiring.models.presets`) places them, and :class:`ComponentObserver` watches the
walk; :func:`jaxpr_semiring.models.components.component_flows_fn` puts them together for a
model.
"""

from __future__ import annotations

import contextlib
import re
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..flax_hooks import module_path
from ..graph import Ref, aval_of, is_float
from ..interpreter import Observer
from ..markers import TAP_PREFIX, tap
from ..semirings import Semiring
from .tagged import ZERO, Tagged, TaggedValue

__all__ = [
    "Branch",
    "Component",
    "Point",
    "Preset",
    "POINTS",
    "ATTENTION_PROJECTIONS",
    "PointFlows",
    "ComponentFlows",
    "ComponentObserver",
    "instrument",
    "module_of",
    "OTHER",
]

#: the branch-point kinds, in the order a layer reports them
POINTS = ("attention", "cross_attention", "mlp")
#: components that ``heads=True`` splits per attention head
ATTENTION_PROJECTIONS = ("query", "key", "value")


class Branch(NamedTuple):
    """A branch point: argument ``arg`` (position or keyword) of the call of the module at
    ``module`` (a regex, relative to the layer; ``""`` is the layer itself). ``side="input"``
    takes the caller's variable (every consumer of it counts, e.g. a residual that bypasses the
    module); ``"output"`` the module's own copy (only its consumers)."""

    module: str = ""
    arg: int | str = 0
    side: str = "input"


class Component(NamedTuple):
    """A component: equations at module path ``module`` (regex, relative to the layer,
    matched in full), optionally only of primitive ``primitive``. A path belongs to it when
    it is the first such labelled equation on the path. ``fused`` splits a fused projection
    by output columns: ``"qkv"`` = ``[q | k | v]`` blocks (GPT-2 ``c_attn``), ``"heads:qkv"`` =
    per head ``[q k v]`` (Bloom ``query_key_value``); its channels are query/key/value."""

    name: str
    module: str
    primitive: str | None = None
    fused: str | None = None


class Point(NamedTuple):
    """A kind of branch point (``"attention"``, ``"cross_attention"``, ``"mlp"``): one or more
    branch variables (their flows are ⊕-combined per token) and their components."""

    name: str
    branches: tuple
    components: tuple


class Preset(NamedTuple):
    """A family's branch points and components (see the module docstring)."""

    name: str
    layers: str
    embeddings: str
    points: tuple
    description: str = ""


OTHER = "other"
_TAP = "components:"  # tap-name prefix (after taps.TAP_PREFIX) of branch points


# ------------------------------------------------------------------------------- results


class PointFlows:
    """Flows at one branch point of one layer (a pytree; static: layer, point, components).

    flows: semiring value, leaves ``[tokens, components]`` (TopK: ``+ [k]``): ⊕ over hidden
      dimensions of the paths whose first step in this layer is each component (NaN where one
      of those paths has product NaN).
    total: semiring value ``[tokens]``: everything arriving at the branch point (= ⊕ over the
      components; the last component is always ``"other"``).
    """

    def __init__(self, layer: int, point: str, components: Sequence[str], flows, total):
        self.layer, self.point, self.components = int(layer), point, tuple(components)
        self.flows, self.total = flows, total

    def component(self, name: str, semiring: Semiring):
        """One component's flows ``[tokens]``."""
        i = self.components.index(name)
        return semiring.map(lambda a: a[..., i], self.flows)

    def __repr__(self):
        return f"PointFlows(layer={self.layer}, point={self.point!r}, components={self.components})"


jax.tree_util.register_pytree_node(
    PointFlows,
    lambda p: ((p.flows, p.total), (p.layer, p.point, p.components)),
    lambda aux, ch: PointFlows(*aux, *ch),
)


class ComponentFlows:
    """Result of :func:`component_flows` (a pytree; batched under ``vmap``).

    points: one :class:`PointFlows` per layer and branch point, in layer order.
    embeddings: semiring value ``[tokens, embedding dim]``: flows w.r.t. the embedding output.
    value: the target's value. ``architecture``, ``semiring``: static descriptions.
    """

    def __init__(self, points, embeddings, value, architecture: str, semiring: Semiring):
        self.points, self.embeddings, self.value = tuple(points), embeddings, value
        self.architecture, self.semiring = architecture, semiring

    def select(self, point: str) -> list:
        """The :class:`PointFlows` of one kind of branch point, in layer order."""
        return [p for p in self.points if p.point == point]

    def stacked(self, point: str):
        """``(flows [layers, tokens, components], total [layers, tokens])`` of one kind of
        branch point (all its layers must have the same components)."""
        pts = self.select(point)
        stack = lambda vs: jax.tree.map(lambda *a: jnp.stack(a), *vs)
        return stack([p.flows for p in pts]), stack([p.total for p in pts])

    def __repr__(self):
        return f"ComponentFlows({self.architecture}, {len(self.points)} points)"


jax.tree_util.register_pytree_node(
    ComponentFlows,
    lambda c: ((c.points, c.embeddings, c.value), (c.architecture, c.semiring)),
    lambda aux, ch: ComponentFlows(*ch, *aux),
)


# ------------------------------------------------------------------------ instrumentation


def _layer_regex(preset: Preset) -> re.Pattern:
    return re.compile(r"(?:^|/)(?:" + preset.layers + r")(?=/|$)")


def module_of(node_path: str) -> str:
    """A graph node's module path: its name stack without the segments Flax adds for method
    calls (``"block_0.attend"`` after ``"block_0"``).

    >>> module_of("M/M.encode/layer_0/layer_0.attend/query")
    'M/layer_0/query'
    """
    kept: list[str] = []
    for seg in node_path.split("/"):
        if kept and "." in seg and seg.split(".", 1)[0] == kept[-1]:
            continue
        kept.append(seg)
    return "/".join(kept)


@contextlib.contextmanager
def instrument(
    preset: Preset, points: Sequence[str] = (), embeddings=None, seen: list | None = None
):
    """Context: tap the branch points of ``points`` in every layer; the first call of the
    embedding module returns ``embeddings`` instead (if given) and its output is appended to
    ``seen`` (if given)."""
    import flax.linen as nn  # Flax is an extra: imported where a model is instrumented

    layer_re = _layer_regex(preset)
    emb_re = re.compile(r"(?:^|/)(?:" + preset.embeddings + r")$")
    first = preset.points[0]  # its first branch begins a layer: tapped too, to count layers
    branches = [
        (pt.name, i, b, re.compile(b.module))
        for pt in preset.points
        for i, b in enumerate(pt.branches)
        if pt.name in points or (points and (pt, i) == (first, 0))
    ]
    emb_calls = [0]

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = module_path(context.module)
        if not emb_calls[0] and emb_re.search(path):
            emb_calls[0] += 1
            out = next_fun(*args, **kwargs) if embeddings is None else embeddings
            if seen is not None:
                seen.append(out)
            return out
        m = layer_re.search(path)
        if m is not None:
            rel = path[m.end() :].lstrip("/")
            args = list(args)
            for name, i, b, rx in branches:
                if not rx.fullmatch(rel):
                    continue
                tag = f"{_TAP}{name}#{i}"
                if isinstance(b.arg, int) and b.arg < len(args):
                    args[b.arg] = tap(args[b.arg], tag)
                elif isinstance(b.arg, str) and b.arg in kwargs:
                    kwargs = dict(kwargs, **{b.arg: tap(kwargs[b.arg], tag)})
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


# ---------------------------------------------------------------------------- the observer


class ComponentObserver(Observer):
    """Moves contributions into component channels at labelled equations and resets them at
    branch points (see the module docstring). ``readout`` assembles the :class:`PointFlows`.

    Args:
      tagged: the :class:`Tagged` semiring of the pass (channel 0 is ``"other"``).
      preset: where the branch points and components are.
      points: which kinds of branch point to report (default: all of the preset's).
      heads: split query/key/value per attention head (``"query.3"``), by output columns of
        width ``head_dim`` (also needed for per-head fused layouts such as Bloom's).
    """

    def __init__(
        self,
        tagged: Tagged,
        preset: Preset,
        points: Sequence[str] | None = None,
        heads: bool = False,
        head_dim: int | None = None,
    ):
        self.T, self.preset, self.heads, self.head_dim = tagged, preset, heads, head_dim
        self.points = tuple(p.name for p in preset.points if points is None or p.name in points)
        self.ids = {OTHER: 0}
        self.actions: dict = {}  # output key of a labelled equation -> value transform
        self.resets: set = set()  # branch-point variable keys
        self.instances: list = []  # (layer, Point, [(Ref, aval) per branch])
        self.names: dict = {}  # point name -> component channel names

    def _id(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids))

    # -- labels
    def _channels(self, comp: Component, width: int) -> list[str]:
        """The channel name of every output column of a labelled equation."""
        parts = ATTENTION_PROJECTIONS
        hd = self.head_dim if self.heads else None
        if comp.fused is None:
            if hd and comp.name in parts:
                return [f"{comp.name}.{c // hd}" for c in range(width)]
            return [comp.name] * width
        if comp.fused == "qkv":
            third = width // 3
            names = [parts[c // third] for c in range(width)]
            return [f"{n}.{(c % third) // hd}" for c, n in enumerate(names)] if hd else names
        if comp.fused == "heads:qkv":
            w = self.head_dim
            if not w:
                raise ValueError(f"component {comp.name!r} ({comp.fused}) needs the head width")
            names = [parts[(c % (3 * w)) // w] for c in range(width)]
            return [f"{n}.{c // (3 * w)}" for c, n in enumerate(names)] if hd else names
        raise ValueError(f"unknown fused layout {comp.fused!r} (use 'qkv' or 'heads:qkv')")

    def _label(self, node, comp: Component):
        out = node.outvars[0]
        names = self._channels(comp, int(out.aval.shape[-1]) if out.aval.shape else 1)
        T = self.T
        if len(set(names)) == 1:
            c = self._id(names[0])
            return list(dict.fromkeys(names)), lambda v: T.tag(T.merge(v), c)
        channel_of = np.array([self._id(n) for n in names])
        return list(dict.fromkeys(names)), lambda v: T.split(T.merge(v), channel_of)

    def start(self, graph, env) -> list:
        preset = self.preset
        layer_re = _layer_regex(preset)
        chosen = [pt for pt in preset.points if pt.name in self.points]
        comps = list(dict.fromkeys(c for pt in chosen for c in pt.components))
        comp_re = {c: re.compile(c.module) for c in comps}
        producer = {r.key: node for node in graph.nodes for r in node.outvars}
        matched: dict = {c: [] for c in comps}
        for node in graph.nodes:
            path = module_of(node.path)
            m = layer_re.search(path)
            if m is None:
                continue
            rel = path[m.end() :].lstrip("/")
            for c in comps:
                if (c.primitive is None or node.primitive.name == c.primitive) and comp_re[
                    c
                ].fullmatch(rel):
                    matched[c].append(node)
                    break
        comp_names: dict = {}
        for c, nodes in matched.items():
            members = {id(n) for n in nodes}
            for node in nodes:  # entry equations: read a float variable from outside the component
                if any(
                    isinstance(a, Ref)
                    and is_float(a.aval)
                    and id(producer.get(a.key)) not in members
                    for a in node.invars
                ):
                    names, action = self._label(node, c)
                    self.actions[node.outvars[0].key] = action
                    comp_names.setdefault(c, names)
        # branch points, numbered by call order: the first point of the preset begins a layer
        first = preset.points[0].name
        by_name = {pt.name: pt for pt in chosen}
        layer, current = -1, {}
        for node in graph.nodes:
            tag = _branch_tag(node)
            if tag is None:
                continue
            name, i = tag
            if name == first and i == 0:
                layer += 1
            if name not in by_name or layer < 0:
                continue
            var = node.invars[0] if by_name[name].branches[i].side == "input" else node.outvars[0]
            key = (layer, name)
            if key not in current:
                current[key] = []
                self.instances.append((layer, by_name[name], current[key]))
            current[key].append(var)
            if isinstance(var, Ref):
                self.resets.add(var.key)
        for layer_, pt, _ in self.instances:
            if pt.name in self.names:
                continue
            missing = [c.module for c in pt.components if c not in comp_names]
            if missing:
                raise ValueError(
                    f"preset {preset.name!r}: no equation of component module(s) {missing} "
                    f"(relative to layer pattern {preset.layers!r}) at branch point "
                    f"{pt.name!r}; check the preset against the model's module paths."
                )
            self.names[pt.name] = tuple(n for c in pt.components for n in comp_names[c])
        if not self.instances:
            raise ValueError(
                f"preset {preset.name!r}: no branch point found (layer pattern "
                f"{preset.layers!r} matched no module call); is this the right preset?"
            )
        return [v for _, _, vs in self.instances for v in vs if isinstance(v, Ref)]

    def cotangent(self, ref, value, producer):
        action = self.actions.get(ref.key)
        if action is not None:
            return action(value)
        if ref.key in self.resets:
            return self.T.tag(self.T.merge(value), 0)
        return value

    # -- readout
    def readout(self, cotangents: dict) -> list[PointFlows]:
        """The :class:`PointFlows` of every branch point, from the walk's cotangents."""
        T = self.T
        S = T.semiring
        out = []
        for layer, pt, variables in self.instances:
            names = self.names[pt.name]
            ids = [self.ids[n] for n in names]
            cols = [None] * (len(names) + 1)
            total = None
            for var in variables:
                tv = cotangents.get(var.key) if isinstance(var, Ref) else None
                shape = aval_of(var).shape
                dtype = var.aval.dtype if isinstance(var, Ref) else jnp.float32
                if tv is None:  # no path (or a constant)
                    tv = T.zeros(shape, dtype)
                rest = [c for c in tv.channels if c not in ids]
                vals = [_aggregate(T, tv, [c], shape, dtype) for c in ids]
                vals.append(_aggregate(T, tv, rest, shape, dtype))
                cols = [v if c is None else S.add(c, v) for c, v in zip(cols, vals)]
                everything = _aggregate(T, tv, tv.channels, shape, dtype)
                total = everything if total is None else S.add(total, everything)
            flows = S.map(lambda *a: jnp.stack(a, axis=-1), *cols)
            out.append(PointFlows(layer, pt.name, names + (OTHER,), flows, total))
        return out


def _aggregate(T: Tagged, tv: TaggedValue, channels, shape, dtype):
    """⊕ of ``tv``'s ``channels`` and over every axis but the token axis (``shape[-2]``; paper
    Eq. 3). Where none of them is stored the result is 0̄, built rather than reduced: XLA
    constant-folds a reduction of a constant, and took 1-2 s per reduction to do it (the
    ``other`` channel of every branch point)."""
    S = T.semiring
    nd = len(shape)
    live = [c for c in channels if c in tv.channels and c != ZERO]
    if not live:
        return S.zeros(tuple(shape[a] for a in range(nd) if a == nd - 2), dtype)
    merged = T.merge(TaggedValue([T.channel(tv, c) for c in live], live))
    return S.sum(merged, axes=tuple(a for a in range(nd) if a != nd - 2))


def _branch_tag(node) -> tuple[str, int] | None:
    """(point name, branch index) of a branch-point tap equation, else None."""
    if getattr(node.primitive, "name", None) != "name":
        return None
    name = str(node.params.get("name", ""))
    if not name.startswith(TAP_PREFIX + _TAP):
        return None
    point, i = name[len(TAP_PREFIX + _TAP) :].rsplit("#", 1)
    return point, int(i)
