"""A small hand-written Transformer encoder classifier (Flax linen) for the synthetic tasks.

Architecture (post-LN, like BERT; no dropout, the model is deterministic)::

    h_0   = token_embed(tokens) + position_embedding[:S]            # embed()
    for i in range(num_layers):                                       # layer_i
        a = attention(h)        # query/key/value/out Dense, softmax(q k^T / sqrt(d_head))
        h = attention_norm(skip(h, a))                                # skip = h + a
        m = mlp(h)              # dense_in -> gelu (tanh approx.) -> dense_out
        h = mlp_norm(mlp_residual(h, m))
    logits = classifier(pool(h))  # pool: position 0 ("first", default) or mean over positions

Module paths (they appear in every jaxpr equation's ``source_info.name_stack``; Flax prefixes
them with the calling methods, e.g. ``TransformerClassifier/TransformerClassifier.
encode_from_embeddings/TransformerClassifier.encode/layer_0/attention/query`` -- match on the
suffix or on a substring such as ``layer_0/attention/query``)::

    token_embed, position_embedding (a parameter)
    layer_{i}/attention/{query,key,value,out}
    layer_{i}/skip            # the residual add consuming the layer input (paper Fig. 3)
    layer_{i}/attention_norm
    layer_{i}/mlp/{dense_in,dense_out}
    layer_{i}/mlp_residual    # second residual add (deliberately *not* named "skip")
    layer_{i}/mlp_norm
    classifier

The layer input ``h`` therefore has exactly four consumers: the ``dot_general`` equations of
``layer_i/attention/query``, ``.../key``, ``.../value`` and the ``add`` of ``layer_i/skip`` --
the branching point analysed in paper §5.1.

Inputs may have any leading batch shape, including none: ``tokens`` is ``int[..., S]`` and the
embeddings are ``float[..., S, hidden]``; an unbatched call is convenient for per-example
semiring gradients. There is no CLS token: with ``pooling="first"`` the classifier reads the
representation of the first input token.

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = TransformerClassifier(num_layers=1, hidden=16, heads=2, vocab_size=21, max_len=10)
    >>> tokens = jnp.ones((3, 10), jnp.int32)
    >>> params = model.init(jax.random.key(0), tokens)
    >>> model.apply(params, tokens).shape
    (3, 2)
    >>> f = logits_from_embeddings_fn(model, params)
    >>> h0 = embed_tokens(model, params, tokens)
    >>> bool(jnp.allclose(f(h0), model.apply(params, tokens)))
    True
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "Residual",
    "SelfAttention",
    "MLP",
    "EncoderLayer",
    "TransformerClassifier",
    "model_for_task",
    "init_params",
    "embed_tokens",
    "logits_from_embeddings_fn",
]

Array = jax.Array
POOLINGS = ("first", "mean")


class Residual(nn.Module):
    """``x + y`` inside its own module, so the add carries this module's name in its name stack.

    Example:
        >>> import jax.numpy as jnp
        >>> float(Residual().apply({}, jnp.ones(2), jnp.ones(2)).sum())
        4.0
    """

    def __call__(self, x: Array, y: Array) -> Array:
        return x + y


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with ``query/key/value/out`` Dense layers.

    Attention weights are sown into the ``"intermediates"`` collection as
    ``attention_weights`` (``[..., heads, S_query, S_key]``); pass ``mutable=["intermediates"]``
    to ``apply`` to retrieve them.

    Attributes:
        hidden: model width (must be divisible by ``heads``).
        heads: number of attention heads.
    """

    hidden: int
    heads: int
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """``x``: ``[..., S, hidden]``; ``mask``: optional bool ``[..., S]`` (True = attend)."""
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by heads={self.heads}; "
                "change hidden or heads"
            )
        d_head = self.hidden // self.heads
        dense = lambda name: nn.Dense(self.hidden, kernel_init=self.kernel_init, name=name)
        split = lambda t: t.reshape(t.shape[:-1] + (self.heads, d_head))  # [..., S, H, D]
        q = split(dense("query")(x))
        k = split(dense("key")(x))
        v = split(dense("value")(x))
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(d_head)
        if mask is not None:
            big_neg = jnp.finfo(logits.dtype).min
            logits = jnp.where(mask[..., None, None, :], logits, big_neg)
        weights = jax.nn.softmax(logits, axis=-1)
        self.sow("intermediates", "attention_weights", weights)
        ctx = jnp.einsum("...hqk,...khd->...qhd", weights, v)
        ctx = ctx.reshape(ctx.shape[:-2] + (self.hidden,))
        return dense("out")(ctx)


