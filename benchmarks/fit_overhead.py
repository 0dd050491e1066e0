"""What `fit` costs on top of the bare compiled step and epoch.

1. Iris-sized data (120 samples of 4 features, 3 classes, batch 16, shuffled every epoch),
   time per step of:
   - floor: a Python loop of the jit'd step over batches pre-sliced on the device, no
     shuffling (the dispatch floor);
   - fit: `minitorch.fit.fit` (whole epoch compiled: on-device shuffle, lax.scan), with its
     history and progress bar;
   - bare epoch: the compiled epoch `fit` uses (on-device shuffle, lax.scan), in a loop;
   - pre-sliced loop: one jit'd call shuffles and slices the epoch's batches on the device,
     then one dispatch per step (the alternative to scanning);
   - host loop: shuffle on the host each epoch and index the device arrays on the host
     each step, feeding the same jit'd step (what a first training loop usually looks like).
2. The digits CNN of examples/digits_cnn.py: time per epoch of `fit` (progress bar,
   history, validation off; its "auto" loop scans) against the bare epochs of both modes
   (`make_epoch`'s scan and `make_epoch_steps`, called in a loop); also split in two:
   fit's epochs alone (its history's epoch times) and its one-off cost per call.
3. The digits CNN streamed: `fit` over a `DataLoader` (host batches, shuffled, moved to
   the device two ahead) against `fit` over the same arrays in memory (the compiled epoch),
   and against a hand-written loop of the jit'd step over the same loader; fit's epoch
   times (its history, after the compiling first).
4. Grouped convolutions (XLA's own convolution kernels on the CPU, not an im2col matmul):
   the digits CNN with its second convolution grouped (``groups=4``), and a 1-D variant
   over the images' rows (``Conv1D``, grouped), each as the bare scanned epoch against the
   bare stepped epoch: what ``fit(loop="auto")`` chooses between.

Run: python benchmarks/fit_overhead.py [--rounds 15] [--parts iris digits streamed grouped]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from benchmarks.common import interleaved, machine, median, ratio_spread
from minitorch import losses, nn, optim, train
from minitorch.epoch import make_epoch, make_epoch_steps
from minitorch.fit import fit

EPOCHS = 20
FIT_EPOCHS = 200  # fit's one-off work (init, tracing) spread as a real run spreads it


def quiet():
    """Swallow the progress bar's output (it is drawn, just not shown)."""
    return contextlib.redirect_stderr(io.StringIO())


def bare_epochs(epoch, state, data, epochs):
    """A candidate: ``epochs`` calls of a compiled epoch, carrying params and optimiser state."""
    key = jax.random.key(0)

    def run():
        p, o = state["params"], state["opt"]
        for e in range(epochs):
            p, _, o, _ = epoch(p, None, o, data, key, e)
        state["params"], state["opt"] = p, o
        return p

    return run


def fit_runner(net, opt, data, epochs, batch_size, fit_state):
    """A candidate: ``fit`` for ``epochs + 1`` epochs; the first compiles, so
    ``fit_state["per_epoch"]`` gets the time of all of fit's work after it, per epoch."""

    def run():
        with quiet():
            start = time.perf_counter()
            params, _, history = fit(net, losses.softmax_cross_entropy, opt, data,
                                     epochs=epochs + 1, batch_size=batch_size, seed=0)
            total = time.perf_counter() - start
        fit_state["per_epoch"] = (total - history["time"][0]) / epochs
        # the same split in two: the epochs themselves (history's times after the compiling
        # first) and what each fit call costs once (set-up, releasing the compiled epoch)
        fit_state["epochs_only"] = sum(history["time"][1:]) / epochs
        fit_state["one_off"] = total - sum(history["time"])
        return params

    return run


def iris_candidates():
    rng = np.random.default_rng(0)
    n, batch = 120, 16
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    net = nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)])
    opt = optim.sgd(0.01, momentum=0.9)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    batches = [(xd[i:i + batch], yd[i:i + batch]) for i in range(0, n, batch)]
    steps_per_epoch = len(batches)
    state = {"params": net.init(jax.random.key(0))}
    state["opt"] = opt.init(state["params"])

    def floor():
        p, o = state["params"], state["opt"]
        for _ in range(EPOCHS):
            for b in batches:
                p, o, _ = step(p, o, b, None)
        state["params"], state["opt"] = p, o
        return p

    @jax.jit
    def shuffle_and_slice(data, key):
        order = jax.random.permutation(key, n)
        return [jax.tree.map(lambda a, i=i: a[order[i:i + batch]], data)
                for i in range(0, n, batch)]

    def presliced_loop():
        # the alternative to scanning: one dispatch shuffles and slices the epoch's batches
        # on the device, then one dispatch per step
        p, o = state["params"], state["opt"]
        for e in range(EPOCHS):
            for b in shuffle_and_slice((xd, yd), jax.random.key(e)):
                p, o, _ = step(p, o, b, None)
        state["params"], state["opt"] = p, o
        return p

    def host_loop():
        p, o = state["params"], state["opt"]
        order_rng = np.random.default_rng(1)
        for _ in range(EPOCHS):
            order = order_rng.permutation(n)
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                p, o, _ = step(p, o, (xd[idx], yd[idx]), None)
        state["params"], state["opt"] = p, o
        return p

    epoch = make_epoch(train.make_update(net, losses.softmax_cross_entropy, opt), n, batch)
    fit_state = {}
    return ({"floor": floor, "bare epoch": bare_epochs(epoch, state, (xd, yd), EPOCHS),
             "fit": fit_runner(net, opt, (x, y), FIT_EPOCHS, batch, fit_state),
             "pre-sliced loop": presliced_loop, "host loop": host_loop}, steps_per_epoch,
            fit_state)


