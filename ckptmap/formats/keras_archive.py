"""Format "keras-archive": a Keras 3 `.keras` file, read only.

The archive is a zip of `config.json` (the model's structure), `metadata.json` and
`model.weights.h5` (keras/src/saving/saving_lib.py `_save_model_to_fileobj`). The config is read as
JSON data, never deserialized, to learn each layer's class; the weights go through
`keras3_h5.read_h5`, which uses those classes to name variables (`dense/kernel` rather than
`dense/vars/0`). Keras stores the weights member uncompressed, so it is read in place through a
window onto the archive; a compressed member is decompressed once, in memory when small, else to
an anonymous temporary file.
"""

from __future__ import annotations

import io
import itertools
import json
import mmap
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import h5py

from ..errors import CkptmapError, FormatError, UnsupportedError
from ..tree import Checkpoint
from .hdf5_guard import Guard, check_global_heaps, check_global_heaps_in_file
from .keras3_h5 import LayerInfo, Opener, read_h5, snake_case
from .keras_names import UniqueKeys
from .rawio import file_size, refuse_zip_bomb

WEIGHTS, CONFIG, METADATA = "model.weights.h5", "config.json", "metadata.json"
_MAX_JSON = 64 << 20  # a config is kilobytes; refuse to inflate anything near this
_IN_MEMORY = 64 << 20  # compressed weights up to this size are decompressed into memory
_MODELS = ("Sequential", "Functional", "Model")


