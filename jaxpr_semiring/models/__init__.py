"""Models analysed with semiring backpropagation.

* :mod:`jaxpr_semiring.models.components` -- component flows for any Transformer: per layer ×
  branch point × token × component (skip, query, key, value, mlp, …), in one backward pass;
* :mod:`jaxpr_semiring.models.presets` -- where the branch points and components are, per model
  family (Hugging Face Flax families and this repository's Transformer), as data;
* :mod:`jaxpr_semiring.models.targets` -- scalar targets of model outputs (logit differences,
  sentence similarity);
* :mod:`jaxpr_semiring.cli.loading` -- a ``save_pretrained`` directory or ``"minilm"``, its
  tokenizer, and target specs from the command line;
* :mod:`jaxpr_semiring.models.hf_bert` -- the BERT branch flows of the paper's Fig. 2–4;
* :mod:`jaxpr_semiring.paper.transformer` -- a small hand-written Flax linen Transformer encoder
  classifier for the synthetic tasks (paper §5.1 / §5.3), whose equations carry module name
  stacks such as ``TransformerClassifier/layer_0/attention/query`` and ``.../layer_0/skip``.

This module deliberately imports nothing so that importing a sibling (e.g. a Hugging Face
adapter) does not pull in unrelated dependencies.
"""
