"""minitorch: a pure-functional neural-network library on JAX.

Layers are immutable ``init``/``apply`` pairs producing plain pytrees of arrays;
``nn.Net`` composes them; ``losses`` are pure functions; ``optim.sgd`` is an optax
transform; ``train`` builds compiled steps and ``fit`` runs epochs of them.

``minitorch.plot`` needs matplotlib (``pip install minitorch[plot]``) and is imported on
its own: ``from minitorch import plot``.
"""

from minitorch import (
    checkpoint,
    data,
    errors,
    explain,
    fit,
    losses,
    monitor,
    nn,
    optim,
    parallel,
    summary,
    train,
)

__version__ = "0.1.0"

__all__ = ["__version__", "checkpoint", "data", "errors", "explain", "fit", "losses",
           "monitor", "nn", "optim", "parallel", "summary", "train"]