def digits_candidates():
    from digits_cnn import digits_cnn, load

    (x, y), _, _ = load()
    net = digits_cnn()
    opt = optim.sgd(0.05, momentum=0.9, nesterov=True)
    update = train.make_update(net, losses.softmax_cross_entropy, opt)
    state = {"params": net.init(jax.random.key(0))}
    state["opt"] = opt.init(state["params"])
    epochs, fit_state = 3, {}
    data = (jnp.asarray(x), jnp.asarray(y))
    scan = bare_epochs(make_epoch(update, len(x), 32), state, data, epochs)
    steps = bare_epochs(make_epoch_steps(update, len(x), 32), state, data, epochs)
    # loop="auto": the scan; 8 epochs so that fit's one-off set-up (init, jit wrappers) is
    # spread as in a real run rather than charged to 3 epochs
    run_fit = fit_runner(net, opt, (x, y), 8, 32, fit_state)
    return {"bare scan epoch": scan, "bare steps epoch": steps, "fit": run_fit}, epochs, fit_state


def grouped_candidates():
    """Bare scanned and stepped epochs of grouped-convolution nets (2-D and 1-D)."""
    from digits_cnn import load

    (x, y), _, _ = load()
    nets = {
        "Conv2D groups=4": (nn.Net([
            nn.Conv2D(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2D(16, 32, 3, padding=1, groups=4), nn.ReLU(), nn.MaxPool2D(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 10)]), x),
        "Conv1D groups=4": (nn.Net([
            nn.Conv1D(8, 16, 3, padding=1), nn.ReLU(),
            nn.Conv1D(16, 32, 3, padding=1, groups=4), nn.ReLU(), nn.MaxPool1D(2),
            nn.Flatten(), nn.Linear(32 * 4, 10)]), x.reshape(-1, 8, 8)),
    }
    opt, epochs, candidates = optim.sgd(0.05, momentum=0.9), 3, {}
    for name, (net, inputs) in nets.items():
        update = train.make_update(net, losses.softmax_cross_entropy, opt)
        state = {"params": net.init(jax.random.key(0))}
        state["opt"] = opt.init(state["params"])
        data = (jnp.asarray(inputs), jnp.asarray(y))
        candidates[f"{name} scan"] = bare_epochs(make_epoch(update, len(x), 32), state, data,
                                                 epochs)
        candidates[f"{name} steps"] = bare_epochs(make_epoch_steps(update, len(x), 32),
                                                  state, data, epochs)
    return candidates, epochs


def report_grouped(rounds: int) -> None:
    candidates, epochs = grouped_candidates()
    times = interleaved(candidates, rounds=rounds)
    per_epoch = {k: [t / epochs for t in v] for k, v in times.items()}
    print(f"\ngrouped convolutions (1293 examples, batch 32), {rounds} rounds, "
          f"median ms/epoch:")
    for net in ("Conv2D groups=4", "Conv1D groups=4"):
        r, spread = ratio_spread(per_epoch, f"{net} scan", f"{net} steps")
        print(f"  {net}: scan {1e3 * median(per_epoch[f'{net} scan']):7.1f}, steps "
              f"{1e3 * median(per_epoch[f'{net} steps']):7.1f} ms/epoch; scan / steps "
              f"{r:.2f} (+-{spread:.2f})")


def streamed_candidates(epochs: int = 4):
    """Per-epoch seconds of fit streamed from a DataLoader, fit in memory, and a hand-written
    loop over the same loader (each run's first epoch, which compiles, left out)."""
    from digits_cnn import digits_cnn, load

    from minitorch.data import ArrayDataset, DataLoader

    (x, y), _, _ = load()
    net = digits_cnn()
    opt = optim.sgd(0.05, momentum=0.9, nesterov=True)
    params = net.init(jax.random.key(0))
    out: dict[str, list[float]] = {"fit streamed": [], "fit in memory": [], "hand loop": []}

    def fitted(name, data, **kwargs):
        def run():
            with quiet():
                p, _, history = fit(net, losses.softmax_cross_entropy, opt, data,
                                    epochs=epochs + 1, params=params, seed=0, **kwargs)
            out[name].append(sum(history["time"][1:]) / epochs)
            return p

        return run

    loader = DataLoader(ArrayDataset(x, y), 32, shuffle=True, seed=0, device_put=False)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)

    def hand_loop():
        p, o = jax.tree.map(jnp.copy, params), opt.init(params)
        times = []
        for epoch in range(epochs + 1):
            start = time.perf_counter()
            loader.set_epoch(epoch)
            for i, batch in enumerate(loader):
                p, o, _ = step(p, o, batch, jax.random.fold_in(jax.random.key(epoch), i))
            jax.block_until_ready(p)
            times.append(time.perf_counter() - start)
        out["hand loop"].append(sum(times[1:]) / epochs)
        return p

    return {"fit streamed": fitted("fit streamed", loader),
            "fit in memory": fitted("fit in memory", (x, y), batch_size=32),
            "hand loop": hand_loop}, out


