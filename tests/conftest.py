"""Test setup: 8 virtual CPU devices (set before jax is imported) and hypothesis profiles."""

import os

# Multi-device tests need several devices; on CPU XLA can split the host into 8.
# This must happen before the first `import jax` anywhere in the test process.
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

from hypothesis import settings  # noqa: E402

settings.register_profile("default", deadline=None, max_examples=40)
settings.register_profile("ci", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