def sniff(path: Path) -> bool:
    """A zip holding `model.weights.h5` and `config.json`."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        with zipfile.ZipFile(path) as z:
            return {WEIGHTS, CONFIG} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def read(path: Path) -> Checkpoint:
    """Index the weights of a `.keras` archive, naming them with the classes its config gives.

    >>> read(Path("model.keras")).entries["dense/kernel"].key   # doctest: +SKIP
    'layers/dense/vars/0'
    """
    path = Path(path)
    file_size(path)
    try:
        with zipfile.ZipFile(path) as z:
            listed = z.namelist()
            names = set(listed)
            twice = [m for m in (CONFIG, WEIGHTS, METADATA) if listed.count(m) > 1]
            if twice:  # readers disagree on which copy counts; Keras' zipfile takes the last
                raise FormatError(f"{path}: the zip holds {twice[0]} more than once.")
            missing = [m for m in (CONFIG, WEIGHTS) if m not in names]
            if missing:
                raise FormatError(f"{path}: a zip without {' and '.join(missing)}; not a Keras 3 archive.")
            _refuse_overlaps(z, path)
            config = _json(z, CONFIG, path)
            metadata = _json(z, METADATA, path) if METADATA in names else {}
            opener, guard = _opener(z, z.getinfo(WEIGHTS), path)
    except CkptmapError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, RuntimeError) as e:
        raise FormatError(f"{path}: not a readable zip archive ({e}).") from None
    layers, described = layers_from_config(config)
    notes = [
        f"layer classes from config.json (read as data): {_shorten(described)}"
        if described
        else "config.json lists no layers (a subclassed model?); variables keep vars/<i> unless shapes tell"
    ]
    meta = {k: v for k, v in metadata.items() if isinstance(v, str | int | float)} if metadata else {}
    return read_h5(
        opener, path=path, format="keras-archive", guard=guard, layers=layers, notes=notes, metadata=meta
    )


def layers_from_config(config: Any) -> tuple[dict[str, LayerInfo], list[str]]:
    """Group path -> LayerInfo for every layer of a Sequential/Functional config (nested ones too),
    keyed as Keras keys them (snake-case class, unique per model), and `name=Class` descriptions."""
    found: dict[str, LayerInfo] = {}
    described: list[str] = []

    def model(node: Any, where: str, names: str) -> None:
        inner = node.get("config") if isinstance(node, dict) else None
        items = inner.get("layers") if isinstance(inner, dict) else None
        unique = UniqueKeys()
        for item in items if isinstance(items, list) else ():
            conf = item.get("config") if isinstance(item, dict) else None
            class_name, name = item.get("class_name") if conf else None, conf.get("name") if conf else None
            if not isinstance(class_name, str) or not isinstance(name, str):
                continue
            key = unique(snake_case(class_name))  # an InputLayer takes its key too
            if class_name == "InputLayer":
                continue
            found[f"{where}layers/{key}"] = LayerInfo(name, class_name, conf)
            described.append(f"{names}{name}={class_name}")
            if class_name in _MODELS or isinstance(conf.get("layers"), list):
                model(item, f"{where}layers/{key}/", f"{names}{name}/")

    model(config, "", "")
    return found, described


def _json(z: zipfile.ZipFile, member: str, path: Path) -> Any:
    info = z.getinfo(member)
    if info.file_size > _MAX_JSON:
        raise FormatError(
            f"{path}: {member} declares {info.file_size} bytes; refusing to read that much JSON."
        )
    try:
        data = json.loads(z.read(info).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: {member} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: {member} is not a JSON object.")
    return data


def _refuse_overlaps(z: zipfile.ZipFile, path: Path) -> None:
    """Refuse members whose bytes overlap (or a member listed twice): one stretch of the archive
    read as two members is aliasing no zip writer produces, and the basis of overlapping-member
    zip bombs. O(members): each member takes at least its local header, name and data."""
    spans = sorted(
        (i.header_offset, i.header_offset + 30 + len(_raw_name(i)) + i.compress_size, i.filename)
        for i in z.infolist()
    )
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise FormatError(f"{path}: zip members {name} and {other} overlap; the archive is damaged.")


def _opener(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[Opener, Guard]:
    """How to open the weights (in place when stored) and the guard for the walk of them."""
    if info.flag_bits & 0x1:
        raise UnsupportedError(f"{path}: {WEIGHTS} is encrypted.")
    if info.compress_type == zipfile.ZIP_STORED:
        offset = _data_offset(z, info, path)
        largest = check_global_heaps_in_file(path, f"{path}: {WEIGHTS}", offset, offset + info.file_size)
        guard = Guard(path, file_bytes=info.file_size, heap_object=largest)

        @contextmanager
        def in_place() -> Iterator[h5py.File]:
            with open(path, "rb") as raw, h5py.File(_Window(raw, offset, info.file_size), "r") as f:
                yield f

        return in_place, guard
    refuse_zip_bomb(info, path)
    copy: IO[bytes]
    if info.file_size <= _IN_MEMORY:
        data = z.read(info)
        largest = check_global_heaps(data, f"{path}: {WEIGHTS}")
        copy = io.BytesIO(data)
    else:  # anonymous: removed by the OS when the checkpoint (and so this closure) is gone
        copy = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the entries that read it
        with z.open(info) as member:
            shutil.copyfileobj(member, copy, 1 << 20)
        copy.flush()
        with mmap.mmap(copy.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            largest = check_global_heaps(mapped, f"{path}: {WEIGHTS}")

    def decompressed() -> h5py.File:
        return h5py.File(copy, "r")

    return decompressed, Guard(path, file_bytes=info.file_size, heap_object=largest)


def _data_offset(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> int:
    """Where a stored member's bytes start: after its local header (APPNOTE 4.3.7)."""
    assert z.fp is not None
    z.fp.seek(info.header_offset)
    header = z.fp.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"{path}: the local header of {WEIGHTS} is damaged.")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    if z.fp.read(name_len) != _raw_name(info):  # the directory aliasing another member
        raise FormatError(f"{path}: the local header of {WEIGHTS} names another member.")
    offset = info.header_offset + 30 + name_len + extra_len
    if offset + info.file_size > file_size(path):
        raise FormatError(f"{path}: {WEIGHTS} runs past the end of the archive; it is truncated.")
    return offset


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """A member's name as the archive stores it (UTF-8 when flagged, else cp437, as zipfile reads it)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


class _Window(io.RawIOBase):
    """A read-only file over bytes [offset, offset + size) of another file, for h5py."""

    def __init__(self, raw: IO[bytes], offset: int, size: int) -> None:
        super().__init__()
        self._raw, self._offset, self._size, self._pos = raw, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._raw.seek(self._offset + self._pos)
        data = self._raw.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _shorten(items: list[str], limit: int = 24) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
