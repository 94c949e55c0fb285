"""Paths through features: SAEs and transcoders spliced into a model, the attribution graph over
their features, and semiring paths on it (docs/features.md).

>>> import jax.numpy as jnp
>>> d = Dictionary(jnp.eye(2), jnp.zeros(2), jnp.eye(2), jnp.zeros(2), site="h/0:out")
>>> d.kind, d.site, d(jnp.array([1.0, -1.0])).tolist()
('sae', 'h/0:out', [1.0, 0.0])
"""

from .dictionary import Dictionary
from .loaders import LoaderError, load_dictionary, load_sparsify_hookpoints
from .graph import FeatureGraph
from .paths import (
    node_influence,
    graph_scores,
    signed_contributions,
    top_paths,
    best_chain,
    path_entropy,
    sample_graph_paths,
    subgraph_mass,
)
from .splice import splice, ReplacementModel
from .attribution import attribution_graph
from .export import check_document, to_neuronpedia, write_neuronpedia

__all__ = [
    "Dictionary",
    "LoaderError",
    "load_dictionary",
    "load_sparsify_hookpoints",
    "FeatureGraph",
    "node_influence",
    "graph_scores",
    "signed_contributions",
    "top_paths",
    "best_chain",
    "path_entropy",
    "sample_graph_paths",
    "subgraph_mass",
    "splice",
    "ReplacementModel",
    "attribution_graph",
    "to_neuronpedia",
    "check_document",
    "write_neuronpedia",
]
