"""Format "torch": the zip archives `torch.save` writes since PyTorch 1.6, read and written without torch.

Layout (torch/serialization.py `_save`, caffe2/serialize/inline_container.cc): one folder
`<root>/` holding `data.pkl` (the pickle, storages replaced by persistent ids
`("storage", <StorageClass>, key, location, numel)`), `data/<key>` (each storage's raw bytes,
stored uncompressed and 64-byte aligned through a padding extra field "FB"), `byteorder`,
`version`, `.format_version`, `.storage_alignment` and `.data/serialization_id`.

Reading maps the file and views each storage in place, so listing costs only the pickle.
Writing lays records out exactly as torch's miniz writer does (headers, padding, data
descriptors, record order), so `torch.load(mmap=True)` and torch's computed-offsets loader both
work; it streams one tensor at a time.
"""

from __future__ import annotations

import itertools
import re
import secrets
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes, parallel
from ..atomic import AtomicFiles
from ..errors import FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from . import torch_pickle as tp
from .rawio import MappedFile, file_size, open_output, refuse_zip_bomb
from .stream import BlockStream
from .torch_select import select

ALIGNMENT = 64  # torch.utils.serialization.config.save.storage_alignment
_U32 = 0xFFFFFFFF  # the zip "see the zip64 extra field" marker
_ZIP64_AT = _U32  # sizes and offsets from here on need zip64 (miniz: >= MZ_UINT32_MAX)
# dtypes torch saves as UntypedStorage + dtype via _rebuild_tensor_v3 (torch/storage.py `_new_dtypes`).
_V3_DTYPES = ("uint16", "uint32", "uint64")
# What zipfile raises on damaged archives (an unknown compression method is NotImplementedError).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error,
               struct.error)  # fmt: skip


def sniff(path: Path) -> bool:
    """A zip whose first member is `<root>/data.pkl` or `<root>/data/...` (TorchScript puts data first)."""
    try:
        with open(path, "rb") as f:
            head = f.read(30 + 256)
    except OSError:
        return False
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return False
    name = head[30 : 30 + int.from_bytes(head[26:28], "little")]
    root, sep, rest = name.partition(b"/")
    return bool(root and sep) and (rest == b"data.pkl" or rest.startswith(b"data/"))


def read(path: Path) -> Checkpoint:
    """Index a torch zip file: parse `data.pkl` with the restricted unpickler; data stays on disk."""
    path = Path(path)
    archive = _Archive(path)
    root, names = archive.root, set(archive.members)
    if f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names):
        raise UnsupportedError(
            f"{path}: this is a TorchScript archive (torch.jit.save), not a torch.save file.",
            hint="load it with torch.jit.load and torch.save(module.state_dict(), ...).",
        )
    pickled = archive.record("data.pkl", limit=1 << 31)
    if pickled is None:
        raise FormatError(f"{path}: the zip has no {root}/data.pkl, so it is not a torch.save file.")
    byteorder = archive.record("byteorder") or b"little"  # absent before torch 2.1: little
    if byteorder not in (b"little", b"big"):
        raise FormatError(f"{path}: unknown byte order {byteorder[:20]!r} in {root}/byteorder.")
    storages: dict[str, tuple[tp.StorageRef, zipfile.ZipInfo]] = {}

    def persistent_load(pid: Any) -> tp.StorageRef:
        # torch/serialization.py `_load.persistent_load`: ("storage", type, key, location, numel)
        if not isinstance(pid, tuple) or len(pid) != 5 or tp.text(pid[0]) != "storage":
            raise FormatError(f"unexpected persistent id ({tp.describe(pid)}).")
        stype = tp.storage_type(pid[1])
        key, numel = tp.text(pid[2]), pid[4]
        if key in storages:  # views of one storage name it again, with the same type and size
            first = storages[key][0]
            if (first.dtype, first.numel) != (stype.dtype, numel):  # which one is right? (as torch_legacy)
                raise FormatError(
                    f"storage '{key}' is declared twice, with different types or sizes "
                    f"({first.numel} elements, then {tp.describe(numel)})."
                )
            return first
        info = archive.members.get(f"{root}/data/{key}")
        if info is None or type(numel) is not int or numel < 0:
            raise FormatError(f"storage '{key}' is missing from the archive or has a bad size.")
        ref = tp.StorageRef(key, stype.dtype, numel, tp.text(pid[3]))
        if info.file_size < ref.nbytes:
            raise FormatError(f"storage '{key}' holds {info.file_size} bytes, its tensors need {ref.nbytes}.")
        storages[key] = (ref, info)
        return ref

    chosen = select(tp.unpickle(pickled, path, persistent_load), path)
    big = byteorder == b"big"

    def entry(key: str, ref: tp.TensorRef) -> TensorEntry:
        def load() -> np.ndarray:
            return tp.materialize(ref, archive.read(storages[ref.storage.key][1]), big_endian=big)

        return TensorEntry(key.replace(".", "/"), ref.shape, ref.dtype.name, key, load)

    entries = [entry(key, t) for key, t in chosen.tensors.items()]
    notes = chosen.notes + (["storages are big-endian; values were byte-swapped"] if big else [])
    return Checkpoint(entries, format="torch", path=path, files=[path], notes=notes, metadata=chosen.metadata)


