"""The attribution graph over dictionary features: one dense adjacency matrix plus the labels of
its nodes, in circuit-tracer's convention (``adjacency[target, source]`` = direct effect).

Node order: active features (layer-major, then position), error nodes (``n_layers * n_pos``,
layer-major), token embeddings (``n_pos``), target logits (``n_logits``).

>>> import numpy as np
>>> g = FeatureGraph(adjacency=np.zeros((4, 4)), n_features=1, n_errors=1, n_tokens=1,
...                  n_logits=1, n_layers=1, active_features=np.zeros((1, 3), int),
...                  activation_values=np.ones(1), input_tokens=np.array([7]),
...                  logit_tokens=np.array([3]), logit_probabilities=np.ones(1))
>>> g.n_nodes, g.node_kind(0), g.node_kind(3), g.logit_slice
(4, 'feature', 'logit', slice(3, 4, None))
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["FeatureGraph"]


@dataclasses.dataclass
class FeatureGraph:
    """An attribution graph (see the module docstring for the node order).

    Args:
      adjacency: ``[n, n]``, ``adjacency[target, source]`` = the direct (one-hop, frozen) effect.
      n_features, n_errors, n_tokens, n_logits: how many nodes of each kind.
      n_layers: the number of spliced layers.
      active_features: ``[n_features, 3]`` rows ``(layer, position, feature index)``.
      activation_values: ``[n_features]`` the features' activations.
      input_tokens: ``[n_pos]`` token ids; input_strings: their text (or ``None``).
      logit_tokens: ``[n_logits]`` token ids of the target logits; logit_probabilities: their
        softmax probabilities; logit_strings: their text (or ``None``).
    """

    adjacency: np.ndarray
    n_features: int
    n_errors: int
    n_tokens: int
    n_logits: int
    n_layers: int
    active_features: np.ndarray
    activation_values: np.ndarray
    input_tokens: np.ndarray
    logit_tokens: np.ndarray
    logit_probabilities: np.ndarray
    input_strings: list[str] | None = None
    logit_strings: list[str] | None = None

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_tokens + self.n_logits

    @property
    def n_pos(self) -> int:
        return self.n_tokens

    @property
    def feature_slice(self) -> slice:
        return slice(0, self.n_features)

    @property
    def error_slice(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_errors)

    @property
    def token_slice(self) -> slice:
        s = self.n_features + self.n_errors
        return slice(s, s + self.n_tokens)

    @property
    def logit_slice(self) -> slice:
        s = self.n_features + self.n_errors + self.n_tokens
        return slice(s, s + self.n_logits)

    def node_kind(self, i: int) -> str:
        """``"feature"``, ``"error"``, ``"token"`` or ``"logit"``."""
        for kind, sl in (
            ("feature", self.feature_slice),
            ("error", self.error_slice),
            ("token", self.token_slice),
            ("logit", self.logit_slice),
        ):
            if sl.start <= i < sl.stop:
                return kind
        raise IndexError(f"FeatureGraph: node {i} is out of range (n = {self.n_nodes})")

    def node_layer(self, i: int) -> int:
        """The node's layer: tokens -1, features/errors their layer, logits ``n_layers``."""
        kind = self.node_kind(i)
        if kind == "feature":
            return int(self.active_features[i, 0])
        if kind == "error":
            return (i - self.n_features) // max(self.n_pos, 1)
        return -1 if kind == "token" else self.n_layers

    def node_position(self, i: int) -> int:
        """The node's token position (logits: the last position)."""
        kind = self.node_kind(i)
        if kind == "feature":
            return int(self.active_features[i, 1])
        if kind == "error":
            return (i - self.n_features) % max(self.n_pos, 1)
        if kind == "token":
            return i - self.token_slice.start
        return self.n_pos - 1

    def node_label(self, i: int) -> str:
        """A short human-readable name: ``F3@2:17`` (layer 3, position 2, feature 17), ``E1@0``,
        ``T@4'cat'``, ``L'dog'``."""
        kind = self.node_kind(i)
        if kind == "feature":
            layer, pos, feat = (int(v) for v in self.active_features[i])
            return f"F{layer}@{pos}:{feat}"
        if kind == "error":
            return f"E{self.node_layer(i)}@{self.node_position(i)}"
        if kind == "token":
            p = self.node_position(i)
            s = self.input_strings[p] if self.input_strings else str(int(self.input_tokens[p]))
            return f"T@{p}{s!r}"
        j = i - self.logit_slice.start
        s = self.logit_strings[j] if self.logit_strings else str(int(self.logit_tokens[j]))
        return f"L{s!r}"
