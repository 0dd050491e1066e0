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
from minitorch.nn.conv import Conv2D
from minitorch.nn.core import Layer, Net, count_params
from minitorch.nn.embedding import Embedding
from minitorch.nn.linear import Linear
from minitorch.nn.normalization import BatchNorm, LayerNorm
from minitorch.nn.pooling import AvgPool2D, MaxPool2D
from minitorch.nn.regularization import Dropout
from minitorch.nn.reshape import Flatten, Reshape

__all__ = [
    "AvgPool2D", "BatchNorm", "Conv2D", "DTypeError", "Dropout", "Embedding", "Flatten", "GELU",
    "KeyArgError", "Layer", "LayerError", "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax",
    "MaxPool2D", "Net", "PReLU", "ParamsError", "ReLU", "Reshape", "ShapeError", "Sigmoid",
    "Softmax", "StateError", "Tanh", "count_params", "init",
]
