"""Analyses: what the one backward walk is run for, each an observer and/or a semiring of its own.

* :mod:`.flows` — flow reports at tapped variables, per consumer (``flows``, ``FlowReport``);
* :mod:`.top_path` — the top gradient path itself, walked forward over one MaxProduct pass's
  values (``top_path``, ``Path``); :mod:`.pointer` (max-product carrying next-node pointers)
  crosses the equations without a sparse Jacobian row;
* :mod:`.sampling` — exact samples of paths in proportion to their products (``sample_paths``);
* :mod:`.walk` and :mod:`.rows` — what those two share: a forward walk along one path, reading
  each equation's Jacobian row at one element;
* :mod:`.component_channels` — component flows at a model's branch points, on :mod:`.tagged`
  (a semiring split into component channels); the model front end is
  :mod:`jaxpr_semiring.models.components`.

A new analysis goes here as one module: an :class:`~jaxpr_semiring.interpreter.Observer` (and a
semiring only it uses), run with :func:`jaxpr_semiring.api.backprop` (DEVELOPERS.md).
"""
