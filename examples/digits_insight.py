"""Look inside the digits CNN: telemetry recorded during training, plots, and relevance maps.

Trains examples/digits_cnn.py's net with `fit(..., telemetry=True)`, then writes into a
folder (default: out/digits_insight, or the first argument):
  curves.png, grad_norms.png, param_stats.png   how training went, per layer
  activations.png                               one test digit's activations, layer by layer
  grad_histograms.png                           gradient entries per layer on a batch
  confusion.png                                 the test set's confusion matrix
  relevance_lrp.png, relevance_ig.png           what drove six predictions (LRP, integrated
                                                gradients)
The last line printed names the folder. Exits non-zero below 97% test accuracy.
Run: python examples/digits_insight.py [folder] [--quick]   (`--quick`, the test suite's run: 6
epochs, against `QUICK_BAR`)
"""

import sys
from pathlib import Path

import jax
import numpy as np
from digits_cnn import digits_cnn, load

from minitorch import explain, losses, monitor, optim, plot, train
from minitorch.fit import fit
from minitorch.summary import summary

QUICK = "--quick" in sys.argv  # the test suite's run: 6 epochs, against QUICK_BAR
BAR = 0.97
QUICK_BAR = 0.93  # --quick (measured 97.78%)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--quick"]
    bar = QUICK_BAR if QUICK else BAR
    folder = Path(args[0] if args else "out/digits_insight")
    folder.mkdir(parents=True, exist_ok=True)
    train_data, val_data, (x_test, y_test) = load()
    net = digits_cnn()
    print(summary(net, (1, 8, 8)))

    params, _, history = fit(net, losses.softmax_cross_entropy,
                             optim.sgd(0.05, momentum=0.9, nesterov=True), train_data,
                             epochs=6 if QUICK else 20, batch_size=32, val_data=val_data, seed=0,
                             telemetry=True, progress=False)
    logits = train.predict(net, params, x_test)
    predicted = np.asarray(logits.argmax(axis=1))
    accuracy = float(np.mean(predicted == y_test))
    print(f"digits insight: test accuracy {100 * accuracy:.2f}% (bar {100 * bar:.0f}%); "
          f"last epoch dead ReLU fraction after conv 1: {history['act_dead/1'][-1]:.3f}")

    plot.curves(history, path=folder / "curves.png")
    plot.grad_norms(history, path=folder / "grad_norms.png")
    plot.param_stats(history, path=folder / "param_stats.png")
    plot.activation_heatmap(monitor.capture(net, params, x_test[:1]),
                            names=[f"{i} {type(layer).__name__}"
                                   for i, layer in enumerate(net.layers)],
                            path=folder / "activations.png")
    grads = jax.jit(jax.grad(lambda p: losses.softmax_cross_entropy(
        net.apply(p, x_test[:64]), y_test[:64])))(params)
    plot.grad_histograms(grads, path=folder / "grad_histograms.png")
    plot.confusion_matrix(y_test, predicted, 10, path=folder / "confusion.png")
    shown = x_test[:6]
    titles = [f"{t} -> {p}" for t, p in zip(y_test[:6], predicted[:6])]
    # explain's functions are pure: compiled, each runs as one program, not op by op.
    relevance = jax.jit(lambda p, x: explain.lrp(net, p, x, rules={"0": "zplus"}))(params,
                                                                                   shown)
    plot.relevance_grid(shown, relevance, titles=titles, path=folder / "relevance_lrp.png")
    attributions = jax.jit(lambda p, x: explain.integrated_gradients(net, p, x))(params, shown)
    plot.relevance_grid(shown, attributions, titles=titles, path=folder / "relevance_ig.png")

    written = sorted(p.name for p in folder.glob("*.png"))
    print(f"wrote {len(written)} plots: {', '.join(written)}")
    print(f"plots in {folder}")
    return 0 if accuracy >= bar and len(written) == 8 else 1


if __name__ == "__main__":
    sys.exit(main())
