"""A vision transformer (ViT) on the handwritten digits, written as a composite owns its parts.

scikit-learn's 8x8 digits (shipped offline), the split of examples/digits_cnn.py. Each image
becomes 16 patches of 2x2 pixels, embedded by one Linear; the model owns its class token and
position table as `nn.Param` fields, holds its blocks as a tuple (addressed "blocks.0", ...),
and its blocks take stochastic depth from `call.train` and `call.key()` inside `forward`.
Run: python examples/vit_digits.py [seed] [--quick]   (exits non-zero below its bar on test
accuracy; `--quick`, the test suite's run: 15 epochs, against `QUICK_BAR`).
Measured, seeds 0-4: 96.11, 96.11, 95.28, 95.00, 95.83% (mean 95.67%; the digits CNN's
mean is 98.50%: on 1,437 training images of 8x8 pixels, convolutions' locality wins).
"""

import sys
import time

import jax
import jax.numpy as jnp
import optax
from digits_cnn import load

from minitorch import losses, nn, train
from minitorch.fit import fit

QUICK = "--quick" in sys.argv
BAR = 0.94  # test accuracy, below the lowest of seeds 0-4 (95.00%)
QUICK_BAR = 0.85  # --quick (measured 90.00%, 91.11%: seeds 0, 1)
PATCH, WIDTH, HEADS, DEPTH = 2, 32, 4, 3
PATCHES = (8 // PATCH) ** 2


class Patches(nn.Layer):
    """``(N, 1, 8, 8)`` images -> ``(N, 16, 4)``: non-overlapping 2x2 patches, row-major."""

    size: int = PATCH

    def apply(self, params, x, *, key=None, train=False):
        n, c, h, w = x.shape
        p = self.size
        x = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // p) * (w // p), c * p * p)


class Block(nn.Composite):
    """Pre-norm transformer block; in training each branch is skipped with probability
    ``drop_path`` (stochastic depth), drawn inside forward with call.key()."""

    norm1: nn.Layer
    attn: nn.Layer
    norm2: nn.Layer
    mlp: nn.Layer
    drop_path: float = 0.1

    def branch(self, call, h):
        if not call.train or self.drop_path == 0.0:
            return h
        keep = jax.random.bernoulli(call.key(), 1.0 - self.drop_path, (h.shape[0], 1, 1))
        return jnp.where(keep, h / (1.0 - self.drop_path), 0.0)

    def forward(self, call, x):                              # x: (N, L, E)
        x = x + self.branch(call, call("attn", call("norm1", x)))
        return x + self.branch(call, call("mlp", call("norm2", x)))


class ViT(nn.Composite):
    patch: nn.Layer
    embed: nn.Layer
    cls: nn.Param                       # (1, 1, E), the class token
    pos: nn.Param                       # (1, 1 + patches, E), learned positions
    blocks: tuple[nn.Layer, ...]
    norm: nn.Layer
    head: nn.Layer

    def forward(self, call, images):                         # (N, 1, 8, 8)
        h = call("embed", call("patch", images))             # (N, 16, E)
        cls = jnp.broadcast_to(call.param("cls"), (h.shape[0], 1, h.shape[2]))
        h = jnp.concatenate([cls, h], axis=1) + call.param("pos")
        for i in range(len(self.blocks)):
            h = call(f"blocks.{i}", h)
        return call("head", call("norm", h[:, 0]))           # (N, 10) from the class token


def vit(width: int = WIDTH, heads: int = HEADS, depth: int = DEPTH) -> ViT:
    def block():
        return Block(nn.LayerNorm(width), nn.MultiHeadAttention(width, heads),
                     nn.LayerNorm(width), nn.Net([nn.Linear(width, 2 * width), nn.GELU(),
                                                  nn.Linear(2 * width, width)]))

    small = jax.nn.initializers.normal(0.02)
    return ViT(patch=Patches(), embed=nn.Linear(PATCH * PATCH, width),
               cls=nn.Param((1, 1, width), init=small),
               pos=nn.Param((1, 1 + PATCHES, width), init=small),
               blocks=tuple(block() for _ in range(depth)), norm=nn.LayerNorm(width),
               head=nn.Linear(width, 10))


def main(seed: int = 0, epochs: int = 15 if QUICK else 60) -> int:
    bar = QUICK_BAR if QUICK else BAR
    train_data, val_data, test_data = load()
    model = vit()
    steps = epochs * (len(train_data[0]) // 32)
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, steps // 20, steps),
                      weight_decay=0.05)
    start = time.perf_counter()
    params, _, history = fit(model, losses.softmax_cross_entropy, opt, train_data,
                             epochs=epochs, batch_size=32, val_data=val_data, seed=seed)
    wall = time.perf_counter() - start
    test = train.evaluate(model, losses.softmax_cross_entropy, params, test_data)
    print(f"{nn.count_params(params):,} params; last epoch: train loss "
          f"{history['loss'][-1]:.4f}, val accuracy {100 * history['val_accuracy'][-1]:.2f}%")
    print(f"ViT digits: test accuracy {100 * test['accuracy']:.2f}% on {len(test_data[0])} "
          f"images (bar {100 * bar:.0f}%), wall time {wall:.1f} s for {epochs} epochs")
    return 0 if test["accuracy"] >= bar else 1


if __name__ == "__main__":
    sys.exit(main(*[int(a) for a in sys.argv[1:2] if a != "--quick"]))
