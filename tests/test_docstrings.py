"""The runnable examples in the public API's docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["jaxpr_semiring", "jaxpr_semiring.api", "jaxpr_semiring.semirings", "jaxpr_semiring.rules",
           "jaxpr_semiring.taps", "jaxpr_semiring.paths", "jaxpr_semiring.models.hf_bert"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
