"""The PyTorch bridge (jaxpr_semiring.models.torch_bridge) on tiny random checkpoints of the
modern families, saved with save_pretrained(safe_serialization=True) and loaded back:

* module paths, layer index included, on the equations;
* Real component flows ⊕ to the total at every branch point;
* the Real total at layer 0 == torch.autograd of the ORIGINAL PyTorch model w.r.t. that layer's
  input (a torch hook adds δ there): an oracle independent of torchax and of this package;
* Real flows at the embeddings == jax.grad of the bridged function;
* MaxProduct: the max over components == the total.

Grouped-query attention (2 k/v heads for 4 q heads), Llama 3.1 rope scaling, Gemma 2 soft-capping
and sliding windows, Qwen 3 q/k norms are in the configs (examples/make_tiny_qwen3.py).
"""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxpr_semiring import _compat  # noqa: E402
from jaxpr_semiring.models import targets, torch_bridge, torch_presets  # noqa: E402
from jaxpr_semiring.models.components import component_flows_fn, embedding_target  # noqa: E402
from jaxpr_semiring.semirings import MaxProduct, Real  # noqa: E402

_EX = pathlib.Path(__file__).resolve().parents[1] / "examples" / "make_tiny_qwen3.py"
_spec = importlib.util.spec_from_file_location("make_tiny_qwen3", _EX)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

IDS = np.array([0, 7, 12, 30, 9, 41], np.int32)
POS, A, B = 5, 3, 11
ARGS = (POS, A, B)
# families whose MaxProduct pass is also checked (the rest: Real and the torch oracle)
FIRST = ("llama", "qwen3", "gemma2", "gemma3_text")
FAMILIES = FIRST + ("mistral", "qwen2", "gemma", "phi3", "olmo2", "gpt2", "bert")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_ckpt")
    # one layer (compile time), but two for Gemma 2/3 (a sliding and a full attention layer)
    out = {f: tiny.build(str(root / f), f, seed=1, **_ONE_LAYER.get(f, {})) for f in FAMILIES}
    out["qwen3-2"] = tiny.build(str(root / "qwen3-2"), "qwen3", seed=1)
    return out


_ONE_LAYER = {f: {"num_hidden_layers": 1} for f in FAMILIES if f not in ("gemma2", "gemma3_text")}
_ONE_LAYER["gpt2"] = {"n_layer": 1}


def _layer0(module, preset):
    rx = re.compile(r"(?:^|\.)(?:" + preset.layers.replace("/", r"\.") + r")$")
    return next(m for n, m in module.named_modules() if rx.search(n))


