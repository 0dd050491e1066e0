"""The digits CNN trained data-parallel on 8 CPU devices, through pmap and through a sharded jit.

Both paths see the same global batches of 64 (8 per device) and must end with the same
params (to 1e-3 of the largest param, the drift of 300 steps of float32 all-reduces summed
in different orders) and a test accuracy of at least 97%. The net has no dropout here: under
pmap each device draws its own mask for its shard, under the sharded jit one mask covers
the global batch, so with dropout the two paths train (equally well) on different masks.
Run: python examples/data_parallel.py
"""

import os

# Split the CPU into 8 devices; this must happen before jax is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import sys
import time

import jax
import numpy as np
from digits_cnn import digits_cnn, load

from minitorch import losses, optim, parallel, train

EPOCHS, BATCH, BAR = 15, 64, 0.97


def batches(x, y, epoch):
    order = np.random.default_rng([0, epoch]).permutation(len(x))
    for start in range(0, len(x) - BATCH + 1, BATCH):  # full batches: 8 equal shards each
        rows = order[start:start + BATCH]
        yield x[rows], y[rows]


def main() -> int:
    (x, y), _, test_data = load()
    net, opt = digits_cnn(dropout=0.0), optim.sgd(0.05, momentum=0.9, nesterov=True)
    params = net.init(jax.random.key(0))
    print(f"{jax.device_count()} devices")

    # pmap: replicas with a leading device axis, grads averaged with lax.pmean
    pstep = jax.pmap(train.make_step(net, losses.softmax_cross_entropy, opt, axis_name="batch",
                                     jit=False), axis_name="batch", donate_argnums=(0, 1))
    start = time.perf_counter()
    p, o = parallel.replicate((params, opt.init(params)))
    for epoch in range(EPOCHS):
        for batch in batches(x, y, epoch):
            p, o, _ = pstep(p, o, parallel.split(batch), None)
            # Virtual CPU devices share 2 cores: steps left to queue up asynchronously can
            # deadlock in the all-reduce's rendezvous, so finish each step before the next.
            jax.block_until_ready(p)
    pmapped = parallel.unreplicate(p)
    print(f"pmap:        {time.perf_counter() - start:.1f} s")

    # jit over a mesh: the batch sharded over 8 devices, params replicated
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    mesh = parallel.data_mesh()
    start = time.perf_counter()
    p, o = parallel.replicate_on(mesh, (params, opt.init(params)))
    for epoch in range(EPOCHS):
        for batch in batches(x, y, epoch):
            p, o, _ = step(p, o, parallel.shard_batch(mesh, batch), None)
            jax.block_until_ready(p)
    sharded = p
    print(f"sharded jit: {time.perf_counter() - start:.1f} s")

    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(jax.tree.leaves(pmapped), jax.tree.leaves(sharded)))
    gap /= max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(pmapped))
    accuracy = {name: train.evaluate(net, losses.softmax_cross_entropy, tree, test_data)
                ["accuracy"] for name, tree in (("pmap", pmapped), ("sharded", sharded))}
    print(f"data parallel: test accuracy pmap {100 * accuracy['pmap']:.2f}%, sharded jit "
          f"{100 * accuracy['sharded']:.2f}% (bar {100 * BAR:.0f}%); largest param "
          f"difference between the paths {gap:.1e} of the largest param")
    return 0 if min(accuracy.values()) >= BAR and gap < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
