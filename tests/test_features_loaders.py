"""Loaders (jaxpr_semiring.features.loaders) and hook names (features.sites).

Each format is written here exactly as its library writes it (tensor names, orientation, config
keys), loaded, and compared with a direct numpy implementation of that library's forward
(SAELens' encode/decode, sparsify's fused TopK encoder and decoder, Gemma Scope's JumpReLU), not
with the Dictionary's own code. When sae-lens or sparsify is importable, files saved by the real
library are loaded and compared with its own torch forward (skipped otherwise)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxpr_semiring.features import loaders as L
from jaxpr_semiring.features import sites as S
from jaxpr_semiring.features.loaders import LoaderError, load_dictionary

D_IN, D_SAE, D_OUT, N = 6, 10, 5, 7
RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, N, D_IN)).astype(np.float32)


def f32(*shape, scale=1.0):
    return (scale * RNG.normal(size=shape)).astype(np.float32)


def relu(x):
    return np.maximum(x, 0.0)


def topk_np(pre, k):
    """torch.topk(pre, k) then ReLU on the values, scattered back (SAELens' TopK)."""
    idx = np.argsort(-pre, axis=-1, kind="stable")[..., :k]
    out = np.zeros_like(pre)
    np.put_along_axis(out, idx, relu(np.take_along_axis(pre, idx, -1)), -1)
    return out


def check(d, acts, recon, x=X):
    np.testing.assert_allclose(np.asarray(d.encode(x)), acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(d(x)), recon, rtol=1e-5, atol=1e-5)


def one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


# -- SAELens ------------------------------------------------------------------------------


def write_saelens(folder, arch, cfg_extra=None, tensors_extra=None, *, d_out=None, hook=True):
    """What SAE.save_model writes: cfg.json (6.x: metadata block) + sae_weights.safetensors."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d_out = d_out or D_IN
    sd = {
        "W_enc": f32(D_IN, D_SAE, scale=0.5),
        "b_enc": f32(D_SAE, scale=0.2),
        "W_dec": f32(D_SAE, d_out, scale=0.5),
        "b_dec": f32(d_out, scale=0.3),
        **(tensors_extra or {}),
    }
    save_file(sd, str(folder / "sae_weights.safetensors"))
    cfg = {
        "architecture": arch,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.1.hook_resid_post" if hook else None},
    }
    if "transcoder" in arch:
        cfg.update(d_out=d_out)
        cfg["metadata"].update(
            hook_name="blocks.1.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out"
        )
    cfg.update(cfg_extra or {})
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return sd, cfg


def saelens_np(sd, cfg, x):
    """SAELens' forward: process_sae_in (b_dec subtracted for SAEs), W_enc, activation, W_dec."""
    arch = cfg.get("architecture", "standard")
    tc = "transcoder" in arch
    sae_in = x - sd["b_dec"] if cfg.get("apply_b_dec_to_input", True) and not tc else x
    pre = sae_in @ sd["W_enc"] + sd["b_enc"]
    if "jumprelu" in arch:
        acts = relu(pre) * (pre > sd["threshold"])
    elif arch == "topk" or cfg.get("activation_fn") == "topk":
        acts = topk_np(pre, cfg.get("k") or cfg["activation_fn_kwargs"]["k"])
    else:
        acts = relu(pre)
    out = acts @ sd["W_dec"] + sd["b_dec"]
    if "W_skip" in sd:
        out = out + x @ sd["W_skip"].T
    return acts, out


SAELENS_CASES = {
    "standard": ("standard", {}, {}, None),
    "standard_no_b_dec_in": ("standard", {"apply_b_dec_to_input": False}, {}, None),
    "jumprelu": ("jumprelu", {}, {"threshold": np.abs(f32(D_SAE, scale=0.3))}, None),
    "topk": ("topk", {"k": 3}, {}, None),
    "transcoder": ("transcoder", {}, {}, D_OUT),
    "jumprelu_transcoder": ("jumprelu_transcoder", {}, {"threshold": np.abs(f32(D_SAE))}, D_OUT),
    "skip_transcoder": ("skip_transcoder", {}, {"W_skip": f32(D_OUT, D_IN)}, D_OUT),
    "jumprelu_skip_transcoder": (
        "jumprelu_skip_transcoder",
        {},
        {"W_skip": f32(D_OUT, D_IN), "threshold": np.abs(f32(D_SAE))},
        D_OUT,
    ),
}


@pytest.mark.parametrize("case", sorted(SAELENS_CASES))
def test_saelens_round_trip(tmp_path, case):
    arch, cfg_extra, extra, d_out = SAELENS_CASES[case]
    sd, cfg = write_saelens(tmp_path / case, arch, cfg_extra, extra, d_out=d_out)
    d = load_dictionary(tmp_path / case)
    check(d, *saelens_np(sd, cfg, X))
    assert d.kind == ("transcoder" if "transcoder" in arch else "sae")
    if d.kind == "sae":
        assert d.site == "blocks.1.hook_resid_post" and d.out_site is None
    else:
        assert (d.site, d.out_site) == ("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out")
        placed = load_dictionary(tmp_path / case, model="gpt2", prefix="transformer")
        assert (placed.site, placed.out_site) == (
            "transformer/h/1/mlp:in",
            "transformer/h/1/mlp:out",
        )


def test_saelens_pre_6_config_and_training_threshold(tmp_path):
    # before 6.0: no architecture, hook_point, activation_fn_kwargs.k (handle_pre_6_0_config)
    sd, _ = write_saelens(
        tmp_path / "a", "standard", {"activation_fn": "topk", "activation_fn_kwargs": {"k": 2}}
    )
    cfg = json.loads((tmp_path / "a/cfg.json").read_text())
    cfg.pop("architecture")
    cfg["hook_point"] = cfg.pop("metadata")["hook_name"]
    (tmp_path / "a/cfg.json").write_text(json.dumps(cfg))
    d = load_dictionary(tmp_path / "a")
    assert d.activation == "topk" and d.k == 2 and d.site == "blocks.1.hook_resid_post"
    check(d, *saelens_np(sd, cfg, X))
    # a training checkpoint stores log_threshold (TrainingJumpReLUSAE: threshold = exp of it)
    lt = f32(D_SAE, scale=0.3)
    sd, cfg = write_saelens(tmp_path / "b", "jumprelu", tensors_extra={"log_threshold": lt})
    check(load_dictionary(tmp_path / "b"), *saelens_np({**sd, "threshold": np.exp(lt)}, cfg, X))


def test_saelens_expected_average_only_in(tmp_path):
    sd, cfg = write_saelens(
        tmp_path, "standard", {"normalize_activations": "expected_average_only_in"}
    )
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path)
    one_line(e, "cfg.json", "norm_scaling_factor")
    s = 2.5
    d = load_dictionary(tmp_path, norm_scaling_factor=s)
    # SAELens' fold_activation_norm_scaling_factor: W_enc * s, W_dec / s, b_dec / s
    folded = {**sd, "W_enc": sd["W_enc"] * s, "W_dec": sd["W_dec"] / s, "b_dec": sd["b_dec"] / s}
    check(d, *saelens_np(folded, cfg, X))


