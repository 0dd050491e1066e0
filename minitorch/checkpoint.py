"""Checkpoints in the safetensors format, validated before any data is read, written atomically.

A checkpoint is one `safetensors <https://huggingface.co/docs/safetensors>`_ file: an
8-byte little-endian header length, a JSON header naming every tensor's dtype, shape and
byte range, then the raw little-endian bytes. Each leaf of a pytree is stored under its
dotted path, the one path scheme of :mod:`minitorch.nn.paths` (``params.2.attn.q.W``,
``opt_state.0.trace.2.attn.q.W``), so any safetensors reader lists names a person can
read. The header's ``__metadata__`` holds one JSON record under ``"minitorch"``::

    {"format": 4, "order": [leaf paths in tree order], "keys": {path: PRNG key impl},
     "metadata": your JSON-able metadata,
     "copies": {stacked leaf path: [rows, [copy paths]]}   (only with save(..., net=))}

Saved with the model (``save(path, tree, net=net)``; ``fit`` does), a leaf that an
``nn.Repeat`` stacks is stored as its copies' rows, each under the copy's path
(``params.blocks.3.attn.q.W``, ``opt_state.0.mu.blocks.3.attn.q.W``), so a safetensors
reader sees the blocks as PyTorch names a ``ModuleList``'s; ``copies`` records which rows
make which stack, and :func:`load` reassembles a stack from its copies' bytes without a
copy in memory. Format 2 files (leaves named by ``jax.tree_util.keystr``,
``['params'][0]['W']``) and format 3 files (no ``copies``) still load; format 2 names are
read as the dotted paths they stand for.

``fit`` (through a :class:`CheckpointManager`) writes the tree ``{"params", "state",
"opt_state"}`` (``state`` None for a net without state) and the metadata ``{"step",
"epoch", "history", "run", "stopped", "callbacks"}``; ``load(path, params, under="params")``
restores the params alone, without an optimiser state to build as a template.

bfloat16 and float8 are stored natively; PRNG keys as their ``uint32`` key data. Any
safetensors reader (PyTorch, NumPy, Rust) can read the tensors. Nothing in a file is ever
executed (there is no pickle), nothing is compressed, and the header is checked, with
bounded memory, before a byte of data is read: its size, duplicate names, every dtype,
shape and byte range against the file, the record's fields and format version, and (in
:func:`load`) every shape and dtype against your template. Any failure is a
:class:`CheckpointError` naming the file and the cause.

Sharded arrays are written without being gathered on one device: each shard is copied to
the host where its device holds it. With several processes (``jax.distributed``), each
process writes its own part, ``name.part-I-of-N.safetensors``, holding the shards its
devices hold (each shard once, by the process with its first replica), stored under
``path@start`` (``['params'][0]['W']@0,512``) with the record's ``"shards"`` naming the
leaf, the shard's offset and the whole array's shape. :func:`load` reads one file or all
parts (every part must be present and the shards must tile each array exactly), and with
``shardings=`` places each array straight onto its sharding, every device reading only its
own slice from the files (memory-mapped), on any number of processes.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
:class:`CheckpointManager` keeps the last ``keep`` checkpoints of a run and finds the
latest complete one.

Measured against NumPy's ``.npz`` (``python -m benchmarks.checkpoint_formats``): files
no larger, ``save`` in 0.54-0.79x the time and ``load`` in 0.78-1.20x (the large MLP,
the digits CNN), with every check included.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy

from minitorch.errors import check_int
from minitorch.nn.core import Layer
from minitorch.nn.paths import dotted, join, leaf_paths
from minitorch.nn.paths import under as is_under
from minitorch.nn.repeat import repeats_below, split_copies
from minitorch.validate import check_fits_32_bits, is_int

# 4: a Repeat's copies stored under their own paths ("copies"); 3: leaves named by dotted
# paths; 2: by jax.tree_util.keystr. All three are read.
FORMAT = 4
READS = (2, 3, 4)
RECORD = "minitorch"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
MAX_RANK = 64  # NumPy's most dimensions
MAX_BYTES = 2**63 - 1  # the most one array may span, counting every non-zero dimension

# safetensors dtype names and the NumPy dtypes they hold; nothing else can be saved.
DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
          "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
          "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32, "F64": np.float64,
          "C64": np.complex64, "F8_E4M3": ml_dtypes.float8_e4m3fn,
          "F8_E5M2": ml_dtypes.float8_e5m2}
_NAME_OF = {np.dtype(dtype): name for name, dtype in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, hostile, incomplete, or does not fit the template;
    or a tree holds a leaf that a checkpoint cannot store."""


# --------------------------------------------------------------------------- writing

