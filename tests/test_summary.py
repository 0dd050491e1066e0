import jax
import jax.numpy as jnp
import pytest

from minitorch import nn
from minitorch.errors import ShapeError
from minitorch.summary import summary


def cnn():
    return nn.Net([nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm(8), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Flatten(), nn.Net([nn.Linear(128, 32), nn.ReLU()]), nn.Linear(32, 10)])


def test_rows_shapes_counts_and_totals():
    s = summary(cnn(), (1, 8, 8), batch_size=4)
    assert [r.index for r in s.rows] == ["0", "1", "2", "3", "4", "5", "5.0", "5.1", "6"]
    assert [r.layer for r in s.rows] == ["Conv2D", "BatchNorm", "ReLU", "MaxPool2D", "Flatten",
                                         "Net", "Linear", "ReLU", "Linear"]
    assert [r.output_shape for r in s.rows] == [(4, 8, 8, 8), (4, 8, 8, 8), (4, 8, 8, 8),
                                                (4, 8, 4, 4), (4, 128), (4, 32), (4, 32),
                                                (4, 32), (4, 10)]
    # A container's row counts its own params (none): the rows add up to the total.
    assert [r.params for r in s.rows] == [80, 16, 0, 0, 0, 0, 128 * 32 + 32, 0, 330]
    real = nn.count_params(cnn().init(jax.random.key(0)))
    assert s.total_params == real
    assert s.total_bytes == 4 * real


def test_printable_table():
    text = str(summary(cnn(), (1, 8, 8)))
    assert "index" in text and "output shape" in text
    assert "(N, 8, 4, 4)" in text and "Linear" in text
    assert f"total: {nn.count_params(cnn().init(jax.random.key(0))):,} params" in text



def test_huge_net_is_instant():
    s = summary(nn.Net([nn.Linear(50_000, 50_000), nn.ReLU(), nn.Linear(50_000, 10)]),
                (50_000,))  # 10 GB of params if they were made
    assert s.total_params == 50_000 * 50_000 + 50_000 + 50_000 * 10 + 10


def test_bfloat16_params_count_two_bytes():
    s = summary(nn.Net([nn.Linear(4, 3, dtype=jnp.bfloat16)]), (4,), dtype=jnp.bfloat16)
    assert s.total_bytes == 2 * (4 * 3 + 3)


def test_shape_mismatch_names_the_layer_as_the_core_does():
    net = nn.Net([nn.Linear(4, 8), nn.Net([nn.ReLU(), nn.Linear(6, 2)])])
    with pytest.raises(ShapeError, match=r"^layer 1 \(Net\) > layer 1 \(Linear\): expected "
                                         r"input of shape \(\.\.\., 6\), received \(1, 8\)$"):
        summary(net, (4,))
