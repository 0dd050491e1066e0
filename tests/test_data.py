import jax
import numpy as np
import pytest

from minitorch.data import ArrayDataset, DataLoader


def dataset(n=10):
    return ArrayDataset(np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                        np.arange(n))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_example_once_per_epoch(drop_last, prefetch):
    loader = DataLoader(dataset(10), 4, shuffle=True, seed=1, drop_last=drop_last,
                        prefetch=prefetch)
    batches = list(loader)
    assert len(batches) == len(loader) == (2 if drop_last else 3)
    ids = np.concatenate([np.asarray(y) for _, y in batches])
    assert len(ids) == (8 if drop_last else 10) and len(set(ids.tolist())) == len(ids)
    for x, y in batches:
        assert isinstance(x, jax.Array)
        np.testing.assert_array_equal(np.asarray(x)[:, 0], np.asarray(y))  # rows stay paired


def test_shuffle_changes_per_epoch_and_is_reproducible():
    loader = DataLoader(dataset(20), 20, shuffle=True, seed=5)
    first, second = (np.asarray(next(iter(loader))[1]) for _ in range(2))
    assert not np.array_equal(first, second)
    again = DataLoader(dataset(20), 20, shuffle=True, seed=5)
    np.testing.assert_array_equal(np.asarray(next(iter(again))[1]), first)
    again.set_epoch(1)  # resume at epoch 1
    np.testing.assert_array_equal(np.asarray(next(iter(again))[1]), second)


def test_no_shuffle_keeps_order_and_numpy_output():
    loader = DataLoader(dataset(5), 2, device_put=False)
    ys = [y for _, y in loader]
    assert all(isinstance(y, np.ndarray) for y in ys)
    np.testing.assert_array_equal(np.concatenate(ys), np.arange(5))


def test_prefetch_yields_what_the_plain_loader_yields():
    plain = [np.asarray(y) for _, y in DataLoader(dataset(9), 2, shuffle=True, seed=3)]
    ahead = [np.asarray(y) for _, y in DataLoader(dataset(9), 2, shuffle=True, seed=3,
                                                  prefetch=3)]
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prefetch_reraises_errors_of_the_dataset():
    class Broken:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        list(DataLoader(Broken(), 2, prefetch=1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be a positive int, received 0"),
    (dict(batch_size=11, drop_last=True), "larger than the dataset"),
    (dict(batch_size=2, prefetch=-1), "prefetch must be a non-negative int"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(dataset(10), **kwargs)


def test_bad_datasets():
    with pytest.raises(ValueError, match="equal length"):
        ArrayDataset(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least one example"):
        ArrayDataset(np.zeros((0, 2)))
