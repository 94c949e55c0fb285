"""The command line's persistent compilation cache (jaxpr_semiring.cli.cache) and its --profile
lines (jaxpr_semiring.cli.profile): where the cache lives (XDG, the switches that turn it off,
a directory JAX was already given), that a second process reads back what the first wrote —
an executable with the numba FFI kernel included — and gets the same numbers, and that
--profile / --no-cache change nothing but stderr. The user's own cache directory is never
touched: subprocesses get a temporary XDG_CACHE_HOME, in-process runs keep the test cache
(tests/conftest.py)."""

import json
import os
import subprocess
import sys

import jax
import pytest

import family_checkpoints as fc
from jaxpr_semiring.cli import cache, profile
from jaxpr_semiring.cli import commands as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "env, platform, expected",
    [
        ({"XDG_CACHE_HOME": "/x/cache"}, "linux", "/x/cache/jaxpr_semiring/jax"),
        ({"XDG_CACHE_HOME": "relative/ignored"}, "linux", "~/.cache/jaxpr_semiring/jax"),
        ({}, "linux", "~/.cache/jaxpr_semiring/jax"),
        ({}, "darwin", "~/Library/Caches/jaxpr_semiring/jax"),
        ({"XDG_CACHE_HOME": "/x/cache"}, "darwin", "/x/cache/jaxpr_semiring/jax"),
    ],
)
def test_default_dir(env, platform, expected):
    assert cache.default_dir(env, platform) == os.path.expanduser(expected)


def test_resolve_switches():
    env = {"XDG_CACHE_HOME": "/x"}
    assert cache.resolve(False, env) == ("/x/jaxpr_semiring/jax", "default")
    assert cache.resolve(True, env) == (None, "--no-cache")
    for off in ("1", "true", "yes"):
        assert cache.resolve(False, {**env, cache.ENV_OFF: off})[0] is None
    for on in ("0", "", "false", "no"):
        assert cache.resolve(False, {**env, cache.ENV_OFF: on})[0] == "/x/jaxpr_semiring/jax"
    jax_dir = {**env, "JAX_COMPILATION_CACHE_DIR": "/y"}
    assert cache.resolve(False, jax_dir) == ("/y", "JAX_COMPILATION_CACHE_DIR")
    assert cache.resolve(False, {**jax_dir, cache.ENV_OFF: "1"})[0] is None
    assert cache.resolve(False, {**jax_dir, "JAX_ENABLE_COMPILATION_CACHE": "false"})[0] is None


def test_enabled_restores_settings():
    names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir")
    before = [getattr(jax.config, n) for n in names]
    with cache.enabled(no_cache=True) as d:
        assert d is None and jax.config.jax_enable_compilation_cache is False
    assert [getattr(jax.config, n) for n in names] == before


# Two fresh processes with one empty cache directory: the first compiles and writes, the second
# reads back (JAX's monitoring events count hits and misses) and computes the same numbers.
# The program is a max-product gradient big enough for the numba kernel, which runs through
# XLA's FFI when numba is installed: that executable must be cacheable.
_CHILD = """
import json, jax, jax.numpy as jnp, numpy as np
import jaxpr_semiring as js
from jaxpr_semiring.cli import cache, profile
from jaxpr_semiring.kernels import dispatch
profile.enable()
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 128)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(128, 128)), jnp.float32)
g = lambda x, w: js.semiring_grad(lambda x: jnp.sum(jnp.tanh(x @ w)), js.MaxProduct())(x)
with cache.enabled() as d:
    lowered = jax.jit(g).lower(x, w)
    out = lowered.compile()(x, w)
hits, misses = profile.cache_events()
print(json.dumps(dict(dir=d, hits=hits, misses=misses, kernel=dispatch.describe()["cpu"],
    ffi="jaxpr_semiring_" in lowered.as_text(), out=np.asarray(out.top_pos).tolist())))
"""


def _child(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "JAXPR_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache(tmp_path):
    first, second = _child(tmp_path), _child(tmp_path)
    where = str(tmp_path / "xdg" / "jaxpr_semiring" / "jax")
    assert first["dir"] == second["dir"] == where and os.listdir(where)
    assert first["hits"] == 0 and first["misses"] >= 1
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["out"] == first["out"]
    if first["kernel"] == "numba-ffi":  # numba installed: the FFI kernel is in the program
        assert first["ffi"] and second["ffi"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return fc.build("bert", str(tmp_path_factory.mktemp("ckpt") / "bert"))


def _flows(capsys, bert, tmp_path, *extra):
    out = tmp_path / "flows.json"
    argv = ["flows", bert, "--text", "The keys [MASK] here.", "--json", str(out), *extra]
    assert cli.main(argv) == 0
    return json.loads(out.read_text()), capsys.readouterr().err


def test_profile_changes_only_stderr(capsys, bert, tmp_path):
    plain, err = _flows(capsys, bert, tmp_path)
    assert "profile:" not in err
    profiled, err = _flows(capsys, bert, tmp_path, "--profile")
    assert profiled == plain
    lines = [ln.split()[1] for ln in err.splitlines() if ln.startswith("profile: ")]
    # in-process: no "import" phase (the process did not start for this command)
    assert lines == [
        *("load", "tokenize", "target", "trace", "lower", "compile", "run", "write"),
        *("total", "compilation"),
    ]
    test_cache = os.environ["JAX_COMPILATION_CACHE_DIR"]  # conftest's, not the user's
    assert f"profile: compilation cache {test_cache} (" in err
    with profile.phase("after"):  # main stopped recording when it returned
        pass
    assert "after" not in [name for name, _, _ in profile.phases()]


def test_no_cache_switch(capsys, tmp_path):
    test_cache = os.environ["JAX_COMPILATION_CACHE_DIR"]
    for extra, line in [((), f"cache {test_cache} ("), (("--no-cache",), "cache off")]:
        # an empty text stops the command before the model loads; the report still comes
        assert cli.main(["flows", str(tmp_path), "--text", " ", "--profile", *extra]) == 2
        assert f"profile: compilation {line}" in capsys.readouterr().err
        assert jax.config.jax_compilation_cache_dir == test_cache
        assert jax.config.jax_enable_compilation_cache
