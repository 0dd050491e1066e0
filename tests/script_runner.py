"""The child side of tests/forked.py's ``run_python``: runs a Python script in a forked
child as ``python SCRIPT ARGS`` would.

What differs from a fresh interpreter is only when the imports happened: the child's
environment is the one given, read after the fork (``XLA_FLAGS`` when the child starts its
JAX backend; the JAX options of ``JAX_OPTIONS``, which jax read once at import in the
server, applied through ``jax.config``), ``sys.argv`` and ``sys.path[0]`` are the
script's, and it runs as ``__main__``. Its exit status is the script's (``sys.exit(code)``;
1 on an exception; the signal's negative number when it kills itself).
"""

import os
import runpy
import sys

import jax
import optax  # noqa: F401  (imported once, in the fork server)
import sklearn.datasets  # noqa: F401

import minitorch.fit  # noqa: F401

# Boolean JAX options a test sets through the child's environment: the NaN check of the
# examples, the compilation cache switched off for a process that compiles on its own.
JAX_OPTIONS = {"JAX_DEBUG_NANS": ("jax_debug_nans", False),
               "JAX_ENABLE_COMPILATION_CACHE": ("jax_enable_compilation_cache", True)}


def run_script(script: str, args: list[str], environ: dict[str, str], stdout: str,
               stderr: str) -> None:
    """Run ``script`` with ``args`` and ``environ``, its output written to the two files."""
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(environ)
    for variable, (option, default) in JAX_OPTIONS.items():
        value = environ.get(variable)
        jax.config.update(option, default if value is None else value.lower() in ("1", "true"))
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")