def _torch_layer0_grad(module, preset):
    """d target / d (layer 0's input) of the PyTorch model itself, summed over hidden dims."""
    delta = {}

    def add_delta(mod, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        d = torch.zeros_like(x, requires_grad=True)
        delta["d"] = d
        if args:
            return (x + d,) + tuple(args[1:]), kwargs
        return args, dict(kwargs, hidden_states=x + d)

    h = _layer0(module, preset).register_forward_pre_hook(add_delta, with_kwargs=True)
    try:
        kw = {"use_cache": False} if "use_cache" in module.forward.__code__.co_varnames else {}
        logits = module(input_ids=torch.tensor(IDS[None].astype(np.int64)), **kw).logits
        (logits[0, POS, A] - logits[0, POS, B]).backward()
    finally:
        h.remove()
    return delta["d"].grad[0].sum(-1).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_family(checkpoints, family):
    m = torch_bridge.load(checkpoints[family])
    assert m.missing_keys == []
    preset = m.default_preset
    assert preset is torch_presets.detect(m.config)
    params, inputs = m.params, {"input_ids": IDS}

    with torch.no_grad():
        ref = m.module(input_ids=torch.tensor(IDS[None].astype(np.int64))).logits.numpy()

    cf = jax.jit(component_flows_fn(m, targets.logit_diff, Real(), heads=True))(
        params, inputs, *ARGS
    )
    np.testing.assert_allclose(cf.value, ref[0, POS, A] - ref[0, POS, B], rtol=1e-4, atol=1e-6)
    for p in cf.points:  # components ⊕ to the total
        np.testing.assert_allclose(p.flows.sum(-1), p.total, rtol=1e-4, atol=1e-6, err_msg=str(p))
    first = cf.points[0]
    assert (first.layer, first.point) == (0, "attention")
    kv = getattr(m.config, "num_key_value_heads", None)
    if kv is not None and family != "phi3":  # grouped-query attention: per k/v head channels
        assert sum(c.startswith("key.") for c in first.components) == kv
        assert sum(c.startswith("query.") for c in first.components) == (
            m.config.num_attention_heads
        )
    # oracle: torch.autograd of the original model w.r.t. layer 0's input
    np.testing.assert_allclose(
        first.total, _torch_layer0_grad(m.module, preset), rtol=2e-4, atol=1e-6
    )
    if family in ("llama", "qwen3"):  # (Gemma: the torch oracle above; compile time)
        # oracle: jax.grad of the bridged function at the embeddings
        f, e0 = embedding_target(m, params, inputs, targets.logit_diff, ARGS, preset)
        g = jax.jit(jax.grad(f))(e0)[0]
        np.testing.assert_allclose(cf.embeddings, g, rtol=2e-4, atol=1e-6)
    if family in FIRST:
        mp = jax.jit(component_flows_fn(m, targets.logit_diff, MaxProduct()))(params, inputs, *ARGS)
        for p in mp.points:
            np.testing.assert_allclose(
                p.flows.top_pos.max(-1), p.total.top_pos, rtol=1e-5, err_msg=str(p)
            )
        assert np.isfinite(mp.points[0].total.top_pos).all()


def test_scopes_name_every_module_call(checkpoints):
    m = torch_bridge.load(checkpoints["qwen3-2"])
    jx = jax.make_jaxpr(lambda p: m(jnp.asarray(IDS)[None], params=p).logits.sum())(m.params)
    paths = {_compat.name_stack(e) for e in jx.jaxpr.eqns}
    for mod in (
        "self_attn/q_proj",
        "self_attn/k_norm",
        "mlp/down_proj",
        "post_attention_layernorm",
    ):
        assert any(p.startswith(f"model/layers/1/{mod}/") for p in paths), mod
    assert not any(p.startswith("model/layers/1/model/") for p in paths)


def test_real_equals_grad_of_params(checkpoints):
    """The parameters are a differentiable pytree: jax.grad w.r.t. a weight == torch's."""
    m = torch_bridge.load(checkpoints["llama"])  # one layer
    name = "model.layers.0.self_attn.k_proj.weight"

    def loss(w):
        out = m(jnp.asarray(IDS)[None], params=dict(m.params, **{name: w})).logits
        return targets.logit_diff(type("O", (), {"logits": out})(), *ARGS)

    g = jax.jit(jax.grad(loss))(m.params[name])
    m.module.zero_grad()
    logits = m.module(input_ids=torch.tensor(IDS[None].astype(np.int64)), use_cache=False).logits
    (logits[0, POS, A] - logits[0, POS, B]).backward()
    ref = dict(m.module.named_parameters())[name].grad.numpy()
    np.testing.assert_allclose(g, ref, rtol=2e-4, atol=1e-7)


class _Bomb:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_weights_are_never_loaded(checkpoints, tmp_path):
    import pickle

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_bytes(
        (pathlib.Path(checkpoints["llama"]) / "config.json").read_bytes()
    )
    marker = tmp_path / "unpickled"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(str(marker))))
    with pytest.raises(OSError, match="model.safetensors"):
        torch_bridge.load(str(d))
    assert not marker.exists()


def test_phi3_with_grouped_heads_is_refused():
    cfg = tiny.model("phi3", num_key_value_heads=2).config
    with pytest.raises(torch_presets.UnsupportedModelError, match="k/v heads"):
        torch_presets.detect(cfg)


def test_bf16_checkpoint(tmp_path):
    """A bf16 checkpoint kept in bf16 (dtype="auto"): semiring values in float32, Real flows
    within 2 % (of the largest) of the same weights in float32."""
    d = str(tmp_path / "bf16")
    tiny.model("qwen3", seed=3, num_hidden_layers=1).to(torch.bfloat16).save_pretrained(
        d, safe_serialization=True
    )
    totals = {}
    for dtype in ("float32", "auto"):
        m = torch_bridge.load(d, dtype=dtype)
        cf = jax.jit(component_flows_fn(m, targets.logit_diff, Real()))(
            m.params, {"input_ids": IDS}, *ARGS
        )
        totals[dtype] = np.asarray(cf.points[0].total)
    assert m.params["model.embed_tokens.weight"].dtype == jnp.bfloat16
    assert totals["auto"].dtype == np.float32
    scale = np.abs(totals["float32"]).max()
    np.testing.assert_allclose(totals["auto"], totals["float32"], atol=0.02 * scale)
