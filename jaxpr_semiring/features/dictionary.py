"""A sparse dictionary — SAE or transcoder — as one pytree: ``encode`` to feature activations,
``decode`` back to the model's space.

An SAE reads and writes the same site (``x ≈ decode(encode(x))``); a transcoder reads one site
(an MLP's input) and writes another (its output), optionally with a linear skip
(``W_skip``/``b_skip``). Weights are stored in the orientation ``x @ W``: ``W_enc`` is
``[d_in, d_sae]`` and ``W_dec`` is ``[d_sae, d_out]``, whatever a file format stores (the loaders
transpose).

>>> import jax.numpy as jnp
>>> d = Dictionary(W_enc=jnp.eye(2), b_enc=jnp.zeros(2), W_dec=2 * jnp.eye(2), b_dec=jnp.zeros(2))
>>> d.encode(jnp.array([1.0, -1.0])).tolist(), d(jnp.array([1.0, -1.0])).tolist()
([1.0, 0.0], [2.0, 0.0])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Dictionary", "ACTIVATIONS"]

Array = Any
ACTIVATIONS = ("relu", "jumprelu", "topk")


@dataclasses.dataclass(frozen=True)
class Dictionary:
    """An SAE (``kind="sae"``) or transcoder (``kind="transcoder"``).

    Args:
      W_enc, b_enc: ``[d_in, d_sae]``, ``[d_sae]``.
      W_dec, b_dec: ``[d_sae, d_out]``, ``[d_out]``.
      activation: ``"relu"``, ``"jumprelu"`` (``threshold`` ``[d_sae]``: a feature is active
        where its pre-activation exceeds it and is positive) or ``"topk"`` (the ``k`` largest
        pre-activations per position, ReLU'd; exactly ``k`` even under ties).
      W_skip, b_skip: a transcoder's linear skip ``x @ W_skip + b_skip`` (``[d_in, d_out]``,
        ``[d_out]``), added to the decoder's output.
      apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding (SAELens).
      input_scale: multiply the input by it before encoding and divide the output by it after
        decoding (activation normalisation; ``None`` = 1).
      kind: ``"sae"`` or ``"transcoder"``.
      site: where it reads: ``"<module path>:in"`` or ``"<module path>:out"``
        (``"transformer/h/3/mlp:in"``, see :mod:`jaxpr_semiring.features.sites`); a loader
        called without ``model=`` leaves the file's own hook name (``"blocks.3.hook_mlp_in"``)
        for :func:`~jaxpr_semiring.features.sites.resolve`; ``None`` if the caller places it.
      out_site: where a transcoder writes (``None`` for an SAE: the same site).
    """

    W_enc: Array
    b_enc: Array
    W_dec: Array
    b_dec: Array
    activation: str = "relu"
    threshold: Array | None = None
    k: int | None = None
    W_skip: Array | None = None
    b_skip: Array | None = None
    apply_b_dec_to_input: bool = False
    input_scale: float | None = None
    kind: str = "sae"
    site: str | None = None
    out_site: str | None = None

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Dictionary: activation {self.activation!r} is not one of {ACTIVATIONS}"
            )
        if self.activation == "jumprelu" and self.threshold is None:
            raise ValueError("Dictionary: a jumprelu dictionary needs threshold=[d_sae]")
        if self.activation == "topk" and not self.k:
            raise ValueError("Dictionary: a topk dictionary needs k=<features per position>")

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    def pre_activations(self, x: Array) -> Array:
        """``[..., d_in]`` → the encoder's pre-activations ``[..., d_sae]``."""
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Array) -> Array:
        """Pre-activations → feature activations (the dictionary's non-linearity)."""
        if self.activation == "relu":
            return jax.nn.relu(pre)
        if self.activation == "jumprelu":
            # relu(pre) * (pre > threshold), as SAELens and Gemma Scope (equal to pre where the
            # threshold is >= 0; a negative threshold must not let negative values through)
            return jnp.where(pre > self.threshold, jax.nn.relu(pre), 0.0)
        # exactly k per position (ties broken by the lower index, as lax.top_k), then ReLU: SAELens'
        # TopK (top-k of pre, ReLU on the values) and sparsify's (ReLU, then top-k) agree on this
        vals, idx = jax.lax.top_k(pre, self.k)
        return jnp.put_along_axis(
            jnp.zeros_like(pre), idx, jax.nn.relu(vals), axis=-1, inplace=False
        )

    def encode(self, x: Array) -> Array:
        """``[..., d_in]`` → feature activations ``[..., d_sae]``."""
        return self.activate(self.pre_activations(x))

    def decode(self, acts: Array, x: Array | None = None) -> Array:
        """Feature activations → ``[..., d_out]`` (a transcoder's skip needs its input ``x``)."""
        out = acts @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("Dictionary.decode: a dictionary with W_skip needs its input x")
            xs = x * self.input_scale if self.input_scale is not None else x
            out = out + xs @ self.W_skip
            if self.b_skip is not None:
                out = out + self.b_skip
        if self.input_scale is not None:
            out = out / self.input_scale
        return out

    def __call__(self, x: Array) -> Array:
        """The reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x), x)


_DATA = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip", "b_skip")
_META = tuple(f.name for f in dataclasses.fields(Dictionary) if f.name not in _DATA)
jax.tree_util.register_dataclass(Dictionary, data_fields=list(_DATA), meta_fields=list(_META))