def report_streamed(rounds: int) -> None:
    candidates, per_epoch = streamed_candidates()
    interleaved(candidates, rounds=rounds)
    print(f"\ndigits CNN streamed (1293 images, batch 32), {rounds} rounds, median ms/epoch "
          f"(after each run's compiling first epoch):")
    for name in ("fit in memory", "fit streamed", "hand loop"):
        values = per_epoch[name][1:]  # the untimed warm-up call of interleaved left out
        print(f"  {name:14s} {1e3 * median(values):7.1f} ms/epoch")
    trimmed = {k: v[1:] for k, v in per_epoch.items()}
    for name, reference in (("fit streamed", "fit in memory"), ("fit streamed", "hand loop")):
        r, spread = ratio_spread(trimmed, name, reference)
        print(f"  {name} / {reference}: {r:.3f} (+-{spread:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--parts", nargs="+", default=["iris", "digits", "streamed"],
                        choices=["iris", "digits", "streamed", "grouped"])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if "iris" in args.parts:
        report_iris(args.rounds)
    if "digits" in args.parts:
        report_digits(args.rounds)
    if "streamed" in args.parts:
        report_streamed(args.rounds)
    if "grouped" in args.parts:
        report_grouped(args.rounds)
    print(f"\nmachine after: {machine()}")


def report_iris(rounds: int) -> None:
    candidates, steps, fit_state = iris_candidates()
    fit_times = []

    def fit_epochs():
        out = candidates["fit"]()
        fit_times.append(fit_state["per_epoch"] * EPOCHS)
        return out

    times = interleaved({**candidates, "fit": fit_epochs}, rounds=rounds)
    times["fit"] = fit_times  # fit's compile-free part, measured inside the same rounds
    per_step = {k: [t / (EPOCHS * steps) for t in v] for k, v in times.items()}
    print(f"\nIris-sized (120 x 4, batch 16, {steps} steps/epoch), {rounds} rounds, "
          f"median us/step:")
    for name in ("floor", "bare epoch", "pre-sliced loop", "fit", "host loop"):
        r, spread = ratio_spread(per_step, name, "floor")
        print(f"  {name:10s} {1e6 * median(per_step[name]):7.1f} us/step   "
              f"{r:5.2f}x floor (+-{spread:.2f})")
    r, _ = ratio_spread(per_step, "host loop", "fit")
    print(f"  fit is {r:.1f}x faster than the host loop")


def report_digits(rounds: int) -> None:
    candidates, epochs, fit_state = digits_candidates()
    fit_times, epoch_times, one_offs = [], [], []

    def digits_fit():
        out = candidates["fit"]()
        fit_times.append(fit_state["per_epoch"] * epochs)  # per-epoch time x the bare runs' 3
        epoch_times.append(fit_state["epochs_only"] * epochs)
        one_offs.append(fit_state["one_off"])
        return out

    times = interleaved({**candidates, "fit": digits_fit}, rounds=rounds)
    times["fit"] = fit_times
    times["fit's epochs alone"] = epoch_times
    per_epoch = {k: [t / epochs for t in v] for k, v in times.items()}
    print(f"\ndigits CNN (1293 images, batch 32), {rounds} rounds, median ms/epoch:")
    for name in ("bare scan epoch", "bare steps epoch", "fit", "fit's epochs alone"):
        r, spread = ratio_spread(per_epoch, name, "bare scan epoch")
        print(f"  {name:18s} {1e3 * median(per_epoch[name]):7.1f} ms/epoch  "
              f"{r:5.2f}x bare scan epoch (+-{spread:.2f})")
    print(f"  fit's one-off cost per call (set-up, releasing the compiled epoch): "
          f"{1e3 * median(one_offs):.1f} ms, spread over its 8 epochs in 'fit' above")


if __name__ == "__main__":
    main()