class _Archive:
    """The members of a torch zip, read in place through one mmap, each CRC-checked once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = file_size(path)
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except _ZIP_ERRORS as e:
            raise FormatError(f"{path}: not a readable zip archive ({e}); it may be truncated.") from None
        if not infos or "/" not in infos[0].filename:
            raise FormatError(f"{path}: the zip does not hold a torch.save folder (<name>/data.pkl).")
        # torch names the folder after the first member (inline_container.cc `PyTorchStreamReader::init`).
        self.root = infos[0].filename.split("/", 1)[0]
        self.members = {i.filename: i for i in infos}
        if len(self.members) < len(infos):  # which copy a reader takes differs: refuse the ambiguity
            twice = Counter(i.filename for i in infos).most_common(1)[0][0]
            raise FormatError(f"{path}: the zip holds {twice} more than once.")
        odd = next((n for n in self.members if not _plain_member_name(n)), None)
        if odd is not None:
            raise FormatError(f"{path}: the zip has a member named {odd!r:.80}, not a path in its folder.")
        self._map = MappedFile(path)
        self._verified: set[str] = set()
        self._data_at = self._locate_data(infos)

    def _locate_data(self, infos: list[zipfile.ZipInfo]) -> dict[str, int]:
        """Where each member's data starts, from its local header, checking that no two members
        share bytes: one member's data reached from many central-directory entries (or headers
        whose extra fields lead to the same data) would turn a few MB into gigabytes of tensors.
        One 30-byte read per member and a sort; storages shared by tensors are one member."""
        starts: dict[str, int] = {}
        spans = []
        for info in infos:
            header = self._map.read(info.header_offset, 30)
            if header[:4] != b"PK\x03\x04":
                raise FormatError(f"{self.path}: the local header of {info.filename} is damaged.")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            local = bytes(self._map.read(info.header_offset + 30, name_len))
            flags = struct.unpack("<H", header[6:8])[0]
            if local.decode("utf-8" if flags & 0x800 else "cp437", "replace") != info.orig_filename:
                raise FormatError(f"{self.path}: {info.filename} points at another member's local header.")
            start = info.header_offset + 30 + name_len + extra_len
            starts[info.filename] = start
            if start + info.compress_size <= self._size:  # else reading it says what is wrong
                spans.append((info.header_offset, start + info.compress_size, info.filename))
        spans.sort()
        for (_, end, name), (begin, _, other) in itertools.pairwise(spans):
            if begin < end:
                raise FormatError(f"{self.path}: members {name} and {other} overlap; refusing aliased data.")
        return starts

    def record(self, name: str, limit: int = 1 << 16) -> bytes | None:
        info = self.members.get(f"{self.root}/{name}")
        if info is None:
            return None
        if info.file_size > limit:
            raise FormatError(f"{self.path}: {info.filename} is implausibly large ({info.file_size} bytes).")
        return bytes(self.read(info))

    def read(self, info: zipfile.ZipInfo) -> memoryview | bytes:
        if info.compress_type != zipfile.ZIP_STORED:  # re-zipped by hand; torch never compresses
            refuse_zip_bomb(info, self.path)  # the pickle and the storages are inflated in memory
            try:
                with zipfile.ZipFile(self.path) as zf:
                    return zf.read(info)
            except _ZIP_ERRORS as e:
                raise FormatError(f"{self.path}: cannot read {info.filename} ({e}).") from None
        # The data follows the local header, its name and extra field (APPNOTE 4.3.7), whose
        # lengths torch's `getRecordOffset` reads the same way (see `_locate_data`).
        data = self._map.read(self._data_at[info.filename], info.file_size)
        # torch writes CRC 0 when torch.utils.serialization.config.save.compute_crc32 is off.
        if info.filename not in self._verified and info.CRC:
            self._verified.add(info.filename)  # now, so views of one storage queue one check
            parallel.check(lambda: self._verify(info, data))  # maybe while `data` is being written
        return data

    def _verify(self, info: zipfile.ZipInfo, data: memoryview | bytes) -> None:
        if parallel.crc32(data) != info.CRC:
            self._verified.discard(info.filename)  # a later read fails again, not silently
            raise FormatError(f"{self.path}: checksum mismatch in {info.filename}; the file is damaged.")


def _crc32(crc: int, data: np.ndarray) -> int:
    return parallel.crc32(data, crc)


def _plain_member_name(name: str) -> bool:
    """A relative path without `..`, `.` or empty parts (torch writes `<root>/data/<key>`; `zip -r`
    adds folders, `<root>/`)."""
    parts = name.removesuffix("/").split("/")
    return "\\" not in name and ":" not in parts[0] and all(p not in ("", ".", "..") for p in parts)


# ---------------------------------------------------------------------------------------- writing


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `ckpt` as a state dict that `torch.load(path, weights_only=True)` returns as an
    OrderedDict of tensors; keys are canonical names joined with `.`.

    Tensors are read and written one at a time; `progress(n)` gets each tensor's byte count.

    >>> write(ckptmap.load("lstm.safetensors"), Path("lstm.pt"))   # doctest: +SKIP
    """
    path = Path(path)
    entries = list(ckpt.entries.values())
    pickled = _state_dict_pickle(entries, path)
    root = path.stem if re.fullmatch(r"[A-Za-z0-9_.-]+", path.stem) else "archive"
    with AtomicFiles([path]) as out, open_output(out.temp(path)) as f, BlockStream(f) as stream:
        zw = _ZipWriter(stream, root)
        zw.add("data.pkl", pickled)
        zw.add(".format_version", b"1")
        zw.add(".storage_alignment", str(ALIGNMENT).encode())
        zw.add("byteorder", b"little")
        for i, entry in enumerate(entries):
            zw.add_tensor(f"data/{i}", entry)
            if progress is not None:
                progress(entry.nbytes)
        zw.add("version", b"3\n")
        zw.add(".data/serialization_id", str(secrets.randbits(128)).zfill(40).encode())
        zw.finish()
    return [path]


