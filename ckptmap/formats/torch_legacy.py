"""Format "torch-legacy": `torch.save` files of PyTorch < 1.6, or `_use_new_zipfile_serialization=False`.

Layout (torch/serialization.py `_legacy_save` / `_legacy_load`), everything back to back:
pickle(MAGIC_NUMBER), pickle(PROTOCOL_VERSION), pickle(sys_info), the object pickle, pickle(sorted
storage keys), then for each key an int64 element count and the storage's raw bytes. Storage
persistent ids are `("storage", <StorageClass>, root_key, location, numel, view_metadata)`; a
pickled module adds `("module", cls, source_file, source)` for its class. Counts and data are
little-endian whatever the machine (torch/csrc/serialization.cpp `THPStorage_writeFileRaw`).

Reading parses the pickles from the mapped file (each scanned first, see `pickle_scan`) and then
only the 8-byte counts, to learn where each storage starts; data is copied when a tensor is read.
Detection compares the first bytes with the pickled magic number; it never unpickles anything.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from . import torch_pickle as tp
from .rawio import MappedFile, file_size
from .torch_select import Selection, select

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py
PROTOCOL_VERSION = 1001
# The tar layout of PyTorch <= 0.3 (torch/serialization.py `legacy_load`): members of these names.
_TAR_MEMBERS = (b"sys_info", b"pickle", b"storages", b"tensors")
# MAGIC_NUMBER as every pickle protocol writes it (0 and 1 as text, 4 and 5 inside a FRAME), and
# as a bare LONG1 without PROTO.
_MAGIC_PICKLES = tuple(
    {pickle.dumps(MAGIC_NUMBER, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    | {pickle.dumps(MAGIC_NUMBER, protocol=2)[2:]}
)


def sniff(path: Path) -> bool:
    """The file starts with a pickled MAGIC_NUMBER (or is a PyTorch <= 0.3 tar).

    A byte comparison: unpickling even these few bytes would let any file starting with 0x80
    choose what the unpickler allocates.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return _is_tar(head) or head.startswith(_MAGIC_PICKLES)


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar" and head[:100].rstrip(b"\0") in _TAR_MEMBERS


def read(path: Path) -> Checkpoint:
    """Index a legacy torch file: parse its pickles, then locate each storage by its 8-byte count."""
    path = Path(path)
    size = file_size(path)
    storages: dict[str, tp.StorageRef] = {}

    def persistent_load(pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise FormatError(f"unexpected persistent id ({tp.describe(pid)}).")
        kind = tp.text(pid[0])
        if kind == "module" and len(pid) == 4:
            return pid[1]  # the module's class, already an inert stand-in
        if kind != "storage" or len(pid) != 6:
            raise FormatError(f"unexpected persistent id ({tp.describe(pid)}, first '{kind:.40}').")
        stype, key, location, numel, view = tp.storage_type(pid[1]), *map(tp.text, pid[2:4]), *pid[4:]
        if type(numel) is not int or numel < 0:
            raise FormatError(f"storage '{key}' has a bad size ({tp.describe(numel)}).")
        root = storages.setdefault(key, tp.StorageRef(key, stype.dtype, numel, location))
        if (root.dtype, root.numel) != (stype.dtype, numel):  # one key, two sizes: which is right?
            raise FormatError(f"storage '{key}' is declared twice, with different types or sizes.")
        if view is None:
            return root
        # Storage views (torch < 1.0): (view_key, offset, size) in elements of the root storage.
        _, offset, count = view if isinstance(view, tuple) and len(view) == 3 else (None, -1, -1)
        if type(offset) is not int or type(count) is not int or min(offset, count) < 0:
            raise FormatError(f"storage '{key}' has bad view metadata ({tp.describe(view)}).")
        if offset + count > root.numel:
            raise FormatError(f"a view of storage '{key}' reaches past its end.")
        return tp.StorageRef(key, root.dtype, count, location, view_offset=offset)

    mapped = MappedFile(path)
    chosen, offsets = _index(mapped.read(0, size), path, storages, persistent_load)

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
    data: memoryview, path: Path, storages: dict[str, tp.StorageRef], persistent_load: Any
) -> tuple[Selection, dict[str, int]]:
    """The five pickles in order, then the storage records; returns the selection and data offsets."""
    if _is_tar(bytes(data[:512])):
        raise UnsupportedError(f"{path}: the tar-based torch.save format of PyTorch <= 0.3 is not read.")
    magic, at = tp.unpickle_at(data, 0, path)
    if type(magic) is not int or magic != MAGIC_NUMBER:
        raise FormatError(f"{path}: not a legacy torch.save file (bad magic number).")
    version, at = tp.unpickle_at(data, at, path)
    if type(version) is not int or version != PROTOCOL_VERSION:
        shown = version if type(version) is int and abs(version) < 1 << 32 else tp.describe(version)
        raise UnsupportedError(f"{path}: legacy torch protocol version {shown} is not supported.")
    at = tp.unpickle_at(data, at, path)[1]  # sys_info: byte order and C type sizes, neither matters
    root, at = tp.unpickle_at(data, at, path, persistent_load)
    chosen = select(root, path)
    keys, at = tp.unpickle_at(data, at, path)
    return chosen, _storage_offsets(data, at, path, keys, storages)


def _storage_offsets(
    data: memoryview, offset: int, path: Path, keys: Any, storages: dict[str, tp.StorageRef]
) -> dict[str, int]:
    """Walk the storage records after the pickles: int64 count, then count * itemsize bytes."""
    if not isinstance(keys, list):
        raise FormatError(f"{path}: the list of storage keys after the pickle is missing.")
    offsets: dict[str, int] = {}
    size = len(data)
    for raw_key in keys:
        key = tp.text(raw_key)
        ref = storages.get(key)
        if ref is None:
            raise FormatError(f"{path}: storage '{key}' is listed but no tensor uses it.")
        if key in offsets:  # two records for one storage: which bytes the tensors get is unclear
            raise FormatError(f"{path}: storage '{key}' is listed twice.")
        count = bytes(data[offset : offset + 8])
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
