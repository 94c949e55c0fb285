"""jaxpr_semiring: backpropagation generalized to semirings, for any JAX function.

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> g = js.semiring_grad(lambda x: jnp.sum(jnp.tanh(x) * 3.0), js.MaxProduct())(jnp.zeros(2))
>>> g.top_pos.tolist()
[3.0, 3.0]
"""

from .semirings import (
    Semiring,
    IndexMap,
    Real,
    MaxProduct,
    MaxAbs,
    Entropy,
    Expectation,
    Log,
    Counting,
    Boolean,
    TopK,
    MaxProductValue,
    MaxAbsValue,
    EntropyValue,
    ExpectationValue,
    TopKValue,
)
from .semirings.product import Product
from .api import semiring_grad, value_and_semiring_grad
from .markers import tap
from .flax_hooks import tap_modules
from .nnx_scopes import nnx_module_scopes, NnxApply
from .analyses.flows import flows, FlowReport, TapFlow
from .analyses.top_path import top_path, Path, PathStep
from .analyses.sampling import sample_paths, SampledPaths, BranchShare
from .atomic_blocks import atomic, atomic_modules, atomic_functions
from .dataset import run_dataset
from . import kernels, rules

__version__ = "0.1.0"

__all__ = [
    "semiring_grad",
    "value_and_semiring_grad",
    "Semiring",
    "IndexMap",
    "Real",
    "MaxProduct",
    "MaxAbs",
    "Entropy",
    "Expectation",
    "Log",
    "Counting",
    "Boolean",
    "TopK",
    "MaxProductValue",
    "MaxAbsValue",
    "EntropyValue",
    "ExpectationValue",
    "TopKValue",
    "Product",
    "tap",
    "tap_modules",
    "nnx_module_scopes",
    "NnxApply",
    "flows",
    "FlowReport",
    "TapFlow",
    "top_path",
    "Path",
    "PathStep",
    "atomic",
    "atomic_modules",
    "atomic_functions",
    "sample_paths",
    "SampledPaths",
    "BranchShare",
    "run_dataset",
    "kernels",
    "rules",
]
