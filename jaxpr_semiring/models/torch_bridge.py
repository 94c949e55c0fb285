"""PyTorch Hugging Face models as JAX functions: any ``transformers`` PyTorch model becomes a
function of its parameters (a dict of JAX arrays, keyed as its ``state_dict``) and its inputs,
whose every equation carries the model's module path, layer index included
(``model/layers/3/self_attn/q_proj/...``).

The model's own ``forward`` runs on `torchax <https://github.com/google/torchax>`_ tensors
(each ATen operation becomes JAX operations), so there is no second implementation to drift
from the checkpoint's: rope scaling, soft-capping, sliding windows, q/k norms are whatever
``transformers`` computes. Torch forward hooks push one :func:`jax.named_scope` per module call
(the part of its dotted name below the calling module, so a ``ModuleList`` level such as
``layers/3`` is kept though a ``ModuleList`` is never called); torchax adds one scope per ATen
operation below it (``.../q_proj/linear/...``). Attention: :func:`load` picks the ``eager``
implementation (plain matmul + softmax, every family has it); SDPA is not used.

:class:`TorchModel` looks like a Hugging Face Flax model to the rest of the package (``config``,
``params``, ``model(input_ids, params=...)``), plus ``instrument_components`` (what
:func:`jaxpr_semiring.models.components.component_flows_fn` uses to tap branch points and
replace the embedding output), so component flows, top paths and the CLI work unchanged.

>>> import torch, transformers                                        # doctest: +SKIP
>>> m = TorchModel(transformers.LlamaForCausalLM(config))             # doctest: +SKIP
>>> out = m(jnp.array([[1, 2, 3]]))                                   # doctest: +SKIP
>>> out.logits.shape                                                  # doctest: +SKIP
(1, 3, 64)

Branch points are tapped under the names the component observer reads:

>>> BRANCH_TAG.format("mlp", 0)
'components:mlp#0'

Needs the ``torch`` extra (``pip install "jaxpr_semiring[torch]"``: a CPU ``torch`` and the
``torchax`` release it imports with).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..markers import tap

__all__ = ["TorchModel", "load", "import_torchax", "module_paths", "BRANCH_TAG"]

#: the tap name of a branch point (``point``, branch index), as
#: :class:`jaxpr_semiring.analyses.component_channels.ComponentObserver` reads it
BRANCH_TAG = "components:{}#{}"


def import_torchax():
    """``(torch, torchax)``; an ImportError naming the extra when they are not installed."""
    try:
        import torch

        with warnings.catch_warnings():  # its process-group registration warns on import
            warnings.simplefilter("ignore", UserWarning)
            import torchax
    except ImportError as e:
        raise ImportError(
            f"the PyTorch bridge needs torch and torchax ({e}): pip install "
            f"'jaxpr_semiring[torch]' (a CPU torch and the torchax release pinned there)."
        ) from None
    # torch.autocast(device_type="jax", enabled=False) (rotary embeddings) asks the backend
    # module for this; torchax releases after the pinned one define exactly this function.
    dm = getattr(torchax, "device_module", None)
    if dm is not None and not hasattr(dm, "get_amp_supported_dtype"):
        dm.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
    return torch, torchax


def module_paths(module) -> dict:
    """``{submodule: "model/layers/0/self_attn"}``: each submodule's dotted name as a path."""
    return {m: n.replace(".", "/") for n, m in module.named_modules()}


class _Instrument:
    """What one ``instrument_components`` context asks of the hooks."""

    def __init__(self, preset, points, embeddings, seen):
        first = preset.points[0]  # its first branch begins a layer: tapped to count layers
        self.layer_re = re.compile(r"(?:^|/)(?:" + preset.layers + r")(?=/|$)")
        self.emb_re = re.compile(r"(?:^|/)(?:" + preset.embeddings + r")$")
        self.branches = [
            (pt.name, i, b, re.compile(b.module))
            for pt in preset.points
            for i, b in enumerate(pt.branches)
            if pt.name in points or (points and (pt, i) == (first, 0))
        ]
        self.embeddings, self.seen, self.emb_calls = embeddings, seen, 0


