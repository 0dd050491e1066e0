"""A residual CNN (GroupNorm) on scikit-learn's 8x8 digits, built from `Residual` and `Parallel`.

Same split as examples/digits_cnn.py (80/20 stratified, seed 42; 10% of training held out
for validation). Identity blocks are `Residual(f)` followed by a ReLU; the downsampling
block adds a strided branch and a 1x1 projection with `Parallel(..., combine="sum")`.
The training images are augmented with their eight one-pixel shifts; the loss is
label-smoothed (0.1); SGD with Nesterov momentum follows a cosine schedule.
Run: python examples/resnet_digits.py [seed] [--quick]   (exits non-zero below its bar;
`--quick`, the test suite's run: the unshifted images for 6 epochs, against `QUICK_BAR`)
"""

import sys
import time

import numpy as np
import optax
from digits_cnn import load

from minitorch import losses, nn, optim, train
from minitorch.fit import fit

# Measured, seeds 0-4: 99.44, 99.44, 98.61, 99.17, 99.17% (mean 99.17%), against
# examples/digits_cnn.py's 99.44, 98.06, 98.61, 98.06, 98.33% (mean 98.50%): above it on
# three seeds, equal on two; without the shifts 98.33% (seed 0).
QUICK = "--quick" in sys.argv
BAR = 0.985
QUICK_BAR = 0.93  # --quick (measured 96.94%, 98.06%: seeds 0, 1)
EPOCHS, BATCH = (6, 32) if QUICK else (8, 32)


def conv_norm(cin: int, cout: int, stride: int = 1) -> list[nn.Layer]:
    return [nn.Conv2D(cin, cout, 3, stride, padding=1, bias=False), nn.GroupNorm(8, cout)]


def identity_block(width: int) -> nn.Net:
    """relu(x + f(x)), f = conv-norm-relu-conv-norm."""
    return nn.Net([nn.Residual(nn.Net([*conv_norm(width, width), nn.ReLU(),
                                       *conv_norm(width, width)])), nn.ReLU()])


def down_block(cin: int, cout: int) -> nn.Net:
    """relu(f(x) + project(x)), both halving H and W."""
    return nn.Net([nn.Parallel([
        nn.Net([*conv_norm(cin, cout, stride=2), nn.ReLU(), *conv_norm(cout, cout)]),
        nn.Net([nn.Conv2D(cin, cout, 1, stride=2, bias=False), nn.GroupNorm(8, cout)]),
    ], combine="sum"), nn.ReLU()])


def resnet_digits(width: int = 32) -> nn.Net:
    return nn.Net([
        *conv_norm(1, width), nn.ReLU(),                 # (N, 32, 8, 8)
        identity_block(width),
        down_block(width, 2 * width),                    # (N, 64, 4, 4)
        identity_block(2 * width),
        nn.AvgPool2D(4), nn.Flatten(),                   # global average pool: (N, 64)
        nn.Linear(2 * width, 10),
    ])


def shifted(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images and their eight one-pixel shifts (edges wrap: the digits' borders are 0)."""
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return (np.concatenate([np.roll(images, move, axis=(2, 3)) for move in moves]),
            np.tile(labels, len(moves)))


def smoothed_xent(logits, labels):
    return losses.softmax_cross_entropy(logits, labels, label_smoothing=0.1)


def main(seed: int = 0) -> int:
    train_data, val_data, test_data = load()
    train_data = train_data if QUICK else shifted(*train_data)
    bar = QUICK_BAR if QUICK else BAR
    net = resnet_digits()
    steps = EPOCHS * -(-len(train_data[0]) // BATCH)
    opt = optim.sgd(optax.cosine_decay_schedule(0.05, steps), momentum=0.9, nesterov=True,
                    weight_decay=5e-4)
    start = time.perf_counter()
    params, _, history = fit(net, smoothed_xent, opt, train_data, epochs=EPOCHS,
                             batch_size=BATCH, val_data=val_data, seed=seed, progress=False)
    wall = time.perf_counter() - start
    test = train.evaluate(net, losses.softmax_cross_entropy, params, test_data)
    print(f"{nn.count_params(params):,} params; last epoch val accuracy "
          f"{100 * history['val_accuracy'][-1]:.2f}%")
    print(f"resnet digits: test accuracy {100 * test['accuracy']:.2f}% on "
          f"{len(test_data[0])} images (bar {100 * bar:.0f}%), {wall:.1f} s for {EPOCHS} "
          f"epochs ({1e3 * np.median(history['time'][1:]):.0f} ms per epoch)")
    return 0 if test["accuracy"] >= bar else 1


if __name__ == "__main__":
    sys.exit(main(*[int(a) for a in sys.argv[1:] if a != "--quick"]))
