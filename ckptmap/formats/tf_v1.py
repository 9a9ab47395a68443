"""Format "tf-v1": TensorFlow's V1 single-file checkpoints (TF <= 1.0), read only.

A V1 checkpoint is one table (see `sstable`) written by TensorSliceWriter
(tensorflow/core/util/tensor_slice_writer.cc). Its "" key holds a SavedTensorSlices whose `meta`
lists every tensor with its shape, dtype and stored slices; every other key, built by
EncodeTensorNameSlice from a tensor's name and one slice, holds a SavedTensorSlices whose `data`
is a SavedSlice with a TensorProto (tensorflow/core/util/saved_tensor_slice.proto). Values sit in
the TensorProto's typed repeated fields (float_val, int_val, ...) as SaveTypeTraits in
saved_tensor_slice_util.h picks them. Opening reads the metadata only; each tensor is decoded
(vectorized) from its own block when it is read.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CkptmapError, FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry, canonical_tf_name
from . import tf_paths
from .protowire import (
    FIXED32,
    FIXED64,
    LEN,
    VARINT,
    TensorSlice,
    WireError,
    check_tiling,
    decode_shape,
    encode_varint,
    fields,
    iter_fields,
    iter_packed_varints,
    message,
    messages,
    read_field,
    scalar,
)
from .sstable import TableReader

FORMAT = "tf-v1"
_CHECKPOINT_VERSION = 1  # TF_CHECKPOINT_VERSION, tensorflow/core/public/version.h

# TensorProto (tensorflow/core/framework/tensor.proto) field per dtype, and how its values are
# encoded: "fixed" floats as packed fixed32/64, "varint" everything integral, "bytes" strings.
# Small ints share int_val, float16/bfloat16 store their bits in half_val (saved_tensor_slice_util.h).
_VALUE_FIELDS: dict[str, tuple[int, str]] = {
    "float32": (5, "fixed"),
    "float64": (6, "fixed"),
    "complex64": (9, "fixed"),
    "complex128": (12, "fixed"),
    "int32": (7, "varint"),
    "int16": (7, "varint"),
    "int8": (7, "varint"),
    "uint8": (7, "varint"),
    "uint16": (7, "varint"),
    "int64": (10, "varint"),
    "uint32": (16, "varint"),
    "uint64": (17, "varint"),
    "bool": (11, "varint"),
    "float16": (13, "varint"),
    "bfloat16": (13, "varint"),
    "string": (8, "bytes"),
}
_TENSOR_CONTENT = 4


def sniff(path: Path) -> bool:
    """True for a single table file whose first entry ("") is SavedTensorSlices metadata.

    A V2 `.index` is a table too; its "" entry is a BundleHeaderProto, which starts with a varint
    field (tag 0x08), while SavedTensorSlices starts with its `meta` message (tag 0x0a).
    """
    try:
        found = tf_paths.resolve(path)
        if found.kind != "v1":
            return False
        first = TableReader(found.path).first_entry()
    except (CkptmapError, OSError):
        return False
    return first is not None and first[0] == b"" and first[1][:1] == b"\x0a"


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a V1 checkpoint lazily: only its metadata entry is parsed here.

    >>> ckpt = read(Path("poem/model.ckpt-360000"))               # doctest: +SKIP
    >>> ckpt.entries["MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix"].shape   # doctest: +SKIP
    """
    found = tf_paths.resolve(path)
    if found.kind != "v1":
        raise FormatError(f"{found.path}: a V2 checkpoint (it has an .index file); use format 'tf'.")
    file = found.path
    table = TableReader(file)
    try:
        head = table.get(b"")
        meta = message(fields(head), 1) if head is not None else None  # SavedTensorSlices.meta
        if meta is None:
            raise WireError("no SavedTensorSlices metadata under the empty key")
        meta_fields = fields(meta)  # SavedTensorSliceMeta: tensor=1, versions=2
        versions = message(meta_fields, 2)
        min_consumer = scalar(fields(versions), 2) if versions is not None else 0
        tensors = [_tensor_meta(t) for t in messages(meta_fields, 1)]
    except WireError as e:
        raise FormatError(f"{file}: damaged V1 checkpoint metadata ({e}).") from e
    if min_consumer > _CHECKPOINT_VERSION:
        raise UnsupportedError(f"{file}: written by a newer TensorFlow than V1 readers understand.")
    entries, notes = [], []
    for name, shape, code, slices in tensors:
        try:
            dtype = dtypes.from_tf_enum(code)
        except UnsupportedError:
            notes.append(f"Skipped '{name}': TensorFlow dtype code {code} is not supported.")
            continue
        loader = partial(_load, table, name, shape, dtype, slices)
        entries.append(TensorEntry(canonical_tf_name(name), shape, dtype.name, name, loader))
    return Checkpoint(entries, format=FORMAT, path=file, files=[file], notes=notes)


