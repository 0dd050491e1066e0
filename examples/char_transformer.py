"""A small decoder-only transformer on real surnames, trained by `fit` with a masked loss.

The 88,799 surnames of the 1990 US census (the `names` package; nothing is downloaded), 10%
held out: each name is a sequence of characters that the model predicts one at a time
(causal attention, learned positions, pre-LayerNorm blocks written as `nn.Composite`s, a
tuple of blocks). `fit` takes a custom objective over `(ids, (targets, mask))` batches; padding
is left out of the loss with `where=`. It must beat a counted
bigram model and the MLP of examples/names_mlp.py on the held-out names (nats per
character), and then it generates names with `nn.generate` (a KV cache; the positions read
at `call.offset`).
Run: python examples/char_transformer.py [seed] [compute dtype]   (exits non-zero above its
bar; prints samples). `python examples/char_transformer.py 0 bfloat16` trains in mixed
precision: params float32, compute bfloat16 (`nn.MixedPrecision`), the same bar.
`--quick` (the test suite's run): a fifth of the names for 2 epochs, against `QUICK_BAR`.
"""

import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minitorch import datasets, losses, nn
from minitorch.fit import fit

BAR = 2.17  # validation nats/char (measured 2.129, 2.127 for seeds 0, 1; names MLP 2.26)
QUICK_BAR = 2.40  # --quick (measured 2.321, 2.322 for seeds 0, 1; bfloat16 compute 2.321)
EPOCHS, BATCH = 5, 128
QUICK = "--quick" in sys.argv  # a fifth of the names, 2 epochs: the test suite's run
ARGS = [a for a in sys.argv[1:] if a != "--quick"]


class Block(nn.Composite):
    """Pre-LN transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    norm1: nn.Layer
    attn: nn.Layer
    norm2: nn.Layer
    mlp: nn.Layer

    def forward(self, call, x):                      # x: (N, T, D)
        x = x + call("attn", call("norm1", x))
        return x + call("mlp", call("norm2", x))


class CharTransformer(nn.Composite):
    """Token and learned position embeddings, a tuple of blocks, a final norm, a head."""

    tokens: nn.Layer
    positions: nn.Layer
    blocks: tuple[nn.Layer, ...]
    norm: nn.Layer
    head: nn.Layer

    def forward(self, call, ids):                    # ids: (N, T) int
        # call.offset: positions already in the decoding cache (0 when training)
        where = call.offset + jnp.arange(ids.shape[1])
        x = call("tokens", ids) + call("positions", where)
        for i in range(len(self.blocks)):
            x = call(f"blocks.{i}", x)
        return call("head", call("norm", x))         # (N, T, vocab)


def char_transformer(vocab_size: int, length: int, width: int = 64, heads: int = 4,
                     depth: int = 2, dropout: float = 0.0) -> CharTransformer:
    def block():
        return Block(norm1=nn.LayerNorm(width),
                     attn=nn.MultiHeadAttention(width, heads, causal=True, dropout=dropout),
                     norm2=nn.LayerNorm(width),
                     mlp=nn.Net([nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width), nn.Dropout(dropout)]))

    small = jax.nn.initializers.normal(0.02)
    return CharTransformer(tokens=nn.Embedding(vocab_size, width, init=small),
                           positions=nn.Embedding(length, width, init=small),
                           blocks=tuple(block() for _ in range(depth)),
                           norm=nn.LayerNorm(width), head=nn.Linear(width, vocab_size))


def train_language_model(model: nn.Layer, vocab: datasets.CharVocab, train_words, *,
                         epochs: int, batch: int, learning_rate: float, seed: int):
    """Adam with a cosine decay, trained by ``fit`` on ``(ids, (targets, mask))`` with an
    objective that leaves the padding out of the loss."""
    inputs, targets, mask = vocab.sequences(train_words)
    steps = epochs * (len(inputs) // batch)
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05),
                      weight_decay=0.01)

    def objective(params, batch, key):
        ids, (next_ids, real) = batch                      # (N, T) each
        logits = model.apply(params, ids, key=key, train=True)
        return losses.softmax_cross_entropy(logits, next_ids, where=real)  # padding left out

    params = model.init(jax.random.key(seed))
    params, _, history = fit(None, objective, opt, (inputs, (targets, mask)), epochs=epochs,
                             batch_size=batch, drop_last=True, seed=seed, params=params,
                             progress=False)
    return params, history["loss"][-1]


def validation_nats(model: nn.Layer, params, vocab: datasets.CharVocab, words,
                    length: int) -> float:
    """Nats per character over every real position (each character and each name's end)."""
    inputs, targets, mask = vocab.sequences(words, length)

    @jax.jit
    def total(x, y, m):
        return losses.softmax_cross_entropy(model.apply(params, x), y, where=m, reduction="sum")

    summed = sum(float(total(inputs[i:i + 2048], targets[i:i + 2048], mask[i:i + 2048]))
                 for i in range(0, len(inputs), 2048))
    return summed / mask.sum()


def sample(model: nn.Layer, params, vocab: datasets.CharVocab, length: int, key,
           count: int = 8) -> list[str]:
    """Draw names one character at a time from the boundary id 0, with a decoding cache."""
    start = jnp.zeros((count, 1), jnp.int32)
    ids = np.asarray(nn.generate(model, params, start, length - 1, key=key, temperature=1.0))
    words = []
    for row in ids[:, 1:]:
        end = list(row).index(0) if 0 in row else len(row)
        words.append(vocab.decode(row[:end]).capitalize())
    return words


def run(name: str, build: Callable, bar: float, seed: int, *, learning_rate: float,
        compute_dtype: str = "float32") -> int:
    """Train ``build(vocab_size, length)`` on the surnames and report against the baseline;
    with a ``compute_dtype`` other than float32, in mixed precision."""
    words = datasets.census_surnames()
    train_words, val_words = datasets.split(words, 0.1, seed=0)
    epochs = 2 if QUICK else EPOCHS
    if QUICK:
        train_words, val_words = train_words[::5], val_words[::5]
    vocab = datasets.CharVocab.of(words)
    length = max(map(len, words)) + 1
    model = build(len(vocab), length)
    if compute_dtype != "float32":
        model = nn.MixedPrecision(model, compute_dtype)
        name = f"{name} ({compute_dtype} compute)"
    start = time.perf_counter()
    params, loss = train_language_model(model, vocab, train_words, epochs=epochs, batch=BATCH,
                                        learning_rate=learning_rate, seed=seed)
    wall = time.perf_counter() - start
    val = validation_nats(model, params, vocab, val_words, length)
    bigram = datasets.bigram_nats(train_words, val_words, vocab)
    params_count = nn.count_params(params)
    print(f"{params_count:,} params; last epoch's training loss {loss:.3f} nats/char")
    print("samples:", ", ".join(sample(model, params, vocab, length, jax.random.key(seed + 1))))
    print(f"{name}: validation {val:.3f} nats/char, bigram baseline {bigram:.3f} "
          f"(bar {bar:.2f}), {wall:.1f} s for {epochs} epochs")
    return 0 if val <= bar and val < bigram else 1


if __name__ == "__main__":
    seed = int(ARGS[0]) if ARGS else 0
    compute = ARGS[1] if len(ARGS) > 1 else "float32"
    sys.exit(run("char transformer", char_transformer, QUICK_BAR if QUICK else BAR, seed,
                 learning_rate=3e-3,
                 compute_dtype=compute))
