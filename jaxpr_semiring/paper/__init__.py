"""Datasets, models' training and measurements for the paper's experiments.

* :mod:`jaxpr_semiring.paper.synthetic` -- the synthetic sequence-classification tasks of
  paper App. C (FirstTokenRepeatedOnce, ContainsTokenSet, BinCountOnes, ...).
* :mod:`jaxpr_semiring.paper.training` -- the one optax training loop (:func:`~.training.fit`)
  and the classifier trained with it, msgpack checkpoints.
* :mod:`jaxpr_semiring.paper.batching` -- apply a jitted per-example function to a data set in
  fixed-size chunks.
* :mod:`jaxpr_semiring.paper.sva` / :mod:`jaxpr_semiring.paper.sva_models` -- subject–verb
  agreement data and BERT models with one scalar target per sentence (paper §5.2).
* :mod:`jaxpr_semiring.paper.mdl` -- prequential minimum description length (paper §5.3).

Submodules are imported by the user; this package module imports nothing heavy.

Example:
    >>> from jaxpr_semiring.paper import synthetic
    >>> synthetic.make_task("Contains1").generate(4, seed=0)[0].shape
    (4, 10)
"""
