"""Layers: immutable ``init``/``apply`` pairs, and ``Net`` to compose them."""

from minitorch.errors import (
    CacheError,
    DTypeError,
    ForwardError,
    KeyArgError,
    KeywordError,
    LayerError,
    ParamsError,
    PathError,
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
from minitorch.nn.attention import MultiHeadAttention
from minitorch.nn.compose import Parallel, Residual, Wrapper
from minitorch.nn.composite import Call, Composite, Param
from minitorch.nn.containers import Container, Net, count_params, intermediates
from minitorch.nn.conv import (
    Conv1D,
    Conv2D,
    Conv3D,
    ConvTranspose1D,
    ConvTranspose2D,
    ConvTranspose3D,
)
from minitorch.nn.core import Layer
from minitorch.nn.decoding import generate
from minitorch.nn.embedding import Embedding
from minitorch.nn.linear import Linear
from minitorch.nn.normalization import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from minitorch.nn.paths import named_layers
from minitorch.nn.pooling import (
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
)
from minitorch.nn.precision import MixedPrecision
from minitorch.nn.recurrent import GRU, LSTM, RNN
from minitorch.nn.regularization import Dropout
from minitorch.nn.remat import Remat
from minitorch.nn.repeat import Repeat
from minitorch.nn.reshape import Flatten, Reshape

__all__ = [
    "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNorm", "Call", "Composite", "Container",
    "Conv1D", "Conv2D", "CacheError", "Conv3D", "ConvTranspose1D", "ConvTranspose2D",
    "ConvTranspose3D", "DTypeError", "Dropout", "Embedding", "Flatten", "ForwardError", "GELU",
    "GRU", "GroupNorm", "KeyArgError", "KeywordError", "LSTM", "Layer", "LayerError",
    "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MaxPool1D", "MaxPool2D", "MaxPool3D",
    "MixedPrecision", "MultiHeadAttention", "Net", "PReLU", "Parallel", "Param", "ParamsError",
    "PathError", "RMSNorm", "RNN", "ReLU", "Remat", "Repeat", "Reshape", "Residual",
    "ShapeError", "Sigmoid", "Softmax", "StateError", "Tanh", "Wrapper", "count_params",
    "generate", "init", "intermediates", "named_layers",
]
