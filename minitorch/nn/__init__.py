"""Layers: immutable ``init``/``apply`` pairs, and ``Net`` to compose them."""

from minitorch.errors import (
    DTypeError,
    KeyArgError,
    LayerError,
    ParamsError,
    ShapeError,
    StateError,
)
from minitorch.nn import init
from minitorch.nn.activations import (
                                      GELU,
                                      LeakyReLU,
                                      LogSoftmax,
                                      PReLU,
                                      ReLU,
                                      Sigmoid,
                                      Softmax,
                                      Tanh,
)
from minitorch.nn.compose import Composite, Parallel, Residual
from minitorch.nn.conv import Conv2D
from minitorch.nn.core import Container, Layer, Net, count_params, intermediates, named_layers
from minitorch.nn.embedding import Embedding
from minitorch.nn.linear import Linear
from minitorch.nn.normalization import BatchNorm, LayerNorm
from minitorch.nn.pooling import AvgPool2D, MaxPool2D
from minitorch.nn.regularization import Dropout
from minitorch.nn.reshape import Flatten, Reshape

__all__ = [
    "AvgPool2D", "BatchNorm", "Composite", "Container", "Conv2D", "DTypeError", "Dropout",
    "Embedding", "Flatten", "GELU", "KeyArgError", "Layer", "LayerError", "LayerNorm",
    "LeakyReLU", "Linear", "LogSoftmax", "MaxPool2D", "Net", "PReLU", "Parallel", "ParamsError",
    "ReLU", "Reshape", "Residual", "ShapeError", "Sigmoid", "Softmax", "StateError", "Tanh",
    "count_params", "init", "intermediates", "named_layers",
]
