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
  compressed chunk can inflate a thousandfold, a chunk can be far larger than its dataset).
  `check_dataset` refuses those before reading.
- Hard links can make the groups a graph (a walk repeats shared groups exponentially, or forever in
  a cycle), and variable-length strings can all point at one large heap object (a 1 MB file reads
  as gigabytes). `Guard` walks a file once: each object at most once, attributes and data within
  budgets set by the file's size.
"""

from __future__ import annotations

import contextlib
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
# What reading one attribute may allocate; Keras' are names (tf-keras splits lists into 64 KiB
# pieces) and, in a full-model file, one JSON config. All of a file's attributes together get this
# plus twice the file's size.
ATTR_LIMIT = 64 << 20


def check_global_heaps(
    buf: bytes | mmap.mmap, label: str | Path, start: int = 0, end: int | None = None
) -> int:
    """Raise `FormatError` if a global heap collection in the HDF5 file `buf[start:end]` would
    make HDF5 loop or read past the collection; else return the size of its largest object (what
    one variable-length value can cost to read, see `Guard`).

    Collections are found by their signature, so this reads the file once, at memory speed.
    Every collection of a valid file walks to exactly its end, object by object, with one free
    block last (HDF5 compacts freed objects). The signature could also occur by chance inside
    dataset bytes; such a false collection is walked too, and may be refused (not seen so far).
    """
    end = len(buf) if end is None else end
    width = _length_width(buf, start, end)
    header = object_header = 8 + width  # H5HG_SIZEOF_HDR, H5HG_SIZEOF_OBJHDR
    budget = (end - start) // 8 + 1024  # valid collections do not overlap: a step per 8 bytes at most
    largest = 0
    pos = _find(buf, start, end)
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
            if index:
                largest = max(largest, declared)
            p += step
        pos = _find(buf, pos + 1, end)
    return largest


_WINDOW = 64 << 20  # bytes of a mapped file searched before their pages are given back


def _find(buf: bytes | mmap.mmap, start: int, end: int) -> int:
    """The next collection signature in buf[start:end]. A map is searched a window at a time and
    each window's pages are dropped from the process after it (they stay in the page cache), so
    scanning a 2 GB file does not make it 2 GB resident (madvise DONTNEED, as rawio.view_of)."""
    if not isinstance(buf, mmap.mmap):
        return buf.find(_COLLECTION, start, end)
    lo = start
    while lo < end:
        hi = min(end, lo + _WINDOW)
        pos = buf.find(_COLLECTION, lo, min(end, hi + len(_COLLECTION) - 1))
        first, last = lo // mmap.PAGESIZE * mmap.PAGESIZE, hi // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            with contextlib.suppress(ValueError, OSError):
                buf.madvise(mmap.MADV_DONTNEED, first, last - first)
        if pos != -1:
            return pos
        lo = hi
    return -1


def check_global_heaps_in_file(path: Path, label: str | Path | None = None, start: int = 0,
                               end: int | None = None) -> int:  # fmt: skip
    """`check_global_heaps` on (bytes [start, end) of) a file on disk, mapped, not read into memory."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return check_global_heaps(mapped, label or path, start, end)


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


