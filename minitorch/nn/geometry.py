"""Window geometry of convolutions and pooling: output sizes, padding, axis names."""

from __future__ import annotations

from collections.abc import Sequence

from minitorch.errors import ArgumentError
from minitorch.validate import int_tuple, several


def conv_output_size(size: int, kernel: int, stride: int, dilation: int,
                     pad: tuple[int, int]) -> int:
    """Output length of a strided, dilated window over ``size`` padded by ``pad``."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def spatial_axes(n: int) -> tuple[str, ...]:
    """How shapes in errors name ``n`` spatial axes, as PyTorch's docs do: ``("L",)``,
    ``("H", "W")``, ``("D", "H", "W")``."""
    return ("L",) if n == 1 else ("D", "H", "W")[3 - n:] if n <= 3 else tuple(
        f"S{i}" for i in range(n))


Padding = int | tuple[int, ...] | str


def resolve_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int],
                    owner: str) -> tuple[tuple[int, int], ...]:
    """Explicit ``(before, after)`` pads per spatial axis.

    ``"same"`` gives ``ceil(size / stride)`` outputs, padding ``total // 2`` before and the
    rest after (as XLA and PyTorch do); ``"valid"`` pads nothing; an int, or one int per
    spatial axis, pads symmetrically.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in spatial)
        if padding == "same":
            pads = []
            for size, k, s, d in zip(spatial, kernel, stride, dilation):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ArgumentError(f"{owner}: padding must be an int, a pair, 'same' or 'valid', "
                         f"received {padding!r}")
    values = int_tuple(padding, len(spatial), 0)
    if values is None:
        raise ArgumentError(f"{owner}: padding must be a non-negative int, "
                         f"{several(len(spatial))}, 'same' or 'valid', received {padding!r}")
    return tuple((p, p) for p in values)
