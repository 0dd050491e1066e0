"""The same seed in two separate processes gives bit-identical params after 100 steps."""

import pytest

from tests import forked

pytestmark = pytest.mark.slow  # fresh processes compared bit for bit

SCRIPT = """
import hashlib, sys
import jax, numpy as np
from sklearn.datasets import load_digits
from minitorch import losses, nn, optim, train

images, labels = load_digits(return_X_y=True)
images = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
net = nn.Net([nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
              nn.Dropout(0.2), nn.Linear(8 * 4 * 4, 32), nn.BatchNorm(32), nn.ReLU(),
              nn.Linear(32, 10)])
opt = optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
step = train.make_step(net, losses.softmax_cross_entropy, opt)
key = jax.random.key(int(sys.argv[1]))
params, state = net.init(key), net.init_state()
opt_state = opt.init(params)
order = np.random.default_rng(int(sys.argv[1])).permutation(len(images))
for i in range(100):
    rows = order[(i * 32) % 1760:(i * 32) % 1760 + 32]
    params, state, opt_state, _ = step(params, state, opt_state, (images[rows], labels[rows]),
                                       jax.random.fold_in(key, i))
leaves = jax.tree.leaves((params, state, opt_state))
print(hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in leaves)).hexdigest())
"""


def run(script, seed, *, own_compiles=True):
    """The hash of the trained state, from a fresh process (forked, tests/forked.py: its
    own backend and compiles); ``own_compiles``: with the run's compilation cache off, so
    that the process compiles its programs itself."""
    env = {"JAX_ENABLE_COMPILATION_CACHE": "false"} if own_compiles else {}
    out = forked.run_python(script, seed, timeout=300, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_same_seed_two_processes_bit_identical_after_100_steps(tmp_path):
    # Two compiles of each program at least: the first process's (or the cache's, written
    # by whichever process compiled it) and the second's own. The other seed, which only
    # shows that the hash depends on the run, reads the programs from the cache.
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    first, second = run(script, 0, own_compiles=False), run(script, 0)
    other = run(script, 1, own_compiles=False)
    assert len(first) == 64
    assert first == second
    assert first != other  # the hash does depend on the run
