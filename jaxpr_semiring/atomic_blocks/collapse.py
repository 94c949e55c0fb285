"""Atomic blocks: the graph at the granularity you choose.

Every semiring statistic depends on how the computation is decomposed: LayerNorm written as
mean/var/rsqrt/mul is a different path graph than LayerNorm as one step with its Jacobian.
``atomic(fn)`` makes the choice explicit: it computes ``fn`` but is **one node** of the semiring
backward pass, with an edge from input element *i* to output element *k* exactly when a path
from *i* to *k* exists inside ``fn``, weighted by the total derivative ∂out_k/∂in_i at the
primal point (zero-weight edges stay edges). :func:`atomic_modules` does the same to Flax
module calls without editing the model.

How: ``atomic(fn)(*args)`` wraps ``checkpoint_name`` markers (``ATOMIC_PREFIX``) around the
call: on every float input leaf and every float output leaf (identity equations: values,
``jax.grad``, ``jit``, ``vmap`` and lowering are unchanged). The equations between a block's
markers are contiguous in the flattened graph; the graph rewrite :func:`collapse_blocks`
replaces them by one node (primitive :data:`BLOCK`) whose inputs are the variables read inside
but defined outside (the marked inputs and closed-over values such as LayerNorm's scale and
bias) and whose outputs are the variables defined inside and read after it. Its rule
(:mod:`jaxpr_semiring.atomic_blocks.jacobian`) contracts the block's Jacobian row by row. Nested
blocks
collapse into the outermost one; blocks inside ``scan`` bodies collapse too.

>>> import jax, jax.numpy as jnp, jaxpr_semiring as js
>>> center = lambda v: v - v.mean()
>>> dec = lambda x: jnp.sum(center(x))
>>> atm = lambda x: jnp.sum(js.atomic(center)(x))
>>> [round(float(jnp.exp(js.semiring_grad(f, js.Counting())(jnp.ones(2))[0]))) for f in (dec, atm)]
[3, 2]
>>> js.semiring_grad(atm, js.MaxProduct())(jnp.ones(2)).top_pos.tolist()   # edges ±0.5
[0.5, 0.5]
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from ..flax_hooks import module_selector
from ..graph import Graph, Node, Ref, is_float
from ..interpreter import forward, value_of
from ..markers import ATOMIC_PREFIX, atomic_marker
from ..rules import register, register_rewrite
from .jacobian import block_rule

__all__ = [
    "atomic",
    "atomic_modules",
    "atomic_functions",
    "BLOCK",
    "Block",
    "collapse_blocks",
    "block_ranges",
]


_uids = itertools.count()


# ------------------------------------------------------------------------------- markers


def _mark(tree, name):
    """``checkpoint_name`` on every float array leaf of ``tree``; returns (tree, how many)."""
    leaves, treedef = jax.tree.flatten(tree)
    count = 0
    for i, x in enumerate(leaves):
        if isinstance(x, jax.Array) and is_float(x):
            leaves[i] = checkpoint_name(x, name)
            count += 1
    return jax.tree.unflatten(treedef, leaves), count


def atomic(fn: Callable | None = None, *, name: str | None = None) -> Callable:
    """``fn`` as one node of the semiring backward pass (see the module docstring).

    The identity for ``jax.grad``, ``jit``, ``vmap`` and lowering. ``name`` labels the block
    (default: ``fn.__name__``); also a decorator (``@atomic`` or ``@atomic(name=...)``).

    >>> import jax.numpy as jnp, jaxpr_semiring as js
    >>> norm = js.atomic(lambda v: v / jnp.sqrt(jnp.sum(v * v)))
    >>> g = js.semiring_grad(lambda x: norm(x)[0], js.Real())(jnp.array([3.0, 4.0]))
    >>> [round(a, 3) for a in g.tolist()]
    [0.128, -0.096]
    """
    if fn is None:
        return functools.partial(atomic, name=name)
    label = str(name or getattr(fn, "__name__", "block")).replace(":", "_")

    @functools.wraps(fn)
    def block(*args, **kwargs):
        tag = f"{ATOMIC_PREFIX}{next(_uids)}"
        (args, kwargs), n_in = _mark((args, kwargs), f"{tag}:in:{label}")
        if not n_in:  # no float input: a marker on a constant opens the block
            checkpoint_name(np.float32(0), f"{tag}:in:{label}")
        out = fn(*args, **kwargs)
        out, n_out = _mark(out, f"{tag}:out:{label}")
        if not n_out:
            checkpoint_name(np.float32(0), f"{tag}:out:{label}")
        return out

    return block


@contextlib.contextmanager
def atomic_modules(
    select: Any = None, *, types: type | Sequence[type] = (), methods: Sequence[str] = ("__call__",)
):
    """Make matching Flax linen module calls atomic, without editing the model.

    ``select``/``types``/``methods`` select modules as in :func:`jaxpr_semiring.tap_modules`
    (path patterns such as ``"*/LayerNorm"``, a regex, a predicate, or module classes). Use
    around the model call, inside the differentiated function.

    >>> import flax.linen as nn, jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> m = nn.LayerNorm(); p = m.init(jax.random.PRNGKey(0), jnp.ones(3))
    >>> def f(x):
    ...     with js.atomic_modules(types=nn.LayerNorm):
    ...         return m.apply(p, x)[0]
    >>> round(float(js.semiring_grad(f, js.Counting())(jnp.array([1.0, 2.0, 4.0]))[1]), 4)
    0.0
    """
    import flax.linen as nn

    chosen = module_selector(select, types=types, methods=methods)

    def interceptor(next_fun, args, kwargs, context):
        path = chosen(context.module, context.method_name)
        if path is None:
            return next_fun(*args, **kwargs)
        return atomic(next_fun, name=path or type(context.module).__name__)(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


@contextlib.contextmanager
def atomic_functions(*targets: tuple[Any, str]):
    """Make functions atomic where a model looks them up at call time, without editing it.

    Each target is ``(namespace, name)``: an attribute of a module or object, or an item of a
    dict, replaced by ``atomic(original)`` while the context is active (and restored after).
    For activations and softmaxes that are plain functions, not modules: Hugging Face BERT's
    attention softmax is ``(jax.nn, "softmax")`` (Flax's attention calls it), its GELU
    ``(transformers.modeling_flax_utils.ACT2FN, "gelu")`` (read when the model is applied).
    The patch is global while active: use it around the model call only.

    >>> import jax, jax.numpy as jnp, jaxpr_semiring as js
    >>> f = lambda x: jax.nn.softmax(x)[0]
    >>> with js.atomic_functions((jax.nn, "softmax")):
    ...     c = js.semiring_grad(f, js.Counting())(jnp.zeros(3))
    >>> jnp.exp(c).round(3).tolist()                    # one edge per input: 1 path each
    [1.0, 1.0, 1.0]
    """
    saved = []
    try:
        for space, name in targets:
            get = (
                space.__getitem__ if isinstance(space, dict) else functools.partial(getattr, space)
            )
            put = (
                space.__setitem__ if isinstance(space, dict) else functools.partial(setattr, space)
            )
            original = get(name)
            saved.append((put, name, original))
            put(name, atomic(original, name=name))
        yield
    finally:
        for put, name, original in reversed(saved):
            put(name, original)


# ------------------------------------------------------------------------ the graph rewrite


def block_ranges(nodes: Sequence[Node]) -> list[tuple[int, int, str]]:
    """(first, last, label) node positions of every outermost block.

    A uid can occur several times (a jitted function traced once and inlined twice): a run of
    ``in`` markers after an ``out`` marker opens a new block.
    """
    open_: dict = {}
    found = []
    for i, node in enumerate(nodes):
        m = atomic_marker(node)
        if m is None:
            continue
        uid, side, label = m
        cur = open_.get(uid)
        if side == "in":
            if cur is not None and cur[2] == "out":
                found.append((cur[0], cur[1], cur[3]))
                cur = None
            if cur is None:
                open_[uid] = [i, i, "in", label]
        elif cur is not None:
            cur[1], cur[2] = i, "out"
    found += [(c[0], c[1], c[3]) for c in open_.values() if c[2] == "out"]
    outer: list = []
    for first, last, label in sorted(found, key=lambda r: (r[0], -r[1])):
        if outer and first <= outer[-1][1]:
            if last > outer[-1][1]:
                raise ValueError(
                    f"atomic blocks '{outer[-1][2]}' and '{label}' overlap without "
                    f"nesting; an atomic block must contain whole calls only."
                )
            continue
        outer.append((first, last, label))
    return outer


class Block(NamedTuple):
    """A collapsed block: its own graph (inputs → outputs) and its label."""

    graph: Graph
    label: str

    def evaluate(self, args: Sequence) -> list:
        env = forward(self.graph, args)
        return [value_of(env, a) for a in self.graph.outvars]


class _BlockPrimitive:
    """Duck-types what ``interpreter.forward`` needs of a primitive: evaluating the block runs
    its inner equations (never staged as one op, so JAX needs no rules for it)."""

    name = "atomic"
    multiple_results = True

    def get_bind_params(self, params):
        return dict(params)

    def bind(self, *args, block: Block):
        return block.evaluate(args)

    def __repr__(self):
        return "atomic"


BLOCK = _BlockPrimitive()


def _common_path(paths) -> str:
    parts = [p.split("/") for p in paths if p]
    if not parts:
        return ""
    common = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        common.append(segs[0])
    return "/".join(common)


@register_rewrite
def collapse_blocks(nodes: list, keep: frozenset = frozenset()) -> list:
    """Replace each outermost block's nodes by one :data:`BLOCK` node (paths preserved: its
    edges are the block's internal reachability, its weights the total derivatives)."""
    ranges = block_ranges(nodes)
    if not ranges:
        return nodes
    last_read: dict = {}
    for i, node in enumerate(nodes):
        for a in node.invars:
            if isinstance(a, Ref):
                last_read[a.key] = i
    out, pos = [], 0
    for first, last, label in ranges:
        inner = nodes[first : last + 1]
        defined = {r.key for n in inner for r in n.outvars}
        inputs = list(
            {
                a.key: a
                for n in inner
                for a in n.invars
                if isinstance(a, Ref) and a.key not in defined
            }.values()
        )
        # read after the block, or never read by a node (possibly a graph output)
        outputs = [r for n in inner for r in n.outvars if last_read.get(r.key, len(nodes)) > last]
        path = _common_path(n.path for n in inner if atomic_marker(n) is None)
        block = Block(Graph(list(inner), inputs, outputs), label)
        out += nodes[pos:first]
        out.append(Node(BLOCK, {"block": block}, tuple(inputs), tuple(outputs), path))
        pos = last + 1
    return out + nodes[pos:]


register(BLOCK.name)(block_rule)
