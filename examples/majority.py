"""Majority vote of 5 bits: output 1 when at least 3 of the 5 inputs are 1.

Trained on all 32 inputs with mini-batches of 8, evaluated on all 32.
Run: python examples/majority.py   (exits non-zero unless all 32 are right)
"""

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minitorch import losses, nn, optim

BITS = 5
X = jnp.array(list(itertools.product([0.0, 1.0], repeat=BITS)))  # (32, 5)
Y = (X.sum(axis=1) > BITS / 2).astype(jnp.int32)                 # (32,) class ids 0/1

net = nn.Net([nn.Linear(BITS, 16), nn.ReLU(), nn.Linear(16, 2)])
opt = optim.sgd(0.1, momentum=0.9)


def loss_fn(params, x, y):
    return losses.softmax_cross_entropy(net.apply(params, x), y)


@jax.jit
def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def main() -> int:
    params = net.init(jax.random.key(0))
    opt_state = opt.init(params)
    rng = np.random.default_rng(0)
    for epoch in range(100):
        order = rng.permutation(len(X))
        for batch in order.reshape(-1, 8):
            params, opt_state, _ = train_step(params, opt_state, X[batch], Y[batch])
        if epoch % 25 == 0:
            print(f"epoch {epoch:3d}  loss {float(loss_fn(params, X, Y)):.4f}")
    predictions = net.apply(params, X).argmax(axis=1)
    correct = int((predictions == Y).sum())
    print(f"majority of {BITS} bits: {correct}/{len(X)} inputs right "
          f"({100 * correct / len(X):.2f}%)")
    return 0 if correct == len(X) else 1


if __name__ == "__main__":
    sys.exit(main())
