"""Checks that keep damaged or hostile HDF5 files (Keras .h5, .weights.h5, .keras) from hanging
the HDF5 library, reading other files, or allocating what the file does not hold.

h5py hands every read to the HDF5 C library, which trusts the file in places:

- Global heap collections (where variable-length data lives, such as the `name` attributes Keras
  3 writes) are parsed by H5HG__cache_heap_deserialize (src/H5HGcache.c, HDF5 1.14.6 as bundled
  with h5py 3.14). It walks the objects of a collection by their declared sizes without checking
  that each step moves forward, so an object size of 0 or 2^64-1 makes it spin forever, in C,
  where neither Ctrl-C nor a Python timeout reaches. `check_global_heaps` walks every collection
  the way HDF5 will, before h5py opens the file.
- External links and external raw storage make HDF5 open other files (a FIFO blocks forever,
  and any readable file can come back as "weights"). `hard_get` follows hard links only.
- A dataset may declare a shape its storage does not back (unallocated data reads as zeros, a
  compressed chunk can inflate a thousandfold). `check_dataset` refuses those before reading.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError

SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the superblock signature (HDF5 file format spec, section II.A)
_COLLECTION = b"GCOL\x01"  # H5HG_MAGIC + H5HG_VERSION
_ALIGN = 8  # H5HG_ALIGNMENT
# A declared size above this that exceeds its storage this many times over is refused: no Keras
# file stores weights that way, and reading it would allocate what the file does not hold.
BOMB_FLOOR, BOMB_RATIO = 1 << 26, 1000


def check_global_heaps(
    buf: bytes | mmap.mmap, label: str | Path, start: int = 0, end: int | None = None
) -> None:
    """Raise `FormatError` if a global heap collection in the HDF5 file `buf[start:end]` would
    make HDF5 loop or read past the collection.

    Collections are found by their signature, so this reads the file once, at memory speed.
    Every collection of a valid file walks to exactly its end, object by object, with one free
    block last (HDF5 compacts freed objects). The signature could also occur by chance inside
    dataset bytes; such a false collection is walked too, and may be refused (not seen so far).
    """
    end = len(buf) if end is None else end
    width = _length_width(buf, start, end)
    header = object_header = 8 + width  # H5HG_SIZEOF_HDR, H5HG_SIZEOF_OBJHDR
    budget = (end - start) // 8 + 1024  # valid collections do not overlap: a step per 8 bytes at most
    pos = buf.find(_COLLECTION, start, end)
    while pos != -1:
        size = int.from_bytes(buf[pos + 8 : pos + 8 + width], "little")
        p = header
        while pos + size <= end and p < size:  # past the end of the file HDF5 refuses to read it
            if p + object_header > size:
                break  # a tail too small for an object header: free space
            budget -= 1
            index = int.from_bytes(buf[pos + p : pos + p + 2], "little")
            declared = int.from_bytes(buf[pos + p + 8 : pos + p + 8 + width], "little")
            step = object_header + -(-declared // _ALIGN) * _ALIGN if index else declared
            # The free block (index 0) is stored with its size and is always the last object.
            if step <= 0 or p + step > size or (index == 0 and p + step != size) or budget < 0:
                raise FormatError(
                    f"{label}: the HDF5 global heap at byte {pos - start} is damaged (an object at "
                    f"byte {pos - start + p} declares {declared} bytes); the file is corrupt."
                )
            p += step
        pos = buf.find(_COLLECTION, pos + 1, end)


def check_global_heaps_in_file(path: Path, label: str | Path | None = None, start: int = 0,
                               end: int | None = None) -> None:  # fmt: skip
    """`check_global_heaps` on (bytes [start, end) of) a file on disk, mapped, not read into memory."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            check_global_heaps(mapped, label or path, start, end)


def _length_width(buf: bytes | mmap.mmap, start: int, end: int) -> int:
    """'Size of Lengths' from the superblock (at 0, 512, 1024, ... after a user block); HDF5's
    default, 8, when there is none to read (h5py then refuses the file anyway)."""
    base = 0
    while start + base + 16 <= end:
        at = start + base
        if buf[at : at + 8] == SIGNATURE:
            width = buf[at + 14] if buf[at + 8] < 2 else buf[at + 10]
            return width if width in (2, 4, 8) else 8
        base = 512 if base == 0 else base * 2
    return 8


def hard_get(group: Any, path: str, label: str | Path) -> Any:
    """`group[path]` following hard links only (None if a component is missing): soft links can
    point anywhere, external links open other files, and a FIFO would block forever."""
    import h5py

    node = group
    for part in (p for p in path.split("/") if p):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            where = f"{node.name.rstrip('/')}/{part}"
            raise FormatError(
                f"{label}: '{where}' is a {type(link).__name__}; ckptmap follows no links in Keras files."
            )
        node = node[part]
    return node


def check_dataset(dataset: Any, label: str | Path) -> None:
    """Refuse a dataset whose data lives in other files, or whose declared size its storage does
    not back (a decompression bomb, or unallocated data that would read as zeros)."""
    if dataset.external or dataset.is_virtual:
        raise FormatError(f"{label}: dataset '{dataset.name}' keeps its data outside the file.")
    declared = int(np.prod(dataset.shape, dtype=object)) * dataset.dtype.itemsize
    if declared > BOMB_FLOOR and declared > BOMB_RATIO * dataset.id.get_storage_size():
        raise FormatError(
            f"{label}: dataset '{dataset.name}' declares {declared} bytes but stores "
            f"{dataset.id.get_storage_size()}; refusing to inflate it."
        )