class TorchModel:
    """A ``transformers`` PyTorch model as a JAX function (see the module docstring).

    ``params``: the ``state_dict`` as JAX arrays (tied weights appear under each name and are
    not re-tied: differentiate as you like). ``model(input_ids, params=None, **inputs)`` returns
    the model's outputs (a ``ModelOutput``) with JAX arrays; ``apply(params, *args, **kwargs)``
    is the same with the model's own argument order.
    """

    def __init__(self, module, config: Any = None):
        self.torch, torchax = import_torchax()
        self.module = module.eval()
        self.config = config if config is not None else getattr(module, "config", None)
        # its own environment: tensors made inside the model (``torch.tensor(...)``, Gemma's
        # normalizer) become JAX arrays too, instead of CPU tensors it cannot mix with them
        self.env = torchax.tensor.Environment(
            torchax.config.Configuration(use_torch_native_for_cpu_tensor=False)
        )
        self._t2j = torchax.tensor.t2j
        self._paths = module_paths(module)
        self._stack: list = []
        self._active = False
        self._inst: _Instrument | None = None
        self._params = self._buffers = None
        self.missing_keys: list = []
        sig = inspect.signature(module.forward).parameters
        self._fixed = {k: v for k, v in (("use_cache", False), ("return_dict", True)) if k in sig}
        types = getattr(self.config, "layer_types", None) or [
            "sliding_attention" if getattr(self.config, "sliding_window", None) else "full"
        ]
        self._layer_types = sorted(set(types))
        self._sliding = "sliding_attention" in self._layer_types and "attention_mask" in sig
        decoder = any(k in type(module).__name__ for k in ("CausalLM", "LMHead"))
        self._encoder = not decoder and "attention_mask" in sig
        for m in module.modules():
            m.register_forward_pre_hook(self._pre, with_kwargs=True)
            m.register_forward_hook(self._post)

    # -- the function
    @property
    def params(self) -> dict:
        """The parameters and persistent buffers, ``{state_dict name: jax array}``."""
        if self._params is None:
            sd = self.module.state_dict()
            self._params = {k: self._t2j(v.detach()) for k, v in sd.items()}
        return self._params

    def _constants(self) -> dict:
        """Non-persistent buffers (BERT's ``position_ids``, rotary ``inv_freq``): not in the
        ``state_dict``, so not parameters, but JAX arrays too (no CPU tensor meets a JAX one)."""
        if self._buffers is None:
            sd = self.module.state_dict()
            self._buffers = {k: self._t2j(v) for k, v in self.module.named_buffers() if k not in sd}
        return self._buffers

    def apply(self, params: dict, *args, **kwargs):
        """The model's outputs for JAX inputs (``args``/``kwargs`` as its ``forward`` takes)."""
        # NumPy inputs become JAX arrays (torchax converts those only)
        args, kwargs = jax.tree.map(
            lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, (args, kwargs)
        )
        kwargs = {**self._fixed, **kwargs}
        if self._sliding and "attention_mask" not in kwargs:
            kwargs["attention_mask"] = self._masks(_length(args, kwargs))
        elif self._encoder and "attention_mask" not in kwargs:
            # without a mask, BERT-style models look for padding in input_ids (a Python branch
            # on data, which no trace passes): every token is attended to
            kwargs["attention_mask"] = jnp.ones((1, _length(args, kwargs)), jnp.int32)
        states = {**self._constants(), **params}
        states, args, kwargs = self.env.j2t_iso((states, args, kwargs))
        self._active, self._stack = True, []
        try:
            with self.env, self.torch.no_grad():
                out = self.torch.func.functional_call(
                    self.module, states, tuple(args), kwargs, tie_weights=False
                )
        finally:
            while self._stack:  # an exception inside a module: close its scopes
                self._stack.pop()[1].close()
            self._active = False
        return self.env.t2j_iso(out)

    def __call__(self, input_ids=None, params: dict | None = None, **inputs):
        inputs = {k: v for k, v in inputs.items() if v is not None}
        if input_ids is not None:
            inputs["input_ids"] = input_ids
        return self.apply(self.params if params is None else params, **inputs)

    def _masks(self, length: int):
        """The attention masks for ``length`` tokens, made by ``transformers`` in plain torch:
        its sliding-window masks use ``torch.vmap``, which torchax tensors do not pass. One 4-D
        mask (every model takes one as is), or ``{layer type: mask}`` for mixed layers."""
        from transformers import masking_utils as mu

        torch = self.torch
        make = {
            "full_attention": mu.create_causal_mask,
            "sliding_attention": mu.create_sliding_window_causal_mask,
        }
        kw = dict(
            config=self.config,
            input_embeds=torch.zeros(1, length, 1, dtype=self.module.dtype),
            attention_mask=None,
            cache_position=torch.arange(length),
            past_key_values=None,
            position_ids=torch.arange(length)[None],
        )
        masks = {t: self._t2j(make[t](**kw)) for t in self._layer_types}
        return masks if len(masks) > 1 else next(iter(masks.values()))

    # -- component flows
    @property
    def default_preset(self):
        """The component preset of this model's family (:mod:`.torch_presets`)."""
        from .torch_presets import detect

        return detect(self.config)

    @contextlib.contextmanager
    def instrument_components(self, preset, points=(), embeddings=None, seen=None):
        """Context: tap the branch points of ``points`` of ``preset`` in every layer; the first
        call of the embedding module returns ``embeddings`` instead (if given), and its output
        is appended to ``seen`` (if given). The torch counterpart of
        :func:`jaxpr_semiring.analyses.component_channels.instrument`."""
        saved, self._inst = self._inst, _Instrument(preset, tuple(points), embeddings, seen)
        try:
            yield
        finally:
            self._inst = saved

    # -- hooks
    def _pre(self, mod, args, kwargs):
        if not self._active:
            return None
        full = self._paths.get(mod)
        scopes = contextlib.ExitStack()
        if full is not None:
            parent = next(
                (p for p, _ in reversed(self._stack) if p == "" or full.startswith(f"{p}/")),
                "",
            )
            rel = full[len(parent) :].lstrip("/")
            for seg in rel.split("/") if rel else ():
                scopes.enter_context(jax.named_scope(seg))
        self._stack.append((full, scopes))
        inst = self._inst
        if inst is None or full is None or not inst.branches:
            return None
        m = inst.layer_re.search(full)
        if m is None:
            return None
        rel = full[m.end() :].lstrip("/")
        args, changed = list(args), False
        for name, i, b, rx in inst.branches:
            if not rx.fullmatch(rel):
                continue
            tag = BRANCH_TAG.format(name, i)
            if isinstance(b.arg, int) and b.arg < len(args):
                args[b.arg] = self._tap(args[b.arg], tag)
                changed = True
                continue
            key = b.arg if isinstance(b.arg, str) else _param_name(mod, b.arg)
            if key in kwargs:
                kwargs = dict(kwargs, **{key: self._tap(kwargs[key], tag)})
                changed = True
        return (tuple(args), kwargs) if changed else None

    def _tap(self, x, tag):
        return self.env.j2t_iso(tap(self.env.t2j_iso(x), tag))

    def _post(self, mod, args, out):
        if not self._active:
            return None
        if self._stack:
            self._stack.pop()[1].close()
        inst, full = self._inst, self._paths.get(mod)
        if inst is None or full is None or inst.emb_calls or not inst.emb_re.search(full):
            return None
        inst.emb_calls += 1
        if inst.seen is not None:
            inst.seen.append(self.env.t2j_iso(out))
        return None if inst.embeddings is None else self.env.j2t_iso(inst.embeddings)