@pytest.mark.parametrize(
    "cfg_extra, needles",
    [
        ({"architecture": "gated"}, ["gated", "supported: standard"]),
        ({"normalize_activations": "constant_norm_rescale"}, ["constant_norm_rescale"]),
        ({"normalize_activations": "layer_norm"}, ["layer_norm"]),
        ({"rescale_acts_by_decoder_norm": True}, ["rescale_acts_by_decoder_norm"]),
        ({"metadata": {"hook_name": "blocks.0.attn.hook_z", "hook_head_index": 3}}, ["per-head"]),
    ],
)
def test_saelens_refusals(tmp_path, cfg_extra, needles):
    write_saelens(tmp_path, "standard", cfg_extra)
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path)
    one_line(e, "cfg.json", *needles)


def test_shape_errors_name_file_tensor_and_fix(tmp_path):
    write_saelens(tmp_path / "t", "standard", tensors_extra={"W_enc": f32(D_SAE, D_IN)})
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "t")
    one_line(
        e,
        "sae_weights.safetensors",
        "'W_enc'",
        f"({D_SAE}, {D_IN})",
        f"({D_IN}, {D_SAE})",
        "transposed",
    )
    write_saelens(tmp_path / "w", "standard", tensors_extra={"b_dec": f32(D_IN + 1)})
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "w")
    one_line(e, "'b_dec'", f"({D_IN + 1},)", f"({D_IN},)")
    assert "transposed" not in str(e.value)


