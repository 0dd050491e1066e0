"""Generating with a KV cache: `nn.generate` against recomputing the prefix, raw JAX's own
cache loop, and PyTorch eager with its own cache.

The model is examples/char_transformer.py's (width 64, 4 heads, 2 blocks), its position
table long enough for the prompt and 256 new tokens; greedy decoding, so every candidate
must produce the same ids (checked). Candidates, each generating ``--new`` tokens after a
``--prompt``-token prompt, at batch 1 and 8:

- ``minitorch generate``: ``nn.generate``, prefill and a ``lax.scan`` over the new tokens
  with the model's KV cache, one compiled program;
- ``minitorch recompute``: the same model applied to the whole (padded) sequence at every
  new token, as one compiled ``lax.fori_loop``: what decoding costs without a cache;
- ``raw JAX cache``: the same arithmetic written by hand in jax.numpy, keys and values in
  a preallocated cache updated with ``lax.dynamic_update_slice``, one compiled scan;
- ``PyTorch eager cache``: the same model in torch (``torch.no_grad``), keys and values
  appended to a cache per step, a Python loop.

Run: python benchmarks/decode.py [--new 256] [--prompt 8] [--rounds 7] [--batches 1 8]
(prints a table for benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from char_transformer import char_transformer  # noqa: E402

from benchmarks.common import interleaved, machine, median, ratio_spread  # noqa: E402
from minitorch import nn  # noqa: E402

VOCAB, HEADS = 28, 4


def model_and_params(length: int, seed: int = 0):
    model = char_transformer(VOCAB, length)
    return model, model.init(jax.random.key(seed))


def recompute(model, params, prompt, new: int):
    """Greedy decoding by applying the model to the whole padded sequence per token."""
    n, p = prompt.shape

    @jax.jit
    def run(prompt):
        ids = jnp.zeros((n, p + new), prompt.dtype).at[:, :p].set(prompt)

        def body(t, ids):
            logits = model.apply(params, ids)
            nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t - 1, 1, False), -1)
            return ids.at[:, t].set(nxt.astype(ids.dtype))

        return jax.lax.fori_loop(p, p + new, body, ids)

    return run


def _layer_norm(x, p):
    return (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(
        jnp.var(x, -1, keepdims=True) + 1e-5) * p["scale"] + p["bias"]


def raw_cache_loop(params, prompt, new: int):
    """The char transformer by hand in jax.numpy, with a preallocated KV cache; like
    ``nn.generate``, it takes the params as an argument of the compiled loop."""
    n, p = prompt.shape
    width = params["tokens"]["W"].shape[1]
    d = width // HEADS
    total = p + new

    def heads(x, lin):
        return (x @ lin["W"] + lin["b"]).reshape(*x.shape[:2], HEADS, d)

    def forward(params, ids, start, caches):
        length = ids.shape[1]
        x = params["tokens"]["W"][ids] + params["positions"]["W"][start + jnp.arange(length)]
        new_caches = []
        for b, (ck, cv) in zip(params["blocks"], caches):
            h = _layer_norm(x, b["norm1"])
            q, k, v = (heads(h, b["attn"][name]) for name in "qkv")
            ck = jax.lax.dynamic_update_slice(ck, k, (0, start, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v, (0, start, 0, 0))
            s = jnp.einsum("nlhd,nshd->nhls", q / np.sqrt(d), ck)
            future = jnp.arange(total) > (start + jnp.arange(length))[:, None]
            a = jax.nn.softmax(jnp.where(future, -jnp.inf, s), axis=-1)
            out = jnp.einsum("nhls,nshd->nlhd", a, cv).reshape(n, length, width)
            x = x + out @ b["attn"]["o"]["W"] + b["attn"]["o"]["b"]
            up, down = b["mlp"][0], b["mlp"][2]
            x = x + jax.nn.gelu(_layer_norm(x, b["norm2"]) @ up["W"] + up["b"],
                                approximate=False) @ down["W"] + down["b"]
            new_caches.append((ck, cv))
        logits = _layer_norm(x, params["norm"]) @ params["head"]["W"] + params["head"]["b"]
        return logits, new_caches

    @jax.jit
    def run(params, prompt):
        zeros = jnp.zeros((n, total, HEADS, d), jnp.float32)
        caches = [(zeros, zeros) for _ in params["blocks"]]
        logits, caches = forward(params, prompt, 0, caches)
        first = jnp.argmax(logits[:, -1], -1).astype(prompt.dtype)

        def step(carry, t):
            token, caches = carry
            logits, caches = forward(params, token[:, None], t, caches)
            return (jnp.argmax(logits[:, -1], -1).astype(prompt.dtype), caches), token

        (last, _), tokens = jax.lax.scan(step, (first, caches), p + jnp.arange(new - 1))
        return jnp.concatenate([prompt, tokens.T, last[:, None]], axis=1)

    return lambda: run(params, prompt)


def torch_cache_loop(params, prompt, new: int):
    """The same model in PyTorch eager, keys and values appended to a cache per step."""
    import torch
    import torch.nn.functional as F

    t = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), params)
    width = t["tokens"]["W"].shape[1]
    d = width // HEADS

    def forward(ids, start, caches):
        length = ids.shape[1]
        x = t["tokens"]["W"][ids] + t["positions"]["W"][start:start + length]
        new_caches = []
        for b, cache in zip(t["blocks"], caches):
            h = F.layer_norm(x, (width,), b["norm1"]["scale"], b["norm1"]["bias"])
            q, k, v = ((h @ b["attn"][name]["W"] + b["attn"][name]["b"]).view(
                ids.shape[0], length, HEADS, d).transpose(1, 2) for name in "qkv")
            if cache is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
            x = x + out.transpose(1, 2).reshape(ids.shape[0], length, width) @ \
                b["attn"]["o"]["W"] + b["attn"]["o"]["b"]
            up, down = b["mlp"][0], b["mlp"][2]
            h = F.layer_norm(x, (width,), b["norm2"]["scale"], b["norm2"]["bias"])
            x = x + F.gelu(h @ up["W"] + up["b"]) @ down["W"] + down["b"]
            new_caches.append((k, v))
        h = F.layer_norm(x, (width,), t["norm"]["scale"], t["norm"]["bias"])
        return h @ t["head"]["W"] + t["head"]["b"], new_caches

    ids0 = torch.tensor(np.asarray(prompt), dtype=torch.long)

    def run():
        with torch.no_grad():
            logits, caches = forward(ids0, 0, [None] * len(t["blocks"]))
            out = [ids0, logits[:, -1].argmax(-1, keepdim=True)]
            for step in range(new - 1):
                logits, caches = forward(out[-1], ids0.shape[1] + step, caches)
                out.append(logits[:, -1].argmax(-1, keepdim=True))
            return torch.cat(out, 1).numpy()

    return run


def measure(batch: int, prompt_length: int, new: int, rounds: int) -> dict[str, list[float]]:
    model, params = model_and_params(prompt_length + new)
    prompt = jnp.asarray(np.random.default_rng(batch).integers(1, VOCAB, (batch, prompt_length)),
                         jnp.int32)
    candidates = {
        "minitorch generate": lambda: nn.generate(model, params, prompt, new),
        "minitorch recompute": (lambda run: lambda: run(prompt))(
            recompute(model, params, prompt, new)),
        "raw JAX cache": raw_cache_loop(params, prompt, new),
    }
    with contextlib.suppress(ImportError):  # PyTorch is an optional peer
        candidates["PyTorch eager cache"] = torch_cache_loop(params, prompt, new)
    outputs = {name: np.asarray(run()) for name, run in candidates.items()}
    reference = outputs["minitorch generate"]
    for name, ids in outputs.items():  # greedy: every candidate must decode the same ids
        agree = float(np.mean(ids == reference))
        if agree < 1.0:
            raise SystemExit(f"{name} decoded other ids than nn.generate ({agree:.1%} agree)")
    return interleaved(candidates, rounds=rounds)


def report(results: dict[int, dict[str, list[float]]], new: int, prompt: int) -> str:
    lines = [f"Greedy decoding of {new} new tokens after a {prompt}-token prompt, the char "
             f"transformer (104k params); medians of interleaved rounds, ms per generation; "
             f"ratios are medians of per-round ratios (+- half the interquartile range).", "",
             "| batch | candidate | ms | vs minitorch generate |", "| --- | --- | --- | --- |"]
    for batch, times in results.items():
        for name, values in times.items():
            ratio, spread = ratio_spread(times, name, "minitorch generate")
            lines.append(f"| {batch} | {name} | {1e3 * median(values):.1f} | "
                         f"{ratio:.2f}x +- {spread:.2f} |")
    lines += ["", f"Machine: {machine()}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    results = {b: measure(b, args.prompt, args.new, args.rounds) for b in args.batches}
    print(report(results, args.new, args.prompt))


if __name__ == "__main__":
    main()
