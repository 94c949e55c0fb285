"""The runnable examples in the public API's docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import pytest

import jaxpr_semiring

# every module of the package: a new module's examples run without an edit here
MODULES = ["jaxpr_semiring"] + sorted(
    m.name
    for m in pkgutil.walk_packages(jaxpr_semiring.__path__, "jaxpr_semiring.")
    if m.name != "jaxpr_semiring.__main__"
)
# Modules without an example of their own: package indexes, and internals reached only through
# the public functions whose examples exercise them. Any other module must have one.
NO_EXAMPLE = {
    "jaxpr_semiring." + m
    for m in (
        "_compat",
        "analyses",
        "atomic_blocks",
        "atomic_blocks.jacobian",
        "atomic_blocks.layout",
        "cli",
        "dataset.runner",
        "kernels",
        "models",
        "rules.contractions",
        "rules.control_flow",
        "rules.elementwise",
        "rules.reductions",
        "rules.sorting",
        "rules.structural",
        "rules.windows",
    )
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name not in NO_EXAMPLE:
        assert result.attempted > 0, f"{name} has no runnable docstring example"
