"""XOR: the classic problem no linear model solves. A 2-8-1 tanh net, trained full-batch.

Run: python examples/xor.py   (exits non-zero unless all 4 points are classified right)
"""

import sys

import jax
import jax.numpy as jnp
import optax

from minitorch import losses, nn, optim

X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = jnp.array([[0.0], [1.0], [1.0], [0.0]])

net = nn.Net([nn.Linear(2, 8, init="xavier"), nn.Tanh(), nn.Linear(8, 1, init="xavier")])
opt = optim.sgd(0.5, momentum=0.9)


def loss_fn(params, x, y):
    return losses.binary_cross_entropy_with_logits(net.apply(params, x), y)


@jax.jit
def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def main() -> int:
    params = net.init(jax.random.key(0))
    opt_state = opt.init(params)
    for step in range(300):
        params, opt_state, loss = train_step(params, opt_state, X, Y)
        if step % 100 == 0:
            print(f"step {step:3d}  loss {float(loss):.4f}")
    probs = jax.nn.sigmoid(net.apply(params, X))
    correct = int(((probs > 0.5) == (Y > 0.5)).sum())
    for x, p in zip(X.tolist(), probs[:, 0].tolist()):
        print(f"  {x} -> {p:.3f}")
    print(f"XOR: {correct}/4 points right (final loss {float(loss):.4f})")
    return 0 if correct == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
