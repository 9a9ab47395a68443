"""Writing tensors as a stream of blocks, copied to the file on a thread of its own.

A byte-level writer (TF bundle, PyTorch zip, safetensors) hands its output to a `BlockStream`:
each tensor arrives as blocks of a few MiB (`TensorEntry.blocks`: a mapped target is computed a
block at a time, a source is sliced from its memory map) and is checksummed while the block is
still in cache; a second thread copies one block into the file while this one computes the next.
At most `_DEPTH` blocks wait, so memory stays a few blocks whatever the checkpoint's size. The
HDF5 writers (Keras) hand h5py the same blocks through `write_dataset`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import dtypes, lazy, parallel
from ..errors import FormatError, WriteError
from ..tree import TensorEntry

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

# How often an idle writer looks whether it should stop, and how long an exit on an exception
# waits for it: a block in flight is written in well under a second; a writer still busy after
# this is stuck on the queue's lock (see BlockStream), and Ctrl-C must not hang on it.
_POLL, _STOP_WAIT = 0.1, 5.0
_DEPTH = 3  # blocks that may wait for the writer

BLOCK_BYTES = 4 << 20  # measured: transposing blocks of 1 MiB runs at half the speed of 4 MiB ones

Checksum = Callable[[int, "np.ndarray"], int]  # (running value, next bytes) -> new value


def checked_blocks(entry: TensorEntry) -> Iterator[np.ndarray]:
    """The entry's data as little-endian blocks of whole rows (`TensorEntry.blocks`), checked
    against the dtype its index promised."""
    expected = dtypes.by_name(entry.dtype)
    for block in entry.blocks(BLOCK_BYTES):
        if block.dtype.byteorder == ">":  # a big-endian array handed in through the API
            block = block.astype(block.dtype.newbyteorder("<"))
        if dtypes.from_numpy(block.dtype).name != expected.name:
            raise FormatError(f"Tensor '{entry.name}': data is {block.dtype}, the index says {entry.dtype}.")
        yield block


_WRITEBACK_EVERY = 32 << 20  # as rawio's byte-level writers


def write_dataset(group: Any, name: str, entry: TensorEntry, stored: str | None = None) -> Any:
    """A new h5py dataset `name` in `group` holding the entry, written a block of rows at a time,
    so a mapped target never exists whole in memory. `stored`: the file's dtype when it differs
    (Keras 3 keeps bfloat16 as 2-byte opaque "V2")."""
    dtype = np.dtype(stored) if stored else dtypes.by_name(entry.dtype).numpy
    dataset = group.create_dataset(name, entry.shape, dtype)
    rows, needed = 0, entry.shape[0] if entry.shape else 1
    handed = 0  # rows already handed to the disk
    for block in checked_blocks(entry):
        if not entry.shape:
            dataset[()] = block.view(dtype)
            return dataset
        dataset[rows : rows + len(block)] = block.view(dtype)
        rows += len(block)
        if (rows - handed) * dataset.nbytes // max(needed, 1) >= _WRITEBACK_EVERY:
            _start_writeback(dataset, handed, rows)
            handed = rows
    if rows != needed:  # what was not written would read back as zeros
        raise WriteError(f"Tensor '{entry.name}': its data came to {rows} rows, its shape needs {needed}.")
    return dataset


def _start_writeback(dataset: Any, first: int, stop: int) -> None:
    """Hand rows [first, stop) of a contiguous dataset to the disk now, as `rawio.open_output`
    does for the byte-level writers: the commit's fsync then has little left to wait for (a
    716 MB Keras file: 0.84 s of final fsync before this)."""
    with contextlib.suppress(Exception):  # a driver without an fd, a chunked dataset: skip it
        offset, row = dataset.id.get_offset(), dataset.nbytes // dataset.shape[0]
        fd = dataset.file.id.get_vfd_handle()
        if offset is not None and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, offset + first * row, (stop - first) * row, os.POSIX_FADV_DONTNEED)


def _vanished(name: str, error: OSError) -> BaseException:
    """EFAULT from write(2) means the kernel could not read the block it was given: a source's
    memory map lost its pages because the file was truncated (in user space the same read is a
    SIGBUS, see `cli.supervise`). Anything else is the output's trouble, as it was."""
    if error.errno != errno.EFAULT:
        return error
    return FormatError(
        f"Tensor '{name}': its source file changed or was truncated while it was being read "
        "(the data to copy vanished); no output was written."
    )


class BlockStream:
    """`with BlockStream(f) as out: out.write(header); crc = out.tensor(entry, checksum)`.

    Leaving the block waits for every write; an error on the writing thread (a full disk) comes
    out of the next `write`/`tensor` call or the exit. `f` is the stream's alone until then.
    Without a second core (`CKPTMAP_THREADS=1`) it writes inline.

    Leaving on an exception (Ctrl-C) drops what is queued and touches the queue no more: a
    KeyboardInterrupt that lands between a lock's acquire and the `with` block around it leaves
    the lock held (CPython bpo-29988); waiting on the queue then hung forever, as seen in CI.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._queue: queue.Queue[tuple[str, np.ndarray | bytes] | None] = queue.Queue(_DEPTH)
        self._error: BaseException | None = None
        self._stopping = False  # set by an exit on an exception; the writer quits without None
        self._thread: threading.Thread | None = None
        if parallel.workers() > 1:
            self._thread = threading.Thread(target=self._drain, name="ckptmap-writer", daemon=True)

    def __enter__(self) -> BlockStream:
        if self._thread is not None:
            self._thread.start()
        return self

    def write(self, data: np.ndarray | bytes, name: str = "") -> None:
        """Queue bytes (of tensor `name`, for errors) to be written after everything queued before."""
        if self._thread is None:
            try:
                self.f.write(data)
            except OSError as e:
                error = _vanished(name, e)
                if error is e:
                    raise
                raise error from e
            return
        self._raise_if_failed()
        self._queue.put((name, data))  # cannot hang: the writing thread takes items even after an error

    def tensor(self, entry: TensorEntry, checksum: Checksum | None = None) -> int:
        """Queue the entry's data; returns its checksum (0 without one)."""
        value = size = 0
        for block in checked_blocks(entry):
            block = block.reshape(-1).view(np.uint8)
            if checksum is not None:
                value = checksum(value, block)
            size += block.size
            self.write(block, entry.name)
        if size != entry.nbytes:  # the offsets of what follows were computed from the shape
            raise WriteError(
                f"Tensor '{entry.name}': its data came to {size} bytes, its shape needs {entry.nbytes}."
            )
        return value

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        if exc_type is not None:  # stop at once: what is still queued is not wanted
            self._stopping = True
            self._thread.join(_STOP_WAIT)  # a lock's acquire with a timeout, outside any `with`
            return
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while not self._stopping:
            try:
                data = self._queue.get(timeout=_POLL)  # a timeout, to see `_stopping` when idle
            except queue.Empty:
                continue
            if data is None:
                return
            if self._error is not None or self._stopping:
                continue  # keep taking items so the producer is never stuck on a full queue
            name, block = data
            try:
                self.f.write(block)
            except OSError as e:  # handed to the producing thread
                self._error = _vanished(name, e)
                if self._error is not e:
                    self._error.__cause__ = e
            except BaseException as e:
                self._error = e
