"""jaxpr_semiring: backpropagation generalized to semirings, for any JAX function.

>>> import jax.numpy as jnp, jaxpr_semiring as js
>>> g = js.semiring_grad(lambda x: jnp.sum(jnp.tanh(x) * 3.0), js.MaxProduct())(jnp.zeros(2))
>>> g.top_pos.tolist()
[3.0, 3.0]
"""
from .semirings import (Semiring, IndexMap, Real, MaxProduct, MaxAbs, Entropy, Expectation, Log,
                        Counting, Boolean, TopK, MaxProductValue, MaxAbsValue, EntropyValue,
                        ExpectationValue, TopKValue)
from .semirings.product import Product
from .api import semiring_grad, value_and_semiring_grad
from .taps import tap, tap_modules, flows, FlowReport, TapFlow
from .paths import top_path, Path, PathStep
from .atomic_blocks import atomic, atomic_modules, atomic_functions
from .sampling import sample_paths, SampledPaths, BranchShare
from .dataset import run_dataset
from . import kernels, rules

__version__ = "0.1.0"

__all__ = [
    "semiring_grad", "value_and_semiring_grad", "Semiring", "IndexMap", "Real", "MaxProduct",
    "MaxAbs", "Entropy", "Expectation", "Log", "Counting", "Boolean", "TopK", "MaxProductValue",
    "MaxAbsValue", "EntropyValue", "ExpectationValue", "TopKValue", "Product", "tap",
    "tap_modules", "flows", "FlowReport", "TapFlow", "top_path", "Path", "PathStep", "atomic",
    "atomic_modules", "atomic_functions", "sample_paths", "SampledPaths", "BranchShare",
    "run_dataset", "kernels", "rules",
]
