"""Raw file access shared by the formats that store tensors as plain bytes (torch, safetensors).

`MappedFile` maps a file once and hands out zero-copy slices that give their memory back when freed;
`regular_file` and `file_size` turn the ways a file can be unusable (missing, a FIFO or a device
that would block or never end, a link loop, empty) into one-line errors, and `read_small` reads a
small text file (a mapping, a manifest) that way with a bound on its size; `refuse_zip_bomb` guards
the zip-based formats (torch, .keras); `open_output` is where a byte-level writer's data goes
(through `stream.BlockStream`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import stat
import weakref
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .. import lazy
from ..errors import CkptmapError, FormatError, SourceNotFoundError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")


def regular_file(path: Path, error: type[CkptmapError] = FormatError) -> os.stat_result:
    """`path`'s stat (symlinks followed) if it is a regular file; else one line saying what it is.

    Checked before any open: opening a FIFO blocks until a writer comes, reading /dev/zero never
    ends, a socket or a directory has no bytes to give. `error` is the class a caller's users know
    (a mapping file's problems are RuleErrors); a missing file is always SourceNotFoundError.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        try:
            target = os.readlink(path)
        except OSError:  # not a link (or no longer one): plainly missing
            raise SourceNotFoundError(f"{path}: no such file.") from None
        raise error(f"{path}: a broken symbolic link (to {target}).") from None
    except OSError as e:  # ELOOP (a link loop), EACCES, ENAMETOOLONG
        raise error(f"{path}: cannot read it ({e.strerror or e}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file ({kind(info.st_mode)}).")
    return info


def kind(mode: int) -> str:
    """What a non-regular file is, as an error message says it."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "of an unknown kind"


def open_regular(path: Path, error: type[CkptmapError] = FormatError) -> BinaryIO:
    """`path` opened for reading, refused (one line) unless it is a regular file.

    Checked before the open (devices are never opened: opening one can have effects) and again on
    the open file, which is opened without blocking: a file swapped for a FIFO in between fails
    the second check instead of hanging the open.
    """
    regular_file(path, error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror or e}).") from None
    f = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        f.close()
        raise error(f"{path}: not a regular file ({kind(info.st_mode)}).")
    return f  # O_NONBLOCK does not change how a regular file reads


def read_small(path: Path, limit: int, what: str, error: type[CkptmapError] = FormatError) -> bytes:
    """The bytes of a small file (a mapping, a manifest, a state file) of at most `limit` bytes.

    Reads at most `limit` + 1 bytes whatever the file claims or grows to, so /proc files and files
    appended to while read are bounded too. `what` names the file in messages ("mapping file").
    """
    try:
        with open_regular(path, error) as f:
            data = f.read(limit + 1)
    except SourceNotFoundError:
        raise error(f"{path}: cannot read the {what} ({os.strerror(errno.ENOENT)}).") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e}).") from None
    if len(data) > limit:
        raise error(f"{path}: more than {limit >> 20} MiB, too large for a {what}; is it the right file?")
    return data


def file_size(path: Path) -> int:
    """The size of a checkpoint file; missing, unreadable, non-regular and empty files raise here."""
    size = regular_file(path).st_size
    if size == 0:
        raise FormatError(f"{path}: the file is empty.")
    return size


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
            with open_regular(self.path) as f:
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
