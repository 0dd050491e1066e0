"""Data-parallel training across processes ("hosts") with `jax.distributed`.

Run without arguments, it launches two worker processes of itself on 127.0.0.1, each
with 2 CPU devices (4 devices in all), trains the digits MLP data-parallel over a mesh
spanning both processes, and checks that both end with bit-identical params:

    python examples/multihost.py

Each worker runs the same program (`--process-id 0` and `--process-id 1`). The training
code is what runs on one host: a `Mesh` over `jax.devices()` (every process's devices),
the batch sharded along its first axis, params replicated, one `jax.jit`'d step. Each
process feeds only its own slice of the global batch; `parallel.shard_batch` assembles
the global array. On a GPU/TPU cluster the same script runs with one process per host:
drop the CPU-only lines (XLA_FLAGS, gloo) and call `jax.distributed.initialize()` with
the cluster's coordinator address, or with no arguments under SLURM or on Cloud TPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys

STEPS = 30
GLOBAL_BATCH = 64
LOCAL_DEVICES = 2


def worker(process_id: int, num_processes: int, coordinator: str) -> None:
    # CPU only: split each process's CPU into devices, and use gloo for collectives.
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)

    import numpy as np
    from sklearn.datasets import load_digits

    from minitorch import losses, nn, optim, parallel, train

    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32)
    net = nn.Net([nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)])
    opt = optim.sgd(0.1, momentum=0.9)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)

    mesh = parallel.data_mesh()  # every device of every process
    params = net.init(jax.random.key(0))  # the same seed, so the same params everywhere
    params, opt_state = parallel.replicate_on(mesh, (params, opt.init(params)))
    rng = np.random.default_rng(0)  # the same global order in every process
    local = GLOBAL_BATCH // num_processes
    for i in range(STEPS):
        rows = rng.choice(len(images), GLOBAL_BATCH, replace=False)
        mine = rows[process_id * local:(process_id + 1) * local]  # this process's share
        batch = parallel.shard_batch(mesh, (images[mine], labels[mine]))
        params, opt_state, metrics = step(params, opt_state, batch, None)
        jax.block_until_ready(params)  # CPU collectives: keep steps from queueing up
        if i in (0, STEPS - 1):
            print(f"process {process_id}: step {i:2d} loss {float(metrics['loss']):.4f}",
                  flush=True)
    local_params = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(params)]
    digest = hashlib.sha256(b"".join(a.tobytes() for a in local_params)).hexdigest()
    print(f"process {process_id}: {jax.device_count()} devices, {jax.process_count()} "
          f"processes, params sha256 {digest}", flush=True)
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(num_processes: int) -> int:
    coordinator = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    workers = [subprocess.Popen([sys.executable, __file__, "--process-id", str(i),
                                 "--num-processes", str(num_processes),
                                 "--coordinator", coordinator],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env) for i in range(num_processes)]
    outputs = []
    for process in workers:
        out, _ = process.communicate(timeout=600)
        outputs.append((process.returncode, out))
    digests = set()
    for _, out in outputs:
        sys.stdout.write(out)
        digests.update(line.rsplit(" ", 1)[-1] for line in out.splitlines() if "sha256" in line)
    ok = all(code == 0 for code, _ in outputs) and len(digests) == 1
    print(f"multihost: {num_processes} processes, params identical on all: "
          f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--coordinator")
    args = parser.parse_args()
    if args.process_id is None:
        return launch(args.num_processes)
    worker(args.process_id, args.num_processes, args.coordinator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
