"""Atomic blocks: a function (or Flax module) as one hyperedge per input–output element pair,
weighted by its total derivative, instead of the paths inside it.

* :mod:`.collapse` — the markers around a block and the graph rewrite that collapses it
  (``atomic``, ``atomic_modules``, ``atomic_functions``);
* :mod:`.layout` — which probes compute a block's Jacobian (rows, shared inputs, low rank);
* :mod:`.jacobian` — the block's rule: its Jacobian, and the semiring contraction with it.
"""

from .collapse import atomic, atomic_functions, atomic_modules

__all__ = ["atomic", "atomic_modules", "atomic_functions"]
