"""Real text that ships with a package, and what character-level language models need of it.

Nothing is downloaded: :func:`census_surnames` reads the 1990 US census surname list that
the ``names`` package ships (``pip install minitorch[examples]``).

Example::

    words = datasets.census_surnames()                     # 88,799 lowercase surnames
    train_words, val_words = datasets.split(words, 0.1, seed=0)
    vocab = datasets.CharVocab.of(words)                   # "." (id 0) marks a boundary
    inputs, targets, mask = vocab.sequences(train_words)   # (N, T) each, T = longest + 1
    baseline = datasets.bigram_nats(train_words, val_words, vocab)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Sequence

import numpy as np

BOUNDARY = "."


def census_surnames() -> list[str]:
    """The 88,799 surnames of the 1990 US census (``names`` package), lowercase, most
    frequent first."""
    try:
        names = importlib.import_module("names")
    except ImportError as err:  # an optional extra
        raise ImportError("census_surnames needs the 'names' package: pip install "
                          "'minitorch[examples]' (or pip install names)") from err
    with open(names.FILES["last"], encoding="ascii") as lines:
        return [line.split()[0].lower() for line in lines if line.strip()]


def split(words: Sequence[str], val_fraction: float, *,
          seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, val)``: a seeded shuffle of ``words``, the last ``val_fraction`` held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"split: val_fraction must be in (0, 1), received {val_fraction!r}")
    order = np.random.default_rng(seed).permutation(len(words))
    cut = len(words) - max(1, round(val_fraction * len(words)))
    return [words[i] for i in order[:cut]], [words[i] for i in order[cut:]]


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Characters and their ids; id 0 is the boundary ``"."`` that starts and ends a word."""

    chars: str

    @classmethod
    def of(cls, words: Sequence[str]) -> CharVocab:
        letters = sorted(set("".join(words)))
        if BOUNDARY in letters:
            raise ValueError(f"CharVocab: the words contain the boundary {BOUNDARY!r}")
        return cls(BOUNDARY + "".join(letters))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, word: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in word]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def windows(self, words: Sequence[str], context: int) -> tuple[np.ndarray, np.ndarray]:
        """Next-character examples: ``(contexts (M, context) int32, targets (M,) int32)``,
        one per character of each word and one for its end; contexts start padded with
        boundaries (Bengio et al. 2003's fixed window)."""
        xs, ys = [], []
        for word in words:
            ids = [0] * context + self.encode(word) + [0]
            for i in range(context, len(ids)):
                xs.append(ids[i - context:i])
                ys.append(ids[i])
        return np.asarray(xs, np.int32), np.asarray(ys, np.int32)

    def sequences(self, words: Sequence[str],
                  length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole words for sequence models, shifted by one: ``inputs (N, T)`` start with the
        boundary, ``targets (N, T)`` end with it, ``mask (N, T)`` is True on the real
        positions (padding is the boundary id, left out by the mask). ``T`` defaults to the
        longest word + 1."""
        length = length or max(map(len, words)) + 1
        inputs = np.zeros((len(words), length), np.int32)
        targets = np.zeros((len(words), length), np.int32)
        mask = np.zeros((len(words), length), bool)
        for row, word in enumerate(words):
            ids = self.encode(word)[:length - 1]
            inputs[row, 1:len(ids) + 1] = ids
            targets[row, :len(ids)] = ids
            mask[row, :len(ids) + 1] = True
        return inputs, targets, mask


def bigram_nats(train_words: Sequence[str], val_words: Sequence[str], vocab: CharVocab,
                *, smoothing: float = 1.0) -> float:
    """The counted baseline: validation nats per character of a bigram model whose
    probabilities are ``train`` counts (add-``smoothing``), scored like the models (every
    character and each word's end)."""
    counts = np.full((len(vocab), len(vocab)), smoothing)
    for word in train_words:
        ids = [0, *vocab.encode(word), 0]
        np.add.at(counts, (ids[:-1], ids[1:]), 1)
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
    total, n = 0.0, 0
    for word in val_words:
        ids = [0, *vocab.encode(word), 0]
        total -= log_probs[ids[:-1], ids[1:]].sum()
        n += len(ids) - 1
    return float(total / n) if n else math.nan
