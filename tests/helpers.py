"""Shared test helpers: NumPy references and float64 conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from minitorch import nn


def to_f64(tree):
    """Cast every floating leaf of ``tree`` to float64 (call inside ``jax.enable_x64()``)."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
        else a, tree)


def away_from_zero(rng: np.random.Generator, shape, low: float = 0.1) -> np.ndarray:
    """Random values with |v| in [low, 1): no kinks (ReLU, max ties) within a finite difference."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, 1.0, size=shape)


def distinct(rng: np.random.Generator, shape) -> np.ndarray:
    """Random values pairwise at least 0.01 apart, so maxima have no near-ties."""
    size = int(np.prod(shape))
    return (rng.permutation(size).astype(np.float64) / size * 2 - 1 + 0.001).reshape(shape)


def conv2d_ref(x, w, b, stride, pads, dilation, groups):
    """Direct NumPy cross-correlation, NCHW x OIHW, as torch.nn.functional.conv2d."""
    x = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    n, _, h, wd = x.shape
    out_c, c_per_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, out_c, ho, wo))
    per_group = out_c // groups
    for o in range(out_c):
        g = o // per_group
        xs = x[:, g * c_per_group:(g + 1) * c_per_group]
        for i in range(ho):
            for j in range(wo):
                patch = xs[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out if b is None else out + b[None, :, None, None]


def pool2d_ref(x, kernel, stride, pads, op):
    """NumPy max/avg pooling; max pads with -inf, avg counts padded zeros."""
    fill = -np.inf if op == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=fill)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = window.max(axis=(2, 3)) if op == "max" else window.mean(axis=(2, 3))
    return out


def log_softmax_ref(z, axis=-1):
    z = np.asarray(z, np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def assert_jit_grads_match_eager(fn, *args, rtol=1e-5, atol=1e-6):
    """``jax.jit(jax.grad(...))`` of ``fn`` exists and equals the eager gradient.

    Autodiff inside ``jit`` takes other code paths than eagerly (every intermediate is a
    tracer), so a layer can be differentiable eagerly and not under ``jit``. The scalar
    is ``sum(sin(fn(*args)))``: a cotangent that differs per output element.
    """
    def scalar(*a):
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(fn(*a)))

    argnums = tuple(range(len(args)))
    eager = jax.grad(scalar, argnums=argnums)(*args)
    jitted = jax.jit(jax.grad(scalar, argnums=argnums))(*args)
    for got, want in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check_layer_grads(layer, params, x, *, key=None, train=False, order=1, **kwargs):
    """Finite-difference check of ``layer.apply`` in float64, w.r.t. params and input,
    and the same gradients taken under ``jit``."""
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        params64, x64 = to_f64(params), to_f64(jax.tree.map(jnp.asarray, x))

        def fn(p, v):
            return layer.apply(p, v, key=key, train=train, **kwargs)

        check_grads(fn, (params64, x64), order=order, modes=("fwd", "rev"), atol=1e-5,
                    rtol=1e-5)
        assert_jit_grads_match_eager(fn, params64, x64, rtol=1e-9, atol=1e-12)


def assert_matches_torch(ours, theirs, arrays, *, rtol=1e-5, atol=1e-5):
    """``ours(arrays)`` (JAX) equals ``theirs(tensors)`` (PyTorch), in float32, in value and
    in the gradient of ``sum(sin(y))`` w.r.t. every floating array of ``arrays`` (a flat
    dict name -> NumPy array, in minitorch's layouts; ``theirs`` converts to PyTorch's with
    differentiable torch ops, so its gradients come back in the same layouts).

    Both come from one jit-compiled ``value_and_grad``: that jit and eager agree, in values
    and gradients, is tested for every layer by tests/test_every_layer.py.
    """
    import torch

    floating = [k for k, v in arrays.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    tensors = {k: torch.tensor(np.asarray(v), requires_grad=k in floating)
               for k, v in arrays.items()}
    expected = theirs(tensors)
    torch.sin(expected).sum().backward()

    def scalar(floats):
        y = ours({**arrays, **floats})
        return jnp.sum(jnp.sin(y)), y

    floats = {k: jnp.asarray(arrays[k], jnp.float32) for k in floating}
    (_, got), grads = jax.jit(jax.value_and_grad(scalar, has_aux=True))(floats)
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=rtol, atol=atol)
    for k in floating:
        np.testing.assert_allclose(grads[k], tensors[k].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient w.r.t. {k}")


class Block(nn.Composite):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``+ mlp(x)``."""

    norm: nn.Layer
    attn: nn.Layer
    mlp: nn.Layer

    def forward(self, call, x):
        x = x + call("attn", call("norm", x))
        return x + call("mlp", x)


def decode_in_chunks(model, params, x, chunks):
    """Apply ``x`` through the cache in consecutive chunks of the given lengths, compiled
    (eager decoding: tests/test_decoding.py's test_under_jit_and_in_a_net, the README).
    Returns the outputs concatenated along the length and the last cache."""
    step = jax.jit(lambda params, chunk, cache: model.apply(params, chunk, cache=cache))
    cache = model.init_cache(x.shape[0], x.shape[1])
    outs, start = [], 0
    for size in chunks:
        y, cache = step(params, x[:, start:start + size], cache)
        outs.append(y)
        start += size
    return jnp.concatenate(outs, axis=1), cache
