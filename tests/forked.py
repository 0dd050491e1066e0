"""Child processes forked from one server per test process that has imported jax, minitorch,
optax and scikit-learn once (``multiprocessing``'s fork server): a child starts in
milliseconds instead of the ~3 s those imports take. The server never starts a JAX
backend, so every child starts its own, configured by its own environment.

Used where a test starts a process: the examples' runs, the scripts that train in a fresh
process (``run_python``, through ``tests/script_runner.py``) and the SIGKILLed checkpoint
writers (``tests/checkpoint_writer.py``).
"""

import multiprocessing
import os
import subprocess
import tempfile
from multiprocessing.context import ForkServerContext
from pathlib import Path

from tests import script_runner

# The modules the server imports before forking: the children's own, and through them
# jax, numpy, optax, minitorch and scikit-learn's datasets.
PRELOAD = ["tests.script_runner", "tests.checkpoint_writer"]


def context() -> ForkServerContext:
    """The fork-server context, its server importing ``PRELOAD`` when it starts."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def run_python(script: str | os.PathLike, *args: object, timeout: float = 600,
               **env_vars: str) -> subprocess.CompletedProcess:
    """``python script args`` in a forked child, with this process's environment less
    ``XLA_FLAGS`` (one CPU device, as a user runs it) plus ``env_vars``: the exit status
    (``-9`` for a SIGKILL), stdout and stderr. A child still running at ``timeout`` is
    killed."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = context().Process(target=script_runner.run_script, args=(
            str(script), [str(a) for a in args], {**env, **env_vars}, str(out), str(err)))
        child.start()
        child.join(timeout=timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
        return subprocess.CompletedProcess(str(script), child.exitcode, out.read_text(),
                                           err.read_text())