def _tensor_meta(buf: memoryview) -> tuple[str, tuple[int, ...], int, tuple[TensorSlice, ...]]:
    """SavedSliceMeta: name=1, shape=2, type=3, slice=4."""
    f = fields(buf)
    name, shape = message(f, 1), message(f, 2)
    if name is None:
        raise WireError("a tensor without a name")
    slices = tuple(TensorSlice.decode(s) for s in messages(f, 4))
    return (
        bytes(name).decode("utf-8", "backslashreplace"),
        decode_shape(shape) if shape is not None else (),
        scalar(f, 3),
        slices,
    )


def _load(
    table: TableReader,
    name: str,
    shape: tuple[int, ...],
    dtype: dtypes.DType,
    slices: tuple[TensorSlice, ...],
) -> np.ndarray:
    """Read each stored slice (TensorSliceReader::CopySliceData) and place it in the full tensor."""
    parts = []
    for piece in slices:
        try:
            region = piece.region(shape)
            value = table.get(piece.key(name.encode("utf-8")))
            if value is None:
                raise WireError(f"slice {piece.extents} is missing")
            part_shape = tuple(s.stop - s.start for s in region)
            saved = _last_message(value, 2)  # SavedTensorSlices.data: a SavedSlice
            proto = _last_message(saved, 3) if saved is not None else None  # SavedSlice.data
            count = int(np.prod(part_shape, dtype=np.int64))
            part = _values(proto if proto is not None else memoryview(b""), dtype, count).reshape(part_shape)
        except (WireError, ValueError) as e:  # ValueError: numpy on a byte count that fits no dtype
            raise FormatError(f"Tensor '{name}' in {table.path}: damaged data ({e}).") from e
        parts.append((region, part))
    if len(parts) == 1 and parts[0][1].shape == shape:
        return parts[0][1]  # the common case: one full slice, no copy
    # Decoded before allocating, so damaged metadata cannot make us allocate unbacked memory.
    try:
        check_tiling([region for region, _ in parts], shape)
    except WireError as e:
        raise FormatError(f"Tensor '{name}' in {table.path}: {e}.") from None
    out = np.empty(shape, dtype=dtype.numpy)
    for region, part in parts:
        out[region] = part
    return out


def _last_message(buf: memoryview, number: int) -> memoryview | None:
    """The last message field `number` of a wrapper (SavedTensorSlices, SavedSlice): these hold
    two or three fields, so a run of millions of tiny ones is damage, refused before it costs a
    Python step and a list entry each."""
    found = None
    for i, (field_number, _, value) in enumerate(iter_fields(buf)):
        if i > _MAX_OTHER_FIELDS:
            raise WireError("too many fields for a SavedTensorSlices")
        if field_number == number:
            if not isinstance(value, memoryview):
                raise WireError(f"field {number} should be a message")
            found = value
    return found


def _values(proto: memoryview, dtype: dtypes.DType, count: int) -> np.ndarray:
    """The `count` values of a TensorProto as a flat array of `dtype`.

    One scan finds where the values are (packed chunks and runs of unpacked fields, the latter
    measured vectorized); nothing is allocated until the bytes are known to hold `count` values,
    and the values are then decoded piece by piece into the output, so memory stays near the
    tensor's size however the file is encoded."""
    number, encoding = _VALUE_FIELDS[dtype.name]
    width = 8 if dtype.name in ("float64", "complex128") else 4
    wire_type = (FIXED64 if width == 8 else FIXED32) if encoding == "fixed" else VARINT
    tag = encode_varint(number << 3 | wire_type)
    content, segments, strings, others = None, [], [], 0
    pos, end = 0, len(proto)
    while pos < end:
        if encoding != "bytes" and proto[pos : pos + len(tag)] == tag:  # an unpacked run
            stop = _unpacked_run(proto, pos, tag, width if encoding == "fixed" else 0)
            if stop > pos:
                segments.append((pos, stop, False))
                pos = stop
                continue
        field_number, wire, value, after = read_field(proto, pos)
        if field_number == number and encoding == "bytes" and isinstance(value, memoryview):
            if len(strings) >= count:
                raise WireError(f"more than the {count} values expected")
            strings.append(bytes(value))
        elif field_number == number and wire == LEN and encoding != "bytes":
            segments.append((after - len(value), after, True))
        elif field_number == _TENSOR_CONTENT and wire == LEN:
            content = value  # the last one wins, as protobuf merges a bytes field
        else:
            others += 1
        if others > _MAX_OTHER_FIELDS or len(segments) > _MAX_SEGMENTS:
            raise WireError("too many fields for a TensorProto")
        pos = after
    if content is not None and dtype.name != "string":
        values = np.frombuffer(content, dtype=dtype.numpy.newbyteorder("<"))
    elif encoding == "bytes":
        values = np.empty(len(strings), dtype=object)
        values[:] = strings
    elif encoding == "fixed":
        wire_dtype = np.dtype("<f8") if width == 8 else np.dtype("<f4")
        values = _fixed_values(proto, segments, wire_dtype, count * (2 if dtype.numpy.kind == "c" else 1))
        values = values.view(dtype.numpy) if dtype.numpy.kind == "c" else values
    else:
        values = _varint_values(proto, segments, dtype, count)
    if values.size != count:
        raise WireError(f"{values.size} values stored, {count} expected")
    return values