def _encode(name: str, leaf: Any, keys: dict[str, str]) -> np.ndarray:
    """The NumPy array stored for ``leaf``; refuses what could never load back as it was."""
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        keys[name] = str(jax.random.key_impl(leaf))
        return np.asarray(jax.random.key_data(leaf))
    array = np.asarray(leaf)
    if array.dtype not in _NAME_OF:
        raise CheckpointError(f"checkpoint.save: {name} has dtype {array.dtype}, which a "
                              f"checkpoint cannot store; supported: "
                              f"{sorted(str(np.dtype(d)) for d in DTYPES.values())}")
    check_fits_32_bits(array, f"checkpoint.save: {name}", CheckpointError)
    return array if array.flags.c_contiguous else array.copy(order="C")


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None, *,
         net: Layer | None = None) -> Path:
    """Write ``tree`` (a pytree of arrays) and JSON-able ``metadata`` to ``path`` atomically.

    ``net``: the model whose params (and state) ``tree`` holds, anywhere in it (the params
    themselves, ``{"params", "opt_state"}``, an optimiser state's moments). Given, every
    leaf that an ``nn.Repeat`` stacks is stored as its copies, each under the copy's path:
    ``params.blocks.3.attn.q.W`` (and ``opt_state.0.mu.blocks.3.attn.q.W``) is row 3 of
    the stacked ``params.blocks.attn.q.W``, as PyTorch names the blocks of a
    ``ModuleList``. :func:`load` reads either layout into a stacked template, and a copy's
    own leaves with ``under="params.blocks.3"``.

    Raises CheckpointError, before writing anything, for a leaf that could not load back
    unchanged: object, string or other unsupported dtypes, and 64-bit integers beyond 32
    bits while ``jax_enable_x64`` is off.
    """
    path = Path(path)
    keys: dict[str, str] = {}
    leaves = _named_leaves(tree)
    copies = {} if net is None else _copies(tree, net)
    record: dict[str, Any] = {"format": FORMAT, "keys": keys, "metadata": metadata or {}}
    if copies:
        record["copies"] = {name: [list(np.shape(leaf)[:len(copies[name][0][1])]),
                                   [copy for copy, _ in copies[name]]]
                            for name, leaf in leaves if name in copies}
    if jax.process_count() == 1:
        # A sharded array comes to the host shard by shard (np.asarray copies each
        # device's shard into its place), never gathered on a device.
        arrays = _whole(leaves, copies, keys)
    else:
        arrays, record["shards"] = _local_shards(leaves, copies, keys)
        record["leaves"] = [copy for name, _ in leaves
                            for copy, _ in copies.get(name, [(name, ())])]
        record["part"] = [jax.process_index(), jax.process_count()]
        path = part_path(path, jax.process_index(), jax.process_count())
    record["order"] = list(arrays)
    try:
        header = {RECORD: json.dumps(record)}
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint.save: metadata must be JSON-serialisable: {err}") from None
    _write(path, arrays, header)
    return path


class _Rows:
    """Rows of a stacked leaf as :func:`nn.repeat.split_copies` hands them out: indexing
    adds a row, so the copies' paths come with their rows (one index per Repeat)."""

    def __init__(self, source: str, index: tuple[int, ...] = ()):
        self.source, self.index = source, index

    def __getitem__(self, row: int) -> _Rows:
        return _Rows(self.source, (*self.index, row))


def _copies(tree: Any, net: Layer) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """``{stacked leaf name: [(copy name, its row index), ...]}`` for every leaf of ``tree``
    that a Repeat of ``net`` stacks, found in each subtree shaped like ``net``'s params or
    state (the params, an optimiser state's moments)."""
    repeats = repeats_below(net)
    if not repeats:
        return {}
    shapes = (jax.eval_shape(net.init, jax.random.key(0)), jax.eval_shape(net.init_state))
    models = {jax.tree.structure(t) for t in shapes if jax.tree.leaves(t)}
    is_model = lambda node: jax.tree.structure(node) in models  # noqa: E731
    found: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for key_path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_model)[0]:
        if not is_model(node):
            continue
        prefix = dotted(key_path)
        rows = {path: _Rows(join(prefix, path)) for path in leaf_paths(node)}
        for name, row in split_copies(rows, repeats).items():
            if row.index:
                found.setdefault(row.source, []).append((join(prefix, name), row.index))
    return found


def _whole(leaves: list[tuple[str, Any]], copies: dict[str, list[tuple[str, tuple[int, ...]]]],
           keys: dict[str, str]) -> dict[str, np.ndarray]:
    """Every leaf whole, a stacked one as its copies' rows."""
    arrays = {}
    for name, leaf in leaves:
        array = _encode(name, leaf, keys)
        impl = keys.pop(name, None) if name in copies else None
        for copy, index in copies.get(name, [(name, ())]):
            if copy in arrays:
                raise CheckpointError(f"checkpoint.save: {copy} is both a leaf and a copy of "
                                      f"{name}'s stack")
            arrays[copy] = np.asarray(array[index], order="C") if index else array
            if impl is not None:
                keys[copy] = impl
    return arrays


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(dotted path, leaf)`` of every leaf; a CheckpointError when two leaves would share
    a name (a dict key with a dot in it: ``{"a.b": x, "a": {"b": y}}``)."""
    named = [(dotted(key_path), leaf)
             for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    seen: dict[str, int] = {}
    for index, (name, _) in enumerate(named):
        if name in seen:
            paths = [jax.tree_util.keystr(p) for p, _ in
                     jax.tree_util.tree_flatten_with_path(tree)[0]]
            raise CheckpointError(f"checkpoint.save: the leaves {paths[seen[name]]} and "
                                  f"{paths[index]} would both be stored as {name!r}; rename "
                                  f"the dict key that holds a dot")
        seen[name] = index
    return named


_KEYSTR_PART = re.compile(r"\[(?:'((?:[^'\\]|\\.)*)'|(\d+))\]|\.([A-Za-z_]\w*)")


def _from_keystr(name: str) -> str:
    """A format 2 name as the dotted path it stands for: ``['params'][0]['W']`` ->
    ``params.0.W`` (a name that is not a key path stays as it is)."""
    parts, position = [], 0
    for match in _KEYSTR_PART.finditer(name):
        if match.start() != position:
            return name
        parts.append(next(g for g in match.groups() if g is not None))
        position = match.end()
    return ".".join(parts) if position == len(name) else name


def part_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """The file process ``index`` of ``count`` writes for checkpoint ``path``:
    ``ckpt.safetensors`` -> ``ckpt.part-0-of-2.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.part-{index}-of-{count}{path.suffix}")


