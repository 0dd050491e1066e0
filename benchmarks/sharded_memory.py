"""Bytes each device holds with sharded params: replicated, FSDP, tensor parallel, both.

For each model and layout on 8 devices (on a CPU: ``--xla_force_host_platform_device_count=8``,
set here before jax is imported): the params and Adam state each device holds after
``jax.jit(net.init, out_shardings=...)`` and ``opt.init`` (the largest device), as a
fraction of the whole, and what XLA's compiled training step reserves per device
(``memory_analysis``: arguments, outputs and temporaries, activations included).

Run: python -m benchmarks.sharded_memory
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.sequence_peers import SEQUENCE_WORKLOADS, minitorch_model
from minitorch import losses, nn, parallel, train

LAYOUTS = {  # name: (mesh axes, param_shardings keywords)
    "replicated": ({"data": 8}, {}),
    "fsdp": ({"data": 8}, {"fsdp": "data"}),
    "tensor": ({"model": 8}, {"tensor": "model"}),
    "fsdp+tensor": ({"data": 4, "model": 2}, {"fsdp": "data", "tensor": "model"}),
}


def models():
    gpt = SEQUENCE_WORKLOADS["gpt"]
    ids = np.random.default_rng(0).integers(0, gpt.vocab, size=(32, gpt.length + 1))
    mlp = nn.Net([nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                  nn.Linear(2048, 10)])
    x = np.random.default_rng(0).normal(size=(512, 784)).astype(np.float32)
    return {"gpt (compare.py's)": (minitorch_model(gpt), (ids[:, :-1], ids[:, 1:])),
            "large MLP 784-2048-2048-10": (mlp, (x, np.zeros(512, np.int32)))}


def measure(net, batch, axes, keywords):
    mesh = parallel.make_mesh(**axes)
    shardings = parallel.param_shardings(net, mesh, **keywords)
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    tree = (params, opt_state)
    whole = sum(leaf.nbytes for leaf in jax.tree.leaves(tree))
    held = max(parallel.bytes_per_device(tree).values())
    update = train.make_update(net, losses.softmax_cross_entropy, opt)  # make_step's body
    batch = parallel.shard_batch(mesh, tuple(jnp.asarray(a) for a in batch))
    compiled = jax.jit(update, donate_argnums=(0, 2)).lower(
        params, None, opt_state, batch, None).compile()
    stats = compiled.memory_analysis()
    step_bytes = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                  + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return whole, held, step_bytes, int(np.prod(list(mesh.shape.values())))


def main() -> None:
    print("| model | layout | params + Adam state, whole (MB) | largest device (MB) "
          "| fraction (1/8 = 0.125) | compiled step per device (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (net, batch) in models().items():
        for layout, (axes, keywords) in LAYOUTS.items():
            whole, held, step_bytes, _ = measure(net, batch, axes, keywords)
            print(f"| {name} | {layout} | {whole / 1e6:.2f} | {held / 1e6:.3f} "
                  f"| {held / whole:.3f} | {step_bytes / 1e6:.2f} |")


if __name__ == "__main__":
    main()
