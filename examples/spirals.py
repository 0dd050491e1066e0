"""Two interleaved spirals: a classic that needs a curved decision boundary.

The data is generated here (2 x 300 points with noise); a 2-64-64-2 ReLU MLP is trained
with `fit` and SGD with momentum; the decision boundary is saved as a PNG (default
out/spirals.png, or the first argument). Exits non-zero below 97% training accuracy.
Run: python examples/spirals.py [out.png]
"""

import sys
from pathlib import Path

import numpy as np

from minitorch import losses, nn, optim, plot, train
from minitorch.fit import fit

BAR = 0.97


def spirals(points: int = 300, noise: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, points)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.normal(size=(2 * points, 2)) / 3
    y = np.concatenate([np.zeros(points), np.ones(points)]).astype(np.int32)
    return x.astype(np.float32), y


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "out/spirals.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y = spirals()
    net = nn.Net([nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)])
    params, _, history = fit(net, losses.softmax_cross_entropy, optim.sgd(0.3, momentum=0.9),
                             (x, y), epochs=300, batch_size=32, seed=0, progress=False)
    accuracy = train.evaluate(net, losses.softmax_cross_entropy, params, (x, y))["accuracy"]
    plot.decision_boundary(lambda points: train.predict(net, params, points), x, y, path=path)
    print(f"spirals: training accuracy {100 * accuracy:.2f}% (bar {100 * BAR:.0f}%), "
          f"decision boundary in {path}")
    return 0 if accuracy >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