def _local_shards(leaves: list[tuple[str, Any]],
                  copies: dict[str, list[tuple[str, tuple[int, ...]]]], keys: dict[str, str]
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The shards this process writes (those whose first replica it holds), each stored
    as ``name@start`` with its leaf, offset and the whole array's shape in ``shards``; a
    stacked leaf's shard as the rows of each copy it holds."""
    arrays, shards = {}, {}
    for name, leaf in leaves:
        pieces: list[tuple[tuple[slice, ...], Any]]
        if not isinstance(leaf, jax.Array):  # host values: every process has them whole
            pieces = [((), leaf)] if jax.process_index() == 0 else []
        else:
            pieces = [(shard.index, shard.data) for shard in leaf.addressable_shards
                      if shard.replica_id == 0]
        impl = None
        for index, data in pieces:
            array = _encode(name, data, keys)
            impl = keys.pop(name, impl)
            start = [sl.start or 0 for sl in index] + [0] * (array.ndim - len(index))
            shape = list(np.shape(leaf)) + list(array.shape[len(np.shape(leaf)):])
            for copy, rows in copies.get(name, [(name, ())]):
                local = [row - first for row, first in zip(rows, start)]
                if any(not 0 <= i < n for i, n in zip(local, array.shape)):
                    continue  # another shard holds this copy's rows
                tensor = f"{copy}@{','.join(map(str, start[len(rows):]))}"
                if impl is not None:
                    keys[tensor] = impl
                arrays[tensor] = np.asarray(array[tuple(local)], order="C") if rows else array
                shards[tensor] = {"leaf": copy, "start": start[len(rows):],
                                  "shape": shape[len(rows):]}
    return arrays, shards


def _write(path: Path, arrays: dict[str, np.ndarray], header: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(arrays, tmp, metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading

class _Entry(NamedTuple):
    """One tensor as the header declares it: checked, not yet read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int
    key_impl: str | None

    def abstract(self) -> jax.ShapeDtypeStruct:
        """The leaf this entry loads as (a PRNG key for key data), without reading it."""
        if self.key_impl is None:
            return jax.ShapeDtypeStruct(self.shape, jax.dtypes.canonicalize_dtype(self.dtype))
        data = jax.ShapeDtypeStruct(self.shape, jnp.uint32)
        return jax.eval_shape(lambda d: jax.random.wrap_key_data(d, impl=self.key_impl), data)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate name {key!r}")
        seen[key] = value
    return seen


def _json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} is not valid JSON ({err})") from None


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_record(record: Any, names: set[str]) -> dict:
    _expect(isinstance(record, dict), f"the minitorch record is a {type(record).__name__}, "
                                      f"not an object")
    _expect(is_int(record.get("format")) and record.get("format") in READS,
            f"format version {_shown(record.get('format'))}; this minitorch reads versions "
            f"{list(READS)}")
    order, keys = record.get("order"), record.get("keys")
    _expect(isinstance(order, list) and all(isinstance(n, str) for n in order),
            "the record's 'order' is not a list of names")
    _expect(len(set(order)) == len(order) and set(order) == names,
            "the record's 'order' does not list each tensor once")
    _expect(isinstance(keys, dict) and all(isinstance(v, str) and k in names
                                           for k, v in keys.items()),
            "the record's 'keys' is not an object of tensor name -> key implementation")
    _expect(isinstance(record.get("metadata"), dict), "the record's 'metadata' is not an object")
    if "shards" in record:
        _check_parts(record, names)
    if "copies" in record:
        _check_copies(record["copies"], set(record["leaves"]) if "shards" in record else names)
    return record


def _check_copies(copies: Any, names: set[str]) -> None:
    """The record's ``copies``, ``{stacked leaf: [rows, [copy leaves]]}``: each copy a
    stored leaf of one stack only, as many as the rows' product."""
    _expect(isinstance(copies, dict), "the record's 'copies' is not an object")
    seen: set[str] = set()
    for stacked, value in copies.items():
        ok = isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
        ok = ok and 0 < len(value[0]) <= MAX_RANK and all(is_int(n) and n > 0 for n in value[0])
        ok = ok and isinstance(value[1], list) and all(isinstance(c, str) for c in value[1])
        _expect(ok, f"{_shown(stacked)}: its copies record is not [rows, [leaf names]]")
        rows, members = value
        _expect(len(members) == math.prod(rows), f"{_shown(stacked)}: {len(members)} copies "
                                                 f"for rows {_shown(rows)}")
        _expect(stacked not in names and set(members) <= names and seen.isdisjoint(members)
                and len(set(members)) == len(members),
                f"{_shown(stacked)}: its copies are not stored leaves of this stack alone")
        seen.update(members)


def _check_entry(full_name: str, info: Any, key_impl: str | None) -> _Entry:
    name = full_name if len(full_name) <= 120 else f"{full_name[:120]}..."  # for messages
    _expect(isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"},
            f"{name}: a tensor entry needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    _expect(isinstance(dtype, str) and dtype in DTYPES,
            f"{name}: unknown dtype {_shown(dtype)}; known: {sorted(DTYPES)}")
    _expect(isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape),
            f"{name}: shape {_shown(shape)} is not a list of non-negative ints")
    _expect(len(shape) <= MAX_RANK, f"{name}: {len(shape)} dimensions; at most {MAX_RANK}")
    # Every array built from the header must be one NumPy can make: even an empty one
    # (0 x (2**63 - 1)) is refused beyond this, so nothing unchecked reaches NumPy.
    span = math.prod(max(d, 1) for d in shape) * np.dtype(DTYPES[dtype]).itemsize
    _expect(span <= MAX_BYTES, f"{name}: shape {_shown(shape)} is too large for an array "
                               f"(its non-zero dimensions span over 2**63 bytes)")
    _expect(isinstance(offsets, list) and len(offsets) == 2
            and all(is_int(o) and o >= 0 for o in offsets),
            f"{name}: data_offsets {_shown(offsets)} is not a pair of non-negative ints")
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    _expect(offsets[1] - offsets[0] == nbytes,
            f"{name}: {dtype}{shape} needs {nbytes} bytes, its data_offsets hold "
            f"{offsets[1] - offsets[0]}")
    if key_impl is not None:
        _expect(dtype == "U32", f"{name}: PRNG key data must be U32, found {dtype}")
    entry = _Entry(full_name, np.dtype(DTYPES[dtype]), tuple(shape), offsets[0], offsets[1],
                   key_impl)
    if key_impl is not None:
        try:
            entry.abstract()
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{name}: not key data of {key_impl!r} ({err})") from None
    return entry


def _shown(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile header's values go into
    messages bounded."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_layout(entries: list[_Entry], data_bytes: int) -> None:
    """Byte ranges must tile the data exactly, as the safetensors specification requires."""
    position = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        _expect(entry.begin == position, f"{entry.name}: its bytes start at {entry.begin}, "
                                         f"expected {position} (overlap or gap)")
        position = entry.end
    _expect(position == data_bytes, f"the tensors hold {position} bytes, the file "
                                    f"{data_bytes} (truncated or padded)")


def _read_header(f, size: int) -> tuple[dict[str, _Entry], dict]:
    head = f.read(8)
    _expect(len(head) == 8, f"{size} bytes is too short for a safetensors file")
    if head[:4] == b"PK\x03\x04":
        raise ValueError("a zip (.npz) file, not a safetensors file; minitorch writes "
                         "safetensors since checkpoint format 2")
    length = int.from_bytes(head, "little")
    _expect(length <= min(MAX_HEADER_BYTES, size - 8),
            f"the header declares {length} bytes; the file has {size - 8} after the length "
            f"(limit {MAX_HEADER_BYTES})")
    raw = f.read(length)
    try:  # the specification says UTF-8; json.loads(bytes) would also take UTF-16 and -32
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"the header is not UTF-8 ({err.reason} at byte {err.start})") from None
    header = _json(text, "the header")
    _expect(isinstance(header, dict), "the header is not a JSON object")
    extra = header.pop("__metadata__", None)
    _expect(extra is None or (isinstance(extra, dict) and all(
        isinstance(v, str) for v in extra.values())), "the header's __metadata__ is not an "
        "object of strings (the specification: str to str)")
    _expect(isinstance(extra, dict) and isinstance(extra.get(RECORD), str),
            "no minitorch record in the header's __metadata__ (not a minitorch checkpoint)")
    record = _check_record(_json(extra[RECORD], "the minitorch record"), set(header))
    entries = {name: _check_entry(name, info, record["keys"].get(name))
               for name, info in header.items()}
    _check_layout(list(entries.values()), size - 8 - length)
    return {name: entries[name] for name in record["order"]}, record


@contextlib.contextmanager
def _opened(path: Path):
    """Yields ``(file, header entries, record, data start)``; every fault a CheckpointError."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            entries, record = _read_header(f, size)
            yield f, entries, record, f.tell()
    except CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint: {err}") from None


class _Piece(NamedTuple):
    """A stored tensor: the whole of a leaf, or one shard of it at ``start``."""

    path: Path
    data_start: int  # where the file's tensor bytes begin
    entry: _Entry
    start: tuple[int, ...]


class _Leaf(NamedTuple):
    """One leaf of the saved tree: its whole shape and the pieces that tile it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    key_impl: str | None
    pieces: list[_Piece]

    def abstract(self) -> jax.ShapeDtypeStruct:
        return _Entry(self.name, self.dtype, self.shape, 0, 0, self.key_impl).abstract()


def _files(path: Path) -> list[Path]:
    """``path``, or when only parts were written (several processes), every part in order."""
    pattern = re.compile(rf"^{re.escape(path.stem)}\.part-(\d+)-of-(\d+){re.escape(path.suffix)}$")
    if path.exists() or not path.parent.is_dir():
        return [path]
    found = {(int(m.group(1)), int(m.group(2))): p for p in path.parent.iterdir()
             if (m := pattern.match(p.name))}
    counts = sorted({count for _, count in found})
    if not counts:
        return [path]  # missing: _opened says so
    if len(counts) > 1:
        raise CheckpointError(f"{path}: parts written by runs of {_shown(counts)} processes")
    count = counts[0]
    if count == 0 or any(index >= count for index, _ in found):
        bad = next(p for (index, n), p in found.items() if index >= n)
        raise CheckpointError(f"{bad}: its name says part {bad.name.split('part-')[1]}, "
                              f"which cannot be (parts count from 0 to N - 1)")
    if len(found) < count:
        # The count comes from a file name: list the first missing parts, never all of them
        # (a name claiming 10**12 parts must not build a 10**12-element list).
        missing = list(itertools.islice((i for i in range(count) if (i, count) not in found),
                                        5))
        raise CheckpointError(f"{path}: {count - len(found)} of {count} parts missing (the "
                              f"first: {missing}; still being written by another process, "
                              f"or lost)")
    return [found[(i, count)] for i in range(count)]


def _check_parts(record: dict, names: set[str]) -> None:
    """The extra fields of one process's part: which leaf and where each shard is."""
    part, leaves, shards = record.get("part"), record.get("leaves"), record["shards"]
    _expect(isinstance(part, list) and len(part) == 2 and all(is_int(v) for v in part)
            and 0 <= part[0] < part[1], "the record's 'part' is not [index, count]")
    _expect(isinstance(leaves, list) and all(isinstance(n, str) for n in leaves)
            and len(set(leaves)) == len(leaves), "the record's 'leaves' is not a list of names")
    assert isinstance(leaves, list)
    _expect(isinstance(shards, dict) and set(shards) == names,
            "the record's 'shards' does not describe each tensor once")
    for tensor, info in shards.items():
        ok = isinstance(info, dict) and set(info) == {"leaf", "start", "shape"}
        ok = ok and info["leaf"] in leaves and all(
            isinstance(info[k], list) and all(is_int(v) and v >= 0 for v in info[k])
            for k in ("start", "shape")) and len(info["start"]) == len(info["shape"])
        _expect(ok, f"{tensor}: its shard record is not {{leaf, start, shape}} of a listed leaf")


def _add_piece(leaves: dict[str, _Leaf], name: str, piece: _Piece, shape: tuple[int, ...]) -> None:
    entry = piece.entry
    leaf = leaves.setdefault(name, _Leaf(name, entry.dtype, shape, entry.key_impl, []))
    _expect((leaf.dtype, leaf.shape, leaf.key_impl) == (entry.dtype, shape, entry.key_impl),
            f"{entry.name}: its dtype or shape differs from the leaf's other shards")
    _expect(len(entry.shape) == len(shape) and all(
        s + n <= d for s, n, d in zip(piece.start, entry.shape, shape)),
        f"{entry.name}: a {list(entry.shape)} shard at {list(piece.start)} lies outside "
        f"{name}'s shape {list(shape)}")
    leaf.pieces.append(piece)


def _check_tiling(leaf: _Leaf) -> None:
    """The shards must cover the leaf exactly, no element missing, none twice, as the grid
    a sharding cuts an array into: along each axis, every shard spans one interval between
    consecutive cut points (the shards' edges), and each cell of the grid is held by one
    shard. O(n log n) in the number of shards (shards of no elements are ignored)."""
    boxes = [(p.start, p.entry.shape) for p in leaf.pieces if math.prod(p.entry.shape)]
    if math.prod(leaf.shape) == 0:
        return
    rank = len(leaf.shape)
    cuts = [sorted({0, leaf.shape[axis]} | {start[axis] for start, _ in boxes}
                   | {start[axis] + shape[axis] for start, shape in boxes})
            for axis in range(rank)]
    cells: dict[tuple[int, ...], tuple[int, ...]] = {}
    for start, shape in boxes:
        cell = []
        for axis in range(rank):
            i = bisect.bisect_left(cuts[axis], start[axis])
            _expect(cuts[axis][i + 1] == start[axis] + shape[axis],
                    f"{leaf.name}: the shard at {list(start)} spans several cells of the grid "
                    f"the shards' edges cut along axis {axis} (shards overlap or do not form "
                    f"a grid)")
            cell.append(i)
        other = cells.setdefault(tuple(cell), tuple(start))
        _expect(other == tuple(start), f"{leaf.name}: shards at {list(other)} and "
                                       f"{list(start)} overlap")
    grid = math.prod(len(axis_cuts) - 1 for axis_cuts in cuts)
    _expect(len(cells) == grid, f"{leaf.name}: its shards hold {len(cells)} of the {grid} "
                                f"cells of their grid (a shard missing)")


def _renamer(record: dict) -> Any:
    """How the record's format names leaves, as dotted paths (format 2: keystr)."""
    return _from_keystr if record["format"] == 2 else (lambda name: name)


def _collect(path: Path) -> tuple[dict[str, _Leaf], dict[str, _Leaf], dict]:
    """Every stored leaf of the checkpoint at ``path`` (one file or all parts) by dotted
    path, headers checked, no data read; the Repeat stacks stored as copies, assembled
    from them (see :func:`_stacks`); and the record."""
    leaves, record = _collect_stored(path)
    try:
        return leaves, _stacks(leaves, record), record
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable checkpoint: {err}") from None


def _stacks(leaves: dict[str, _Leaf], record: dict) -> dict[str, _Leaf]:
    """Each leaf a Repeat stacked, stored as its copies, as one leaf again: copy ``i``'s
    pieces placed at row ``i`` (a leading axis of 1 each: the same bytes), nothing read."""
    stacks = {}
    for stacked, (rows, members) in record.get("copies", {}).items():
        first = leaves[members[0]]
        pieces = []
        for flat, member in enumerate(members):
            leaf = leaves[member]
            _expect((leaf.dtype, leaf.shape, leaf.key_impl)
                    == (first.dtype, first.shape, first.key_impl),
                    f"{member}: its dtype or shape differs from {members[0]}'s, another copy "
                    f"of {stacked}")
            row = tuple(int(i) for i in np.unravel_index(flat, rows))
            pieces += [p._replace(entry=p.entry._replace(shape=(1,) * len(row) + p.entry.shape),
                                  start=row + p.start) for p in leaf.pieces]
        stacks[stacked] = _Leaf(stacked, first.dtype, (*rows, *first.shape), first.key_impl,
                                pieces)
    return stacks


def _collect_stored(path: Path) -> tuple[dict[str, _Leaf], dict]:
    """Every stored leaf of the checkpoint at ``path`` by dotted path, and the record."""
    files = _files(path)
    leaves: dict[str, _Leaf] = {}
    first: dict | None = None
    for index, file in enumerate(files):
        with _opened(file) as (_, entries, record, data_start):
            pass
        try:
            rename = _renamer(record)
            if first is None and "shards" not in record:
                _expect(len(files) == 1, "a whole checkpoint among parts")
                whole = {rename(name): _Leaf(rename(name), e.dtype, e.shape, e.key_impl,
                                             [_Piece(file, data_start, e, (0,) * len(e.shape))])
                         for name, e in entries.items()}
                _expect(len(whole) == len(entries), "two tensors name the same leaf")
                return whole, record
            _expect("shards" in record and record["part"] == [index, len(files)],
                    f"not part {index} of {len(files)}")
            first = first or record
            _expect(all(record.get(k) == first.get(k)
                        for k in ("leaves", "metadata", "format", "copies")),
                    "its leaves, metadata, format or copies differ from the first part's")
            for tensor, entry in entries.items():
                info = record["shards"][tensor]
                _add_piece(leaves, rename(info["leaf"]), _Piece(file, data_start, entry,
                                                                tuple(info["start"])),
                           tuple(info["shape"]))
        except ValueError as err:
            raise CheckpointError(f"{file}: unreadable checkpoint: {err}") from None
    if first is None:
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        names = [_renamer(first)(name) for name in first["leaves"]]
        _expect(len(set(names)) == len(names), "two leaves have the same name")
        for name in names:
            _expect(name in leaves, f"{name}: no part holds it")
            _check_tiling(leaves[name])
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable checkpoint: {err}") from None
    return {name: leaves[name] for name in names}, first


class _Reader:
    """Reads pieces from the checkpoint's files, each opened once: a piece wanted whole is
    read in one call, a slice of one (a device's part of a sharded array) memory-mapped,
    so that only its pages are read."""

    def __init__(self, stack: contextlib.ExitStack):
        self._stack = stack
        self._files: dict[Path, IO[bytes]] = {}

    def whole(self, piece: _Piece) -> np.ndarray:
        entry = piece.entry
        if piece.path not in self._files:
            file = open(piece.path, "rb")  # noqa: SIM115 (the stack closes it)
            self._files[piece.path] = self._stack.enter_context(file)
        f = self._files[piece.path]
        f.seek(piece.data_start + entry.begin)
        return np.frombuffer(f.read(entry.end - entry.begin), entry.dtype).reshape(entry.shape)

    @staticmethod
    def mapped(piece: _Piece) -> np.ndarray:
        entry = piece.entry
        return np.memmap(piece.path, entry.dtype, "r", piece.data_start + entry.begin,
                         entry.shape)


def _slice_of(leaf: _Leaf, index: tuple[slice, ...], reader: _Reader) -> np.ndarray:
    """``whole[index]`` assembled on the host from the pieces it overlaps; nothing else read."""
    bounds = [(0 if sl.start is None else sl.start, size if sl.stop is None else sl.stop)
              for sl, size in zip(index, leaf.shape)]
    bounds += [(0, size) for size in leaf.shape[len(bounds):]]
    native = leaf.dtype.newbyteorder("=")
    for piece in leaf.pieces:  # a piece that is exactly the slice: read it, no copy
        if bounds == [(s, s + n) for s, n in zip(piece.start, piece.entry.shape)]:
            return reader.whole(piece).astype(native, copy=False)
    out = np.empty([hi - lo for lo, hi in bounds], native)
    if out.size == 0:
        return out
    for piece in leaf.pieces:
        lo = [max(a, s) for (a, _), s in zip(bounds, piece.start)]
        hi = [min(b, s + n) for (_, b), s, n in zip(bounds, piece.start, piece.entry.shape)]
        if any(low >= high for low, high in zip(lo, hi)):
            continue
        target = tuple(slice(low - a, high - a) for low, high, (a, _) in zip(lo, hi, bounds))
        if [h - low for low, h in zip(lo, hi)] == list(piece.entry.shape):
            out[target] = reader.whole(piece)
        else:
            source = tuple(slice(low - s, high - s) for low, high, s in zip(lo, hi, piece.start))
            out[target] = reader.mapped(piece)[source]
    return out


def _value(leaf: _Leaf, path: Path, sharding: jax.sharding.Sharding | None,
           reader: _Reader) -> Any:
    """The leaf as a JAX array, placed on ``sharding`` (each device given its slice only)."""
    if leaf.key_impl is not None:
        data = _slice_of(leaf, (), reader)
        key = jax.random.wrap_key_data(jnp.asarray(data), impl=leaf.key_impl)
        return key if sharding is None else jax.device_put(key, sharding)
    dtype = jax.dtypes.canonicalize_dtype(leaf.dtype)

    def fetch(index: tuple[slice, ...] | None) -> np.ndarray:
        array = _slice_of(leaf, index or (), reader)
        check_fits_32_bits(array, f"{path}: {leaf.name}", CheckpointError)
        return array.astype(dtype, copy=False)

    if sharding is None:
        return jnp.asarray(fetch(()))
    return jax.make_array_from_callback(leaf.shape, sharding, fetch)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict]:
    """The flat ``{path: array}`` contents and the metadata of a checkpoint, without a
    template: the leaves of the tree that was saved (a Repeat's stacked leaves whole)."""
    stored, stacks, record = _collect(Path(path))
    leaves = _saved(stored, stacks, record)
    with contextlib.ExitStack() as stack:
        reader = _Reader(stack)
        flat = {name: _value(leaf, Path(path), None, reader) for name, leaf in leaves.items()}
    return flat, record["metadata"]


def _saved(stored: dict[str, _Leaf], stacks: dict[str, _Leaf], record: dict
           ) -> dict[str, _Leaf]:
    """The leaves of the tree that was saved: each Repeat stack whole, not its copies."""
    copies = {member for _, members in record.get("copies", {}).values() for member in members}
    return {**{n: leaf for n, leaf in stored.items() if n not in copies}, **stacks}


def verify(path: str | os.PathLike) -> dict:
    """Check a checkpoint's headers (every part's) against its files, no data read; returns
    its metadata."""
    return _collect(Path(path))[2]["metadata"]


def _compare(path: Path, leaves: dict[str, _Leaf], names: list[str], template: list) -> None:
    missing = [n for n in names if n not in leaves]
    extra = [n for n in leaves if n not in set(names)]
    if missing or extra:
        raise CheckpointError(f"{path}: structure mismatch: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                              f"{'...' if len(extra) > 5 else ''}")
    for name, want in zip(names, template):
        got = leaves[name].abstract()
        want_shape, want_dtype = tuple(jnp.shape(want)), jnp.result_type(want)
        if want_shape != got.shape or want_dtype != got.dtype:
            raise CheckpointError(f"{path}: {name} expected {want_dtype}{list(want_shape)}, "
                                  f"found {got.dtype}{list(got.shape)}")


def _per_leaf(shardings: Any, count: int) -> list[Any]:
    if shardings is None:
        return [None] * count
    if isinstance(shardings, jax.sharding.Sharding):
        return [shardings] * count
    is_sharding = lambda x: isinstance(x, jax.sharding.Sharding)  # noqa: E731
    flat = jax.tree.leaves(shardings, is_leaf=is_sharding)
    if len(flat) != count or not all(is_sharding(s) for s in flat):
        raise TypeError(f"checkpoint.load: shardings must be one Sharding or a tree of them "
                        f"shaped like the template ({count} leaves), received "
                        f"{jax.tree.structure(shardings, is_leaf=is_sharding)}")
    return flat


def load(path: str | os.PathLike, template: Any, *, shardings: Any = None,
         under: str | None = None) -> tuple[Any, dict]:
    """Load ``path`` into the structure of ``template``; returns ``(tree, metadata)``.

    Every name, shape and dtype is compared with the template before any data is read;
    raises CheckpointError naming the first parameter path that differs.

    Args:
      path: the checkpoint; when several processes saved it, ``path`` names the set of
        parts (``ckpt.safetensors`` reads ``ckpt.part-*-of-N.safetensors``).
      template: a tree like the saved one (arrays or ``jax.ShapeDtypeStruct`` s), or like
        its part below ``under``.
      shardings: None (each leaf one array on the default device), one ``Sharding`` for
        every leaf, or a tree of them like the template (e.g. from
        ``parallel.param_shardings``): each array is built on its sharding, every device
        reading only its own slice of the file, on any number of processes.
      under: a dotted path: load only the leaves below it (``under="params"`` restores the
        params of a checkpoint ``fit`` wrote, with the params alone as the template).

    A file that stores a Repeat's copies (``save(..., net=)``) loads into the stacked
    tree that was saved, or by the copies' own paths where the template names them: one
    copy (``under="params.blocks.3"`` with a single block's params as the template) or a
    ``Net`` of the copies in the Repeat's place.

    Example::

        params, meta = checkpoint.load(manager.path(step), net.init(key), under="params")
    """
    path = Path(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [join(under or "", dotted(key_path)) for key_path, _ in flat]
    targets = _per_leaf(shardings, len(names))
    stored, stacks, record = _collect(path)
    # Two views of a file that stores a Repeat's copies: the tree that was saved (stacks
    # whole) or the copies as stored. Their names may coincide (the stacked "blocks.0.1.W"
    # of a block's sub-layer 0.1, and copy 0 of "blocks.1.W"), so one view is chosen: the
    # stored one when it holds every name the template asks for.
    leaves = stored if stacks and all(name in stored for name in names) else _saved(
        stored, stacks, record)
    if under is not None:
        leaves = {name: leaf for name, leaf in leaves.items() if is_under(name, [under])}
        if not leaves:
            raise CheckpointError(f"{path}: no leaves under {under!r}")
    _compare(path, leaves, names, [leaf for _, leaf in flat])
    try:
        with contextlib.ExitStack() as stack:
            reader = _Reader(stack)
            values = [_value(leaves[name], path, target, reader)
                      for name, target in zip(names, targets)]
    except (OSError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable checkpoint: {err}") from None
    return jax.tree_util.tree_unflatten(treedef, values), record["metadata"]


# --------------------------------------------------------------------------- manager

class CheckpointManager:
    """Numbered checkpoints ``ckpt_00000012.safetensors`` in ``directory``; keeps ``keep``.

    Any non-negative int step works (``ckpt_123456789012.safetensors`` past 8 digits). A
    save keeps the file it wrote and the newest ``keep - 1`` others. The first save takes
    an exclusive lock on ``directory/.lock`` (held until :meth:`close`, the end of a
    ``with`` block, or the process), so a second writer fails with a CheckpointError
    instead of deleting the first one's files.

    Example::

        with CheckpointManager("runs/digits", keep=3) as manager:
            manager.save(epoch, {"params": params, "opt_state": opt_state}, {"epoch": epoch})
            step, (tree, meta) = manager.restore_latest(template)
    """

    PATTERN = re.compile(r"^ckpt_(\d{8,})(?:\.part-\d+-of-\d+)?\.safetensors$")

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self._lock_file: IO[str] | None = None
        self.directory = Path(directory)
        self.keep = check_int("CheckpointManager", "keep", keep, 1)
        self._thread_lock = threading.Lock()

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt_{_check_step(step):08d}.safetensors"

    def _own(self, path: Path) -> Path:
        """The file this process writes for ``path``: itself, or its part on several."""
        if jax.process_count() == 1:
            return path
        return part_path(path, jax.process_index(), jax.process_count())

    def steps(self) -> list[int]:
        """The steps of the checkpoint files (or parts) present, complete or not, oldest first."""
        if not self.directory.is_dir():
            return []
        found = {m.group(1) for p in self.directory.iterdir()
                 if (m := self.PATTERN.match(p.name))}
        # only canonical names: ckpt_012... is not step 12's file
        return sorted(int(digits) for digits in found if f"{int(digits):08d}" == digits)

    def save(self, step: int, tree: Any, metadata: dict | None = None, *,
             net: Layer | None = None) -> Path:
        """Save checkpoint ``step``, then delete the oldest others beyond ``keep``; returns
        the file written (on several processes, this process's part). ``net``: as for
        :func:`save` (a Repeat's copies under their own paths)."""
        path = self.path(step)
        with self._thread_lock:
            self._acquire()
            suffix = self._own(Path("x.safetensors")).name[1:]  # this process's own files
            for stale in self.directory.glob(f".*{suffix}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a writer killed mid-write
            written = save(path, tree, {"step": int(step), **(metadata or {})}, net=net)
            others = [s for s in self.steps() if s != step]
            for old in others[:max(0, len(others) - (self.keep - 1))]:
                self._own(self.path(old)).unlink(missing_ok=True)
        return written

    @property
    def best_path(self) -> Path:
        """``best.safetensors``: the file :meth:`save_best` writes; retention never deletes it."""
        return self.directory / "best.safetensors"

    def save_best(self, tree: Any, metadata: dict | None = None, *,
                  net: Layer | None = None) -> Path:
        """Write ``tree`` as the run's best checkpoint (replacing the previous best);
        ``net`` as for :func:`save`."""
        with self._thread_lock:
            self._acquire()
            return save(self.best_path, tree, metadata, net=net)

    def restore_best(self, template: Any, *, shardings: Any = None,
                     under: str | None = None) -> tuple[Any, dict]:
        """``(tree, metadata)`` of the best checkpoint (see :meth:`save_best`); ``shardings``
        and ``under`` as for :func:`load`."""
        return load(self.best_path, template, shardings=shardings, under=under)

    def latest_step(self) -> int | None:
        """The newest step whose checkpoint header checks out against its file, or None."""
        for step in reversed(self.steps()):
            try:
                verify(self.path(step))
            except CheckpointError:
                continue
            return step
        return None

    def restore_latest(self, template: Any, *, shardings: Any = None, under: str | None = None
                       ) -> tuple[int, tuple[Any, dict]] | None:
        """``(step, (tree, metadata))`` of the newest complete checkpoint (on several
        processes: every part present), or None; ``shardings`` and ``under`` as for
        :func:`load` (``restore_latest(params, under="params")``: a ``fit`` run's params)."""
        step = self.latest_step()
        if step is None:
            return None
        return step, load(self.path(step), template, shardings=shardings, under=under)

    def _acquire(self) -> None:
        if self._lock_file is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # One writer per directory, and on several processes one per process's parts.
        name = ".lock" if jax.process_count() == 1 else f".lock.{jax.process_index()}"
        lock_file = open(self.directory / name, "a+")  # noqa: SIM115 (held open: the lock)
        try:
            _lock_exclusive(lock_file)
        except OSError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise CheckpointError(
                f"{self.directory}: another CheckpointManager (process {holder}) is writing "
                f"checkpoints here; give each run its own directory, or close() the other "
                f"manager first") from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def close(self) -> None:
        """Release the directory's writer lock (taken by the first save)."""
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases its lock
            self._lock_file = None

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _check_step(step: Any) -> int:
    return check_int("CheckpointManager", "step", step, 0)


def _lock_exclusive(file) -> None:
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: one writer is the caller's care
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
