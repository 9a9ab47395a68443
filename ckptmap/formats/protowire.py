"""Just enough protobuf wire format (and TF's OrderedCode slice keys) to read TF checkpoints.

TF checkpoints store small protobuf messages (BundleHeaderProto, BundleEntryProto, V1's
SavedTensorSlices) inside LevelDB-style tables. Decoding them by hand keeps the `protobuf`
package (and TensorFlow's generated code) out of ckptmap. Field numbers are cited from the
.proto files next to each message; wire types from protobuf's encoding spec
(https://protobuf.dev/programming-guides/encoding/).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import lazy

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1


class WireError(ValueError):
    """Bytes that are not a valid protobuf message; callers turn it into a FormatError."""


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode one unsigned varint at `pos`; returns (value, position after it)."""
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    value &= _MASK64  # negative int32/int64 go on the wire as 64-bit two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def as_signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value): ints for scalars, memoryviews for LEN fields."""
    # Small messages (a checkpoint index holds one per tensor) are scanned as bytes, which index
    # several times faster than a memoryview; one-byte varints (most tags and values) are inlined.
    data = bytes(buf) if len(buf) <= 4096 else buf
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        tag = data[pos]
        tag, pos = (tag, pos + 1) if tag < 0x80 else read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value = data[pos] if pos < end else 0x80
            value, pos = (value, pos + 1) if value < 0x80 else read_varint(data, pos)
        elif wire == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value, pos = struct.unpack_from("<Q", view, pos)[0], pos + 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value, pos = struct.unpack_from("<I", view, pos)[0], pos + 4
        elif wire == LEN:
            length = data[pos] if pos < end else 0x80
            length, pos = (length, pos + 1) if length < 0x80 else read_varint(data, pos)
            if pos + length > end:
                raise WireError("length-delimited field runs past the end")
            value, pos = view[pos : pos + length], pos + length
        else:  # groups (3, 4) are proto2-only and never used by TF checkpoints
            raise WireError(f"unsupported wire type {wire}")
        yield number, wire, value


def fields(buf: bytes | memoryview) -> Fields:
    """All fields of a message grouped by number, in file order (repeated fields keep order)."""
    out: dict[int, list[int | memoryview]] = {}
    for number, _, value in iter_fields(buf):
        out.setdefault(number, []).append(value)
    return out


Fields = dict[int, list[int | memoryview]]


def scalar(f: Fields, number: int, default: int = 0) -> int:
    """The last value of a scalar field (proto3: the last one wins), checking its wire type."""
    values = f.get(number)
    if not values:
        return default
    if not isinstance(values[-1], int):
        raise WireError(f"field {number} should be a number")
    return values[-1]


def messages(f: Fields, number: int) -> list[memoryview]:
    """Every occurrence of a message/bytes field, checking its wire type."""
    values = f.get(number, [])
    out = [v for v in values if isinstance(v, memoryview)]
    if len(out) != len(values):
        raise WireError(f"field {number} should be a message")
    return out


def message(f: Fields, number: int) -> memoryview | None:
    found = messages(f, number)
    return found[-1] if found else None


def packed_varints(chunk: memoryview) -> np.ndarray:
    """Decode a packed run of varints to uint64, vectorized (V1 tensors hold millions of them)."""
    pieces = list(iter_packed_varints(chunk))
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0] if pieces else np.zeros(0, np.uint64)


# Bytes decoded at a time: the vectorized decoder holds ~50 bytes of temporaries per input byte,
# so whole 100 MB chunks would peak at gigabytes; pieces of 256 KiB keep that near 12 MB.
_VARINT_PIECE = 1 << 18


def iter_packed_varints(chunk: memoryview, piece: int = _VARINT_PIECE) -> Iterator[np.ndarray]:
    """The varints of a packed run as uint64 arrays, `piece` input bytes (or a few less) at a time,
    so a caller can stop or place each piece before the next is decoded."""
    raw = np.frombuffer(chunk, dtype=np.uint8)
    if raw.size and raw[-1] & 0x80:
        raise WireError("truncated packed varint")
    pos = 0
    while pos < raw.size:
        cut = min(pos + piece, raw.size)
        while cut < raw.size and raw[cut - 1] & 0x80:  # end the piece after a varint's last byte
            cut -= 1
            if cut <= pos or pos + piece - cut >= 10:
                raise WireError("varint longer than 10 bytes")
        yield _decode_varints(raw[pos:cut])
        pos = cut


def _decode_varints(raw: np.ndarray) -> np.ndarray:
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = (np.arange(raw.size) - starts[group]).astype(np.uint64) * np.uint64(7)
    if shift.size and shift.max() > 63:
        raise WireError("varint longer than 10 bytes")
    parts = (raw & 0x7F).astype(np.uint64) << shift
    return np.bitwise_or.reduceat(parts, starts)


