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
    TensorSlice,
    WireError,
    check_tiling,
    decode_shape,
    fields,
    message,
    messages,
    packed_varints,
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
            saved = message(fields(value), 2)  # SavedTensorSlices.data: a SavedSlice
            proto = message(fields(saved), 3) if saved is not None else None  # SavedSlice.data
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


def _values(proto: memoryview, dtype: dtypes.DType, count: int) -> np.ndarray:
    """The `count` values of a TensorProto as a flat array of `dtype`."""
    f = fields(proto)
    content = message(f, _TENSOR_CONTENT)
    if content is not None and dtype.name != "string":
        values = np.frombuffer(content, dtype=dtype.numpy.newbyteorder("<"))
    else:
        number, encoding = _VALUE_FIELDS[dtype.name]
        chunks = f.get(number, [])
        if encoding == "bytes":
            values = np.empty(len(chunks), dtype=object)
            values[:] = [bytes(c) for c in messages(f, number)]
        elif encoding == "fixed":
            wire = np.dtype("<f8") if dtype.name in ("float64", "complex128") else np.dtype("<f4")
            bits = np.dtype("<u8") if wire.itemsize == 8 else np.dtype("<u4")
            parts = [
                np.frombuffer(c, wire) if isinstance(c, memoryview) else np.array([c], bits).view(wire)
                for c in chunks
            ]
            values = (
                _concat(parts, wire).view(dtype.numpy) if dtype.numpy.kind == "c" else _concat(parts, wire)
            )
        else:
            parts = [
                packed_varints(c) if isinstance(c, memoryview) else np.array([c], np.uint64) for c in chunks
            ]
            values = _from_varints(_concat(parts, np.dtype(np.uint64)), dtype)
    if values.size != count:
        raise WireError(f"{values.size} values stored, {count} expected")
    return values


def _concat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]  # keep the zero-copy view of the mapped file
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _from_varints(raw: np.ndarray, dtype: dtypes.DType) -> np.ndarray:
    if dtype.name == "bool":
        return raw != 0
    if dtype.name in ("float16", "bfloat16"):
        return raw.astype(np.uint16).view(dtype.numpy)  # half_val holds the 16 bits
    if dtype.numpy.kind == "i":
        return raw.view(np.int64).astype(dtype.numpy)  # negatives are 64-bit two's complement
    return raw.astype(dtype.numpy)
