"""Checkpoint file formats compared: NumPy's ``.npz`` against safetensors.

For the digits CNN (params + SGD momentum state) and the large MLP (784-2048-2048-10,
params + momentum: 47 MB), measures the file size, the time to write a file (to a
temporary file, fsynced, renamed: what ``checkpoint.save`` does) and the time to read
every array back, as ratios to ``.npz`` per interleaved round (medians). "minitorch" is
``checkpoint.save`` / ``checkpoint.load`` (safetensors, with its header checks and the
template comparison, loading into JAX arrays).

    python -m benchmarks.checkpoint_formats [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy

from benchmarks.common import interleaved, machine, median, ratio_spread
from minitorch import checkpoint, nn, optim


def digits_cnn() -> nn.Net:
    return nn.Net([nn.Conv2D(1, 16, 3, padding=1), nn.BatchNorm(16), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Conv2D(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Flatten(), nn.Linear(32 * 2 * 2, 10)])


def large_mlp() -> nn.Net:
    return nn.Net([nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                   nn.Linear(2048, 10)])


def checkpoint_tree(net: nn.Net) -> dict:
    params = net.init(jax.random.key(0))
    return {"params": params, "opt_state": optim.sgd(0.1, momentum=0.9).init(params)}


def flat_arrays(tree: dict) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def candidates(tree: dict, directory: Path) -> dict[str, object]:
    arrays = flat_arrays(tree)
    npz, st, ours = directory / "c.npz", directory / "c.safetensors", directory / "m.safetensors"

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def save_npz():
        atomic_write(npz, write_npz)

    def save_st():
        atomic_write(st, lambda tmp: safetensors.numpy.save_file(arrays, tmp))

    def load_npz():
        with np.load(npz, allow_pickle=False) as z:
            return [z[name] for name in z.files]

    def load_st():
        return list(safetensors.numpy.load_file(st).values())

    def save_ours():
        checkpoint.save(ours, tree)

    def load_ours():
        return checkpoint.load(ours, tree)[0]

    save_npz(), save_st(), save_ours()
    return {"save npz": save_npz, "save safetensors": save_st, "save minitorch": save_ours,
            "load npz": load_npz, "load safetensors": load_st, "load minitorch": load_ours}, npz, st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    print("| model | MB | npz bytes | safetensors bytes | save st/npz | load st/npz |"
          " save minitorch/npz | load minitorch/npz | save npz ms | load npz ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, net in [("digits CNN", digits_cnn()), ("large MLP", large_mlp())]:
        tree = checkpoint_tree(net)
        with tempfile.TemporaryDirectory() as tmp:
            runs, npz, st = candidates(tree, Path(tmp))
            times = interleaved(runs, rounds=args.rounds)
            ratios = [ratio_spread(times, f"{op} {fmt}", f"{op} npz")[0]
                      for fmt in ("safetensors", "minitorch") for op in ("save", "load")]
            mb = sum(a.nbytes for a in flat_arrays(tree).values()) / 1e6
            print(f"| {name} | {mb:.2f} | {npz.stat().st_size} | {st.stat().st_size} | "
                  + " | ".join(f"{r:.2f}" for r in ratios)
                  + f" | {median(times['save npz']) * 1e3:.2f} | "
                  f"{median(times['load npz']) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
