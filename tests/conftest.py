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
# The suite compiles thousands of one-off programs on tiny inputs, and XLA's LLVM code
# generation is most of that time: the tests run with LLVM's optimizations off (IEEE float
# semantics are the same at every level; XLA's HLO passes, which decide fusion and layout,
# still run). JAXPR_SEMIRING_TEST_XLA_OPT=1 runs them with XLA's defaults, as users run.
if os.environ.get("JAXPR_SEMIRING_TEST_XLA_OPT") != "1":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        " --xla_llvm_disable_expensive_passes=true"
    ).strip()

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
