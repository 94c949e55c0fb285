import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

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
