"""Format "torch-legacy": `torch.save` files of PyTorch < 1.6, or `_use_new_zipfile_serialization=False`.

Layout (torch/serialization.py `_legacy_save` / `_legacy_load`), everything back to back:
pickle(MAGIC_NUMBER), pickle(PROTOCOL_VERSION), pickle(sys_info), the object pickle, pickle(sorted
storage keys), then for each key an int64 element count and the storage's raw bytes. Storage
persistent ids are `("storage", <StorageClass>, root_key, location, numel, view_metadata)`; a
pickled module adds `("module", cls, source_file, source)` for its class. Counts and data are
little-endian whatever the machine (torch/csrc/serialization.cpp `THPStorage_writeFileRaw`).

Reading parses the pickles and then only the 8-byte counts, to learn where each storage starts;
data is mapped and copied when a tensor is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import CkptmapError, FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from . import torch_pickle as tp
from .rawio import MappedFile, file_size
from .torch_select import Selection, select

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py
PROTOCOL_VERSION = 1001
# The tar layout of PyTorch <= 0.3 (torch/serialization.py `legacy_load`): members of these names.
_TAR_MEMBERS = (b"sys_info", b"pickle", b"storages", b"tensors")


def sniff(path: Path) -> bool:
    """The file starts with a pickled MAGIC_NUMBER (or is a PyTorch <= 0.3 tar)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if _is_tar(head):
        return True
    if not head or head[0] not in b"\x80L\x8a":  # PROTO, or protocol 0/1 LONG, or bare LONG1
        return False
    try:
        return tp.unpickle(head, path) == MAGIC_NUMBER
    except CkptmapError:
        return False


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar" and head[:100].rstrip(b"\0") in _TAR_MEMBERS


def read(path: Path) -> Checkpoint:
    """Index a legacy torch file: parse its pickles, then locate each storage by its 8-byte count."""
    path = Path(path)
    size = file_size(path)
    storages: dict[str, tp.StorageRef] = {}

    def persistent_load(pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise FormatError(f"unexpected persistent id {pid!r:.80}.")
        kind = tp.text(pid[0])
        if kind == "module" and len(pid) == 4:
            return pid[1]  # the module's class, already an inert stand-in
        if kind != "storage" or len(pid) != 6:
            raise FormatError(f"unexpected persistent id {pid!r:.80}.")
        stype, key, location, numel, view = tp.storage_type(pid[1]), *map(tp.text, pid[2:4]), *pid[4:]
        if type(numel) is not int or numel < 0:
            raise FormatError(f"storage '{key}' has a bad size {numel!r:.40}.")
        root = storages.setdefault(key, tp.StorageRef(key, stype.dtype, numel, location))
        if view is None:
            return root
        # Storage views (torch < 1.0): (view_key, offset, size) in elements of the root storage.
        _, offset, count = view if isinstance(view, tuple) and len(view) == 3 else (None, -1, -1)
        if type(offset) is not int or type(count) is not int or min(offset, count) < 0:
            raise FormatError(f"storage '{key}' has bad view metadata {view!r:.60}.")
        if offset + count > root.numel:
            raise FormatError(f"a view of storage '{key}' reaches past its end.")
        return tp.StorageRef(key, root.dtype, count, location, view_offset=offset)

    try:
        with open(path, "rb") as f:
            chosen, offsets = _index(f, path, storages, persistent_load, size)
    except OSError as e:
        raise FormatError(f"{path}: cannot read it ({e.strerror or e}).") from None

    mapped = MappedFile(path)

    def entry(key: str, ref: tp.TensorRef) -> TensorEntry:
        def load() -> np.ndarray:
            root = storages[ref.storage.key]
            return tp.materialize(ref, mapped.read(offsets[root.key], root.nbytes))

        return TensorEntry(key.replace(".", "/"), ref.shape, ref.dtype.name, key, load)

    entries = [entry(key, t) for key, t in chosen.tensors.items()]
    return Checkpoint(
        entries, format="torch-legacy", path=path, files=[path], notes=chosen.notes, metadata=chosen.metadata
    )


def _index(
    f: BinaryIO, path: Path, storages: dict[str, tp.StorageRef], persistent_load: Any, size: int
) -> tuple[Selection, dict[str, int]]:
    """The five pickles in order, then the storage records; returns the selection and data offsets."""
    if _is_tar(f.read(512)):
        raise UnsupportedError(f"{path}: the tar-based torch.save format of PyTorch <= 0.3 is not read.")
    f.seek(0)
    if tp.unpickle(f, path) != MAGIC_NUMBER:
        raise FormatError(f"{path}: not a legacy torch.save file (bad magic number).")
    version = tp.unpickle(f, path)
    if version != PROTOCOL_VERSION:
        raise UnsupportedError(f"{path}: legacy torch protocol version {version!r:.20} is not supported.")
    tp.unpickle(f, path)  # sys_info: byte order and C type sizes, neither affects the data
    chosen = select(tp.unpickle(f, path, persistent_load), path)
    offsets = _storage_offsets(f, path, tp.unpickle(f, path), storages, size)
    return chosen, offsets


def _storage_offsets(
    f: BinaryIO, path: Path, keys: Any, storages: dict[str, tp.StorageRef], size: int
) -> dict[str, int]:
    """Walk the storage records after the pickles: int64 count, then count * itemsize bytes."""
    if not isinstance(keys, list):
        raise FormatError(f"{path}: the list of storage keys after the pickle is missing.")
    offsets, offset = {}, f.tell()
    for raw_key in keys:
        key = tp.text(raw_key)
        ref = storages.get(key)
        if ref is None:
            raise FormatError(f"{path}: storage '{key}' is listed but no tensor uses it.")
        f.seek(offset)
        count = f.read(8)
        if len(count) < 8:
            raise FormatError(f"{path}: the file ends before storage '{key}'; it is truncated.")
        if int.from_bytes(count, "little", signed=True) != ref.numel:
            raise FormatError(f"{path}: storage '{key}' says it holds {int.from_bytes(count, 'little')} "
                              f"elements, the pickle says {ref.numel}.")  # fmt: skip
        offsets[key] = offset + 8
        offset += 8 + ref.nbytes
        if offset > size:
            raise FormatError(f"{path}: the file ends inside storage '{key}'; it is truncated.")
    missing = set(storages) - set(offsets)
    if missing:
        raise FormatError(f"{path}: storages {', '.join(sorted(missing))} are used but not stored.")
    return offsets
