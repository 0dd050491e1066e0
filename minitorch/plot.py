"""Plots of training and of what a net computes (matplotlib, headless).

Every function returns the ``matplotlib.figure.Figure`` and, given ``path``, also saves
it as a PNG. Figures are built with the object API on the Agg canvas: nothing opens a
window and no global pyplot state is touched, so they work on servers and in tests.
Install with ``pip install minitorch[plot]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from minitorch.nn.paths import param_groups

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("minitorch.plot needs matplotlib: pip install 'minitorch[plot]'") from err

History = dict[str, list[float]]


def _figure(width: float = 6.4, height: float = 4.0, dpi: int = 100) -> Figure:
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        figure.savefig(path, format="png")
    return figure


def _series(history: History, prefix: str) -> dict[str, list[float]]:
    """``{"0": [...], "3": [...]}`` for the history keys ``prefix/0``, ``prefix/3``."""
    return {key.split("/", 1)[1]: values for key, values in history.items()
            if key.startswith(prefix + "/")}


def curves(history: History, metrics: Sequence[str] = ("loss", "accuracy"), *,
           path: str | os.PathLike | None = None) -> Figure:
    """Training and validation curves per epoch, one panel per metric present."""
    present = [m for m in metrics if m in history]
    figure = _figure(4.0 * max(len(present), 1), 3.5)
    axes = figure.subplots(1, max(len(present), 1), squeeze=False)[0]
    epochs = history.get("epoch", list(range(len(history.get(present[0], [])) if present
                                              else 0)))
    for ax, metric in zip(axes, present):
        ax.plot(epochs, history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.legend()
    return _finish(figure, path)


def grad_norms(history: History, *, path: str | os.PathLike | None = None) -> Figure:
    """Each layer's gradient norm over training (a fit history with ``telemetry=True``)."""
    figure = _figure()
    ax = figure.subplots()
    for layer, values in _series(history, "grad_norm").items():
        ax.plot(values, label=f"layer {layer}")
    ax.set(xlabel="epoch", ylabel="gradient norm", yscale="log", title="gradient norm per layer")
    ax.legend(fontsize="small")
    return _finish(figure, path)


def param_stats(history: History, *, path: str | os.PathLike | None = None) -> Figure:
    """Mean and variance of every parameter array over training."""
    figure = _figure(10.0, 4.0)
    mean_ax, var_ax = figure.subplots(1, 2)
    for name, values in _series(history, "param_mean").items():
        mean_ax.plot(values, label=name)
    for name, values in _series(history, "param_var").items():
        var_ax.plot(values, label=name)
    mean_ax.set(xlabel="epoch", title="parameter mean")
    var_ax.set(xlabel="epoch", yscale="log", title="parameter variance")
    var_ax.legend(fontsize="x-small", ncol=2)
    return _finish(figure, path)


def activation_heatmap(outputs: Mapping[str, Any] | Sequence[Any], *,
                       names: Sequence[str] | None = None,
                       path: str | os.PathLike | None = None) -> Figure:
    """One sample's activations, one row per layer (each layer's output flattened).

    ``outputs``: per-layer outputs of one example, each of any shape: the ``{path: output}``
    of ``monitor.capture(net, params, x[:1])`` (rows named by path), or a sequence.
    """
    if isinstance(outputs, Mapping):
        names = names or [f"layer {p}" for p in outputs]
        outputs = list(outputs.values())
    flat = [np.ravel(np.asarray(o, np.float32)) for o in _flatten(outputs)]
    width = max(len(f) for f in flat)
    grid = np.full((len(flat), width), np.nan, np.float32)
    for i, f in enumerate(flat):
        grid[i, :len(f)] = f
    figure = _figure(8.0, 0.4 * len(flat) + 1.5)
    ax = figure.subplots()
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set(yticks=range(len(flat)), yticklabels=names or [f"layer {i}" for i in range(len(flat))],
           xlabel="unit", title="activations of one sample")
    figure.colorbar(image, ax=ax)
    return _finish(figure, path)


