"""Test setup: 8 virtual CPU devices, exact float32 matmuls and a compilation cache for the
run (all set before jax is imported), the ``cpu_only`` marker, and hypothesis profiles."""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Accelerator plugins: with one installed, JAX's default backend is the accelerator.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")
ON_ACCELERATOR = any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)

# Multi-device tests need several devices; on a CPU, XLA can split the host into 8. Only
# there: on an accelerator those tests are skipped (marked cpu_only). This must happen
# before the first `import jax` anywhere in the test process.
_flag = "--xla_force_host_platform_device_count=8"
if not ON_ACCELERATOR and _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
# Tests that compare values with NumPy or PyTorch need float32 matmuls computed in float32:
# on GPUs JAX may otherwise use TF32 (10-bit mantissa) for float32 matmuls and convolutions.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# One persistent compilation cache for the whole run, every program in it: the test workers
# and the subprocesses they start (examples, scripts) inherit it, so a program that several
# tests build again (a fresh closure of the same computation, the same eager op on another
# worker) compiles once. A directory of the run's own, removed at its end, unless the caller
# names one to keep (JAX_COMPILATION_CACHE_DIR). Measured: a quarter off the unit tests.
_CREATED_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CREATED_CACHE = tempfile.mkdtemp(prefix="minitorch-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CREATED_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

from hypothesis import settings  # noqa: E402

SLOW = Path(__file__).with_name("slow.txt")  # tests timed at 0.8 s or more: tests/update_slow.py


def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in tests/slow.txt ``slow`` (out of the fast tier); skip the
    ``cpu_only`` tests (8 virtual CPU devices, CPU-specific formulations) when JAX runs on
    an accelerator."""
    listed = {line for line in SLOW.read_text().splitlines() if line and line[0] != "#"}
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)
    import jax

    if jax.default_backend() == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only: needs the CPU backend, this run is on "
                                   f"{jax.default_backend()}")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)



def pytest_unconfigure(config):
    """The process that made the run's compilation cache (the xdist controller, whose
    workers inherit it, or a run without workers) removes it."""
    if _CREATED_CACHE is not None:
        shutil.rmtree(_CREATED_CACHE, ignore_errors=True)


settings.register_profile("default", deadline=None, max_examples=40)
settings.register_profile("ci", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
