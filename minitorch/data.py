"""Datasets and batching: ``ArrayDataset`` and ``DataLoader``.

For data that fits in device memory, :func:`minitorch.fit.fit` shuffles and batches on
the device inside one compiled epoch and needs none of this; a ``DataLoader`` is for your
own loops and for data fed from the host.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from minitorch.errors import ArgumentError, check_int


def num_examples(tree: Any, where: str) -> int:
    """The number of examples of ``tree``, a pytree of arrays (an array, a tuple, a dict)
    whose leaves share their first axis; an ArgumentError naming ``where`` and the leaf's
    path for an empty pytree, a leaf that is not an array (or has no first axis), or leaves
    of different lengths."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ArgumentError(f"{where}: expected a pytree of arrays, received an empty "
                            f"{type(tree).__name__}")
    lengths: dict[str, int] = {}
    for path, leaf in leaves:
        name = f"{where}{jax.tree_util.keystr(path)}"
        shape = getattr(leaf, "shape", None)
        if shape is None or not hasattr(leaf, "dtype"):
            raise ArgumentError(f"{name}: expected an array, received {type(leaf).__name__}")
        if len(shape) == 0:
            raise ArgumentError(f"{name}: expected a first axis of examples, received a "
                                f"scalar")
        lengths[name] = int(shape[0])
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ArgumentError(f"{where}: every array needs the same number of examples (first "
                            f"axis); {shown}")
    return next(iter(lengths.values()))


class ArrayDataset:
    """Equal-length arrays indexed together: ``dataset[i] -> (x[i], y[i], ...)``.

    Args:
      *arrays: NumPy or JAX arrays sharing their first axis (the examples); a NumPy memmap
        (``np.load(path, mmap_mode="r")``) streams a file larger than memory through a
        ``DataLoader``, each batch reading only its rows.
    """

    def __init__(self, *arrays: Any):
        if not arrays:
            raise ValueError("ArrayDataset: expected at least one array, received none")
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"ArrayDataset: expected arrays of equal length (first axis), "
                             f"received lengths {lengths}")
        if lengths[0] == 0:
            raise ValueError("ArrayDataset: expected at least one example, received 0")
        self.arrays = tuple(arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple:
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over a dataset in batches, as ``torch.utils.data.DataLoader``.

    Args:
      dataset: an ``ArrayDataset`` (or anything with ``len`` and array indexing that
        returns a tuple of arrays).
      batch_size: examples per batch, 1 <= batch_size <= len(dataset).
      shuffle: a new order every epoch, drawn from ``seed`` and the epoch number, so that a
        run (and a resumed run) is reproducible.
      seed: the shuffling seed.
      drop_last: drop the last batch when it is smaller than ``batch_size``.
      prefetch: batches to prepare ahead in a background thread (0: none).
      device_put: hand out JAX arrays on the default device (otherwise NumPy arrays), or a
        ``jax.sharding.Sharding`` to place each batch with (e.g. split over a mesh).

    Each ``iter(loader)`` is one epoch; ``set_epoch`` chooses the epoch (to resume).
    """

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 0, device_put: Any = True):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ArgumentError(f"DataLoader: dataset must have len() and indexing (e.g. an "
                                f"ArrayDataset), received {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ArgumentError("DataLoader: the dataset is empty")
        check_int("DataLoader", "batch_size", batch_size, 1)
        check_int("DataLoader", "seed", seed)
        check_int("DataLoader", "prefetch", prefetch, 0)
        if batch_size > len(dataset) and drop_last:
            raise ArgumentError(f"DataLoader: batch_size {batch_size} is larger than the dataset "
                                f"({len(dataset)} examples) and drop_last=True leaves no batch")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.prefetch, self.device_put = drop_last, prefetch, device_put
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter`` yields epoch ``epoch``'s order."""
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """The example order of epoch ``epoch``."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _batches(self, epoch: int) -> Iterator[tuple]:
        order = self.order(epoch)
        for start in range(0, len(order) - (self.batch_size - 1 if self.drop_last else 0),
                           self.batch_size):
            window = order[start:start + self.batch_size] if self.shuffle else \
                slice(start, start + self.batch_size)
            yield self._place(self.dataset[window])

    def _place(self, batch: Sequence) -> tuple:
        if not isinstance(batch, (tuple, list)):
            raise ArgumentError(f"DataLoader: dataset[indices] must return a tuple of arrays "
                                f"(inputs, targets, ...), as ArrayDataset does; the dataset "
                                f"returned a {type(batch).__name__}")
        if self.device_put is False:
            return tuple(np.asarray(a) for a in batch)
        if self.device_put is True:
            return tuple(jax.device_put(a) for a in batch)
        return tuple(jax.device_put(a, self.device_put) for a in batch)

    def __iter__(self) -> Iterator[tuple]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        batches = self._batches(epoch)
        return prefetched(batches, self.prefetch) if self.prefetch else batches


class Epochs:
    """A re-iterable whose epoch ``e`` is the batches of ``make(e)``: any pipeline (a Grain
    ``MapDataset``, a generator function) with an order drawn per epoch, so that
    ``fit`` (which calls ``set_epoch``) streams a new order every epoch and a resumed run
    sees the same orders as an uninterrupted one.

    Example::

      import grain
      rows = grain.MapDataset.source(ArrayDataset(x, y))
      batches = Epochs(lambda epoch: rows.shuffle(seed=epoch).batch(32))
      params, opt_state, history = fit(net, loss, opt, batches, epochs=10)

    Args:
      make: ``make(epoch) -> iterable of batches``, called once per epoch.
    """

    def __init__(self, make: Any):
        if not callable(make):
            raise ArgumentError(f"Epochs: make must be a function of the epoch returning "
                                f"its batches, received {type(make).__name__}")
        self.make = make
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter`` yields ``make(epoch)``'s batches."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches in an epoch (when ``make``'s result has a length)."""
        return len(self.make(self.epoch))

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.make(epoch))


def prefetched(batches: Iterator[Any], size: int) -> Iterator[Any]:
    """Produce ``batches`` in a daemon thread, ``size`` ahead; re-raise its errors here.

    Abandoning the iterator (``break``, an exception, or dropping it) closes the generator,
    which stops the thread and lets go of the batches it buffered.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():  # a timeout, so that a stopped consumer frees the thread
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(err)

    thread = threading.Thread(target=produce, daemon=True, name="DataLoader prefetch")
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not buffer.empty():  # drop the buffered batches now, not when the thread ends
            buffer.get_nowait()
        thread.join()
