"""Marker equations: how the library labels variables inside a traced function.

A marker is a ``checkpoint_name`` equation (the identity: values, ``jax.grad``, ``jit``,
``vmap`` and lowering are unchanged) whose name starts with a prefix this module owns:
:data:`TAP_PREFIX` for ``tap(x, name)`` (flow reports, component flows), :data:`ATOMIC_PREFIX`
for the two ends of an atomic block (``PREFIX + "<uid>:<in|out>:<label>"``). Every feature
that writes or reads a marker goes through these names.

>>> import jax, jax.numpy as jnp
>>> eqn = jax.make_jaxpr(lambda x: tap(x, "h"))(jnp.ones(2)).jaxpr.eqns[0]
>>> eqn.params["name"]
'jaxpr_semiring.tap:h'
"""

from __future__ import annotations

import jax
from jax.ad_checkpoint import checkpoint_name

__all__ = ["TAP_PREFIX", "ATOMIC_PREFIX", "tap", "tap_name", "atomic_marker"]

TAP_PREFIX = "jaxpr_semiring.tap:"  # checkpoint_name prefix marking a tap
ATOMIC_PREFIX = "jaxpr_semiring.atomic:"  # marker name: PREFIX + "<uid>:<in|out>:<label>"


def _marker_name(node) -> str | None:
    """The ``checkpoint_name`` of a graph node, else None."""
    if getattr(node.primitive, "name", None) != "name":
        return None
    return str(node.params.get("name", ""))


def tap(x, name: str):
    """Mark ``x`` (an array or a pytree of arrays) as a node whose flows are reported.

    The identity: no effect on values, ``jax.grad``, ``jit`` or ``vmap``. For a pytree each
    leaf is tapped as ``name + keystr(leaf path)`` (e.g. ``"out[0]"``).
    """
    name = str(name)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(x)
    if len(leaves) == 1 and not leaves[0][0]:
        return checkpoint_name(x, TAP_PREFIX + name)
    tapped = [
        checkpoint_name(leaf, TAP_PREFIX + name + jax.tree_util.keystr(p)) for p, leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, tapped)


def tap_name(node) -> str | None:
    """The tap name of a marker node (``tap(x, name)``'s equation), else None."""
    n = _marker_name(node)
    return n[len(TAP_PREFIX) :] if n is not None and n.startswith(TAP_PREFIX) else None


def atomic_marker(node):
    """(uid, side, label) of an atomic marker node, else None."""
    n = _marker_name(node)
    if n is None or not n.startswith(ATOMIC_PREFIX):
        return None
    uid, side, label = n[len(ATOMIC_PREFIX) :].split(":", 2)
    return uid, side, label
