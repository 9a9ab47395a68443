"""msgpack as flax's checkpoints use it: a bounded decoder and msgpack-python's encodings.

Type bytes from the msgpack spec (https://github.com/msgpack/msgpack/blob/master/spec.md):
positive fixint 0x00-0x7f, fixmap 0x80-0x8f, fixarray 0x90-0x9f, fixstr 0xa0-0xbf, nil 0xc0,
false/true 0xc2/0xc3, bin 8/16/32 0xc4-0xc6, ext 8/16/32 0xc7-0xc9, float 32/64 0xca/0xcb, uint
8-64 0xcc-0xcf, int 8-64 0xd0-0xd3, fixext 1/2/4/8/16 0xd4-0xd8, str 8/16/32 0xd9-0xdb, array
16/32 0xdc/0xdd, map 16/32 0xde/0xdf, negative fixint 0xe0-0xff; lengths and numbers big-endian;
0xc1 is never used. The encoders pick the forms msgpack-python's Packer picks with
`use_bin_type=True` (the shortest; str 8 for 32-255 bytes; fixext for payloads of 1/2/4/8/16).

A crafted file costs time and memory in proportion to its real size: every length is checked
against the bytes left before anything is read, nesting stops at MAX_DEPTH, items at MAX_ITEMS,
a str or bin leaf over MAX_LEAF bytes is skipped, and an array's bytes are never read here: an
`Array` is where they are. What the ext types mean is flax's (see flax_msgpack).
"""

from __future__ import annotations

import codecs
import io
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from .. import dtypes
from ..errors import FormatError, UnsupportedError

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000  # map entries and array elements in one file; a large model has thousands
MAX_DIMS = 64  # numpy's NPY_MAXDIMS
MAX_LEAF = 1 << 20  # a str or bin leaf longer than this is skipped, not kept as metadata
MAX_KEY = 1 << 16
_DTYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3  # flax/serialization.py `_MsgpackExtType`

_FIXED = {0xC0: ("nil", None), 0xC2: ("bool", False), 0xC3: ("bool", True)}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_SIZED = {  # type byte -> kind, and the struct format of the length (or value) that follows
    0xC4: ("bin", ">B"), 0xC5: ("bin", ">H"), 0xC6: ("bin", ">I"),
    0xC7: ("ext", ">B"), 0xC8: ("ext", ">H"), 0xC9: ("ext", ">I"),
    0xCA: ("float", ">f"), 0xCB: ("float", ">d"),
    0xCC: ("int", ">B"), 0xCD: ("int", ">H"), 0xCE: ("int", ">I"), 0xCF: ("int", ">Q"),
    0xD0: ("int", ">b"), 0xD1: ("int", ">h"), 0xD2: ("int", ">i"), 0xD3: ("int", ">q"),
    0xD9: ("str", ">B"), 0xDA: ("str", ">H"), 0xDB: ("str", ">I"),
    0xDC: ("array", ">H"), 0xDD: ("array", ">I"), 0xDE: ("map", ">H"), 0xDF: ("map", ">I"),
}  # fmt: skip


@dataclass(frozen=True)
class Array:
    """An ndarray leaf: its shape and dtype, and where its C-order bytes are in the file."""

    shape: tuple[int, ...]
    dtype: dtypes.DType
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Skipped:
    """A str or bin leaf too long to keep."""

    kind: str
    nbytes: int


class OutOfBytes(FormatError):
    """A partial decode (a sniffer's header) ran past the bytes it was given."""


