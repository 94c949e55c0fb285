"""Models analysed with semiring backpropagation.

* :mod:`jaxpr_semiring.models.transformer` -- a small hand-written Flax linen Transformer encoder
  classifier for the synthetic tasks (paper §5.1 / §5.3), whose equations carry module name
  stacks such as ``TransformerClassifier/layer_0/attention/query`` and ``.../layer_0/skip``.

This module deliberately imports nothing so that importing a sibling (e.g. a Hugging Face
adapter) does not pull in unrelated dependencies.
"""
