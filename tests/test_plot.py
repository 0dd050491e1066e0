"""Every plot draws the data it is given (asserted on the figure's artists) and renders
headless to a PNG of the expected size."""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from minitorch import losses, monitor, nn, plot


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert len(data) > 2000, "suspiciously small PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


HISTORY = {"epoch": [0, 1, 2], "loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.5],
           "accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.4, 0.7, 0.85],
           "grad_norm/0": [1.0, 0.5, 0.2], "grad_norm/3": [0.3, 0.2, 0.1],
           "param_mean/0.W": [0.0, 0.01, 0.02], "param_var/0.W": [0.5, 0.51, 0.52]}


def net():
    return nn.Net([nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)])


def test_curves(tmp_path):
    figure = plot.curves(HISTORY, path=tmp_path / "c.png")
    assert png_size(tmp_path / "c.png") == (800, 350)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    train, val = figure.axes[0].lines
    np.testing.assert_array_equal(train.get_xdata(), HISTORY["epoch"])
    np.testing.assert_array_equal(train.get_ydata(), HISTORY["loss"])
    np.testing.assert_array_equal(val.get_ydata(), HISTORY["val_loss"])
    np.testing.assert_array_equal(figure.axes[1].lines[1].get_ydata(), HISTORY["val_accuracy"])


def test_grad_norms_and_param_stats(tmp_path):
    figure = plot.grad_norms(HISTORY, path=tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (640, 400)
    plotted = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].lines}
    assert plotted == {"layer 0": HISTORY["grad_norm/0"], "layer 3": HISTORY["grad_norm/3"]}
    figure = plot.param_stats(HISTORY, path=tmp_path / "p.png")
    assert png_size(tmp_path / "p.png") == (1000, 400)
    mean_ax, var_ax = figure.axes[:2]
    np.testing.assert_array_equal(mean_ax.lines[0].get_ydata(), HISTORY["param_mean/0.W"])
    np.testing.assert_array_equal(var_ax.lines[0].get_ydata(), HISTORY["param_var/0.W"])


def test_activation_heatmap(tmp_path):
    n = net()
    params = n.init(jax.random.key(0))
    outputs = monitor.capture(n, params, jnp.ones((1, 2)))
    figure = plot.activation_heatmap(outputs, path=tmp_path / "a.png")
    assert png_size(tmp_path / "a.png") == (800, 270)
    grid = figure.axes[0].images[0].get_array()
    for row, output in zip(grid, outputs.values()):   # one row per layer, NaN-padded
        flat = np.ravel(output)
        np.testing.assert_allclose(row[:flat.size], flat, rtol=1e-6)
        assert np.ma.getmaskarray(row[flat.size:]).all() or np.isnan(row[flat.size:]).all()


def test_grad_histograms(tmp_path):
    n = net()
    params = n.init(jax.random.key(0))
    grads = jax.grad(lambda p: losses.softmax_cross_entropy(
        n.apply(p, jnp.ones((4, 2))), jnp.array([0, 1, 2, 0])))(params)
    figure = plot.grad_histograms(grads, path=tmp_path / "h.png")
    assert png_size(tmp_path / "h.png") == (640, 260)
    assert [ax.get_title() for ax in figure.axes] == ["layer 0", "layer 2"]
    for ax, layer in zip(figure.axes, (0, 2)):   # every gradient entry in one bar
        counted = sum(patch.get_height() for patch in ax.patches)
        assert counted == sum(np.size(g) for g in jax.tree.leaves(grads[layer]))


def test_decision_boundary(tmp_path):
    n = net()
    params = n.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(30, 2))
    figure = plot.decision_boundary(lambda pts: n.apply(params, pts), x, np.arange(30) % 3,
                                    resolution=50, path=tmp_path / "d.png")
    assert png_size(tmp_path / "d.png") == (500, 500)
    points = figure.axes[0].collections[-1]       # the scatter of the data, coloured by class
    np.testing.assert_allclose(points.get_offsets(), x)
    np.testing.assert_array_equal(points.get_array(), np.arange(30) % 3)


def test_confusion_matrix(tmp_path):
    figure = plot.confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2], 3, path=tmp_path / "m.png")
    assert png_size(tmp_path / "m.png") == (400, 350)
    assert "75.00%" in figure.axes[0].get_title()
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(),
                                  [[1, 0, 0], [0, 0, 1], [0, 0, 2]])   # rows true, cols predicted


def test_relevance_grid(tmp_path):
    images = np.random.default_rng(0).uniform(size=(3, 1, 8, 8))
    figure = plot.relevance_grid(images, images - 0.5, titles=["a", "b", "c"],
                                 path=tmp_path / "r.png")
    assert png_size(tmp_path / "r.png") == (600, 420)
    axes = np.reshape(figure.axes, (2, 3))
    for k in range(3):
        np.testing.assert_allclose(axes[0, k].images[0].get_array(), images[k, 0], rtol=1e-6)
        np.testing.assert_allclose(axes[1, k].images[0].get_array(), images[k, 0] - 0.5,
                                   rtol=1e-6)
    assert [ax.get_title() for ax in axes[0]] == ["a", "b", "c"]
