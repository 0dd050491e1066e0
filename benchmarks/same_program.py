"""Does a change alter the compiled training step? Compare this tree with a git revision.

For several models (the tiny MLP and the CNN of benchmarks/workloads.py, the digits CNN of
examples/digits_cnn.py with Dropout, examples/char_transformer.py's transformer, a net with
BatchNorm and GroupNorm), the step `train.make_update(net, softmax_cross_entropy,
optim.sgd(0.01, momentum=0.9))` is compiled by XLA from the working tree's minitorch and
from the revision's (checked out in a temporary git worktree), and the optimised programs'
instruction kinds are compared as multisets. Equal multisets mean the change costs
nothing at run time; a timing could only add noise to that.

Run: python benchmarks/same_program.py REVISION
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def programs(tree: Path) -> dict[str, tuple[int, str]]:
    """``{model: (instructions, digest of their sorted kinds)}`` compiled from ``tree``."""
    sys.path[:0] = [str(tree), str(tree / "examples")]
    import jax
    import numpy as np
    from char_transformer import char_transformer
    from digits_cnn import digits_cnn

    import minitorch
    from benchmarks.workloads import WORKLOADS, minitorch_net
    from minitorch import losses, nn, optim, train

    if not Path(minitorch.__file__).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"imported {minitorch.__file__}, not the tree {tree}")

    cases = {name: (minitorch_net(WORKLOADS[name]), WORKLOADS[name].data())
             for name in ("tiny", "cnn")}
    cases["digits CNN"] = (digits_cnn(), (np.zeros((32, 1, 8, 8), np.float32),
                                          np.zeros(32, np.int32)))
    cases["transformer"] = (char_transformer(30, 16), (np.zeros((8, 16), np.int32),
                                                       np.zeros((8, 16), np.int32)))
    cases["norms"] = (nn.Net([nn.Conv2D(1, 4, 3), nn.BatchNorm(4), nn.GroupNorm(2, 4),
                              nn.Flatten(), nn.Linear(144, 10)]),
                      (np.zeros((8, 1, 8, 8), np.float32), np.zeros(8, np.int32)))
    found = {}
    for name, (net, batch) in cases.items():
        opt = optim.sgd(0.01, momentum=0.9)
        update = train.make_update(net, losses.softmax_cross_entropy, opt)
        params = net.init(jax.random.key(0))
        state = net.init_state() if net.stateful else None
        text = jax.jit(update).lower(params, state, opt.init(params), batch,
                                     jax.random.key(1)).compile().as_text()
        kinds = sorted(re.findall(r"= \S+ (\w+)\(", text))
        found[name] = (len(kinds), hashlib.sha256(" ".join(kinds).encode()).hexdigest()[:16])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # the worker's own call
    args = parser.parse_args()
    if args.tree is not None:
        for name, (count, digest) in programs(args.tree).items():
            print(f"{name}\t{count}\t{digest}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.revision],
                       cwd=ROOT, check=True)
        try:
            results = {}
            for label, tree in (("revision", old), ("working tree", ROOT)):
                out = subprocess.run([sys.executable, __file__, args.revision, "--tree",
                                      str(tree)], check=True, capture_output=True, text=True)
                results[label] = [line.split("\t") for line in out.stdout.splitlines()]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=True)
    print(f"| model | instructions at {args.revision} | in the working tree | same program |")
    print("| --- | --- | --- | --- |")
    same = True
    for (name, count_a, digest_a), (_, count_b, digest_b) in zip(results["revision"],
                                                                 results["working tree"]):
        same &= digest_a == digest_b
        print(f"| {name} | {count_a} | {count_b} | {'yes' if digest_a == digest_b else 'NO'} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