def _flatten(outputs: Any) -> list[Any]:
    if isinstance(outputs, (list, tuple)):
        return [leaf for o in outputs for leaf in _flatten(o)]
    return [outputs]


def grad_histograms(grads: Any, *, bins: int = 50,
                    path: str | os.PathLike | None = None) -> Figure:
    """A histogram of each layer's gradient entries (a net's grads: one entry per layer)."""
    layers = [(p, t) for p, t in param_groups(grads) if t]
    cols = min(len(layers), 4) or 1
    rows = math.ceil(len(layers) / cols) or 1
    figure = _figure(3.2 * cols, 2.6 * rows)
    axes = np.atleast_1d(figure.subplots(rows, cols)).ravel()
    for ax, (where, tree) in zip(axes, layers):
        values = np.concatenate([np.ravel(np.asarray(v, np.float32))
                                 for v in jax.tree.leaves(tree)])
        ax.hist(values, bins=bins)
        ax.set(title=f"layer {where}", yscale="log")
    for ax in axes[len(layers):]:
        ax.set_axis_off()
    return _finish(figure, path)


def decision_boundary(predict: Callable[[np.ndarray], Any], x: np.ndarray, y: np.ndarray, *,
                      resolution: int = 200, path: str | os.PathLike | None = None) -> Figure:
    """The regions a 2-D classifier assigns to each class, with the data on top.

    ``predict`` maps points ``(M, 2)`` to class scores ``(M, C)`` (or ``(M,)`` / ``(M, 1)``
    logits of a binary classifier).
    """
    x = np.asarray(x)
    pad = 0.1 * (x.max(axis=0) - x.min(axis=0))
    lo, hi = x.min(axis=0) - pad, x.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    scores = np.asarray(predict(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)))
    classes = (scores.reshape(-1) > 0).astype(int) if scores.ndim == 1 or scores.shape[-1] == 1 \
        else scores.argmax(axis=-1)
    figure = _figure(5.0, 5.0)
    ax = figure.subplots()
    ax.contourf(gx, gy, classes.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y).reshape(-1), cmap="coolwarm", edgecolors="k",
               s=20)
    ax.set(title="decision boundary", xlabel="x0", ylabel="x1")
    return _finish(figure, path)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int | None = None, *,
                     path: str | os.PathLike | None = None) -> Figure:
    """Counts of (true class, predicted class), annotated."""
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    n = num_classes or int(max(labels.max(), predictions.max())) + 1
    counts = np.zeros((n, n), int)
    np.add.at(counts, (labels, predictions), 1)
    figure = _figure(0.5 * n + 2.5, 0.5 * n + 2.0)
    ax = figure.subplots()
    ax.imshow(counts, cmap="Blues")
    for (i, j), c in np.ndenumerate(counts):
        if c:
            ax.text(j, i, str(c), ha="center", va="center",
                    color="white" if c > counts.max() / 2 else "black", fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n),
           title=f"confusion matrix (accuracy {np.trace(counts) / counts.sum():.2%})")
    return _finish(figure, path)


def relevance_grid(images: Any, relevances: Any, *, titles: Sequence[str] | None = None,
                   path: str | os.PathLike | None = None) -> Figure:
    """Each image beside its relevance map (red: for the class, blue: against).

    ``images`` and ``relevances``: ``(K, H, W)`` or ``(K, 1, H, W)``.
    """
    images = np.asarray(images, np.float32).reshape(len(images), *np.shape(images)[-2:])
    relevances = np.asarray(relevances, np.float32).reshape(images.shape)
    figure = _figure(2.0 * len(images), 4.2)
    axes = figure.subplots(2, len(images), squeeze=False)
    for k, (image, relevance) in enumerate(zip(images, relevances)):
        axes[0, k].imshow(image, cmap="gray")
        bound = float(np.abs(relevance).max()) or 1.0
        axes[1, k].imshow(relevance, cmap="bwr", vmin=-bound, vmax=bound)
        axes[0, k].set_title(titles[k] if titles else f"#{k}", fontsize="small")
        for ax in axes[:, k]:
            ax.set_axis_off()
    return _finish(figure, path)