class Decoder:
    """Decodes one file's top-level map: nested dicts of str keys (a msgpack array as keys "0",
    "1", ...), leaves `Array`, `Skipped` or Python values. `partial`: `source` is only the start
    of the file, and running out of it raises `OutOfBytes`."""

    def __init__(self, source: bytes | BinaryIO, path: Path, *, size: int = 0, partial: bool = False) -> None:
        self.f = io.BytesIO(source) if isinstance(source, bytes) else source
        self.size = len(source) if isinstance(source, bytes) else size
        self.path, self.partial = path, partial
        self.pos = self.items = 0
        self.end = self.size  # where the value being read must end: the file, or an ext's payload

    def tree(self) -> dict[str, Any]:
        kind, n = self.head()
        if kind != "map":
            self.fail(f"the file starts with a msgpack {kind}, not a map of names")
        tree = self.container(kind, n, (), 1)
        if self.pos != self.size:
            self.fail(f"{self.size - self.pos} bytes of garbage follow the top-level map")
        return tree

    def node(self, parts: tuple[str, ...], depth: int) -> Any:
        kind, n = self.head()
        if kind in ("map", "array"):
            return self.container(kind, n, parts, depth + 1)
        if kind == "ext":
            return self.ext(n, parts)
        if kind in ("str", "bin"):
            if n > MAX_LEAF:
                self.skip(n)
                return Skipped(kind, n)
            data = self.take(n)
            return self.utf8(data, parts) if kind == "str" else data
        return n  # int, float, bool, None

    def container(self, kind: str, n: int, parts: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            self.fail(f"maps nest deeper than {MAX_DEPTH}", parts)
        left = self.size - self.pos
        if not self.partial and n * (2 if kind == "map" else 1) > left:
            self.fail(
                f"a {kind} claims {n} items, more than the {left} bytes left can hold; truncated", parts
            )
        self.items += n
        if self.items > MAX_ITEMS:
            self.fail(f"more than {MAX_ITEMS} items", parts)
        out: dict[str, Any] = {}
        for i in range(n):
            key = self.key(parts) if kind == "map" else str(i)
            if key in out:
                self.fail(f"the key '{key}' appears twice", parts)
            out[key] = self.node((*parts, key), depth)
        return out

    def key(self, parts: tuple[str, ...]) -> str:
        kind, n = self.head()
        if kind != "str" or n > MAX_KEY:
            self.fail(
                f"a map key is of type {kind} ({n!r:.20}), not a string of up to {MAX_KEY} bytes", parts
            )
        key = self.utf8(self.take(n), parts)
        if not key:
            raise UnsupportedError(
                f"{self.path}: an empty key in '{'/'.join(parts)}'; ckptmap names tensors by keys."
            )
        return key

    def ext(self, n: int, parts: tuple[str, ...]) -> Any:
        code = struct.unpack(">b", self.take(1))[0]
        self.need(n)
        end, outer, self.end = self.pos + n, self.end, self.pos + n
        try:
            value = self.ext_payload(code, parts)
        finally:
            self.end = outer
        if self.pos != end:
            self.fail(f"an ext value claims {n} bytes but holds {self.pos - end + n}", parts)
        return value

    def ext_payload(self, code: int, parts: tuple[str, ...]) -> Any:
        if code == EXT_COMPLEX:  # packb((real, imag))
            if self.head() != ("array", 2):
                self.fail("a complex ext is not [real, imag]", parts)
            value = complex(self.number(parts), self.number(parts))
        elif code in (EXT_NDARRAY, EXT_NPSCALAR):
            value = self.ndarray(parts, scalar=code == EXT_NPSCALAR)
        else:
            self.fail(f"msgpack ext type {code}, which flax does not write", parts)
        return value

    def ndarray(self, parts: tuple[str, ...], *, scalar: bool) -> Any:
        """flax's `_ndarray_to_bytes` payload: [shape, dtype name, C-order bytes]."""
        if self.head() != ("array", 3):
            self.fail("an ndarray ext is not [shape, dtype, bytes]", parts)
        kind, ndim = self.head()
        if kind != "array" or ndim > MAX_DIMS:
            self.fail(f"an ndarray's shape is not an array of up to {MAX_DIMS} dimensions", parts)
        shape = tuple(self.dimension(parts) for _ in range(ndim))
        kind, n = self.head()
        if kind not in ("str", "bin") or n > 32:
            self.fail("an ndarray's dtype name is not a short string", parts)
        dt = self.dtype(self.take(n), parts)
        kind, nbytes = self.head()
        if kind not in ("bin", "str"):  # str: bytes as msgpack wrote them before use_bin_type
            self.fail(f"an ndarray's data is a {kind}, not bytes", parts)
        expected = math.prod(shape) * dt.itemsize
        if nbytes != expected:
            self.fail(f"shape {shape} of {dt.name} needs {expected} bytes, the file holds {nbytes}", parts)
        if scalar:
            if shape:
                self.fail(f"a numpy scalar has shape {shape}", parts)
            return scalar_value(self.take(nbytes), dt)
        offset = self.pos
        self.skip(nbytes)
        return Array(shape, dt, offset, nbytes)

    def dimension(self, parts: tuple[str, ...]) -> int:
        kind, d = self.head()
        if kind != "int" or d < 0:
            self.fail(f"an array dimension is {d!r:.20}, not a non-negative int", parts)
        return d

    def dtype(self, raw: bytes, parts: tuple[str, ...]) -> dtypes.DType:
        name = raw.decode("latin-1")
        if not _DTYPE_NAME.fullmatch(name):
            self.fail(f"{name!r:.40} is not a dtype name", parts)
        try:
            dt = dtypes.by_name(name)
        except UnsupportedError:
            dt = None
        if dt is None or dt.name == "string":
            where = "/".join(parts)
            raise UnsupportedError(
                f"{self.path}: tensor '{where}' is {name}, which ckptmap does not support."
            )
        return dt

    def number(self, parts: tuple[str, ...]) -> float:
        kind, value = self.head()
        if kind not in ("float", "int"):
            self.fail(f"a {kind} where a number belongs", parts)
        return value

    def head(self) -> tuple[str, Any]:
        """The next value's kind, and its length (str, bin, ext, map, array) or value."""
        b = self.take(1)[0]
        if b < 0x80:
            found: tuple[str, Any] = ("int", b)
        elif b >= 0xE0:
            found = ("int", b - 0x100)
        elif b < 0x90:
            found = ("map", b & 0x0F)
        elif b < 0xA0:
            found = ("array", b & 0x0F)
        elif b < 0xC0:
            found = ("str", b & 0x1F)
        elif b in _FIXED:
            found = _FIXED[b]
        elif b in _FIXEXT:
            found = ("ext", _FIXEXT[b])
        elif b in _SIZED:
            kind, fmt = _SIZED[b]
            found = (kind, struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        else:
            self.fail(f"0x{b:02x} is not a msgpack type byte")
        return found

    def utf8(self, data: bytes, parts: tuple[str, ...]) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("a string is not UTF-8", parts)

    def need(self, n: int) -> None:
        left = self.end - self.pos
        if n <= left:
            return
        if self.end < self.size:
            self.fail(f"{n} bytes claimed where its ext value has {left} left")
        if self.partial:
            raise OutOfBytes(f"{self.path}: past the header read.")
        self.fail(f"{n} bytes claimed where {left} are left; the file is truncated")

    def take(self, n: int) -> bytes:
        self.need(n)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while read
            self.fail("the file ends early; it is truncated")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        self.need(n)
        self.f.seek(n, io.SEEK_CUR)
        self.pos += n

    def fail(self, what: str, parts: tuple[str, ...] = ()) -> NoReturn:
        where = f" in '{'/'.join(parts)}'" if parts else ""
        raise FormatError(f"{self.path}: {what}{where} (byte {self.pos}).")


def first_key_is_text(head: bytes) -> bool:
    """Whether `head` starts a non-empty map whose first key is printable text (a sniffer's test)."""
    if len(head) < 3:
        return False
    b, pos = head[0], 1
    if b in (0xDE, 0xDF):
        pos = 3 if b == 0xDE else 5
        if int.from_bytes(head[1:pos], "big") == 0:
            return False
    elif not 0x81 <= b <= 0x8F:  # 0x80, an empty map, also starts every pickle (PROTO)
        return False
    t, start = head[pos : pos + 1], pos + 1
    if t and 0xA1 <= t[0] <= 0xBF:
        n = t[0] & 0x1F
    elif t and t[0] in (0xD9, 0xDA, 0xDB):
        start = pos + 1 + {0xD9: 1, 0xDA: 2, 0xDB: 4}[t[0]]
        n = int.from_bytes(head[pos + 1 : start], "big")
    else:
        return False
    key = head[start : start + n]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(key, final=len(key) == n)
    except UnicodeDecodeError:
        return False
    return n > 0 and text.isprintable()


_SCALAR_FORMATS = {"float16": "e", "float32": "f", "float64": "d", "bool": "?", "complex64": "ff"}
_SCALAR_FORMATS |= {"complex128": "dd", "int8": "b", "int16": "h", "int32": "i", "int64": "q"}
_SCALAR_FORMATS |= {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q"}


def scalar_value(data: bytes, dt: dtypes.DType) -> Any:
    """A numpy scalar's bytes (flax's ext 3, little-endian) as a Python value, without numpy."""
    if dt.name == "bfloat16":  # the high half of a float32
        return struct.unpack("<f", b"\0\0" + data)[0]
    values = struct.unpack("<" + _SCALAR_FORMATS[dt.name], data)
    return complex(*values) if len(values) == 2 else values[0]


# --- encoding, as msgpack-python's Packer(use_bin_type=True) encodes --------------------------

TRUE = b"\xc3"


def _sized(n: int, small: int, codes: tuple[int, int, int], fixed: int | None) -> bytes:
    if fixed is not None and n < small:
        return bytes([fixed | n])
    for code, fmt in zip(codes, (">B", ">H", ">I"), strict=True):
        if code and n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([code]) + struct.pack(fmt, n)
    raise UnsupportedError(f"{n} is too long for msgpack (at most 2**32 - 1).")


def map_header(n: int) -> bytes:
    return _sized(n, 16, (0, 0xDE, 0xDF), 0x80)


def array_header(n: int) -> bytes:
    return _sized(n, 16, (0, 0xDC, 0xDD), 0x90)


def text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _sized(len(data), 32, (0xD9, 0xDA, 0xDB), 0xA0) + data


def bin_header(n: int) -> bytes:
    return _sized(n, 0, (0xC4, 0xC5, 0xC6), None)


def integer(n: int) -> bytes:
    """A non-negative int (a dimension)."""
    if n < 0x80:
        return bytes([n])
    for code, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([code]) + struct.pack(fmt, n)
    raise UnsupportedError(f"{n} is too large for msgpack.")


def ext_header(code: int, n: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(n)
    head = bytes([fixed]) if fixed else _sized(n, 0, (0xC7, 0xC8, 0xC9), None)
    return head + struct.pack(">b", code)


def ndarray_header(shape: tuple[int, ...], dtype_name: str, nbytes: int) -> bytes:
    """Everything of flax's ndarray ext up to its `nbytes` of data."""
    payload = array_header(3) + array_header(len(shape)) + b"".join(map(integer, shape))
    payload += text(dtype_name) + bin_header(nbytes)
    return ext_header(EXT_NDARRAY, len(payload) + nbytes) + payload
