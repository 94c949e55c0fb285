"""The command line on PyTorch checkpoint directories (the PyTorch bridge): ``flows``,
``top-path`` and ``--file`` data-set runs on a tiny random Qwen 3 from
examples/make_tiny_qwen3.py, with the same JSON schema as the Flax models; pickles refused;
a Llama 3.1 checkpoint (rope scaling, which FlaxLlama ignores) routed to the bridge, its target
value equal to the PyTorch model's."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

try:
    import torch
    import torchax  # noqa: F401
except ImportError:  # the Python 3.12 end: only the refusal without the extra runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="the torch extra is not installed")

from jaxpr_semiring import cli  # noqa: E402
from jaxpr_semiring.cli import loading  # noqa: E402
from jaxpr_semiring.cli.errors import UsageError  # noqa: E402
from jaxpr_semiring.models import torch_bridge  # noqa: E402

_EX = pathlib.Path(__file__).resolve().parents[1] / "examples" / "make_tiny_qwen3.py"
_spec = importlib.util.spec_from_file_location("make_tiny_qwen3", _EX)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

TEXT = "the keys to the cabinet are"
# the keys of a flows document (jaxpr_semiring.cli.commands.document), as for Flax models
DOC_KEYS = {"model", "architecture", "semiring", "target", "target_value", "tokens", "points"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_cli")
    # one layer each: the CLI's compiles, not the depth, are what is tested here
    return {
        f: tiny.build(str(root / f), f, seed=2, num_hidden_layers=1) for f in ("qwen3", "llama")
    }


def _run(capsys, *argv):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _torch_logit_diff(directory, text, a, b):
    loaded = loading.load(directory)
    ids = loaded.tokenizer(text).input_ids
    with torch.no_grad():
        logits = loaded.model.module(input_ids=torch.tensor([ids])).logits[0, -1]
    ia, ib = (loaded.tokenizer.convert_tokens_to_ids(t) for t in (a, b))
    return float(logits[ia] - logits[ib])


@needs_torch
def test_flows_top_path_and_file(ckpt, capsys, tmp_path):
    d = ckpt["qwen3"]
    out = tmp_path / "flows.json"
    rc, _, err = _run(capsys, "flows", d, "--text", TEXT, "--semiring", "real", "--json", out)
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert DOC_KEYS <= set(doc), set(doc)
    assert doc["architecture"] == "qwen3"
    assert [(p["layer"], p["point"]) for p in doc["points"]] == [(0, "attention"), (0, "mlp")]
    a, b = doc["target"].split(":", 1)[1].rsplit("@", 1)[0].split(",")
    assert doc["target_value"] == pytest.approx(_torch_logit_diff(d, TEXT, a, b), rel=1e-4)

    rc, text_out, err = _run(capsys, "top-path", d, "--text", TEXT, "--json", tmp_path / "p.json")
    assert rc == 0, err
    path = json.loads((tmp_path / "p.json").read_text())
    assert path["target_value"] == pytest.approx(doc["target_value"], rel=1e-5)

    src = tmp_path / "in.txt"
    src.write_text(TEXT + "\nthe author of the books is\n")
    rc, _, err = _run(
        capsys, "flows", d, "--file", src, "--out-dir", tmp_path / "o", "--no-progress"
    )
    assert rc == 0, err
    recs = [json.loads(x) for x in (tmp_path / "o" / "flows.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == [0, 1]
    assert DOC_KEYS <= set(recs[0])


@needs_torch
def test_llama_rope_scaling_loads_through_the_bridge(ckpt):
    loaded = loading.load(ckpt["llama"])
    assert loaded.backend == "torch" and isinstance(loaded.model, torch_bridge.TorchModel)
    assert loaded.model.config.rope_scaling["rope_type"] == "llama3"
    assert loaded.preset.name == "torch:llama" and loaded.kind == "causal"
    ids = np.asarray(loaded.tokenizer(TEXT).input_ids)
    with torch.no_grad():
        ref = loaded.model.module(input_ids=torch.tensor(ids[None].astype(np.int64))).logits
    np.testing.assert_allclose(loaded.model(ids[None]).logits, ref.numpy(), atol=2e-5)


@needs_torch
def test_pickles_are_refused_in_one_line(ckpt, capsys, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (d / f).write_bytes((pathlib.Path(ckpt["qwen3"]) / f).read_bytes())
    (d / "pytorch_model.bin").write_bytes(b"not read")
    rc, _, err = _run(capsys, "flows", d, "--text", TEXT)
    assert rc == 2 and err.strip().count("\n") == 0, err
    assert "pytorch_model.bin" in err and "safetensors" in err and "Traceback" not in err


def test_without_the_extra_a_bridge_checkpoint_is_refused(monkeypatch, tmp_path):
    """A Qwen 3 directory (no Flax class) without torch/torchax: one line naming the extra."""
    import transformers

    def missing():
        raise ImportError("no torchax")

    monkeypatch.setattr(torch_bridge, "import_torchax", missing)
    kw = {k: v for k, v in tiny.FAMILIES["qwen3"][2].items()}
    transformers.Qwen3Config(**kw, vocab_size=300).save_pretrained(str(tmp_path))
    tiny.tokenizer().save_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match=r"no Flax .*pip install 'jaxpr_semiring\[torch\]'"):
        loading.load(str(tmp_path))