def read_field(buf: bytes | memoryview, pos: int) -> tuple[int, int, int | memoryview, int]:
    """One field at `pos`: (number, wire type, value, position after it); values as `iter_fields`.

    For parsers that skip ahead over runs they decode themselves (see tf_v1's values)."""
    tag, pos = read_varint(buf, pos)
    number, wire = tag >> 3, tag & 7
    end = len(buf)
    if number == 0:
        raise WireError("field number 0")
    if wire == VARINT:
        value, pos = read_varint(buf, pos)
        return number, wire, value, pos
    if wire in (FIXED64, FIXED32):
        width = 8 if wire == FIXED64 else 4
        if pos + width > end:
            raise WireError(f"truncated fixed{width * 8}")
        return number, wire, int.from_bytes(buf[pos : pos + width], "little"), pos + width
    if wire == LEN:
        length, pos = read_varint(buf, pos)
        if pos + length > end:
            raise WireError("length-delimited field runs past the end")
        return number, wire, memoryview(buf)[pos : pos + length], pos + length
    raise WireError(f"unsupported wire type {wire}")


# --- encoding ------------------------------------------------------------------------------


def tag(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def varint_field(number: int, value: int) -> bytes:
    """A scalar field; proto3 leaves zero values out, and so do we."""
    return tag(number, VARINT) + encode_varint(value) if value else b""


def fixed32_field(number: int, value: int) -> bytes:
    return tag(number, FIXED32) + struct.pack("<I", value) if value else b""


def len_field(number: int, payload: bytes) -> bytes:
    """A bytes/message field, written even when empty (a set sub-message, like TF's shape)."""
    return tag(number, LEN) + encode_varint(len(payload)) + payload


# --- TF messages ---------------------------------------------------------------------------


def decode_shape(buf: memoryview) -> tuple[int, ...]:
    """TensorShapeProto (tensorflow/core/framework/tensor_shape.proto): dim=2 {size=1}, unknown_rank=3."""
    dims: list[int] = []
    for number, _, value in iter_fields(buf):
        if number == 2:
            if not isinstance(value, memoryview):
                raise WireError("field 2 should be a message")
            if len(value) == 2 and value[0] == 0x08 and value[1] < 0x80:  # Dim{size: n < 128}
                dims.append(value[1])
                continue
            size = 0
            for dim_number, _, dim_value in iter_fields(value):
                if dim_number == 1:
                    if not isinstance(dim_value, int):
                        raise WireError("field 1 should be a number")
                    size = dim_value
            dims.append(as_signed64(size))
        elif number == 3 and value:
            raise WireError("shape of unknown rank")
    if any(d < 0 for d in dims):
        raise WireError(f"negative dimension in shape {tuple(dims)}")
    if math.prod(dims) >= 1 << 63:  # TF's int64 element count; numpy would wrap around silently
        raise WireError(f"shape {tuple(dims)} has more elements than an int64 counts")
    return tuple(dims)


def encode_shape(shape: tuple[int, ...]) -> bytes:
    return b"".join(len_field(2, varint_field(1, d)) for d in shape)


@dataclass(frozen=True)
class TensorSlice:
    """TensorSliceProto (tensorflow/core/framework/tensor_slice.proto): extent=1 {start=1, length=2}.

    A length of -1 means "the whole dimension" (TF's kFullExtent); TF leaves such extents empty.
    """

    extents: tuple[tuple[int, int], ...]

    @classmethod
    def decode(cls, buf: memoryview) -> TensorSlice:
        extents = []
        for extent in messages(fields(buf), 1):
            f = fields(extent)  # `length` sits in a oneof: absent means the full dimension
            length = as_signed64(scalar(f, 2)) if 2 in f else -1
            extents.append((as_signed64(scalar(f, 1)), length))
        return cls(tuple(extents))

    def region(self, full_shape: tuple[int, ...]) -> tuple[slice, ...]:
        """The numpy index of this slice inside the full tensor."""
        if len(self.extents) != len(full_shape):
            raise WireError(f"slice has {len(self.extents)} dims, the tensor {len(full_shape)}")
        out = []
        for (start, length), dim in zip(self.extents, full_shape, strict=True):
            stop = dim if length == -1 else start + length
            if start < 0 or stop > dim or stop < start:
                raise WireError(f"slice {self.extents} does not fit shape {full_shape}")
            out.append(slice(start, stop))
        return tuple(out)

    def key(self, name: bytes) -> bytes:
        """The table key of this slice: checkpoint::EncodeTensorNameSlice
        (tensorflow/core/util/saved_tensor_slice_util.cc), built from OrderedCode."""
        parts = [_ordered_uint(0), _ordered_string(name), _ordered_uint(len(self.extents))]
        for start, length in self.extents:
            parts += [_ordered_signed(start), _ordered_signed(length)]
        return b"".join(parts)


def check_tiling(regions: list[tuple[slice, ...]], shape: tuple[int, ...]) -> None:
    """Raise WireError unless the slices cover a tensor of `shape` exactly once: gaps would read
    as uninitialized memory, and overlaps can hide a gap from a count of elements."""
    boxes = [r for r in regions if all(s.start < s.stop for s in r)]  # empty slices hold nothing
    if sum(math.prod(s.stop - s.start for s in r) for r in boxes) != math.prod(shape):
        raise WireError("its slices do not cover the tensor")
    if len(boxes) <= 256:  # boxes overlap when they overlap along every axis
        for i, a in enumerate(boxes):
            for b in boxes[:i]:
                if all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True)):
                    raise WireError("two of its slices overlap")
        return
    seen = np.zeros(shape, dtype=bool)  # as large as the slices' own data, which is all read by now
    for r in boxes:
        if seen[r].any():
            raise WireError("two of its slices overlap")
        seen[r] = True


