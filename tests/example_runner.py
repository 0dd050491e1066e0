"""Helper for tests/test_examples.py: runs an example script in a forked child as
``python examples/SCRIPT ARGS`` would (see tests/forked.py).

What differs from a fresh interpreter is only when the imports happened: the child's
environment is the one given (``XLA_FLAGS`` and ``JAX_DEBUG_NANS`` included, both read
after the fork: XLA's flags when the child starts its backend, the NaN check through
``jax.config``), ``sys.argv`` and ``sys.path[0]`` are the script's, and it runs as
``__main__``. Its exit status is the script's (``sys.exit(code)``; 1 on an exception).
"""

import os
import runpy
import sys

import jax
import optax  # noqa: F401  (imported once, in the fork server)
import sklearn.datasets  # noqa: F401

import minitorch.fit  # noqa: F401


def run_example(script: str, args: list[str], environ: dict[str, str], stdout: str,
                stderr: str) -> None:
    """Run ``script`` with ``args`` and ``environ``, its output written to the two files."""
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(environ)
    jax.config.update("jax_debug_nans", environ.get("JAX_DEBUG_NANS", "") == "True")
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")