def _state_dict_pickle(entries: list[TensorEntry], path: Path) -> bytes:
    """An OrderedDict of `_rebuild_tensor_v2(storage pid, 0, shape, stride, False, OrderedDict())`,
    as torch's `Tensor._reduce_ex_internal` pickles it at protocol 2.

    Hand-rolled because `pickle.Pickler` imports every global it writes, and these are torch's.
    """
    p = _Pickle()
    p.glob("collections", "OrderedDict").op(b")R")
    if entries:
        p.op(b"(")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = entry.name.replace("/", ".")
        if key in seen:
            raise UnsupportedError(f"{path}: two tensors would both be saved as '{key}'.")
        seen.add(key)
        dt = dtypes.by_name(entry.dtype)
        if dt.torch_storage is None and entry.dtype not in _V3_DTYPES:
            raise UnsupportedError(
                f"{path}: tensor '{entry.name}' is {entry.dtype}; torch has no such dtype."
            )
        v3 = entry.dtype in _V3_DTYPES
        p.str(key).glob("torch._utils", "_rebuild_tensor_v3" if v3 else "_rebuild_tensor_v2").op(b"((")
        p.str("storage").glob(*(("torch.storage", "UntypedStorage") if v3 else ("torch", dt.torch_storage)))
        p.str(str(i)).str("cpu").int(entry.size * dt.itemsize if v3 else entry.size).op(b"tQ")
        strides = [int(np.prod(entry.shape[k + 1 :], dtype=np.int64)) for k in range(len(entry.shape))]
        p.int(0).tuple(entry.shape).tuple(strides).op(b"\x89")  # offset, size, stride, requires_grad
        p.glob("collections", "OrderedDict").op(b")R")  # backward_hooks
        if v3:
            p.glob("torch", entry.dtype)
        p.op(b"tR")
    if entries:
        p.op(b"u")
    return bytes(p.op(b".").buf)


