"""Semirings: what ⊕ and ⊗ mean, and how values of each are stored.

* :mod:`.base` — the protocol (:class:`Semiring`) and :class:`IndexMap`;
* :mod:`.linear` — ``Real`` (the gradient), ``Expectation``, ``Boolean``;
* :mod:`.logspace` — ``Log``, ``Counting`` (log #paths), ``Entropy``;
* :mod:`.tropical` — ``MaxProduct``, ``MaxAbs`` (max-type, with a contraction ``kernel``);
* :mod:`.topk` — ``TopK(k)``;
* :mod:`.pointer` — ``PointerMaxProduct`` (max-product carrying next-node pointers: top paths);
* :mod:`.tagged` — ``Tagged(S)``: S split into component channels (component flows);
* :mod:`.product` — ``Product(S1, S2, …)``: several semirings in one pass
  (``semiring_grad(f, (S1, S2))``).

>>> from jaxpr_semiring.semirings import Entropy
>>> Entropy().name
'Entropy'
"""

from .base import IndexMap, Semiring, Value, value_dtype
from .linear import Boolean, Expectation, ExpectationValue, Real
from .logspace import Counting, Entropy, EntropyValue, Log
from .product import Product
from .topk import TopK, TopKValue
from .tropical import MaxAbs, MaxAbsValue, MaxProduct, MaxProductValue, Tropical

__all__ = [
    "Semiring",
    "IndexMap",
    "Value",
    "value_dtype",
    "Real",
    "Expectation",
    "ExpectationValue",
    "Boolean",
    "Log",
    "Counting",
    "Entropy",
    "EntropyValue",
    "Tropical",
    "MaxProduct",
    "MaxProductValue",
    "MaxAbs",
    "MaxAbsValue",
    "TopK",
    "TopKValue",
    "Product",
]
