"""The command line loads Flax weights without transformers' random initialisation
(``cli/loading._flax_weights``): the parameters are exactly what ``from_pretrained`` (which
initialises at random first, then overwrites) gives, for safetensors written by PyTorch (the
MiniLM checkpoint: transformers' converter, fed the parameters' shapes) and for Flax msgpack
(``_do_init=False``), with the base-model prefix added or stripped as transformers does; a
checkpoint lacking weights is refused instead of filled at random."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest
import transformers
from flax.traverse_util import flatten_dict
from safetensors.numpy import load_file, save_file

from jaxpr_semiring.cli import loading
from jaxpr_semiring.cli.errors import UsageError

SAFE = dict(local_files_only=True, trust_remote_code=False)


@pytest.fixture(scope="module")
def minilm():
    d = loading.minilm_dir()
    return d, transformers.AutoConfig.from_pretrained(d, **SAFE)


def _flat(params):
    return {k: np.asarray(v) for k, v in flatten_dict(jax.device_get(params)).items()}


def _same(ours, theirs):
    a, b = _flat(ours), _flat(theirs)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg="/".join(k))


def _copy(d, tmp_path, rename=None):
    """MiniLM's directory with its PyTorch safetensors keys renamed by ``rename``."""
    out = tmp_path / "m"
    shutil.copytree(d, out)
    if rename:
        state = load_file(os.path.join(d, "model.safetensors"))
        save_file(
            {rename(k): v for k, v in state.items()},
            str(out / "model.safetensors"),
            metadata={"format": "pt"},
        )
    return str(out)


def _load(cls, d, config):
    return loading._flax_weights(cls, d, config, set(os.listdir(d)), SAFE)


def test_pytorch_safetensors_equal_from_pretrained(minilm):
    d, config = minilm
    assert loading._written_by_pytorch(os.path.join(d, "model.safetensors"))
    model, params = _load(transformers.FlaxBertModel, d, config)
    _same(params, transformers.FlaxBertModel.from_pretrained(d, **SAFE).params)
    assert model.required_params == set(flatten_dict(params))


def test_base_model_prefix_is_stripped(minilm, tmp_path):
    d = _copy(minilm[0], tmp_path, rename=lambda k: "bert." + k)  # a checkpoint with a head
    _, params = _load(transformers.FlaxBertModel, d, minilm[1])
    _same(params, transformers.FlaxBertModel.from_pretrained(d, **SAFE).params)


def test_a_head_missing_from_the_checkpoint_is_refused(minilm, tmp_path):
    d, config = minilm
    cls = transformers.FlaxBertForMaskedLM
    model, params = _load(cls, d, config)  # the base is put under "bert", the head is absent
    theirs = _flat(cls.from_pretrained(d, **SAFE).params)  # head at random
    ours = _flat(params)
    assert ours and all(k[0] == "bert" for k in ours)
    for k, v in ours.items():
        np.testing.assert_array_equal(v, theirs[k])
    assert any(k[0] == "cls" for k in model.required_params - set(ours))
    with pytest.raises(UsageError, match="lack parameters FlaxBertForMaskedLM needs"):
        loading._check_weights("m", model, params, "mlm")


def test_flax_msgpack_equals_from_pretrained(minilm, tmp_path):
    d, config = minilm
    model = transformers.FlaxBertModel.from_pretrained(d, **SAFE)
    out = str(tmp_path / "flax")
    model.save_pretrained(out)
    shutil.copy(os.path.join(d, "tokenizer.json"), out)
    assert "flax_model.msgpack" in os.listdir(out)
    _, params = _load(transformers.FlaxBertModel, out, config)
    _same(params, model.params)
    loaded = loading.load(out)  # the command line's loader on the same directory
    _same(loaded.params, model.params)


def test_a_wrong_shape_is_an_error(minilm, tmp_path):
    d, config = minilm
    state = load_file(os.path.join(d, "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[key] = state[key][:, :-1]
    out = _copy(d, tmp_path)
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UsageError, match="cannot load the model"):
        loading.load(out)
