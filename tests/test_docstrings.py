"""The runnable examples in the public API's docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = [
    "jaxpr_semiring", "jaxpr_semiring.api", "jaxpr_semiring.interpreter", "jaxpr_semiring.rules",
    "jaxpr_semiring.numerics", "jaxpr_semiring.semirings", "jaxpr_semiring.semirings.base",
    "jaxpr_semiring.semirings.linear", "jaxpr_semiring.semirings.logspace",
    "jaxpr_semiring.semirings.tropical", "jaxpr_semiring.semirings.topk",
    "jaxpr_semiring.semirings.pointer", "jaxpr_semiring.kernels.tropical",
    "jaxpr_semiring.kernels.xla", "jaxpr_semiring.kernels.cpu", "jaxpr_semiring.kernels.gpu",
    "jaxpr_semiring.kernels.lifted", "jaxpr_semiring.kernels.lowrank", "jaxpr_semiring.kernels.ffi", "jaxpr_semiring.kernels.ffi_abi",
    "jaxpr_semiring.semirings.product", "jaxpr_semiring.taps", "jaxpr_semiring.paths",
    "jaxpr_semiring.models.hf_bert", "jaxpr_semiring.models.transformer", "jaxpr_semiring.report",
    "jaxpr_semiring.tasks", "jaxpr_semiring.tasks.training", "jaxpr_semiring.tasks.batching",
    "jaxpr_semiring.tasks.synthetic", "jaxpr_semiring.tasks.sva", "jaxpr_semiring.tasks.sva_models",
    "jaxpr_semiring.tasks.mdl", "jaxpr_semiring.semirings.tagged", "jaxpr_semiring.models.presets",
    "jaxpr_semiring.models.components", "jaxpr_semiring.models.targets",
    "jaxpr_semiring.models.loading", "jaxpr_semiring.cli", "jaxpr_semiring.dataset",
    "jaxpr_semiring.dataset.inputs", "jaxpr_semiring.dataset.batching",
    "jaxpr_semiring.dataset.devices", "jaxpr_semiring.dataset.store", "jaxpr_semiring.dataset_cli",
    "jaxpr_semiring.atomic_blocks", "jaxpr_semiring.semirings.structure", "jaxpr_semiring.sampling",
    "jaxpr_semiring.outputs", "jaxpr_semiring.dataset.flows",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable docstring example"
