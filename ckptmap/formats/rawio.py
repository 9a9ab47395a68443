"""Raw file access shared by the formats that store tensors as plain bytes (torch, safetensors).

`MappedFile` maps a file once and hands out zero-copy slices; `file_size` turns the ways a file can
be unusable into one-line errors; `little_endian_bytes` is what every byte-level writer stores.
"""

from __future__ import annotations

import mmap
import stat
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import FormatError, SourceNotFoundError
from ..tree import TensorEntry


def file_size(path: Path) -> int:
    """The size of a checkpoint file; missing, unreadable, non-regular and empty files raise here."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SourceNotFoundError(f"{path}: no such file.") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read it ({e.strerror or e}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{path}: not a regular file.")
    if info.st_size == 0:
        raise FormatError(f"{path}: the file is empty.")
    return info.st_size


class MappedFile:
    """A read-only mmap of one file, opened on first read and shared by all its entries.

    Slices are zero-copy; the arrays handed out are copies, so the map can live as long as the
    entries do and closes with them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None

    def read(self, offset: int, nbytes: int) -> memoryview:
        if nbytes == 0:
            return memoryview(b"")
        if self._map is None:
            file_size(self.path)
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if offset < 0 or offset + nbytes > len(self._map):
            raise FormatError(
                f"{self.path}: the file ends at byte {len(self._map)}, but data runs to {offset + nbytes}; "
                "it is truncated."
            )
        return memoryview(self._map)[offset : offset + nbytes]


def little_endian_bytes(entry: TensorEntry) -> memoryview:
    """The entry's data, row-major little-endian, checked against the dtype its index promised."""
    array = entry.read()
    if dtypes.from_numpy(array.dtype).name != entry.dtype:
        raise FormatError(f"Tensor '{entry.name}': data is {array.dtype}, the index says {entry.dtype}.")
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    return memoryview(array.reshape(-1).view(np.uint8))