class MLP(nn.Module):
    """Position-wise feed-forward block ``dense_out(gelu(dense_in(x)))``."""

    hidden: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = nn.Dense(self.mlp_dim, name="dense_in")(x)
        y = nn.gelu(y, approximate=True)
        return nn.Dense(self.hidden, name="dense_out")(y)


class EncoderLayer(nn.Module):
    """One post-LN encoder layer: ``LN(h + attn(h))`` then ``LN(h + mlp(h))``."""

    hidden: int
    heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, h: Array, mask: Array | None = None) -> Array:
        a = SelfAttention(self.hidden, self.heads, name="attention")(h, mask)
        h = Residual(name="skip")(h, a)
        h = nn.LayerNorm(epsilon=self.layer_norm_eps, name="attention_norm")(h)
        m = MLP(self.hidden, self.mlp_dim, name="mlp")(h)
        h = Residual(name="mlp_residual")(h, m)
        return nn.LayerNorm(epsilon=self.layer_norm_eps, name="mlp_norm")(h)


class TransformerClassifier(nn.Module):
    """Transformer encoder + linear classification head (see the module docstring).

    Attributes:
        num_layers: number of encoder layers ``L`` (paper §5.1: 1, §5.3: 2).
        hidden: model width (paper §5.1: 16, §5.3: 64).
        heads: attention heads (paper §5.1: 2, §5.3: 4); must divide ``hidden``.
        mlp_dim: feed-forward width; ``None`` means ``4 * hidden``.
        num_classes: output classes (paper §5.3 always uses 36).
        vocab_size: rows of the token embedding table, *including* the pad id 0 -- for a task
            from :mod:`jaxpr_semiring.paper.synthetic` pass ``task.embedding_size``.
        max_len: number of learned positions (maximum sequence length).
        pooling: ``"first"`` (representation of position 0, default) or ``"mean"``.
        layer_norm_eps: LayerNorm epsilon.
        embed_init_std: standard deviation of the token and position embedding initializers.

    Methods (use with ``model.apply(params, x, method=...)``): ``embed(tokens)``,
    ``encode(h, mask)``, ``classify(h)``, ``encode_from_embeddings(h, mask)`` and
    ``__call__(tokens, mask)``.
    """

    num_layers: int = 1
    hidden: int = 16
    heads: int = 2
    mlp_dim: int | None = None
    num_classes: int = 2
    vocab_size: int = 21
    max_len: int = 64
    pooling: str = "first"
    layer_norm_eps: float = 1e-6
    embed_init_std: float = 1.0

    def setup(self) -> None:
        for name in ("num_layers", "hidden", "heads", "num_classes", "vocab_size", "max_len"):
            value = getattr(self, name)
            lowest = 0 if name == "num_layers" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by heads={self.heads}; "
                "change hidden or heads"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        mlp_dim = 4 * self.hidden if self.mlp_dim is None else self.mlp_dim
        init = nn.initializers.normal(stddev=self.embed_init_std)
        self.token_embed = nn.Embed(self.vocab_size, self.hidden, embedding_init=init)
        self.position_embedding = self.param(
            "position_embedding", init, (self.max_len, self.hidden)
        )
        self.layers = [
            EncoderLayer(self.hidden, self.heads, mlp_dim, self.layer_norm_eps, name=f"layer_{i}")
            for i in range(self.num_layers)
        ]
        self.classifier = nn.Dense(self.num_classes)

    def embed(self, tokens: Array) -> Array:
        """Input representations ``h_0 = token_embed(tokens) + position_embedding``.

        ``tokens``: ``int[..., S]`` with ``S <= max_len``; returns ``float32[..., S, hidden]``.
        """
        seq_len = tokens.shape[-1]
        if seq_len > self.max_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_len={self.max_len}; "
                "build the model with a larger max_len"
            )
        return self.token_embed(tokens) + self.position_embedding[:seq_len]

    def encode(self, h: Array, mask: Array | None = None) -> Array:
        """Run the encoder layers on embeddings ``h`` (``[..., S, hidden]``); same shape out."""
        for layer in self.layers:
            h = layer(h, mask)
        return h

    def classify(self, h: Array, mask: Array | None = None) -> Array:
        """Pool the final hidden states ``[..., S, hidden]`` and return logits ``[..., C]``."""
        if self.pooling == "first":
            pooled = h[..., 0, :]
        elif mask is None:
            pooled = h.mean(axis=-2)
        else:
            w = mask.astype(h.dtype)[..., None]
            pooled = (h * w).sum(axis=-2) / jnp.maximum(w.sum(axis=-2), 1.0)
        return self.classifier(pooled)

    def encode_from_embeddings(self, h: Array, mask: Array | None = None) -> Array:
        """Logits ``[..., num_classes]`` from input embeddings ``h`` (``[..., S, hidden]``)."""
        return self.classify(self.encode(h, mask), mask)

    def __call__(self, tokens: Array, mask: Array | None = None) -> Array:
        """Logits ``[..., num_classes]`` for ``tokens`` (``int[..., S]``).

        ``mask``: optional bool ``[..., S]``, True for real tokens (keys with False are ignored).
        """
        return self.encode_from_embeddings(self.embed(tokens), mask)


