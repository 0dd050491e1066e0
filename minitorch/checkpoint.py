"""Checkpoints that cannot run code on load, written atomically.

A checkpoint is one ``.npz`` file (read back with ``allow_pickle=False``): every leaf of a
pytree stored under its path (``['params'][0]['W']``), plus a JSON record of the dtypes
NumPy cannot name (bfloat16, PRNG keys) and your metadata. Loading rebuilds the tree on a
template (your params, or ``net.init``'s) and reports any difference by path, expected
and found shape and dtype.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
:class:`CheckpointManager` keeps the last ``keep`` checkpoints of a run and finds the
latest complete one.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_META = "__minitorch_meta__"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, incomplete, or does not fit the template."""


def _encode(leaf: Any) -> tuple[np.ndarray, str]:
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf)), f"key:{jax.random.key_impl(leaf)}"
    array = np.asarray(leaf)
    if array.dtype == jnp.bfloat16:
        return array.view(np.uint16), "bfloat16"
    return array, array.dtype.str


def _decode(array: np.ndarray, dtype: str) -> Any:
    if dtype.startswith("key:"):
        return jax.random.wrap_key_data(jnp.asarray(array), impl=dtype[4:])
    if dtype == "bfloat16":
        return array.view(jnp.bfloat16)
    return array


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write ``tree`` (any pytree of arrays) and JSON-able ``metadata`` to ``path`` atomically."""
    path = Path(path)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays, dtypes = {}, {}
    for key_path, leaf in leaves:
        name = jax.tree_util.keystr(key_path)
        arrays[name], dtypes[name] = _encode(leaf)
    meta = {"format": FORMAT, "dtypes": dtypes, "order": list(arrays), "metadata": metadata or {}}
    try:
        meta_bytes = json.dumps(meta).encode()
    except TypeError as err:
        raise TypeError(f"checkpoint.save: metadata must be JSON-serialisable: {err}") from None
    arrays[_META] = np.frombuffer(meta_bytes, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict]:
    """The flat ``{path: array}`` contents and the metadata of a checkpoint, without a template."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if _META not in npz.files:
                raise CheckpointError(f"{path}: not a minitorch checkpoint (no metadata record)")
            meta = json.loads(npz[_META].tobytes().decode())
            flat = {name: _decode(npz[name], meta["dtypes"][name]) for name in meta["order"]}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or incomplete checkpoint "
                              f"({type(err).__name__}: {err})") from None
    return flat, meta["metadata"]


def load(path: str | os.PathLike, template: Any) -> tuple[Any, dict]:
    """Load ``path`` into the structure of ``template``; returns ``(tree, metadata)``.

    Raises CheckpointError naming the first parameter path whose presence, shape or dtype
    differs from the template's.
    """
    flat, metadata = read(path)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(key_path) for key_path, _ in leaves]
    missing = [n for n in names if n not in flat]
    extra = [n for n in flat if n not in set(names)]
    if missing or extra:
        raise CheckpointError(f"{path}: structure mismatch: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                              f"{'...' if len(extra) > 5 else ''}")
    values = []
    for name, (_, want) in zip(names, leaves):
        got = flat[name]
        want_shape, got_shape = tuple(jnp.shape(want)), tuple(jnp.shape(got))
        want_dtype, got_dtype = jnp.result_type(want), jnp.result_type(got)
        if want_shape != got_shape or want_dtype != got_dtype:
            raise CheckpointError(f"{path}: {name} expected {want_dtype}{list(want_shape)}, "
                                  f"found {got_dtype}{list(got_shape)}")
        values.append(got if isinstance(got, jax.Array) else jnp.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, values), metadata


class CheckpointManager:
    """Numbered checkpoints ``ckpt_00000012.npz`` in ``directory``; keeps the newest ``keep``.

    Example::

        manager = CheckpointManager("runs/digits", keep=3)
        manager.save(epoch, {"params": params, "opt_state": opt_state}, {"epoch": epoch})
        step, (tree, meta) = manager.restore_latest(template)
    """

    PATTERN = re.compile(r"^ckpt_(\d{8})\.npz$")

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        if keep < 1:
            raise ValueError(f"CheckpointManager: keep must be >= 1, received {keep!r}")
        self.directory, self.keep = Path(directory), keep

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:08d}.npz"

    def steps(self) -> list[int]:
        """The steps of the checkpoint files present (complete or not), oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir()
                      if (m := self.PATTERN.match(p.name)))

    def save(self, step: int, tree: Any, metadata: dict | None = None) -> Path:
        """Save checkpoint ``step`` and delete all but the newest ``keep``.

        One writer per directory: temporary files left by a writer that was killed
        mid-write are removed here.
        """
        if self.directory.is_dir():
            for stale in self.directory.glob(".ckpt_*.npz.*.tmp"):
                stale.unlink(missing_ok=True)
        path = save(self.path(step), tree, {"step": step, **(metadata or {})})
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        return path

    def latest_step(self) -> int | None:
        """The newest step whose checkpoint reads back completely, or None."""
        for step in reversed(self.steps()):
            try:
                read(self.path(step))
            except CheckpointError:
                continue
            return step
        return None

    def restore_latest(self, template: Any) -> tuple[int, tuple[Any, dict]] | None:
        """``(step, (tree, metadata))`` of the newest complete checkpoint, or None."""
        step = self.latest_step()
        return None if step is None else (step, load(self.path(step), template))
