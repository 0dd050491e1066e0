"""minitorch: a pure-functional neural-network library on JAX.

Layers are immutable ``init``/``apply`` pairs producing plain pytrees of arrays;
``nn.Net`` composes them; ``losses`` are pure functions; ``optim.sgd`` is an optax
transform. See ``DESIGN.md`` for the public contract.
"""

from minitorch import errors, losses, nn, optim

__version__ = "0.1.0"

__all__ = ["errors", "losses", "nn", "optim", "__version__"]
