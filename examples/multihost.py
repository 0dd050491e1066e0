"""Training across processes ("hosts") with `jax.distributed`: data parallel, then FSDP.

Run without arguments, it launches two worker processes of itself on 127.0.0.1, each
with 2 CPU devices (4 devices in all), and on a mesh spanning both processes

1. trains the digits MLP data-parallel (params replicated) and checks that both
   processes end with bit-identical params;
2. trains it again with its params and optimiser state split over all 4 devices (FSDP:
   no process holds a whole weight), checks the result against the same steps on one
   device, saves a checkpoint from both processes (each writes the shards it holds) and
   restores it onto the shardings;
3. trains it with ``fit(..., mesh=)`` from a ``DataLoader`` in each process that loads
   only that process's half of the data, and checks the result against ``fit`` on one
   device over the same global batches:

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
import re
import socket
import subprocess
import sys
import tempfile

STEPS = 30
GLOBAL_BATCH = 64
LOCAL_DEVICES = 2


def worker(process_id: int, num_processes: int, coordinator: str, directory: str) -> None:
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
    print(f"process {process_id}: {jax.device_count()} devices, {jax.process_count()} "
          f"processes, params sha256 {digest(local_params)}", flush=True)
    fsdp(process_id, num_processes, directory, (images, labels))
    streamed(process_id, num_processes, (images, labels))
    jax.distributed.shutdown()


def digest(arrays) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def fsdp(process_id: int, num_processes: int, directory: str, data) -> None:
    """The same training with params and optimiser state split over every device."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from minitorch import checkpoint, losses, nn, optim, parallel, train

    images, labels = data
    net = nn.Net([nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)])
    opt = optim.sgd(0.1, momentum=0.9)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    mesh = parallel.make_mesh(data=jax.device_count())
    shardings = parallel.param_shardings(net, mesh, fsdp="data")
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    opt_state = opt.init(params)  # eagerly: each buffer keeps its param's sharding
    whole = jax.jit(net.init)(jax.random.key(0))  # the reference: one device, same steps
    reference = {"params": whole, "opt_state": opt.init(whole)}
    one_device = train.make_step(net, losses.softmax_cross_entropy, opt)
    rng = np.random.default_rng(1)
    local = GLOBAL_BATCH // num_processes
    for _ in range(STEPS):
        rows = rng.choice(len(images), GLOBAL_BATCH, replace=False)
        mine = rows[process_id * local:(process_id + 1) * local]
        params, opt_state, _ = step(params, opt_state,
                                    parallel.shard_batch(mesh, (images[mine], labels[mine])),
                                    None)
        jax.block_until_ready(params)
        reference["params"], reference["opt_state"], _ = one_device(
            reference["params"], reference["opt_state"], (images[rows], labels[rows]), None)
    held = max(parallel.bytes_per_device((params, opt_state)).values())
    total = sum(leaf.nbytes for leaf in jax.tree.leaves((params, opt_state)))
    gathered = multihost_utils.process_allgather(params, tiled=True)  # only to compare
    error = max(float(np.abs(a - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(gathered), jax.tree.leaves(reference["params"])))
    print(f"process {process_id}: fsdp params sha256 {digest(jax.tree.leaves(gathered))}, "
          f"largest device holds {held / total:.2f} of params + momentum, "
          f"max |fsdp - one device| {error:.1e}", flush=True)

    template = {"params": params, "opt_state": opt_state}
    with checkpoint.CheckpointManager(directory, keep=2) as manager:
        written = manager.save(STEPS, template)  # this process's part: the shards it holds
        multihost_utils.sync_global_devices("checkpoint written")  # every part on disk
        step, (restored, _) = manager.restore_latest(template, shardings=jax.tree.map(
            lambda a: a.sharding, template))
    same = all(
        a.sharding.is_equivalent_to(b.sharding, a.ndim)
        and all(np.array_equal(x.data, y.data)
                for x, y in zip(a.addressable_shards, b.addressable_shards))
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(template)))
    ok = same and step == STEPS and error < 1e-5
    print(f"process {process_id}: wrote {os.path.basename(written)}; fsdp checks "
          f"{'passed' if ok else 'FAILED'} (restored onto the shardings: {same})", flush=True)


class Joined:
    """The global batches: every process's loader's batch ``i``, concatenated (the
    one-device reference; the processes themselves never build them)."""

    def __init__(self, loaders):
        self.loaders = loaders

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __iter__(self):
        import numpy as np

        for parts in zip(*self.loaders):
            yield tuple(np.concatenate(leaves) for leaves in zip(*parts))


def streamed(process_id: int, num_processes: int, data) -> None:
    """``fit`` data parallel over both processes, each streaming its own share."""
    import jax
    import numpy as np

    from minitorch import losses, nn, optim, parallel
    from minitorch.data import ArrayDataset, DataLoader
    from minitorch.fit import fit

    images, labels = (a[:len(a) // num_processes * num_processes] for a in data)

    def loader(process: int) -> DataLoader:  # process `process`'s rows only
        share = ArrayDataset(images[process::num_processes], labels[process::num_processes])
        return DataLoader(share, GLOBAL_BATCH // num_processes, shuffle=True, seed=process,
                          drop_last=True, device_put=False)

    net = nn.Net([nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)])
    opt = optim.sgd(0.1, momentum=0.9)
    args = (net, losses.softmax_cross_entropy, opt)
    params, _, history = fit(*args, loader(process_id), epochs=2, progress=False,
                             mesh=parallel.data_mesh())
    reference, _, _ = fit(*args, Joined([loader(p) for p in range(num_processes)]),
                          epochs=2, progress=False)
    error = max(float(np.abs(np.asarray(a.addressable_data(0)) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))
    ok = error < 1e-5
    print(f"process {process_id}: streamed fit loss {history['loss'][-1]:.4f}, max |mesh - "
          f"one device| {error:.1e}; streamed checks {'passed' if ok else 'FAILED'}",
          flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(num_processes: int) -> int:
    coordinator = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    with tempfile.TemporaryDirectory() as directory:
        workers = [subprocess.Popen([sys.executable, __file__, "--process-id", str(i),
                                     "--num-processes", str(num_processes),
                                     "--coordinator", coordinator, "--directory", directory],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env) for i in range(num_processes)]
        outputs = []
        for process in workers:
            out, _ = process.communicate(timeout=600)
            outputs.append((process.returncode, out))
    digests: dict[str, set[str]] = {"processes, params": set(), "fsdp params": set()}
    for _, out in outputs:
        sys.stdout.write(out)
        for kind, digest_text in re.findall(r"(processes, params|fsdp params) sha256 (\w+)", out):
            digests[kind].add(digest_text)
    ran = all(code == 0 for code, _ in outputs)
    identical = ran and all(len(found) == 1 for found in digests.values())
    fsdp_ok = ran and all(out.count("fsdp checks passed") == 1 for _, out in outputs)
    streamed_ok = ran and all(out.count("streamed checks passed") == 1 for _, out in outputs)
    print(f"multihost: {num_processes} processes, params identical on all: "
          f"{'yes' if identical else 'NO'}; FSDP equal to one device, checkpoint restored "
          f"onto its shardings: {'yes' if fsdp_ok else 'NO'}; each process streaming its "
          f"share equal to one device: {'yes' if streamed_ok else 'NO'}")
    return 0 if identical and fsdp_ok and streamed_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--coordinator")
    parser.add_argument("--directory", help="where the workers write the FSDP checkpoint")
    args = parser.parse_args()
    if args.process_id is None:
        return launch(args.num_processes)
    worker(args.process_id, args.num_processes, args.coordinator, args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