_MAX_OTHER_FIELDS = 64  # a TensorProto has dtype, shape, version: a handful besides its values
_MAX_SEGMENTS = 4096  # TF writes one packed chunk; more pieces cost a Python step each
_RUN_PIECE = 1 << 16  # unpacked records examined at a time


def _unpacked_run(proto: memoryview, pos: int, tag: bytes, width: int) -> int:
    """Where a run of unpacked values of one field, starting at `pos` with `tag`, ends; `width` 4
    or 8 for fixed32/64 values, 0 for varints. Checked vectorized, a piece of records at a time."""
    data, t = np.frombuffer(proto, dtype=np.uint8), len(tag)
    expected = np.frombuffer(tag, dtype=np.uint8)
    while pos < len(data):
        if width:
            record = t + width
            m = min(_RUN_PIECE, (len(data) - pos) // record)
            if m == 0:
                return pos
            ok = (data[pos : pos + m * record].reshape(m, record)[:, :t] == expected).all(axis=1)
            k = m if ok.all() else int(np.argmin(ok))
            pos += k * record
        else:  # tag and value are both varints: pair up the varints of the piece
            window = data[pos : pos + _RUN_PIECE * 12]
            ends = np.flatnonzero(window < 0x80)
            m = ends.size // 2
            if m == 0:
                return pos
            starts = np.concatenate(([0], ends[:-1] + 1))[: 2 * m]
            tag_ok = ends[0 : 2 * m : 2] - starts[0::2] + 1 == t
            for i in range(t):
                tag_ok &= window[np.minimum(starts[0::2] + i, window.size - 1)] == expected[i]
            tag_ok &= ends[1 : 2 * m : 2] - starts[1::2] < 10  # else let read_field say what is wrong
            k = m if tag_ok.all() else int(np.argmin(tag_ok))
            pos += int(ends[2 * k - 1]) + 1 if k else 0
        if k < m:
            return pos
    return pos


def _fixed_values(proto: memoryview, segments: list, wire: np.dtype, n: int) -> np.ndarray:
    """Packed chunks and unpacked runs of fixed32/64 values, `n` expected."""
    if len(segments) == 1 and segments[0][2]:  # the common case: one packed chunk, read in place
        start, stop, _ = segments[0]
        if stop - start != n * wire.itemsize:
            raise WireError(f"{(stop - start) // wire.itemsize} values stored, {n} expected")
        return np.frombuffer(proto[start:stop], wire)
    data = np.frombuffer(proto, dtype=np.uint8)
    sizes = []
    for start, stop, packed in segments:
        record = wire.itemsize if packed else wire.itemsize + _tag_length(data, start)
        sizes.append((stop - start) // record)
    if sum(sizes) != n:  # known before anything is allocated
        raise WireError(f"{sum(sizes)} values stored, {n} expected")
    out = np.empty(n, wire)
    rows = out.view(np.uint8).reshape(n, wire.itemsize)
    filled = 0
    for (start, stop, packed), size in zip(segments, sizes, strict=True):
        if size == 0:  # an empty packed field beside the values: valid protobuf, nothing to copy
            continue
        chunk = data[start:stop].reshape(size, -1)
        rows[filled : filled + size] = chunk if packed else chunk[:, -wire.itemsize :]
        filled += size
    return out


def _varint_values(proto: memoryview, segments: list, dtype: dtypes.DType, count: int) -> np.ndarray:
    """Packed chunks and unpacked runs of varints, decoded piece by piece into the output."""
    if sum(stop - start for start, stop, _ in segments) < count:  # every varint takes a byte
        raise WireError(f"fewer than the {count} values expected")
    out = np.empty(count, dtype.numpy)
    filled = 0
    for start, stop, packed in segments:
        index = 0  # of the varint in the segment: an unpacked run alternates tag and value
        for piece in iter_packed_varints(proto[start:stop]):
            values = piece if packed else piece[(index + 1) % 2 :: 2]
            index += piece.size
            if filled + values.size > count:
                raise WireError(f"more than the {count} values expected")
            out[filled : filled + values.size] = _from_varints(values, dtype)
            filled += values.size
    return out[:filled]


def _tag_length(data: np.ndarray, pos: int) -> int:
    length = 1
    while data[pos + length - 1] & 0x80:
        length += 1
    return length


def _from_varints(raw: np.ndarray, dtype: dtypes.DType) -> np.ndarray:
    if dtype.name == "bool":
        return raw != 0
    if dtype.name in ("float16", "bfloat16"):
        return raw.astype(np.uint16).view(dtype.numpy)  # half_val holds the 16 bits
    if dtype.numpy.kind == "i":
        return raw.view(np.int64).astype(dtype.numpy)  # negatives are 64-bit two's complement
    return raw.astype(dtype.numpy)
