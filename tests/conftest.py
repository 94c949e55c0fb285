import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Identical programs recur across test modules (the same tiny checkpoints; the CLI rebuilds
# its jitted function per test) and across runs: XLA's persistent compilation cache serves
# them from disk (keys include the JAX/XLA versions and the devices, so the two CI ends never
# share an entry; subprocess tests inherit the setting).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import contextlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@contextlib.contextmanager
def x64():
    """Temporarily enable float64 (jax_enable_x64)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def enable_x64():
    with x64():
        yield


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Each test module compiles many one-off programs; drop them so a worker's memory stays
    bounded over the whole run (CI has 24 GiB for two workers)."""
    yield
    jax.clear_caches()
