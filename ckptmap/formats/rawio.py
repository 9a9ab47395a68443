"""Raw file access shared by the formats that store tensors as plain bytes (torch, safetensors).

`MappedFile` maps a file once and hands out zero-copy slices that give their memory back when freed;
`file_size` turns the ways a file can be unusable into one-line errors; `refuse_zip_bomb` guards the
zip-based formats (torch, .keras); `open_output` is where a byte-level writer's data goes (through
`stream.BlockStream`).
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import stat
import weakref
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import FormatError, SourceNotFoundError


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

    Reads are zero-copy views (see `view_of`): their pages leave the process's RSS when the
    last array over them is freed, so reading a file tensor by tensor costs only the tensors
    still held, not every page read so far.
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
        return memoryview(view_of(self._map, offset, nbytes))


def view_of(mapped: mmap.mmap, offset: int, nbytes: int) -> np.ndarray:
    """Bytes [offset, offset + nbytes) of a read-only map as a uint8 array that gives its pages
    back when it is freed.

    Pages of a file mapping that were touched count in RSS until they are unmapped, and one map
    serves a whole checkpoint. So once this array, and every view of it, is gone, its whole
    pages are dropped from the map (madvise DONTNEED). They stay in the page cache, and since
    the map is shared and file-backed, a later access maps them again with the same bytes.
    """
    # A memoryview as the base makes this array the owner its views keep alive.
    array = np.frombuffer(memoryview(mapped)[offset : offset + nbytes], dtype=np.uint8)
    first = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first and hasattr(mapped, "madvise"):
        weakref.finalize(array, _drop_pages, mapped, first, last - first).atexit = False
    return array


def _drop_pages(mapped: mmap.mmap, start: int, length: int) -> None:
    with contextlib.suppress(ValueError, OSError):  # the map is closed: only memory was at stake
        mapped.madvise(mmap.MADV_DONTNEED, start, length)


# A zip member declaring more than this, at more than this ratio to its compressed size, is
# refused before it is inflated (the limits of Keras' saving_lib._reject_zip_extract_bomb).
_BOMB_FLOOR, _BOMB_RATIO = 1 << 28, 100


def refuse_zip_bomb(info: zipfile.ZipInfo, label: object) -> None:
    """Raise FormatError if the compressed member `info` would inflate like a decompression bomb."""
    if info.file_size > _BOMB_FLOOR and info.file_size > _BOMB_RATIO * info.compress_size:
        raise FormatError(
            f"{label}: {info.filename} declares {info.file_size} bytes from {info.compress_size}; "
            "refusing a decompression bomb."
        )


def open_output(path: Path) -> BinaryIO:
    """A new file for a writer's data, handed to the disk as it is written (every 32 MiB).

    The atomic commit fsyncs every output; started early, the disk writes overlap the reading and
    computing of the next tensors instead of all waiting for that fsync, and a multi-GB output
    does not pile up as dirty pages.
    """
    return io.BufferedWriter(_WritebackFile(path, "wb"))


_WRITEBACK_EVERY = 32 << 20
# Bytes handed to one write(2). A large write from a memory map runs 4-8x slower on these machines
# than the same bytes in 1 MiB writes (measured: 2 GB from a mapped file, 64 MiB writes 0.5 GB/s,
# 1 MiB writes 4 GB/s), as the kernel copies each write while faulting in its source pages.
_WRITE_AT_MOST = 1 << 20


class _WritebackFile(io.FileIO):
    _started = 0  # bytes before this offset are on their way to the disk

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        # At most one piece per call; BufferedWriter calls again with the rest.
        written = super().write(memoryview(data).cast("B")[:_WRITE_AT_MOST])
        end = self.tell()
        if end - self._started >= _WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            # DONTNEED starts writeback of the dirty range without waiting for it (pages already
            # clean may leave the cache: the writer never reads its output back).
            os.posix_fadvise(self.fileno(), self._started, end - self._started, os.POSIX_FADV_DONTNEED)
            self._started = end
        return written
