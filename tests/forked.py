"""Child processes forked from one server per test process that has imported jax, minitorch,
optax and scikit-learn once (``multiprocessing``'s fork server): a child starts in
milliseconds instead of the ~3 s those imports take. The server never starts a JAX
backend, so every child starts its own, configured by its own environment.

Used where a test starts many processes: the examples' runs (``tests/example_runner.py``)
and the SIGKILLed checkpoint writers (``tests/checkpoint_writer.py``).
"""

import multiprocessing
from multiprocessing.context import ForkServerContext

# The modules the server imports before forking: the children's own, and through them
# jax, numpy, optax, minitorch and scikit-learn's datasets.
PRELOAD = ["tests.example_runner", "tests.checkpoint_writer"]


def context() -> ForkServerContext:
    """The fork-server context, its server importing ``PRELOAD`` when it starts."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver
