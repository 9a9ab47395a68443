"""Format "flax": a msgpack file of `flax.serialization.to_bytes(params)`, read and written with
neither JAX nor the msgpack package.

Flax's layer (flax/serialization.py, flax 0.12.8): `to_state_dict` makes dicts maps with str keys
and lists and tuples maps keyed "0", "1", ...; leaves that are arrays become msgpack ext values of
`_MsgpackExtType`: 1 = ndarray, 2 = native complex (payload `packb((real, imag))`), 3 = numpy
scalar. The payload of 1 and 3 is `packb((arr.shape, arr.dtype.name, arr.tobytes('C')),
use_bin_type=True)` (`_ndarray_to_bytes`): shape, a dtype name without byte order (the writer's
native one, little-endian in practice), C-order bytes. Arrays over `MAX_CHUNK_SIZE = 2**30` bytes
are stored as `{'__msgpack_chunked_array__': True, 'shape': {'0': d0, ...}, 'chunks': {'0': <1-D
ndarray>, ...}}` (`_chunk`: chunks of max(1, int(2**30 / itemsize)) elements), concatenated again by
`_unchunk`. Type bytes and lengths are the msgpack spec's
(https://github.com/msgpack/msgpack/blob/master/spec.md), written as msgpack-python's Packer
chooses them, so a file ckptmap writes is byte for byte what `to_bytes` gives the same tree.

Decisions: a tensor's name is its keys joined with "/", a key's own "%" and "/" written "%25" and
"%2F" (so a key cannot fake nesting; the writer turns them back). Leaves that are not arrays (a
step count, a learning rate, None, strings, numpy scalars) are no tensors: they are kept in
`metadata["leaves"]` by name and not written back; the writer writes tensors only. Reading is
bounded (see msgpack_wire) and lazy: each array is its offset in the file, mapped when read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .. import dtypes, lazy
from ..atomic import AtomicFiles
from ..errors import CkptmapError, FormatError, UnsupportedError, WriteError
from ..tree import Checkpoint, TensorEntry
from . import msgpack_wire as wire
from .rawio import MappedFile, file_size, open_output, open_regular
from .stream import BlockStream, checked_blocks

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

CHUNKED = "__msgpack_chunked_array__"  # flax/serialization.py `_chunk`
MAX_CHUNK_BYTES = 2**30  # flax/serialization.py MAX_CHUNK_SIZE: larger arrays are written chunked
_SNIFF_BYTES = 1024
_ORBAX_PLACEHOLDER = "PLACEHOLDER://"  # orbax's aggregate file: the array is stored beside it


def sniff(path: Path) -> bool:
    """A non-empty map whose first key is printable text, and whose first kilobyte decodes as a
    flax tree. A pickle starts 0x80 (an empty map), HDF5 0x89 'H' (a map keyed by an int)."""
    try:
        with open_regular(path) as f:
            head = f.read(_SNIFF_BYTES)
    except (CkptmapError, OSError):
        return False
    if not wire.first_key_is_text(head):
        return False
    try:  # a file shorter than the head is decoded whole, to its last byte
        wire.Decoder(head, path, partial=len(head) == _SNIFF_BYTES).tree()
    except wire.OutOfBytes:
        return True  # consistent as far as the head goes
    except UnsupportedError:
        return True  # a flax tree with something ckptmap cannot hold: `read` says what
    except FormatError:
        return False
    return True


def read(path: Path) -> Checkpoint:
    """Index a flax msgpack file; each tensor is read from a memory map when asked for.

    >>> read(Path("params.msgpack")).entries["params/RNN_0/cell/ii/kernel"].shape   # doctest: +SKIP
    (3, 8)
    """
    path = Path(path)
    size = file_size(path)  # refuses FIFOs, devices, empty files before any open
    try:
        with open_regular(path) as f:
            tree = wire.Decoder(f, path, size=size).tree()
    except OSError as e:
        raise FormatError(f"{path}: cannot read it ({e.strerror or e}).") from None
    if CHUNKED in tree:
        raise UnsupportedError(f"{path}: the file holds one chunked array, not a tree of named tensors.")
    mapped = MappedFile(path)
    entries: list[TensorEntry] = []
    leaves: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in _flatten(tree, (), path):
        if isinstance(value, wire.Array):
            entries.append(_entry(name, value.shape, [value], mapped))
        elif isinstance(value, _Chunks):
            entries.append(_entry(name, value.shape, value.parts, mapped))
        elif isinstance(value, wire.Skipped):
            notes.append(f"'{name}' is {value.nbytes} bytes of {value.kind}, not a tensor; skipped.")
        else:
            leaves[name] = value
    if leaves:
        shown = ", ".join(list(leaves)[:3]) + (", ..." if len(leaves) > 3 else "")
        notes.append(f"{len(leaves)} values that are not arrays ({shown}) are kept as metadata, not tensors.")
    elsewhere = [n for n, v in leaves.items() if isinstance(v, str) and v.startswith(_ORBAX_PLACEHOLDER)]
    if elsewhere:  # orbax's aggregate `checkpoint` file: those arrays are in the directory around it
        notes.append(f"{len(elsewhere)} arrays ({elsewhere[0]}, ...) are stored by orbax beside this file.")
    metadata = {"leaves": leaves} if leaves else {}
    return Checkpoint(entries, format="flax", path=path, files=[path], notes=notes, metadata=metadata)


def _flatten(tree: dict[str, Any], parts: tuple[str, ...], path: Path) -> Iterator[tuple[str, Any]]:
    """(name, leaf) pairs, depth first in file order; a chunked array is one leaf."""
    for key, value in tree.items():
        here = (*parts, escape(key))
        name = "/".join(here)
        if isinstance(value, dict) and CHUNKED in value:
            yield name, _checked_chunks(value, name, path)
        elif isinstance(value, dict) and value:
            yield from _flatten(value, here, path)
        else:
            yield name, value  # an empty map stays visible as a leaf {}


@dataclass(frozen=True)
class _Chunks:
    """A chunked array: its shape, and its flat data in pieces."""

    shape: tuple[int, ...]
    parts: list[wire.Array]


def _checked_chunks(value: dict[str, Any], name: str, path: Path) -> _Chunks:
    """`_unchunk`'s input, held to what `_chunk` writes: a shape, and 1-D chunks of one dtype
    whose elements add up to it."""
    where = f"{path}: chunked array '{name}'"
    if set(value) != {CHUNKED, "shape", "chunks"}:
        raise FormatError(f"{where} has keys {sorted(value)}, not {CHUNKED}, shape and chunks.")
    shape, arrays = (
        _sequence(value["shape"], f"{where}: its shape"),
        _sequence(value["chunks"], f"{where}: its chunks"),
    )
    if len(shape) > wire.MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"{where}: its shape is not up to {wire.MAX_DIMS} non-negative ints.")
    if not arrays or not all(isinstance(a, wire.Array) and len(a.shape) == 1 for a in arrays):
        raise FormatError(f"{where}: its chunks are not 1-D arrays.")
    if len({a.dtype.name for a in arrays}) > 1:
        raise FormatError(f"{where}: its chunks differ in dtype.")
    if sum(a.shape[0] for a in arrays) != math.prod(shape):
        raise FormatError(f"{where}: its chunks do not hold the {math.prod(shape)} elements of its shape.")
    return _Chunks(tuple(shape), arrays)


def _sequence(part: Any, what: str) -> list[Any]:
    """The values of a map keyed "0", "1", ... in that order (flax's `_dict_to_tuple`)."""
    if not isinstance(part, dict) or set(part) != {str(i) for i in range(len(part))}:
        raise FormatError(f"{what} is not a map keyed 0, 1, 2, ...")
    return [part[str(i)] for i in range(len(part))]


def _entry(name: str, shape: tuple[int, ...], parts: list[wire.Array], mapped: MappedFile) -> TensorEntry:
    """A tensor whose data is `parts` (one array, or the chunks of one) in the mapped file."""

    def load() -> np.ndarray:
        if len(parts) == 1:
            return _array(mapped, parts[0]).reshape(shape)
        return np.concatenate([_array(mapped, p) for p in parts]).reshape(shape)

    return TensorEntry(name, shape, parts[0].dtype.name, name, load)


def _array(mapped: MappedFile, part: wire.Array) -> np.ndarray:
    count = part.nbytes // part.dtype.itemsize
    flat = np.frombuffer(mapped.read(part.offset, part.nbytes), dtype=part.dtype.numpy, count=count)
    return flat if flat.flags.aligned else flat.copy()  # msgpack does not align data


_ESCAPED = re.compile("%(2[fF]|25)")


def escape(key: str) -> str:
    """A flax key as one part of a name: its "%" and "/" as "%25" and "%2F"."""
    return key.replace("%", "%25").replace("/", "%2F")


def unescape(part: str) -> str:
    """The flax key a name part stands for (`escape` undone)."""
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else "/", part)


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `ckpt` as `flax.serialization.to_bytes` would write its tree (names split at "/"),
    one tensor at a time; arrays over 2**30 bytes are chunked as flax chunks them.
    `flax.serialization.from_bytes(params, data)` and `msgpack_restore(data)` read it back.

    >>> write(ckptmap.load("lstm.pt"), Path("params.msgpack"))   # doctest: +SKIP
    """
    path = Path(path)
    tree = _tree(ckpt, path)
    with AtomicFiles([path]) as out, open_output(out.temp(path)) as f, BlockStream(f) as stream:
        writer = _Writer(stream, progress)
        writer.map(tree)
        stream.write(bytes(writer.pending))  # what follows the last tensor: nothing, or empty maps
    return [path]


def _tree(ckpt: Checkpoint, path: Path) -> dict[str, Any]:
    """The nested dict of keys the entries' names make, leaves the entries."""
    root: dict[str, Any] = {}
    for entry in ckpt.entries.values():
        _dtype(entry, path)
        parts = entry.name.split("/")
        keys = [unescape(p) for p in parts]
        if not all(keys):
            raise UnsupportedError(f"{path}: tensor '{entry.name}' would need an empty key; flax has none.")
        if len(keys) > wire.MAX_DEPTH - 2:  # a chunked array nests two maps deeper
            raise UnsupportedError(
                f"{path}: tensor '{entry.name}' nests deeper than {wire.MAX_DEPTH - 2} keys."
            )
        if CHUNKED in keys:  # flax's msgpack_restore would take its scope for a chunked array
            raise UnsupportedError(f"{path}: tensor '{entry.name}' would have the key {CHUNKED}.")
        node = root
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                _both(path, "/".join(parts[: depth + 1]))
        other = node.setdefault(keys[-1], entry)
        if isinstance(other, dict):
            _both(path, entry.name)
        if other is not entry:  # "a%2Fb" and "a%252Fb" are one key, and so on
            raise UnsupportedError(
                f"{path}: tensors '{other.name}' and '{entry.name}' would be one flax key."
            )
    return root


