"""Datasets and training utilities for the paper's experiments.

* :mod:`jaxpr_semiring.tasks.synthetic` -- the synthetic sequence-classification tasks of
  paper App. C (FirstTokenRepeatedOnce, ContainsTokenSet, BinCountOnes, ...).
* :mod:`jaxpr_semiring.tasks.training` -- a small optax/Adam training loop with early stopping
  and msgpack checkpointing.

Submodules are imported lazily by the user; this package module imports nothing heavy.
"""
