"""Load SAEs and transcoders saved by SAELens, sparsify and Gemma Scope as a :class:`Dictionary`.

Only ``.safetensors`` (the ``safetensors`` package, numpy API) and ``.npz`` (``np.load`` with
``allow_pickle=False``) are read; pickled checkpoints (``.pt``, ``.bin``…) are refused. Every
tensor's shape is checked against the config before use; a mismatch is a one-line
``LoaderError`` naming the file, the tensor, the expected and the found shape.

Formats (read from each library's source):

* **SAELens** folder: ``cfg.json`` + ``sae_weights.safetensors`` (``sae_lens/saes/*.py``,
  ``sae_lens/loading/pretrained_sae_loaders.py``). ``W_enc [d_in, d_sae]``, ``b_enc``,
  ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``; ``threshold [d_sae]`` (``jumprelu``,
  ``jumprelu_transcoder``: ``relu(pre) * (pre > threshold)``); ``k`` (``topk``); ``W_skip
  [d_out, d_in]`` (``skip_transcoder``, ``jumprelu_skip_transcoder``: ``+ x @ W_skip.T``).
  Checked against sae-lens 6.54.12's wheel. SAEs subtract ``b_dec`` from the
  input when ``apply_b_dec_to_input`` (default true); transcoders never do.
* **sparsify** folder: ``cfg.json`` + ``sae.safetensors`` (``sparsify/sparse_coder.py``,
  ``fused_encoder.py``): ``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``W_dec [d_sae,
  d_in]``, ``b_dec``, optional ``W_skip [d_in, d_in]`` (``+ x @ W_skip.T``); TopK of the
  ReLU'd pre-activations; an SAE (``transcode`` false) subtracts ``b_dec`` first. A trained
  run saves one subfolder per hookpoint (``layers.3``, ``layers.3.mlp``):
  :func:`load_sparsify_hookpoints`.
* **Gemma Scope**: ``params.npz`` with ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_out]``,
  ``b_enc``, ``b_dec``, ``threshold`` (JumpReLU; SAELens' ``gemma_2_sae_huggingface_loader``).
* **Gemma Scope 2**: ``params.safetensors`` with ``w_enc``, ``w_dec``, ``b_enc``, ``b_dec``,
  ``threshold`` and optionally ``affine_skip_connection [d_in, d_out]`` (``+ x @ skip``, as
  the Gemma Scope 2 tutorial's ``JumpReLUSAE``; SAELens' ``gemma_3_sae_huggingface_loader``
  stores its transpose as ``W_skip``). Hooks from the folder as that loader reads them:
  ``resid_post``, ``attn_out`` (→ ``attn.hook_z``), ``mlp_out``, ``transcoder`` (MLP in →
  out). Cross-layer transcoders (3-D ``w_enc``) are
  refused.

>>> import tempfile, json, numpy as np
>>> from safetensors.numpy import save_file
>>> folder = tempfile.mkdtemp()
>>> rng = np.random.default_rng(0)
>>> w = {"W_enc": rng.normal(size=(4, 6)), "b_enc": np.zeros(6), "W_dec": rng.normal(size=(6, 4)),
...      "b_dec": np.zeros(4)}
>>> save_file({k: v.astype(np.float32) for k, v in w.items()}, folder + "/sae_weights.safetensors")
>>> cfg = {"architecture": "standard", "d_in": 4, "d_sae": 6,
...        "metadata": {"hook_name": "blocks.0.hook_resid_post"}}
>>> _ = open(folder + "/cfg.json", "w").write(json.dumps(cfg))
>>> d = load_dictionary(folder, model="gpt2")
>>> d.d_sae, d.site
(6, 'h/0:out')
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from .dictionary import Dictionary
from .sites import resolve

__all__ = [
    "LoaderError",
    "load_dictionary",
    "load_saelens",
    "load_sparsify",
    "load_sparsify_hookpoints",
    "load_gemma_scope",
    "load_gemma_scope_2",
    "SAELENS_ARCHITECTURES",
]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
SAELENS_ARCHITECTURES = (
    "standard",
    "jumprelu",
    "topk",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
)


class LoaderError(ValueError):
    """A file that cannot be loaded as a dictionary; the message is one line with the fix."""


# -- reading ------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # an extra, not a core dependency
        raise LoaderError(
            f"{path}: reading .safetensors needs the 'safetensors' package: "
            'pip install "jaxpr_semiring[features]"'
        ) from e
    try:
        return load_file(str(path))
    except Exception as e:
        raise LoaderError(f"{path}: not a readable safetensors file ({e})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise LoaderError(f"{path}: an array in it needs pickle, which is never loaded ({e})")
    except Exception as e:
        raise LoaderError(f"{path}: not a readable .npz file ({e})") from None


def _read_json(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except Exception as e:
        raise LoaderError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise LoaderError(f"{path}: the config is not a JSON object")
    return cfg


def _array(x: np.ndarray, dtype) -> Any:
    # float32 by default, float64 under jax_enable_x64 (bf16/fp16 files are upcast)
    return jnp.asarray(
        np.asarray(x, dtype=np.float64 if x.dtype == np.float64 else np.float32),
        dtype=dtype or jnp.result_type(float),
    )


def _take(tensors, name, shape, file, layout, *, optional=False, transposed_hint=True):
    """The tensor ``name`` with the expected shape, or a one-line error."""
    if name not in tensors:
        if optional:
            return None
        raise LoaderError(
            f"{file}: tensor {name!r} is missing (found {sorted(tensors)}); "
            f"this format stores {name} as {layout}"
        )
    x = tensors[name]
    shape = tuple(shape)
    if tuple(x.shape) != shape:
        fix = ""
        if transposed_hint and len(shape) == 2 and tuple(x.shape) == shape[::-1]:
            fix = " — it looks transposed: save it in that orientation (transpose it)"
        raise LoaderError(
            f"{file}: tensor {name!r} has shape {tuple(x.shape)}, expected {shape} ({layout}){fix}"
        )
    return x


def _check_not_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoaderError(
            f"{path}: pickled checkpoints ({path.suffix}) are never loaded (they can run code); "
            "save the weights as .safetensors (safetensors.torch.save_file) or .npz"
        )


def _with_sites(d: Dictionary, site, out_site, model, prefix) -> Dictionary:
    import dataclasses

    changes = {}
    if site is not None:
        changes["site"] = site
    if out_site is not None:
        changes["out_site"] = out_site
    if changes:
        d = dataclasses.replace(d, **changes)
    return resolve(d, model, prefix=prefix) if model is not None else d


# -- SAELens ------------------------------------------------------------------------------


def _saelens_hook(cfg: dict, key: str) -> str | None:
    # 6.x: cfg["metadata"][...]; some 6.0 pre-releases: cfg["meta"]; before 6.0: top level
    # (hook_point before hook_name; handle_pre_6_0_config renames it)
    for where in (cfg.get("metadata"), cfg.get("meta"), cfg):
        if isinstance(where, dict):
            old = {"hook_name": "hook_point", "hook_head_index": "hook_point_head_index"}
            for k in (key, old.get(key, key)):
                if where.get(k) is not None and where.get(k) != "":
                    return where[k]
    return None


def _saelens_site(hook: str | None) -> str | None:
    """TransformerLens names stay as they are; SAELens on a plain HF model hooks the output of
    the named module (``model.layers.3``)."""
    if hook is None or hook.startswith(("blocks.", "hook_")) or ":" in hook:
        return hook
    return f"{hook}:out"


def load_saelens(
    path, *, site=None, out_site=None, model=None, prefix=None, norm_scaling_factor=None, dtype=None
) -> Dictionary:
    """An SAELens folder (``cfg.json`` + ``sae_weights.safetensors``) as a :class:`Dictionary`.

    ``normalize_activations``: ``"none"``; ``"expected_average_only_in"`` with
    ``norm_scaling_factor`` (SAELens folds the release's factor in at load time: input × s,
    output ÷ s; 1.0 if already folded); ``"constant_norm_rescale"`` and ``"layer_norm"`` (a
    per-token rescaling, not one constant) are refused. ``site``/``out_site`` override the
    config's ``hook_name``/``hook_name_out``; ``model`` places them (:func:`.sites.resolve`).
    """
    folder = Path(path)
    cfg_file, w_file = folder / "cfg.json", folder / "sae_weights.safetensors"
    cfg = _read_json(cfg_file)
    arch = cfg.get("architecture", "standard")  # pre-6.0 configs have none: standard
    act_fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "standard" and act_fn == "topk" and k:  # pre-6.0 topk (handle_pre_6_0_config)
        arch = "topk"
    elif arch == "standard" and act_fn not in ("relu", None):
        raise LoaderError(f"{cfg_file}: activation_fn {act_fn!r} is not supported (relu, topk)")
    if arch not in SAELENS_ARCHITECTURES:
        raise LoaderError(
            f"{cfg_file}: SAELens architecture {arch!r} is not supported; supported: "
            f"{', '.join(SAELENS_ARCHITECTURES)}"
        )
    if _saelens_hook(cfg, "hook_head_index") is not None:
        raise LoaderError(
            f"{cfg_file}: a per-head SAE (hook_head_index set) reads one head's slice, which "
            "has no module site here; use an SAE on all heads (attn.hook_z)"
        )
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise LoaderError(
            f"{cfg_file}: rescale_acts_by_decoder_norm=true is not supported; fold the decoder "
            "norms into W_enc/W_dec in SAELens (fold_W_dec_norm) and save again"
        )
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise LoaderError(f"{cfg_file}: needs integer d_in and d_sae") from None
    transcoder = "transcoder" in arch
    d_out = int(cfg.get("d_out", d_in)) if transcoder else d_in

    norm = cfg.get("normalize_activations") or "none"
    if norm is True:  # pre-6.0 boolean (handle_pre_6_0_config)
        norm = "expected_average_only_in"
    input_scale = None
    if norm == "expected_average_only_in":
        if norm_scaling_factor is None:
            raise LoaderError(
                f"{cfg_file}: normalize_activations='expected_average_only_in' needs the "
                "release's scaling factor: pass norm_scaling_factor=<s> (1.0 if it is folded in)"
            )
        input_scale = float(norm_scaling_factor)
    elif norm != "none":
        raise LoaderError(
            f"{cfg_file}: normalize_activations={norm!r} rescales each token by its own norm, "
            "which a Dictionary (one constant input_scale) cannot express; supported: none, "
            "expected_average_only_in"
        )
    if transcoder and input_scale is not None:
        raise LoaderError(f"{cfg_file}: activation normalisation on a transcoder is not supported")

    t = _read_safetensors(w_file)
    sf = t.get("scaling_factor", t.get("finetuning_scaling_factor"))
    if sf is not None and not np.allclose(sf, 1.0):  # read_sae_components_from_disk drops 1s
        raise LoaderError(f"{w_file}: a finetuning scaling_factor other than 1 is not supported")
    W_enc = _take(t, "W_enc", (d_in, d_sae), w_file, "[d_in, d_sae]")
    b_enc = _take(t, "b_enc", (d_sae,), w_file, "[d_sae]")
    W_dec = _take(t, "W_dec", (d_sae, d_out), w_file, "[d_sae, d_out]")
    b_dec = _take(t, "b_dec", (d_out,), w_file, "[d_out]")
    kw: dict[str, Any] = {}
    if arch.startswith("jumprelu"):
        kw["activation"] = "jumprelu"
        th = _take(t, "threshold", (d_sae,), w_file, "[d_sae]", optional=True)
        if th is None:  # a training checkpoint (TrainingJumpReLU*: threshold = exp(log_threshold))
            th = np.exp(_take(t, "log_threshold", (d_sae,), w_file, "[d_sae] (or threshold)"))
        kw["threshold"] = _array(th, dtype)
    elif arch == "topk":
        if not k:
            raise LoaderError(f"{cfg_file}: a topk SAE needs k in its config")
        kw.update(activation="topk", k=int(k))
    if arch in ("skip_transcoder", "jumprelu_skip_transcoder"):
        kw["W_skip"] = _array(_take(t, "W_skip", (d_out, d_in), w_file, "[d_out, d_in]").T, dtype)
    d = Dictionary(
        W_enc=_array(W_enc, dtype),
        b_enc=_array(b_enc, dtype),
        W_dec=_array(W_dec, dtype),
        b_dec=_array(b_dec, dtype),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)) and not transcoder,
        input_scale=input_scale,
        kind="transcoder" if transcoder else "sae",
        site=_saelens_site(_saelens_hook(cfg, "hook_name")),
        out_site=_saelens_site(_saelens_hook(cfg, "hook_name_out")) if transcoder else None,
        **kw,
    )
    return _with_sites(d, site, out_site, model, prefix)


# -- sparsify -----------------------------------------------------------------------------


def load_sparsify(
    path, *, site=None, out_site=None, model=None, prefix=None, dtype=None
) -> Dictionary:
    """A sparsify folder (``cfg.json`` + ``sae.safetensors``) as a :class:`Dictionary`; the
    folder's name is the hookpoint (``layers.3``: an SAE on that module's output;
    ``layers.3.mlp`` with ``transcode``: reads its input, writes its output)."""
    folder = Path(path)
    cfg_file, w_file = folder / "cfg.json", folder / "sae.safetensors"
    cfg = _read_json(cfg_file)
    activation = cfg.get("activation", "topk")
    arch = cfg.get("architecture", "topk")
    if activation != "topk" or arch != "topk":
        raise LoaderError(
            f"{cfg_file}: sparsify activation {activation!r}/architecture {arch!r} is not "
            "supported (topk only)"
        )
    try:
        d_in, k = int(cfg["d_in"]), int(cfg["k"])
    except (KeyError, TypeError, ValueError):
        raise LoaderError(f"{cfg_file}: needs integer d_in and k") from None
    d_sae = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 32))
    transcode = bool(cfg.get("transcode", False))
    t = _read_safetensors(w_file)
    W = _take(t, "encoder.weight", (d_sae, d_in), w_file, "[d_sae, d_in] (torch Linear)")
    b = _take(t, "encoder.bias", (d_sae,), w_file, "[d_sae]")
    if "W_dec" not in t:
        raise LoaderError(
            f"{w_file}: no W_dec (saved with decoder=False); an encoder alone cannot be spliced"
        )
    W_dec = _take(t, "W_dec", (d_sae, d_in), w_file, "[d_sae, d_in]")
    b_dec = _take(t, "b_dec", (d_in,), w_file, "[d_in]")
    W_skip = _take(t, "W_skip", (d_in, d_in), w_file, "[d_in, d_in]", optional=True)
    if cfg.get("skip_connection") and W_skip is None:
        raise LoaderError(f"{w_file}: skip_connection is set but W_skip is missing")
    hook = folder.name if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", folder.name) else None
    d = Dictionary(
        W_enc=_array(W.T, dtype),
        b_enc=_array(b, dtype),
        W_dec=_array(W_dec, dtype),
        b_dec=_array(b_dec, dtype),
        activation="topk",
        k=k,
        W_skip=None if W_skip is None else _array(W_skip.T, dtype),  # torch: x @ W_skip.mT
        apply_b_dec_to_input=not transcode,
        kind="transcoder" if transcode else "sae",
        site=None if hook is None else f"{hook}:{'in' if transcode else 'out'}",
        out_site=f"{hook}:out" if hook is not None and transcode else None,
    )
    return _with_sites(d, site, out_site, model, prefix)


def load_sparsify_hookpoints(
    path, hookpoints=None, *, model=None, prefix=None, dtype=None
) -> dict[str, Dictionary]:
    """A sparsify run's folder (one subfolder per hookpoint) → ``{hookpoint: Dictionary}``, in
    natural order (``layers.2`` before ``layers.10``)."""
    folder = Path(path)
    found = [p.name for p in folder.iterdir() if (p / "cfg.json").is_file()]
    if hookpoints is None:
        hookpoints = found
    missing = sorted(set(hookpoints) - set(found))
    if missing:
        raise LoaderError(f"{folder}: no hookpoint folder(s) {missing}; found {sorted(found)}")
    key = lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]
    return {
        h: load_sparsify(folder / h, model=model, prefix=prefix, dtype=dtype)
        for h in sorted(hookpoints, key=key)
    }


# -- Gemma Scope --------------------------------------------------------------------------


def _gemma_scope_hooks(path: Path) -> tuple[str | None, str | None]:
    """TransformerLens hook names from a Gemma Scope path: the repository name
    (``gemma-scope-2b-pt-res|mlp|att|transcoders``) or a Gemma Scope 2 category folder
    (``resid_post``, ``mlp_out``, ``attn_out``, ``transcoder``) plus ``layer_L``."""
    text = str(path.resolve() if path.exists() else path)
    m = re.search(r"layer_(\d+)", text)
    if m is None:
        return ("hook_embed", None) if "embedding" in text else (None, None)
    L = m.group(1)
    parts = [p.lower() for p in Path(text).parts]
    tags = " ".join(parts)
    if "transcoder" in tags:
        return f"blocks.{L}.hook_mlp_in", f"blocks.{L}.hook_mlp_out"
    if re.search(r"(^|[-_ ])res($|[-_ ])|resid_post", tags):
        return f"blocks.{L}.hook_resid_post", None
    if re.search(r"(^|[-_ ])mlp($|[-_ ])|mlp_out", tags):
        return f"blocks.{L}.hook_mlp_out", None
    if re.search(r"(^|[-_ ])att($|[-_ ])|attn_out", tags):  # both attn.hook_z in SAELens
        return f"blocks.{L}.attn.hook_z", None
    return None, None


def _gemma_scope(t, file, keys, skip_key, site, out_site, model, prefix, dtype):
    W_enc = t.get(keys[0])
    if W_enc is None:
        raise LoaderError(f"{file}: tensor {keys[0]!r} is missing (found {sorted(t)})")
    if W_enc.ndim != 2:
        raise LoaderError(
            f"{file}: {keys[0]} has shape {W_enc.shape}: a cross-layer transcoder, not supported "
            "(one layer's SAE or transcoder only)"
        )
    b_enc = t.get("b_enc")
    d_sae = b_enc.shape[0] if b_enc is not None and b_enc.ndim == 1 else W_enc.shape[1]
    d_in = W_enc.shape[0] if W_enc.shape[1] == d_sae else W_enc.shape[1]
    W_enc = _take(t, keys[0], (d_in, d_sae), file, "[d_in, d_sae]")
    W_dec = t.get(keys[1])
    ok = W_dec is not None and W_dec.ndim == 2 and W_dec.shape[0] == d_sae
    d_out = W_dec.shape[1] if ok else d_in
    W_dec = _take(t, keys[1], (d_sae, d_out), file, "[d_sae, d_out]")
    b_enc = _take(t, "b_enc", (d_sae,), file, "[d_sae]")
    b_dec = _take(t, "b_dec", (d_out,), file, "[d_out]")
    th = _take(t, "threshold", (d_sae,), file, "[d_sae]")
    skip = _take(t, skip_key, (d_in, d_out), file, "[d_in, d_out]", optional=True)
    hook_in, hook_out = _gemma_scope_hooks(Path(file).parent)
    transcoder = skip is not None or hook_out is not None or d_out != d_in or out_site is not None
    d = Dictionary(
        W_enc=_array(W_enc, dtype),
        b_enc=_array(b_enc, dtype),
        W_dec=_array(W_dec, dtype),
        b_dec=_array(b_dec, dtype),
        activation="jumprelu",
        threshold=_array(th, dtype),
        W_skip=None if skip is None else _array(skip, dtype),
        kind="transcoder" if transcoder else "sae",
        site=hook_in,
        out_site=hook_out if transcoder else None,
    )
    return _with_sites(d, site, out_site, model, prefix)


def load_gemma_scope(
    path, *, site=None, out_site=None, model=None, prefix=None, dtype=None
) -> Dictionary:
    """Gemma Scope's ``params.npz`` (a file or its folder): a JumpReLU SAE, or a transcoder
    when the path says so (``…-transcoders/layer_L/…``: MLP input → MLP output). The hook is
    read from the path (``gemma-scope-2b-pt-res/layer_12/width_16k/…`` → resid_post of layer
    12); pass ``site`` when the path does not carry it."""
    file = Path(path)
    if file.is_dir():
        file = file / "params.npz"
    _check_not_pickle(file)
    t = {
        ("W_" + k[2:] if k.startswith("w_") else k): v for k, v in _read_npz(file).items()
    }  # lowercase w_ keys occur; SAELens' loader renames them the same way
    return _gemma_scope(t, file, ("W_enc", "W_dec"), "W_skip", site, out_site, model, prefix, dtype)


def load_gemma_scope_2(
    path, *, site=None, out_site=None, model=None, prefix=None, dtype=None
) -> Dictionary:
    """Gemma Scope 2's ``params.safetensors`` (a file or its folder): a JumpReLU SAE or, with
    ``affine_skip_connection`` or a ``transcoder`` folder, a transcoder. The hook is read from
    the category folder (``resid_post/layer_22_width_16k_l0_medium`` → resid_post of 22)."""
    file = Path(path)
    if file.is_dir():
        file = file / "params.safetensors"
    t = _read_safetensors(file)
    t = {k.lower() if k.lower() in ("w_enc", "w_dec") else k: v for k, v in t.items()}
    return _gemma_scope(
        t, file, ("w_enc", "w_dec"), "affine_skip_connection", site, out_site, model, prefix, dtype
    )


# -- any ----------------------------------------------------------------------------------


def load_dictionary(path, *, site=None, out_site=None, model=None, prefix=None, **kwargs):
    """Load an SAE/transcoder, detecting the format from the files (module docstring).

    Args:
      path: a folder (SAELens, sparsify, Gemma Scope) or a ``params.npz`` /
        ``params.safetensors`` file.
      site, out_site: override where it reads / writes (a site ``"path:in|out"`` or a hook
        name); default: the file's own hook names.
      model: a Hugging Face model, config or ``model_type`` string: hook names are placed on
        it (:func:`jaxpr_semiring.features.sites.resolve`); without it they stay as written.
      prefix: the base model's path in ``model`` (default: detected from ``model``).
      kwargs: format options (``norm_scaling_factor`` for SAELens, ``dtype``).
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise LoaderError(f"{p}: no such file or folder")
    _check_not_pickle(p)
    kw = dict(site=site, out_site=out_site, model=model, prefix=prefix, **kwargs)
    if p.is_file():
        if p.suffix == ".npz":
            return load_gemma_scope(p, **kw)
        if p.suffix == ".safetensors":
            if (p.parent / "cfg.json").exists():
                p = p.parent
            else:
                return load_gemma_scope_2(p, **kw)
        else:
            raise LoaderError(
                f"{p}: unknown file type {p.suffix!r}; expected a folder, params.npz or "
                "params.safetensors"
            )
    if (p / "cfg.json").exists() and (p / "sae_weights.safetensors").exists():
        return load_saelens(p, **kw)
    if (p / "cfg.json").exists() and (p / "sae.safetensors").exists():
        return load_sparsify(p, **kw)
    if (p / "params.npz").exists():
        return load_gemma_scope(p, **kw)
    if (p / "params.safetensors").exists():
        return load_gemma_scope_2(p, **kw)
    hookpoints = sorted(q.name for q in p.iterdir() if (q / "sae.safetensors").exists())
    if hookpoints:
        raise LoaderError(
            f"{p}: a sparsify run with {len(hookpoints)} hookpoints ({', '.join(hookpoints[:4])}"
            f"{'…' if len(hookpoints) > 4 else ''}); load one folder, or all with "
            "load_sparsify_hookpoints"
        )
    pickles = sorted(q.name for q in p.iterdir() if q.suffix.lower() in PICKLE_SUFFIXES)
    hint = f"; pickled files ({', '.join(pickles)}) are never loaded" if pickles else ""
    raise LoaderError(
        f"{p}: no known SAE format (cfg.json + sae_weights.safetensors: SAELens; cfg.json + "
        f"sae.safetensors: sparsify; params.npz: Gemma Scope; params.safetensors: Gemma Scope 2)"
        f"{hint}"
    )