class _Pickle:
    """The protocol-2 opcodes a state dict needs (meanings in Lib/pickletools.py)."""

    def __init__(self) -> None:
        self.buf = bytearray(b"\x80\x02")
        self.memo: dict[tuple[str, str], int] = {}

    def op(self, code: bytes) -> _Pickle:
        self.buf += code
        return self

    def glob(self, module: str, name: str) -> _Pickle:
        idx = self.memo.get((module, name))
        if idx is not None:  # BINGET / LONG_BINGET
            return self.op(b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx))
        idx = self.memo[(module, name)] = len(self.memo)
        self.op(f"c{module}\n{name}\n".encode())  # GLOBAL, then BINPUT / LONG_BINPUT
        return self.op(b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx))

    def int(self, v: int) -> _Pickle:
        if 0 <= v < 1 << 8:
            return self.op(b"K" + bytes([v]))
        if 0 <= v < 1 << 16:
            return self.op(b"M" + struct.pack("<H", v))
        if -(1 << 31) <= v < 1 << 31:
            return self.op(b"J" + struct.pack("<i", v))
        raw = v.to_bytes(v.bit_length() // 8 + 1, "little", signed=True)
        return self.op(b"\x8a" + bytes([len(raw)]) + raw)  # LONG1

    def str(self, s: str) -> _Pickle:
        raw = s.encode("utf-8")
        return self.op(b"X" + struct.pack("<I", len(raw)) + raw)  # BINUNICODE

    def tuple(self, values: Iterable[int]) -> _Pickle:
        self.op(b"(")
        for v in values:
            self.int(int(v))
        return self.op(b"t")


class _ZipWriter:
    """Stored zip members laid out as torch's miniz writer does (inline_container.cc `getPadding`):
    local header with zeroed sizes and flag bit 3, extra fields (zip64 when needed, then "FB" +
    padding so data starts on a 64-byte boundary), data, data descriptor; zip64 end records always.
    """

    def __init__(self, out: BlockStream, root: str) -> None:
        self.out, self.root, self.pos = out, root, 0
        self.central: list[bytes] = []

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.pos += len(data)

    def add(self, name: str, data: bytes) -> None:
        """A small member whose bytes are at hand."""

        def write() -> int:
            self._write(data)
            return zlib.crc32(data)

        self._member(name, len(data), write)

    def add_tensor(self, name: str, entry: TensorEntry) -> None:
        """A storage, streamed from the entry."""

        def write() -> int:
            self.pos += entry.nbytes
            return self.out.tensor(entry, _crc32)

        self._member(name, entry.nbytes, write)

    def _member(self, name: str, size: int, write: Callable[[], int]) -> None:
        """Header, then `write()` (the bytes; it returns their CRC32), then the data descriptor."""
        full = f"{self.root}/{name}".encode()
        offset = self.pos
        big_size, big_offset = size >= _ZIP64_AT, offset >= _ZIP64_AT
        # zip64 extra (APPNOTE 4.5.3): the sizes and/or offset that do not fit in 32 bits.
        z64 = struct.pack("<QQ", size, size) if big_size else b""
        z64 += struct.pack("<Q", offset) if big_offset else b""
        z64_extra = struct.pack("<HH", 1, len(z64)) + z64 if z64 else b""
        pad = -(offset + 30 + len(full) + len(z64_extra) + 4) % ALIGNMENT
        extra = z64_extra + b"FB" + struct.pack("<H", pad) + b"Z" * pad
        flags = 0x0808 if size else 0x0800  # bit 3: sizes follow the data; bit 11: UTF-8 names
        local_size = _U32 if big_size else 0
        self._write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, flags, 0, 0, 0, 0, local_size, local_size,
                                len(full), len(extra)) + full + extra)  # fmt: skip
        crc = write()
        zip64 = big_size or big_offset
        if size:  # torch's `_get_offset` expects 16 bytes here, or 24 for zip64 records
            sizes = struct.pack("<QQ", size, size) if zip64 else struct.pack("<II", size, size)
            self._write(struct.pack("<II", 0x08074B50, crc) + sizes)
        csize, coffset = (_U32 if big_size else size), (_U32 if big_offset else offset)
        fixed = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 45 if zip64 else 0, flags, 0, 0, 0, crc,
                            csize, csize, len(full), len(z64_extra), 0, 0, 0, 0, coffset)  # fmt: skip
        self.central.append(fixed + full + z64_extra)

    def finish(self) -> None:
        start = self.pos
        for record in self.central:
            self._write(record)
        n, cd_size, eocd64 = len(self.central), self.pos - start, self.pos
        self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 45, 0, 0, n, n, cd_size, start))
        self._write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
        big = cd_size >= _ZIP64_AT or start >= _ZIP64_AT
        self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                                _U32 if big else cd_size, _U32 if big else start, 0))  # fmt: skip