def test_pickle_and_unknown_files_refused(tmp_path):
    for name in ("sae.pt", "model.bin"):
        (tmp_path / name).write_bytes(b"\x80\x04not really")
        with pytest.raises(LoaderError) as e:
            load_dictionary(tmp_path / name)
        one_line(e, name, "never loaded", ".safetensors")
    with pytest.raises(LoaderError) as e:  # a folder of pickles only
        load_dictionary(tmp_path)
    one_line(e, "no known SAE format", "sae.pt")
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "nowhere")
    one_line(e, "nowhere", "no such file")
    np.savez(tmp_path / "params.npz", W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "params.npz")
    one_line(e, "params.npz", "pickle")


# -- sparsify -----------------------------------------------------------------------------


def write_sparsify(folder, *, transcode=False, skip=False, k=3, cfg_extra=None):
    """What SparseCoder.save_to_disk writes: save_model(self) + cfg.to_dict() with d_in."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {
        "encoder.weight": f32(D_SAE, D_IN, scale=0.5),
        "encoder.bias": f32(D_SAE, scale=0.2),
        "W_dec": f32(D_SAE, D_IN, scale=0.5),
        "b_dec": f32(D_IN, scale=0.3),
    }
    if skip:
        sd["W_skip"] = f32(D_IN, D_IN, scale=0.3)
    save_file(sd, str(folder / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": k,
        "multi_topk": False,
        "skip_connection": skip,
        "transcode": transcode,
        "d_in": D_IN,
        **(cfg_extra or {}),
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return sd, cfg


def sparsify_np(sd, cfg, x):
    """SparseCoder.forward: x - b_dec unless transcoding, relu(Linear), torch.topk, decoder_impl
    (sum of the chosen W_dec rows) + b_dec, + x @ W_skip.mT."""
    xin = x if cfg["transcode"] else x - sd["b_dec"]
    pre = relu(xin @ sd["encoder.weight"].T + sd["encoder.bias"])
    idx = np.argsort(-pre, axis=-1, kind="stable")[..., : cfg["k"]]
    vals = np.take_along_axis(pre, idx, -1)
    acts = np.zeros_like(pre)
    np.put_along_axis(acts, idx, vals, -1)
    out = np.einsum("...k,...kd->...d", vals, sd["W_dec"][idx]) + sd["b_dec"]
    if "W_skip" in sd:
        out = out + x @ sd["W_skip"].T
    return acts, out


@pytest.mark.parametrize("transcode, skip", [(False, False), (True, True), (True, False)])
def test_sparsify_round_trip(tmp_path, transcode, skip):
    hook = "layers.1.mlp" if transcode else "layers.1"
    sd, cfg = write_sparsify(tmp_path / hook, transcode=transcode, skip=skip)
    d = load_dictionary(tmp_path / hook)
    check(d, *sparsify_np(sd, cfg, X))
    if transcode:
        assert (d.kind, d.site, d.out_site) == ("transcoder", "layers.1.mlp:in", "layers.1.mlp:out")
    else:
        assert (d.kind, d.site, d.out_site) == ("sae", "layers.1:out", None)
    placed = load_dictionary(tmp_path / hook, model="llama", prefix="model")
    assert placed.site == ("model/layers/1/mlp:in" if transcode else "model/layers/1:out")


def test_sparsify_run_folder(tmp_path):
    for h in ("layers.10", "layers.2", "layers.2.mlp"):
        write_sparsify(tmp_path / h, transcode=h.endswith("mlp"))
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path)
    one_line(e, "3 hookpoints", "load_sparsify_hookpoints")
    got = L.load_sparsify_hookpoints(tmp_path, model="gpt2")
    assert list(got) == ["layers.2", "layers.2.mlp", "layers.10"]  # natural order
    assert got["layers.10"].site == "layers/10:out"
    with pytest.raises(LoaderError) as e:
        L.load_sparsify_hookpoints(tmp_path, ["layers.3"])
    one_line(e, "layers.3")


def test_sparsify_refusals(tmp_path):
    write_sparsify(tmp_path / "g", cfg_extra={"activation": "groupmax"})
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "g")
    one_line(e, "groupmax", "topk only")
    sd, _ = write_sparsify(tmp_path / "t")
    save_file(
        {**sd, "encoder.weight": sd["encoder.weight"].T.copy()}, str(tmp_path / "t/sae.safetensors")
    )
    with pytest.raises(LoaderError) as e:
        load_dictionary(tmp_path / "t")
    one_line(e, "'encoder.weight'", "transposed", f"({D_SAE}, {D_IN})")


# -- Gemma Scope --------------------------------------------------------------------------


def gemma_np(p, x, skip=None):
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = (pre > p["threshold"]) * relu(pre)  # the Gemma Scope tutorial's JumpReLUSAE
    out = acts @ p["W_dec"] + p["b_dec"]
    return acts, out if skip is None else out + x @ skip


def gemma_params(d_out=D_IN):
    return {
        "W_enc": f32(D_IN, D_SAE, scale=0.5),
        "W_dec": f32(D_SAE, d_out, scale=0.5),
        "b_enc": f32(D_SAE, scale=0.2),
        "b_dec": f32(d_out, scale=0.3),
        "threshold": np.abs(f32(D_SAE, scale=0.3)),
    }


def test_gemma_scope_npz(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_5"
    folder.mkdir(parents=True)
    p = gemma_params()
    np.savez(folder / "params.npz", **p)
    d = load_dictionary(folder)
    check(d, *gemma_np(p, X))
    assert (d.activation, d.kind, d.site) == ("jumprelu", "sae", "blocks.3.hook_resid_post")
    assert load_dictionary(folder / "params.npz", model="gemma", prefix="model").site == (
        "model/layers/3:out"
    )
    mlp = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_0" / "width_16k" / "x"
    mlp.mkdir(parents=True)
    np.savez(mlp / "params.npz", **p)
    assert load_dictionary(mlp).site == "blocks.0.hook_mlp_out"


def test_gemma_scope_2(tmp_path):
    folder = tmp_path / "transcoder" / "layer_2_width_16k_l0_small"
    folder.mkdir(parents=True)
    p = gemma_params(D_OUT)
    skip = f32(D_IN, D_OUT, scale=0.3)
    gs2 = {
        "w_enc": p["W_enc"],
        "w_dec": p["W_dec"],
        "b_enc": p["b_enc"],
        "b_dec": p["b_dec"],
        "threshold": p["threshold"],
        "affine_skip_connection": skip,
    }
    save_file(gs2, str(folder / "params.safetensors"))
    d = load_dictionary(folder)
    check(d, *gemma_np(p, X, skip))
    assert (d.kind, d.site, d.out_site) == (
        "transcoder",
        "blocks.2.hook_mlp_in",
        "blocks.2.hook_mlp_out",
    )
    sae = tmp_path / "resid_post" / "layer_4_width_16k_l0_medium"
    sae.mkdir(parents=True)
    q = gemma_params()
    save_file({k.lower(): v for k, v in q.items()}, str(sae / "params.safetensors"))
    d = load_dictionary(sae / "params.safetensors", site="model/layers/4:out")
    check(d, *gemma_np(q, X))
    assert (d.kind, d.site) == ("sae", "model/layers/4:out")
    # a cross-layer transcoder (3-D w_enc) is refused in one line
    clt = tmp_path / "clt" / "layer_0"
    clt.mkdir(parents=True)
    save_file({"w_enc": f32(2, D_IN, D_SAE)}, str(clt / "params.safetensors"))
    with pytest.raises(LoaderError) as e:
        load_dictionary(clt)
    one_line(e, "cross-layer")


# -- jit, vmap, dtype ---------------------------------------------------------------------


def test_loaded_dictionary_jits_and_vmaps(tmp_path):
    sd, cfg = write_sparsify(tmp_path / "layers.0", k=2)
    d = load_dictionary(tmp_path / "layers.0")
    want = sparsify_np(sd, cfg, X)[1]
    np.testing.assert_allclose(jax.jit(lambda d, x: d(x))(d, X), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(d)(X), want, rtol=1e-5, atol=1e-5)
    assert d.W_enc.dtype == jnp.float32
    d64 = load_dictionary(tmp_path / "layers.0", dtype=jnp.bfloat16)
    assert d64.W_dec.dtype == jnp.bfloat16


def test_topk_keeps_exactly_k_under_ties():
    from jaxpr_semiring.features.dictionary import Dictionary

    d = Dictionary(jnp.eye(4), jnp.zeros(4), jnp.eye(4), jnp.zeros(4), activation="topk", k=2)
    acts = np.asarray(d.encode(jnp.array([1.0, 1.0, 1.0, -1.0])))
    assert (acts > 0).sum() == 2 and acts.tolist() == [1.0, 1.0, 0.0, 0.0]


# -- sites --------------------------------------------------------------------------------

TL_HOOKS = [
    "hook_embed",
    "blocks.1.hook_resid_pre",
    "blocks.1.hook_resid_mid",
    "blocks.1.hook_resid_post",
    "blocks.1.hook_attn_out",
    "blocks.1.attn.hook_z",
    "blocks.1.hook_mlp_in",
    "blocks.1.ln2.hook_normalized",
    "blocks.1.mlp.hook_post",
    "blocks.1.hook_mlp_out",
]


def _built_with_paths(cls, config):
    """A HF Flax model built without parameters (``_do_init=False``: only its shapes are traced)
    and every module path its modules are called with during that trace
    (flax_hooks.module_path of each bound module)."""
    import flax.linen as nn

    from jaxpr_semiring.flax_hooks import module_path

    seen = set()

    def icpt(next_fun, args, kwargs, context):
        seen.add(module_path(context.module))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(icpt):
        model = cls(config, _do_init=False)
    return model, seen


@pytest.fixture(scope="module")
def hf_models():
    import transformers

    small = dict(vocab_size=11)
    gpt2 = transformers.GPT2Config(n_layer=2, n_embd=8, n_head=2, n_positions=8, **small)
    llama = transformers.LlamaConfig(
        num_hidden_layers=2,
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        **small,
    )
    bert = transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        max_position_embeddings=8,
        **small,
    )
    out = {}
    for cls, cfg in [
        (transformers.FlaxGPT2LMHeadModel, gpt2),
        (transformers.FlaxGPT2Model, gpt2),
        (transformers.FlaxLlamaForCausalLM, llama),
        (transformers.FlaxBertModel, bert),
    ]:
        out[cls.__name__] = _built_with_paths(cls, cfg)
    return out


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("FlaxGPT2LMHeadModel", "transformer"),
        ("FlaxGPT2Model", ""),
        ("FlaxLlamaForCausalLM", "model"),
        ("FlaxBertModel", ""),
    ],
)
def test_tl_hooks_land_on_modules_the_model_calls(hf_models, name, prefix):
    model, paths = hf_models[name]
    assert S.model_layout(model)[1] == prefix
    for hook in TL_HOOKS:
        site = S.to_site(hook, model=model)
        path, side = site.rsplit(":", 1)
        assert path in paths and side in ("in", "out"), (hook, site)


def test_site_table():
    t = lambda h, **kw: S.to_site(h, **kw)
    assert t("blocks.3.hook_resid_pre", model="gpt2") == "h/3:in"
    assert t("blocks.3.attn.hook_z", model="gpt2", prefix="transformer") == (
        "transformer/h/3/attn/c_proj:in"
    )
    assert t("blocks.2.hook_mlp_out", model="gemma2", prefix="model") == (
        "model/layers/2/post_feedforward_layernorm:out"
    )
    assert t("blocks.0.mlp.hook_post", model="mistral") == "layers/0/mlp/down_proj:in"
    assert t("blocks.0.hook_mlp_out", model="bert") == "encoder/layer/0/output/dense:out"
    # HF / sparsify module names (PyTorch-bridged models share the names)
    assert t("model.layers.3.mlp", model="llama", prefix="model", side="out") == (
        "model/layers/3/mlp:out"
    )
    assert t("h.3", model="gpt2", prefix="transformer", side="in") == "transformer/h/3:in"
    assert t("transformer/h/0:out", model="gpt2", prefix="transformer") == "transformer/h/0:out"
    for bad, needle in [
        (lambda: t("blocks.1.hook_q"), "known forms"),
        (lambda: t("blocks.1.hook_resid_post"), "model="),
        (lambda: t("layers.3", model="llama"), "side="),
        (lambda: t("blocks.1.hook_resid_post", model="t5"), "no hook-name table"),
    ]:
        with pytest.raises(ValueError) as e:
            bad()
        one_line(e, needle)


# -- the real libraries, when installed ---------------------------------------------------


def test_against_sae_lens(tmp_path):
    torch = pytest.importorskip("torch")
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(0)
    x = torch.tensor(X)
    tc = {"d_out": D_OUT, "apply_b_dec_to_input": False}  # 6.x refuses True on transcoders
    cases = [
        (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
        (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
        (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 3}),
        (sae_lens.Transcoder, sae_lens.TranscoderConfig, tc),
        (sae_lens.JumpReLUTranscoder, sae_lens.JumpReLUTranscoderConfig, tc),
        (sae_lens.SkipTranscoder, sae_lens.SkipTranscoderConfig, tc),
        (sae_lens.JumpReLUSkipTranscoder, sae_lens.JumpReLUSkipTranscoderConfig, tc),
    ]
    for cls, cfg_cls, kw in cases:
        cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw)
        cfg.metadata.hook_name = "blocks.1.hook_mlp_in"
        if "d_out" in kw:
            cfg.metadata.hook_name_out = "blocks.1.hook_mlp_out"
        sae = cls(cfg)
        with torch.no_grad():  # negative thresholds too: relu(pre) * (pre > threshold)
            for p in sae.parameters():
                p.copy_(0.3 * torch.randn_like(p) + (0.1 if p.ndim == 1 else 0.0))
        sae.save_model(tmp_path / cls.__name__)
        d = load_dictionary(tmp_path / cls.__name__, model="gpt2")
        assert d.site == "h/1/mlp:in" and d.out_site == ("h/1/mlp:out" if "d_out" in kw else None)
        with torch.no_grad():
            check(d, sae.encode(x).numpy(), sae(x).numpy())


def test_against_sparsify(tmp_path):
    torch = pytest.importorskip("torch")
    sparsify = pytest.importorskip("sparsify")
    torch.manual_seed(0)
    x = torch.tensor(X.reshape(-1, D_IN))
    for transcode, skip in [(False, False), (True, True)]:
        cfg = sparsify.SparseCoderConfig(
            num_latents=D_SAE, k=3, transcode=transcode, skip_connection=skip
        )
        sc = sparsify.SparseCoder(D_IN, cfg)
        with torch.no_grad():
            for p in sc.parameters():
                p.copy_(0.3 * torch.randn_like(p))
        folder = tmp_path / f"layers.0{'.mlp' if transcode else ''}"
        sc.save_to_disk(folder)
        d = load_dictionary(folder)
        with torch.no_grad():
            out = sc(x)
            acts = torch.zeros(x.shape[0], D_SAE).scatter(-1, out.latent_indices, out.latent_acts)
        check(d, acts.numpy(), out.sae_out.numpy(), x.numpy())