def check_dataset(dataset: Any, label: str | Path, heap_object: int = 0) -> int:
    """Refuse a dataset whose data lives in other files, whose declared size its storage does
    not back (a decompression bomb, or unallocated data that would read as zeros), or whose type
    reading cannot bound; else return the bytes reading it may take. `heap_object`: the file's
    largest global heap object, which every variable-length string may point at."""
    import h5py

    name = dataset.name
    if dataset.external or dataset.is_virtual:
        raise FormatError(f"{label}: dataset '{name}' keeps its data outside the file.")
    dt, shape = dataset.dtype, dataset.shape
    if shape is None:  # a null dataspace: h5py reads it as h5py.Empty, not an array
        raise FormatError(f"{label}: dataset '{name}' has no shape (an empty dataspace).")
    each = dt.itemsize
    if dt.hasobject:  # a pointer per element into the global heap, which reading follows
        string = h5py.check_string_dtype(dt)
        if string is None or string.length is not None:
            raise FormatError(f"{label}: dataset '{name}' holds variable-length values that are not strings.")
        each += heap_object
    declared = int(np.prod(shape, dtype=object)) * each
    stored = dataset.id.get_storage_size()
    if declared > BOMB_FLOOR and declared > BOMB_RATIO * stored:
        raise FormatError(
            f"{label}: dataset '{name}' declares {declared} bytes but stores {stored}; "
            "refusing to inflate it."
        )
    # HDF5 inflates a whole chunk to read any part of it, whatever the dataset's own size.
    chunk = int(np.prod(dataset.chunks, dtype=object)) * dt.itemsize if dataset.chunks else 0
    if chunk > max(declared, BOMB_FLOOR):
        raise FormatError(
            f"{label}: dataset '{name}' of {declared} bytes is stored in chunks of {chunk} bytes; "
            "refusing to inflate them."
        )
    return declared


class Guard:
    """One HDF5 file read within bounds: hard links only, each object at most once (Keras files
    are trees), and attributes and data no larger than the file's size can honestly back.

    >>> guard = Guard("m.h5", file_bytes=1 << 20, heap_object=64)   # doctest: +SKIP
    >>> guard.attr(f, "layer_names")                                # doctest: +SKIP
    """

    def __init__(self, label: str | Path, *, file_bytes: int, heap_object: int) -> None:
        self.label = label
        self.heap_object = heap_object
        self._attr_budget = ATTR_LIMIT + 2 * file_bytes
        self._data_budget = max(BOMB_FLOOR, BOMB_RATIO * file_bytes)
        self._seen: set[int] = set()

    def get(self, group: Any, path: str) -> Any:
        """`group[path]` through hard links only; None if a component is missing."""
        return hard_get(group, path, self.label)

    def visit(self, obj: Any) -> None:
        """Note a group or dataset the walk enters; refuse it the second time: hard links that
        reach one object twice would repeat the work under it (exponentially in a DAG)."""
        import h5py

        addr = h5py.h5o.get_info(obj.id).addr
        if addr in self._seen:
            raise FormatError(
                f"{self.label}: '{obj.name}' is reached twice through hard links; "
                "a Keras file stores each object once."
            )
        self._seen.add(addr)

    def dataset(self, dataset: Any) -> None:
        """`check_dataset`, once per dataset, with the declared bytes of all of them bounded too."""
        self.visit(dataset)
        self._data_budget -= check_dataset(dataset, self.label, self.heap_object)
        if self._data_budget < 0:
            raise FormatError(
                f"{self.label}: its datasets declare over {BOMB_RATIO} times the bytes the file "
                f"holds (at '{dataset.name}'); refusing to inflate them."
            )

    def attr(self, obj: Any, name: str) -> Any:
        """`obj.attrs[name]` (None when absent), read only once its size is known to be small.

        HDF5 allocates a variable-length string's bytes when it reads it, and every element of a
        string array may point at the same (largest) heap object; so an element counts as that."""
        import h5py

        attrs = obj.attrs
        if name not in attrs:
            return None
        attribute = attrs.get_id(name)  # opened, not read
        count = attribute.get_space().get_simple_extent_npoints()
        dt = attribute.dtype
        each = dt.itemsize
        if dt.hasobject:
            string = h5py.check_string_dtype(dt)
            if string is None or string.length is not None:  # vlen sequences, references
                raise FormatError(f"{self.label}: attribute '{name}' of '{obj.name}' is not text or numbers.")
            each = self.heap_object
        need = count * each
        if need > min(ATTR_LIMIT, self._attr_budget):
            raise FormatError(
                f"{self.label}: attribute '{name}' of '{obj.name}' ({count} values) could take "
                f"{need} bytes to read; Keras attributes are small, so the file is damaged or hostile."
            )
        self._attr_budget -= need
        return attrs[name]
