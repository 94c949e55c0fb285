"""Dictionaries spliced into a Flax linen model without editing it (``nn.intercept_methods``).

A splice at a site replaces the value ``y`` the model computes there by
``decode(encode(x)) + error`` with ``error = y - decode(encode(x))`` a leaf: the spliced model
computes what the model computes (up to float rounding) while every feature activation and
every error is a value of its own. Sites (``Dictionary.site`` / ``out_site``):

* ``"P:out"`` (SAE): the output of module ``P`` is reconstructed;
* ``"P:in"`` (SAE): the first argument of module ``P`` is reconstructed before ``P`` runs;
* ``"P:in"`` with ``out_site="P:out"`` (transcoder): ``P``'s output ``y = P(x)`` is written as
  ``decode(encode(x), x) + error`` (``P`` is usually an MLP).

:class:`ReplacementModel` runs the model once to record the values at the sites, the token
embeddings, the attention patterns and the norm scales, then replays the model as a function of
the leaves — token embeddings, feature activations, errors — with the patterns and norm scales
held at their recorded values: a linear (affine) function of the leaves, the frozen model
whose one-hop Jacobian is the attribution graph (:mod:`jaxpr_semiring.features.attribution`).

>>> import flax.linen as nn, jax, jax.numpy as jnp
>>> from jaxpr_semiring.features.dictionary import Dictionary
>>> class M(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         return nn.Dense(2, name="d")(x)
>>> m = M(); p = m.init(jax.random.PRNGKey(0), jnp.ones(2))
>>> d = Dictionary(jnp.eye(2), jnp.zeros(2), jnp.eye(2), jnp.zeros(2), site="d:out")
>>> with splice([d]):
...     y = m.apply(p, jnp.ones(2))
>>> bool(jnp.allclose(y, m.apply(p, jnp.ones(2))))
True
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..flax_hooks import module_path
from ..models.components import is_hf_model
from .dictionary import Dictionary

__all__ = ["splice", "parse_site", "SpliceSite", "ReplacementModel", "Leaves", "FREEZABLE"]

FREEZABLE = ("attention", "norm")


@dataclasses.dataclass(frozen=True)
class SpliceSite:
    """A dictionary's place: module ``path``, and ``how``: ``"out"``, ``"in"`` or
    ``"transcoder"``."""

    path: str
    how: str
    dictionary: Dictionary


def parse_site(d: Dictionary) -> SpliceSite:
    """The :class:`SpliceSite` of a dictionary from its ``site``/``out_site``.

    >>> import jax.numpy as jnp
    >>> e = jnp.eye(2)
    >>> parse_site(Dictionary(e, e[0], e, e[0], site="h/0/mlp:in", out_site="h/0/mlp:out",
    ...                       kind="transcoder")).how
    'transcoder'
    """
    if not d.site or ":" not in d.site:
        raise ValueError(
            f"splice: dictionary site {d.site!r} is not '<module path>:in' or "
            "'<module path>:out'; set Dictionary.site (e.g. 'transformer/h/0/mlp:in')"
        )
    path, _, end = d.site.rpartition(":")
    if end not in ("in", "out"):
        raise ValueError(f"splice: site {d.site!r} must end in ':in' or ':out'")
    if d.out_site is None or d.out_site == d.site:
        return SpliceSite(path, end, d)
    opath, _, oend = d.out_site.rpartition(":")
    if end == "in" and oend == "out" and opath == path:
        return SpliceSite(path, "transcoder", d)
    raise ValueError(
        f"splice: a transcoder must read '<P>:in' and write '<P>:out' of one module, got "
        f"site {d.site!r} and out_site {d.out_site!r}"
    )


def _sites(dictionaries: Sequence[Dictionary]) -> dict:
    sites = {}
    for d in dictionaries:
        s = parse_site(d)
        if s.path in sites:
            raise ValueError(f"splice: two dictionaries at module {s.path!r}; keep one per site")
        sites[s.path] = s
    return sites


@contextlib.contextmanager
def splice(dictionaries: Sequence[Dictionary]):
    """Run a Flax linen model with ``dictionaries`` spliced in (identity-preserving: each site's
    value is ``decode(encode(x)) + error``, the error the model's true value minus the
    reconstruction). Use around ``model.apply`` (or an HF Flax model's call)."""
    engine = _Engine(_sites(dictionaries), mode="splice")
    with nn.intercept_methods(engine.interceptor):
        yield


class Leaves(dict):
    """The leaves of a replayed model: ``"embed"`` ``[pos, d]``, ``"acts"`` (one ``[pos, d_sae]``
    per layer), ``"errors"`` (one ``[pos, d_out]`` per layer)."""


jax.tree_util.register_pytree_node(
    Leaves,
    lambda t: (tuple(t[k] for k in sorted(t)), tuple(sorted(t))),
    lambda keys, ch: Leaves(zip(keys, ch)),
)


class _Engine:
    """The interceptor behind :func:`splice` and :class:`ReplacementModel`.

    Modes: ``splice`` (identity splice), ``record`` (splice, and record leaves and frozen
    values), ``replay`` (leaves given; patterns and norm scales replayed; returns the sites'
    pre-activations), ``linear`` (as replay, but each feature's activation is its
    pre-activation times its recorded gain, 1 if active else 0: the frozen model end to end).
    """

    def __init__(self, sites: dict, mode: str, freeze=FREEZABLE, embed_site="auto"):
        self.sites, self.mode, self.freeze = sites, mode, tuple(freeze)
        self.embed_site = embed_site
        self.order: list[str] = []  # site paths in call order
        self.rec: dict[str, Any] = {}
        self.patterns: list = []
        self.rstds: list = []
        self.leaves: Leaves | None = None
        self.gains: list | None = None
        self.pres: list = []
        self._i_pat = self._i_rstd = 0
        self.embed_path: str | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _feature_site(self, path: str, d: Dictionary, x, y_true):
        """``x`` the dictionary's input, ``y_true`` the model's value (None: not computed)."""
        if self.mode in ("splice", "record"):
            acts = d.encode(x)
            recon = d.decode(acts, x)
            err = y_true - recon
            if self.mode == "record":
                if path in self.order:
                    raise ValueError(
                        f"splice: module {path!r} was called twice; splice a module once"
                    )
                self.order.append(path)
                self.rec.setdefault("x", []).append(x)
                self.rec.setdefault("acts", []).append(acts)
                self.rec.setdefault("errors", []).append(err)
            return recon + err
        layer = self.order.index(path)
        pre = d.pre_activations(x)
        self.pres.append(pre[0])
        if self.mode == "replay":
            acts = self.leaves["acts"][layer][None]
        else:  # linear: the frozen non-linearity (gain 1 on active features, 0 elsewhere)
            acts = pre * self.gains[layer][None]
        return d.decode(acts, x) + self.leaves["errors"][layer][None]

    # -- the interceptor -------------------------------------------------------------------
    def interceptor(self, next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        if method != "__call__":
            return next_fun(*args, **kwargs)
        path = module_path(module)
        if self.mode != "splice" and self._is_embed(module, path):
            out = next_fun(*args, **kwargs)
            if self.mode == "record":
                self.rec["embed"] = out
                return out
            return jnp.broadcast_to(self.leaves["embed"][None], out.shape).astype(out.dtype)
        if self.mode != "splice" and "norm" in self.freeze and isinstance(module, nn.LayerNorm):
            return self._layer_norm(module, args[0], next_fun, args, kwargs)
        site = self.sites.get(path)
        if site is None:
            return next_fun(*args, **kwargs)
        d = site.dictionary
        if site.how == "out":
            y = next_fun(*args, **kwargs)
            return self._feature_site(path, d, y, y)
        x = args[0]
        if site.how == "in":
            x = self._feature_site(path, d, x, x)
            return next_fun(x, *args[1:], **kwargs)
        # transcoder: the module itself is replaced once its true value is recorded
        y = next_fun(*args, **kwargs) if self.mode in ("splice", "record") else None
        return self._feature_site(path, d, x, y)

    def _is_embed(self, module, path) -> bool:
        if self.embed_site == "auto":
            if self.embed_path is None and isinstance(module, nn.Embed):
                self.embed_path = path  # the first embedding called: the token embedding
            return path == self.embed_path
        return path == self.embed_site.removesuffix(":out")

    def _layer_norm(self, module, x, next_fun, args, kwargs):
        """LayerNorm with its 1/σ frozen (recorded, then replayed): affine in ``x``."""
        if self.mode == "record":
            xf = x.astype(jnp.float32) if x.dtype == jnp.float16 else x
            var = jnp.var(xf, axis=-1, keepdims=True)
            self.rstds.append(jax.lax.rsqrt(var + module.epsilon))
            return next_fun(*args, **kwargs)
        rstd = self.rstds[self._i_rstd]
        self._i_rstd += 1
        y = (x - jnp.mean(x, axis=-1, keepdims=True)) * rstd
        params = module.variables.get("params", {})
        if "scale" in params:
            y = y * params["scale"]
        if "bias" in params:
            y = y + params["bias"]
        return y.astype(x.dtype)

    @contextlib.contextmanager
    def frozen_softmax(self):
        """``jax.nn.softmax`` (attention patterns) recorded, then replayed as constants."""
        if "attention" not in self.freeze or self.mode == "splice":
            yield
            return
        orig = jax.nn.softmax

        def softmax(x, axis=-1, **kw):
            if self.mode == "record":
                out = orig(x, axis=axis, **kw)
                self.patterns.append(out)
                return out
            out = self.patterns[self._i_pat]
            self._i_pat += 1
            return out

        with mock.patch.object(jax.nn, "softmax", softmax):
            yield

    def run(self, fn):
        self._i_pat = self._i_rstd = 0
        self.pres = []
        with self.frozen_softmax(), nn.intercept_methods(self.interceptor):
            return fn()


def _as_model_fn(model) -> Callable:
    """``(params, tokens[1, pos]) -> output``: a linen Module's ``apply`` or an HF Flax model's
    call (``.logits``), or a callable as is."""
    if isinstance(model, nn.Module):
        return lambda p, t: model.apply(p, t)
    if is_hf_model(model):
        return lambda p, t: model(t, params=p).logits
    if callable(model):
        return model
    raise TypeError(f"attribution: cannot call model {type(model).__name__}")


def _last_logits(out) -> jax.Array:
    """The logits the target reads: the last position of ``[1, pos, V]``, or ``[1, C]``."""
    out = getattr(out, "logits", out)
    if out.ndim == 3:
        return out[0, -1]
    if out.ndim == 2:
        return out[0]
    return out


class ReplacementModel:
    """The model with ``dictionaries`` spliced in, recorded once at ``tokens`` (``[pos]`` ids).

    Attributes after construction: ``leaves`` (:class:`Leaves`, the recorded values), ``x`` (each
    dictionary's input ``[pos, d_in]``), ``logits`` (the original model's target logits),
    ``layers`` (the dictionaries in call order). Methods: :meth:`forward` (the frozen model as a
    function of the leaves → per-layer pre-activations and the logits) and :meth:`linear` (the
    frozen model with each feature's activation computed from its pre-activation by its frozen
    gain: the end-to-end linear model the graph's paths decompose).
    """

    def __init__(
        self,
        model,
        params,
        tokens,
        dictionaries: Sequence[Dictionary],
        *,
        freeze: Sequence[str] = FREEZABLE,
        embed_site: str = "auto",
        logits_fn: Callable | None = None,
    ):
        bad = [f for f in freeze if f not in FREEZABLE]
        if bad:
            raise ValueError(f"attribution: freeze={bad} is not a subset of {FREEZABLE}")
        self.model_fn = _as_model_fn(model)
        self.params = params
        self.tokens = jnp.asarray(tokens)
        if self.tokens.ndim != 1:
            raise ValueError(
                f"attribution: tokens must be one prompt [pos], got {self.tokens.shape}"
            )
        self.logits_fn = logits_fn or _last_logits
        sites = _sites(dictionaries)
        eng = _Engine(sites, "record", freeze, embed_site)

        def record(params, tokens):  # traced once: the engine's lists fill with its values
            out = eng.run(lambda: self.model_fn(params, tokens[None]))
            return out, eng.rec, eng.patterns, eng.rstds

        out, eng.rec, eng.patterns, eng.rstds = jax.jit(record)(params, self.tokens)
        self.original_output = out
        self.logits = self.logits_fn(out)
        missing = [p for p in sites if p not in eng.order]
        if missing:
            raise ValueError(
                f"splice: no module at {missing} was called; check the site paths "
                "(jaxpr_semiring.flax_hooks.module_path names them)"
            )
        if "embed" not in eng.rec:
            raise ValueError("attribution: the model called no nn.Embed; set embed_site")
        self.layers = [sites[p].dictionary for p in eng.order]
        self.site_paths = list(eng.order)
        strip = lambda a: a[0]
        self.leaves = Leaves(
            embed=strip(eng.rec["embed"]),
            acts=[strip(a) for a in eng.rec["acts"]],
            errors=[strip(e) for e in eng.rec["errors"]],
        )
        self.x = [strip(x) for x in eng.rec["x"]]
        self.gains = [(a != 0).astype(a.dtype) for a in self.leaves["acts"]]
        self._engine = eng

    def _replay(self, mode, leaves: Leaves):
        eng = self._engine
        eng.mode, eng.leaves, eng.gains = mode, leaves, self.gains
        # call order of the sites is fixed by the recording; the layer list is reused
        try:
            out = eng.run(lambda: self.model_fn(self.params, self.tokens[None]))
            return list(eng.pres), self.logits_fn(out)
        finally:
            eng.mode = "record-done"

    def forward(self, leaves: Leaves) -> tuple[list, jax.Array]:
        """The frozen model: leaves → (per-layer pre-activations ``[pos, d_sae]``, logits)."""
        return self._replay("replay", leaves)

    def linear(self, embed, errors) -> tuple[list, jax.Array]:
        """The frozen model end to end (activations = gain · pre-activation)."""
        acts = [jnp.zeros_like(a) for a in self.leaves["acts"]]
        return self._replay("linear", Leaves(embed=embed, acts=acts, errors=list(errors)))