def model_for_task(
    task: Any,
    *,
    num_layers: int = 1,
    hidden: int = 16,
    heads: int = 2,
    mlp_dim: int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> TransformerClassifier:
    """A :class:`TransformerClassifier` sized for ``task`` (defaults: paper §5.1's model).

    Uses ``task.embedding_size`` (or ``task.vocab_size + 1``) embedding rows, ``task.seq_len``
    positions and ``task.num_classes`` outputs unless ``num_classes`` is given (§5.3 uses 36).

    Example:
        >>> from jaxpr_semiring.paper.synthetic import FirstTokenRepeatedOnce
        >>> m = model_for_task(FirstTokenRepeatedOnce())
        >>> (m.vocab_size, m.max_len, m.num_classes, m.hidden, m.heads)
        (21, 10, 2, 16, 2)
    """
    vocab = getattr(task, "embedding_size", None) or task.vocab_size + 1
    classes = task.num_classes if num_classes is None else num_classes
    if classes < task.num_classes:
        raise ValueError(
            f"num_classes={classes} is smaller than the task's {task.num_classes} classes; "
            "pass num_classes >= task.num_classes"
        )
    return TransformerClassifier(
        num_layers=num_layers,
        hidden=hidden,
        heads=heads,
        mlp_dim=mlp_dim,
        num_classes=classes,
        vocab_size=vocab,
        max_len=task.seq_len,
        **kwargs,
    )


def init_params(
    model: TransformerClassifier, seed: int = 0, seq_len: int | None = None
) -> dict[str, Any]:
    """Initialise ``model`` with ``jax.random.key(seed)`` on a dummy ``[1, seq_len]`` batch.

    Example:
        >>> p = init_params(TransformerClassifier(max_len=6), seed=0)
        >>> sorted(p["params"])[:3]
        ['classifier', 'layer_0', 'position_embedding']
    """
    seq_len = model.max_len if seq_len is None else seq_len
    return model.init(jax.random.key(seed), jnp.ones((1, seq_len), jnp.int32))


def embed_tokens(model: TransformerClassifier, params: Any, tokens: Array) -> Array:
    """``model.embed(tokens)`` under ``params``: the input representations ``h_0``.

    Example:
        >>> m = TransformerClassifier(max_len=4)
        >>> embed_tokens(m, init_params(m), jnp.ones(4, jnp.int32)).shape
        (4, 16)
    """
    return model.apply(params, tokens, method=TransformerClassifier.embed)


def logits_from_embeddings_fn(
    model: TransformerClassifier, params: Any, mask: Array | None = None
) -> Callable[[Array], Array]:
    """``f(h) -> logits``: the model from input embeddings on, with ``params`` closed over.

    Differentiate ``f`` (or run semiring backprop on it) to get per-position gradients with
    respect to the input representations.

    Example:
        >>> m = TransformerClassifier(max_len=4)
        >>> p = init_params(m)
        >>> h0 = embed_tokens(m, p, jnp.array([1, 2, 1, 3]))
        >>> g = jax.grad(lambda h: logits_from_embeddings_fn(m, p)(h)[1])(h0)
        >>> g.shape
        (4, 16)
    """

    def f(h: Array) -> Array:
        return model.apply(params, h, mask, method=TransformerClassifier.encode_from_embeddings)

    return f
