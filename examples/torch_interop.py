"""Weights both ways between minitorch and PyTorch, on scikit-learn's digits.

1. Export: the digits CNN trained in minitorch (`fit`), its params written as a PyTorch
   `state_dict` (`interop.to_torch`), loaded into the same network built from
   `torch.nn` modules with `load_state_dict(strict=True)`: PyTorch predicts the same class
   for every test image.
2. Import: a CNN with BatchNorm trained for two epochs in PyTorch, read into minitorch
   (`interop.from_torch`: params, and BatchNorm's running statistics as state), scores
   what PyTorch scores, then fine-tuned in minitorch with its convolutions frozen
   (`fit(..., frozen=)`).
Run: python examples/torch_interop.py [--quick]   (exits non-zero below its bars; prints a line
and exits 0 without PyTorch, which only this example and the tests use; `--quick`, the test
suite's run: 5 and 3 epochs, against `QUICK_BAR`)
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from digits_cnn import digits_cnn, load

from minitorch import interop, losses, nn, optim, train
from minitorch.fit import fit

QUICK = "--quick" in sys.argv  # the test suite's run: fewer epochs, against QUICK_BAR
# The fine-tuned import's test accuracy; measured with the PyTorch model trained from
# torch.manual_seed 0-3 (starts 91.11-95.28%): 97.78-98.33% (98.06% at seed 0). At a learning
# rate of 0.05 the same runs gave 96.94-97.78%: below the bar at seed 0.
BAR = 0.97
QUICK_BAR = 0.92  # --quick: 3 epochs (seeds 0-3: 93.61-95.56%; 95.56% at seed 0)
TUNE_LEARNING_RATE = 0.02
EXPORT_EPOCHS, TUNE_EPOCHS = (5, 3) if QUICK else (15, 10)


def torch_digits_cnn(torch):
    """examples/digits_cnn.py's net in `torch.nn` modules (same order, so same names)."""
    tnn = torch.nn
    return tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1), tnn.ReLU(),
                          tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Flatten(), tnn.Dropout(0.25), tnn.Linear(32 * 4 * 4, 64),
                          tnn.ReLU(), tnn.Linear(64, 10))


def with_batchnorm() -> nn.Net:
    return nn.Net([nn.Conv2D(1, 16, 3, padding=1), nn.BatchNorm(16), nn.ReLU(),
                   nn.Conv2D(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Flatten(), nn.Linear(32 * 4 * 4, 10)])


def torch_with_batchnorm(torch):
    tnn = torch.nn
    return tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1), tnn.BatchNorm2d(16), tnn.ReLU(),
                          tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Flatten(), tnn.Linear(32 * 4 * 4, 10))


def export(torch, train_data, test_data) -> bool:
    net = digits_cnn()
    params, _, _ = fit(net, losses.softmax_cross_entropy,
                       optim.sgd(0.05, momentum=0.9, nesterov=True), train_data,
                       epochs=EXPORT_EPOCHS, batch_size=32, progress=False)
    ours = np.asarray(net.apply(params, jnp.asarray(test_data[0])))
    model = torch_digits_cnn(torch)
    model.load_state_dict({k: torch.as_tensor(v)
                           for k, v in interop.to_torch(net, params).items()}, strict=True)
    model.eval()
    with torch.no_grad():
        theirs = model(torch.as_tensor(test_data[0])).numpy()
    same = float(np.mean(ours.argmax(1) == theirs.argmax(1)))
    accuracy = float(np.mean(theirs.argmax(1) == test_data[1]))
    print(f"export: PyTorch predicts the same class for {same:.2%} of {len(ours)} test images "
          f"(max |logit difference| {np.abs(ours - theirs).max():.1e}); its accuracy "
          f"{accuracy:.2%}")
    return same == 1.0


def torch_trained(torch, train_data, epochs: int = 2):
    """The BatchNorm CNN trained in PyTorch eager (Adam, batch 32)."""
    torch.manual_seed(0)
    model = torch_with_batchnorm(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = (torch.as_tensor(a) for a in train_data)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows].long()).backward()
            opt.step()
    return model.eval()


def import_and_tune(torch, train_data, test_data) -> bool:
    model = torch_trained(torch, train_data)
    with torch.no_grad():
        theirs = float(np.mean(model(torch.as_tensor(test_data[0])).numpy().argmax(1)
                               == test_data[1]))
    net = with_batchnorm()
    params, state = interop.from_torch(net, model.state_dict())
    before = train.evaluate(net, losses.softmax_cross_entropy, params, test_data, state=state)
    tune = optim.sgd(TUNE_LEARNING_RATE, momentum=0.9)
    params, state, _, _ = fit(net, losses.softmax_cross_entropy, tune, train_data,
                              epochs=TUNE_EPOCHS, batch_size=32, params=params, state=state,
                              frozen=["0", "1", "3"],  # convolutions, norm
                              progress=False)
    after = train.evaluate(net, losses.softmax_cross_entropy, params, test_data, state=state)
    print(f"import: PyTorch-trained CNN scores {theirs:.2%} in PyTorch and "
          f"{before['accuracy']:.2%} in minitorch; fine-tuned in minitorch, convolutions "
          f"frozen: {after['accuracy']:.2%}")
    count = len(test_data[1])  # the same images right (evaluate's accuracy is float32)
    same = round(before["accuracy"] * count) == round(theirs * count)
    return same and after["accuracy"] >= (QUICK_BAR if QUICK else BAR)


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch interop: skipped (PyTorch is not installed: pip install torch)")
        return 0
    train_data, _, test_data = load()
    exported = export(torch, train_data, test_data)
    imported = import_and_tune(torch, train_data, test_data)
    bar = QUICK_BAR if QUICK else BAR
    print(f"torch interop: export same classes: {'yes' if exported else 'NO'}; import scores "
          f"as PyTorch and fine-tunes to >= {bar:.0%}: {'yes' if imported else 'NO'}")
    return 0 if exported and imported else 1


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # compare with float32 torch
    sys.exit(main())