def _both(path: Path, name: str) -> NoReturn:
    raise UnsupportedError(
        f"{path}: '{name}' is both a tensor and a scope of tensors; a flax tree cannot hold both."
    )


def _dtype(entry: TensorEntry, path: Path) -> dtypes.DType:
    dt = dtypes.by_name(entry.dtype)
    if dt.name == "string":
        raise UnsupportedError(f"{path}: tensor '{entry.name}' holds strings; flax arrays cannot.")
    return dt


class _Writer:
    """Writes a tree: headers gather in `pending` and go out just before each tensor's data."""

    def __init__(self, stream: BlockStream, progress: Callable[[int], None] | None) -> None:
        self.stream, self.progress = stream, progress
        self.pending = bytearray()

    def map(self, tree: dict[str, Any]) -> None:
        self.pending += wire.map_header(len(tree))
        for key, value in tree.items():
            self.pending += wire.text(key)
            if isinstance(value, dict):
                self.map(value)
            else:
                self.tensor(value)

    def tensor(self, entry: TensorEntry) -> None:
        dt, size = dtypes.by_name(entry.dtype), entry.nbytes
        if size <= MAX_CHUNK_BYTES:
            segments = [(wire.ndarray_header(entry.shape, dt.name, size), size)]
        else:  # flax's `_chunk`: a map in place of the array, its flat data in 1-D chunks
            step = max(1, MAX_CHUNK_BYTES // dt.itemsize) * dt.itemsize
            sizes = [min(step, size - start) for start in range(0, size, step)]
            self.pending += wire.map_header(3) + wire.text(CHUNKED) + wire.TRUE + wire.text("shape")
            self.pending += wire.map_header(len(entry.shape))
            for i, d in enumerate(entry.shape):
                self.pending += wire.text(str(i)) + wire.integer(d)
            self.pending += wire.text("chunks") + wire.map_header(len(sizes))
            segments = [
                (wire.text(str(i)) + wire.ndarray_header((n // dt.itemsize,), dt.name, n), n)
                for i, n in enumerate(sizes)
            ]
        self._data(entry, segments)
        if self.progress is not None:
            self.progress(size)

    def _data(self, entry: TensorEntry, segments: list[tuple[bytes, int]]) -> None:
        """The entry's bytes, each segment's header before its `n` bytes."""
        blocks = (b.reshape(-1).view(np.uint8) for b in checked_blocks(entry))
        block: Any = b""
        for header, n in segments:
            self.pending += header
            self.stream.write(bytes(self.pending), entry.name)
            self.pending.clear()
            while n:
                if not len(block):
                    block = next(blocks, None)
                    if block is None:
                        raise WriteError(
                            f"Tensor '{entry.name}': its data came short of {entry.nbytes} bytes."
                        )
                    continue
                piece = block[:n]
                self.stream.write(piece, entry.name)
                n -= len(piece)
                block = block[len(piece) :]
        if len(block) or any(len(b) for b in blocks):
            raise WriteError(f"Tensor '{entry.name}': its data came to more than {entry.nbytes} bytes.")
