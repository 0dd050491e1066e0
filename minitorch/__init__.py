"""minitorch: a pure-functional neural-network library on JAX.

Layers are immutable ``init``/``apply`` pairs producing plain pytrees of arrays;
``nn.Net`` composes them; ``losses`` are pure functions; ``optim.sgd`` is an optax
transform; ``train`` builds compiled steps and ``fit`` runs epochs of them.

``minitorch.plot`` needs matplotlib (``pip install minitorch[plot]``) and is imported on
its own: ``from minitorch import plot``.
"""

import importlib
from typing import Any

from minitorch import checkpoint, errors, losses, monitor, nn, optim, train
from minitorch.fit import EarlyStopping, fit  # the function: ``from minitorch import fit``

__version__ = "0.1.0"

# Imported on first use (``minitorch.explain`` or ``from minitorch import explain``): the
# training core above is what every program needs; these cost import time otherwise.
_ON_FIRST_USE = ("data", "datasets", "explain", "interop", "parallel", "summary")

__all__ = ["EarlyStopping", "__version__", "checkpoint", "data", "datasets", "errors", "explain",
           "fit", "interop", "losses", "monitor", "nn", "optim", "parallel", "summary", "train"]


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"minitorch.{name}")
    raise AttributeError(f"module 'minitorch' has no attribute {name!r}")