# OrderedCode (tensorflow/core/lib/strings/ordered_code.cc): keys that sort like their values.


def _ordered_uint(value: int) -> bytes:
    # WriteNumIncreasing: one length byte, then the big-endian bytes without leading zeros.
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _ordered_string(value: bytes) -> bytes:
    # WriteString: 0x00 -> 00 ff, 0xff -> ff 00, terminated by 00 01.
    return _ESCAPES.sub(lambda m: _ESCAPED[m.group()], value) + b"\x00\x01"


_ESCAPES = re.compile(rb"[\x00\xff]")
_ESCAPED = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}


# kLengthToHeaderBits in ordered_code.cc: header bits xor-ed into the first two bytes.
_SIGNED_HEADER = (
    (0, 0),
    (0x80, 0),
    (0xC0, 0),
    (0xE0, 0),
    (0xF0, 0),
    (0xF8, 0),
    (0xFC, 0),
    (0xFE, 0),
    (0xFF, 0),
    (0xFF, 0x80),
    (0xFF, 0xC0),
)


def _ordered_signed(value: int) -> bytes:
    # WriteSignedNumIncreasing: n bytes hold numbers in [-2^(7n-1), 2^(7n-1)).
    magnitude = ~value if value < 0 else value
    if magnitude < 64:
        return bytes([(0x80 ^ value) & 0xFF])
    length = magnitude.bit_length() // 7 + 1  # kBitsToLength
    buf = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big"))  # sign-extended to 10 bytes
    begin = 10 - length
    buf[begin] ^= _SIGNED_HEADER[length][0]
    buf[begin + 1] ^= _SIGNED_HEADER[length][1]
    return bytes(buf[begin:])


@dataclass(frozen=True)
class BundleEntry:
    """BundleEntryProto (tensorflow/core/protobuf/tensor_bundle.proto): dtype=1, shape=2,
    shard_id=3, offset=4, size=5, crc32c=6 (fixed32, masked), slices=7."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    slices: tuple[TensorSlice, ...] = field(default=())

    @classmethod
    def decode(cls, buf: memoryview) -> BundleEntry:
        # One pass, no field table: an index holds one of these per tensor (thousands).
        numbers = [0, 0, 0, 0, 0, 0, 0]  # fields 1-6 by number; the last value wins (proto3)
        shape: memoryview | None = None
        slices = []
        for number, _, value in iter_fields(buf):
            if number in (2, 7):
                if not isinstance(value, memoryview):
                    raise WireError(f"field {number} should be a message")
                if number == 2:
                    shape = value
                else:
                    slices.append(TensorSlice.decode(value))
            elif number < 7:
                if not isinstance(value, int):
                    raise WireError(f"field {number} should be a number")
                numbers[number] = value
        _, dtype, _, shard_id, offset, size, crc = numbers
        dims = decode_shape(shape) if shape is not None else ()
        return cls(dtype, dims, shard_id, as_signed64(offset), as_signed64(size), crc, tuple(slices))

    def encode(self) -> bytes:
        if self.slices:  # BundleWriter::AddSlice territory; ckptmap writes whole tensors
            raise ValueError("encoding sliced entries is not supported")
        return (
            varint_field(1, self.dtype)
            + len_field(2, encode_shape(self.shape))
            + varint_field(3, self.shard_id)
            + varint_field(4, self.offset)
            + varint_field(5, self.size)
            + fixed32_field(6, self.crc32c)
        )


@dataclass(frozen=True)
class BundleHeader:
    """BundleHeaderProto: num_shards=1, endianness=2 (LITTLE=0, BIG=1), version=3 (VersionDef:
    producer=1, min_consumer=2, bad_consumers=3; tensorflow/core/framework/versions.proto)."""

    num_shards: int
    big_endian: bool = False
    producer: int = 1
    min_consumer: int = 0
    bad_consumers: tuple[int, ...] = ()

    @classmethod
    def decode(cls, buf: memoryview) -> BundleHeader:
        f = fields(buf)
        if set(f) - {1, 2, 3}:
            raise WireError("not a BundleHeaderProto")
        version_buf = message(f, 3)
        version = fields(version_buf) if version_buf is not None else {}
        bad: list[int] = []
        for value in version.get(3, []):  # proto3 packs repeated ints, but accepts them unpacked
            bad += packed_varints(value).tolist() if isinstance(value, memoryview) else [value]
        return cls(scalar(f, 1), scalar(f, 2) == 1, scalar(version, 1), scalar(version, 2), tuple(bad))

    def encode(self) -> bytes:
        version = varint_field(1, self.producer) + varint_field(2, self.min_consumer)
        return (
            varint_field(1, self.num_shards) + varint_field(2, int(self.big_endian)) + len_field(3, version)
        )
