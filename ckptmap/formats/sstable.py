"""LevelDB-style sorted tables, the container of TF's `.index` files and V1 checkpoints.

TF keeps its own copy of LevelDB's table code (tensorflow/core/lib/io/: table_builder.cc,
format.cc, block.cc, block_builder.cc). A file is a run of blocks, each followed by a 5-byte
trailer (compression type, masked CRC32C), then a metaindex block (always empty in TF), an index
block mapping each data block's last key to its (offset, size), and a 48-byte footer ending in a
magic number. The reader mmaps the file and checks every block's CRC when it reads the block;
the writer emits uncompressed blocks, which is what TF's tensor_bundle has written since 1.2
(`TableBuilderOptions()` in tensor_bundle.cc sets kNoCompression, as does tensor_slice_writer.cc).
Snappy blocks are still decoded, in pure Python: older writers used LevelDB's default compression.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import google_crc32c

from .. import lazy
from ..errors import FormatError
from .protowire import WireError, encode_varint, read_varint

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

MAGIC = 0xDB4775248B80FB57  # kTableMagicNumber, format.h
FOOTER_SIZE = 48  # Footer::kEncodedLength: two BlockHandles padded to 40 bytes, 8-byte magic
TRAILER_SIZE = 5  # kBlockTrailerSize: 1 type byte + fixed32 masked CRC
NO_COMPRESSION, SNAPPY = 0, 1  # CompressionType, table_options.h
_MASK_DELTA = 0xA282EAD8  # kMaskDelta, tensorflow/core/lib/hash/crc32c.h


def mask_crc(crc: int) -> int:
    """crc32c::Mask: rotate and offset, so a CRC of data that holds CRCs stays meaningful."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def snappy_decompress(data: bytes) -> bytes:
    """Raw snappy (github.com/google/snappy format_description.txt): a varint length, then
    literals and back-references. Only old tables need it, so speed does not matter."""
    size, pos = read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths >= 60 store length-1 in the next 1-4 bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > len(data):
                raise WireError("snappy literal runs past the end")
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:  # copy with 1-byte offset: 3 bits of length, 11 bits of offset
            length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy with 2- or 4-byte offset
            width = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise WireError("snappy copy reaches before the start")
        start = len(out) - offset
        pattern = bytes(out[start : start + min(offset, length)])
        out += (pattern * (length // len(pattern) + 1))[:length]  # copies may overlap themselves
        if len(out) > size:  # stop now, not after inflating the whole block
            raise WireError("snappy output is longer than its declared length")
    if len(out) != size:
        raise WireError("snappy output has the wrong length")
    return bytes(out)


def _block_entries(block: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """Entries of one block (block.cc): varint shared, non_shared, value_length, key delta, value;
    then fixed32 restart offsets and their count, which a full scan does not need."""
    if len(block) < 4:
        raise WireError("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise WireError("bad restart count")
    data = bytes(block[:limit])  # indexes several times faster than the memoryview (blocks are KBs)
    pos, key = 0, b""
    while pos < limit:
        lengths = []
        for _ in range(3):  # shared, non_shared, value_length; one byte each but in huge tables
            byte = data[pos] if pos < limit else 0x80  # past the end: read_varint says truncated
            if byte < 0x80:
                lengths.append(byte)
                pos += 1
            else:
                value, pos = read_varint(data, pos)
                lengths.append(value)
        shared, non_shared, value_length = lengths
        if shared > len(key) or pos + non_shared + value_length > limit:
            raise WireError("corrupted block entry")
        key = key[:shared] + data[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


class TableReader:
    """Read-only view of a table file: `items()` in key order, `get(key)`, `first_entry()`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise FormatError(f"{self.path}: cannot read the file ({e.strerror or e}).") from e
        if size == 0:
            raise FormatError(f"{self.path}: the file is empty.")
        if size < FOOTER_SIZE:
            raise FormatError(f"{self.path}: too short ({size} bytes) to be a TensorFlow table.")
        with open(self.path, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._mmap)  # read-only, zero-copy; numpy is not needed to read an index
        footer = bytes(self._view[size - FOOTER_SIZE :])
        if struct.unpack("<Q", footer[-8:])[0] != MAGIC:
            raise FormatError(
                f"{self.path}: not a TensorFlow table, or a truncated one (wrong magic number at the end)."
            )
        try:
            _, pos = _decode_handle(footer, 0)  # metaindex: TF never puts anything in it
            index_handle, _ = _decode_handle(footer, pos)
            self.index = [(k, _decode_handle(v, 0)[0]) for k, v in _block_entries(self._block(index_handle))]
        except WireError as e:
            raise FormatError(f"{self.path}: damaged table index ({e}).") from e
        # Raised by items() and get(), not here: `first_entry` reads one block, and sniffing should
        # still see a (damaged) TensorFlow table.
        self._index_error = _check_index(self.index)
        self._index_keys = [k for k, _ in self.index]
        self._cache: tuple[int, dict[bytes, memoryview]] | None = None

    def _block(self, handle: tuple[int, int]) -> memoryview:
        """A block's contents after checking its CRC (format.cc ReadBlock) and decompressing."""
        offset, size = handle
        end = offset + size + TRAILER_SIZE
        if offset < 0 or end > len(self._view):
            raise WireError(f"block at {offset} runs past the end of the file (truncated?)")
        kind = self._view[offset + size]
        (stored,) = struct.unpack_from("<I", self._view, offset + size + 1)
        if google_crc32c.value(bytes(self._view[offset : offset + size + 1])) != unmask_crc(stored):
            raise WireError(f"checksum mismatch in the block at offset {offset}")
        contents = self._view[offset : offset + size]
        if kind == NO_COMPRESSION:
            return contents
        if kind == SNAPPY:
            return memoryview(snappy_decompress(bytes(contents)))
        raise WireError(f"unknown block compression type {kind}")

    def items(self) -> Iterator[tuple[bytes, memoryview]]:
        """Every (key, value) in key order; values are views into the mapped file."""
        if self._index_error is not None:
            raise FormatError(f"{self.path}: damaged table index ({self._index_error}).")
        for _, handle in self.index:
            try:
                yield from _block_entries(self._block(handle))
            except WireError as e:
                raise FormatError(f"{self.path}: damaged table ({e}).") from e

    def get(self, key: bytes) -> memoryview | None:
        """The value under `key`, reading only the one block that can hold it.

        Refused over a damaged index, as `items()` is: bisecting keys out of order can miss a key
        that is there, and a checkpoint read through `get` would then lack a tensor silently."""
        if self._index_error is not None:
            raise FormatError(f"{self.path}: damaged table index ({self._index_error}).")
        i = bisect.bisect_left(self._index_keys, key)  # index keys are >= every key of their block
        if i == len(self.index):
            return None
        handle = self.index[i][1]
        if self._cache is None or self._cache[0] != handle[0]:
            try:
                self._cache = (handle[0], dict(_block_entries(self._block(handle))))
            except WireError as e:
                raise FormatError(f"{self.path}: damaged table ({e}).") from e
        return self._cache[1].get(key)

    def first_entry(self) -> tuple[bytes, bytes] | None:
        """The first key and (up to 64 bytes of) its value, touching only the start of the file."""
        if not self.index:
            return None
        offset, size = self.index[0][1]
        try:
            if offset + size + TRAILER_SIZE > len(self._view):
                return None
            if self._view[offset + size] != NO_COMPRESSION:
                key, value = next(_block_entries(self._block((offset, size))))
                return key, bytes(value[:64])
            head = self._view[offset : offset + min(size, 128)]  # a peek: no CRC check
            shared, pos = read_varint(head, 0)
            non_shared, pos = read_varint(head, pos)
            value_length, pos = read_varint(head, pos)
        except (WireError, StopIteration):
            return None
        if shared or pos + non_shared > len(head):
            return None
        key = bytes(head[pos : pos + non_shared])
        pos += non_shared
        return key, bytes(head[pos : pos + min(value_length, 64)])


def _check_index(index: list[tuple[bytes, tuple[int, int]]]) -> str | None:
    """Data blocks come in key order, one after another (table_builder.cc). An index that names
    one block many times, or blocks that overlap, would make a small file read as a huge table
    (every entry again for each mention) and let keys come out of order. Returns what is wrong."""
    end, last = 0, None
    for key, (offset, size) in index:
        if offset < end or (last is not None and key <= last):
            return f"the index names overlapping or out-of-order blocks (at offset {offset})"
        end, last = offset + size + TRAILER_SIZE, key
    return None


def _decode_handle(buf: bytes | memoryview, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def _encode_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """BytewiseComparator::FindShortestSeparator: a short key in [start, limit)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """BytewiseComparator::FindShortSuccessor: a short key >= `key`."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    """block_builder.cc: prefix-compressed keys with a restart point every `restart_interval`."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        self.buf += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buf += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return (
            bytes(self.buf)
            + struct.pack(f"<{len(self.restarts)}I", *self.restarts)
            + struct.pack("<I", len(self.restarts))
        )


class TableWriter:
    """Writes a table to an open binary file; keys must come in strictly increasing byte order.

    Options match TF's defaults (table_options.h: 256 KiB blocks, restart every 16 keys; the
    index block restarts at every key) with compression off, as tensor_bundle.cc writes.
    Index keys are shortened the way LevelDB's bytewise comparator does (comparator.cc), so
    the output is byte-identical to TF's for the same entries.
    """

    def __init__(self, out: BinaryIO, *, block_size: int = 262144, restart_interval: int = 16) -> None:
        self.out = out
        self.block_size = block_size
        self.offset = 0
        self.data = _BlockBuilder(restart_interval)
        self.index = _BlockBuilder(1)
        self.last_key: bytes | None = None
        self.pending: bytes | None = None  # handle of a flushed block not yet in the index
        self.data_last = b""

    def add(self, key: bytes, value: bytes) -> None:
        if self.last_key is not None and key <= self.last_key:
            raise ValueError(f"table keys out of order: {key!r} after {self.last_key!r}")
        if self.pending is not None:  # the index entry of the previous block waits for this key
            self.index.add(_shortest_separator(self.data_last, key), self.pending)
            self.pending = None
        self.data.add(key, value)
        self.last_key = key
        if self.data.size_estimate() >= self.block_size:
            self._flush()

    def _flush(self) -> None:
        if not self.data.buf:
            return
        self.pending = self._write_block(self.data.finish())
        self.data_last = self.data.last_key
        self.data = _BlockBuilder(self.data.restart_interval)

    def _write_block(self, contents: bytes) -> bytes:
        trailer_type = bytes([NO_COMPRESSION])
        crc = mask_crc(google_crc32c.extend(google_crc32c.value(contents), trailer_type))
        self.out.write(contents + trailer_type + struct.pack("<I", crc))
        handle = _encode_handle(self.offset, len(contents))
        self.offset += len(contents) + TRAILER_SIZE
        return handle

    def finish(self) -> int:
        """Write the last data block, metaindex, index and footer; returns the file size."""
        self._flush()
        metaindex = self._write_block(_BlockBuilder(16).finish())
        if self.pending is not None:
            self.index.add(_short_successor(self.data_last), self.pending)
        index = self._write_block(self.index.finish())
        footer = (metaindex + index).ljust(FOOTER_SIZE - 8, b"\0") + struct.pack("<Q", MAGIC)
        self.out.write(footer)
        self.offset += FOOTER_SIZE
        return self.offset