def _length(args, kwargs) -> int:
    """The number of tokens of the model's inputs."""
    x = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
    return int(x.shape[1])


def _param_name(mod, index: int) -> str | None:
    """The name of ``forward``'s positional parameter ``index`` (an argument passed by
    keyword, as ``transformers`` 5 passes ``hidden_states`` to its layers)."""
    names = [
        p.name
        for p in inspect.signature(mod.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return names[index] if index < len(names) else None


def load(directory: str, dtype: str = "float32") -> TorchModel:
    """A ``save_pretrained`` PyTorch checkpoint directory as a :class:`TorchModel`: safetensors
    only (``use_safetensors=True``: never unpickles), never code from the directory
    (``trust_remote_code=False``), never a download (``local_files_only=True``), eager
    attention, parameters cast to ``dtype`` (``"float32"`` by default; ``"auto"`` keeps the
    checkpoint's). The class is ``architectures[0]`` when ``transformers`` has it, else
    ``AutoModel``. ``model.missing_keys`` lists the parameters the checkpoint lacked (random).
    """
    torch, _ = import_torchax()
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    safe = dict(trust_remote_code=False, local_files_only=True)
    config = transformers.AutoConfig.from_pretrained(directory, **safe)
    arch = (getattr(config, "architectures", None) or [""])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        cls = transformers.AutoModel
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    module, info = cls.from_pretrained(
        directory,
        config=config,
        use_safetensors=True,
        attn_implementation="eager",
        dtype=torch_dtype,  # transformers >= 4.56 (and 5.x) spelling
        output_loading_info=True,
        **safe,
    )
    model = TorchModel(module)
    model.missing_keys = list(info.get("missing_keys", ()))
    return model
