"""The byte-heavy steps of a conversion, spread over the machine's cores.

numpy's copies and the CRC32 (zlib's, or ISA-L's from the `fast` extra) release the GIL, so
threads run them side by side: a transpose split by rows, a CRC32 split into pieces and combined,
a source's checksum verified while its bytes are being written. Memory is not multiplied:
threads work on the one tensor in flight. `CKPTMAP_THREADS=1` turns it off (batch workers set it
when their processes already fill the cores).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import itertools
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_MIN_PART = 8 << 20  # bytes; below this, handing work to a thread costs more than it saves
_pool: ThreadPoolExecutor | None = None
_PREFIX = "ckptmap-worker"
_pool_lock = threading.Lock()


def workers() -> int:
    """Threads to use: `CKPTMAP_THREADS`, else the CPUs this process may run on."""
    configured = os.environ.get("CKPTMAP_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, workers() - 1), thread_name_prefix=_PREFIX)
        return _pool


def ranges(total: int, nbytes: int) -> list[tuple[int, int]]:
    """[start, stop) parts of range(total), one per worker, or one part when `nbytes` is small."""
    parts = min(workers(), max(1, nbytes // _MIN_PART), total) if total else 1
    bounds = [total * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def each(parts: Sequence[tuple[int, int]], work: Callable[[int, int], None]) -> None:
    """Run `work(start, stop)` for every part: the first in this thread, the others in the pool."""
    if len(parts) == 1 or _on_pool_thread():
        for part in parts:  # one part, or already on a pool thread, which must not wait on the pool
            work(*part)
        return
    futures = [_executor().submit(work, *part) for part in parts[1:]]
    try:
        work(*parts[0])
    finally:
        for future in futures:
            future.result()  # re-raises a worker's exception here


def map_ahead(work: Callable[[T], R], items: Iterator[T]) -> Iterator[R]:
    """`work(item)` for each item, in order, up to one per worker running at once: items (blocks
    of a tensor) are taken from the iterator only as results are handed back, so at most that
    many are held."""
    if workers() == 1 or _on_pool_thread():
        yield from map(work, items)
        return
    pending: collections.deque[Future[R]] = collections.deque()
    try:
        for item in items:
            pending.append(_executor().submit(work, item))
            if len(pending) >= workers():
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def _fastest_crc32() -> Callable[..., int]:
    try:  # the `fast` extra
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:
        return zlib.crc32
    return isal_crc32


_crc32 = _fastest_crc32()


def _on_pool_thread() -> bool:
    return threading.current_thread().name.startswith(_PREFIX)


def crc32(data: memoryview | bytes, value: int = 0) -> int:
    """`zlib.crc32(data, value)` (ISA-L's where installed), in pieces on several threads, combined."""
    view = memoryview(data).cast("B")
    parts = ranges(len(view), len(view))
    if len(parts) == 1 or _on_pool_thread():  # a pool thread runs parts in turn: combining is waste
        return _crc32(view, value)
    crcs: dict[int, int] = {}

    def piece(start: int, stop: int) -> None:
        crcs[start] = _crc32(view[start:stop])

    each(parts, piece)
    for start, stop in parts:
        value = crc32_combine(value, crcs[start], stop - start)
    return value


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32 of A + B from crc1 = CRC32(A), crc2 = CRC32(B) and len(B), as zlib's
    crc32_combine (zlib/crc32.c, the GF(2) matrix version), which Python's zlib does not export:
    crc1 is advanced over len2 zero bytes, one operator per set bit of len2."""
    bit = 0
    while len2 > 0:
        if len2 & 1:
            crc1 = _times(_zero_bytes_operator(bit), crc1)
        len2 >>= 1
        bit += 1
    return crc1 ^ crc2


@functools.cache
def _zero_bytes_operator(k: int) -> tuple[int, ...]:
    """The 32x32 GF(2) matrix (one int per column) that advances a CRC32 over 2**k zero bytes."""
    if k == 0:
        one_bit = [0xEDB88320] + [1 << n for n in range(31)]  # the reflected polynomial, shifted
        return _square(_square(_square(one_bit)))  # 2, 4, then 8 zero bits
    return _square(_zero_bytes_operator(k - 1))


def _times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: Sequence[int]) -> tuple[int, ...]:
    return tuple(_times(matrix, matrix[n]) for n in range(32))


# --- checks that finish while the output is written ------------------------------------------

_deferred: contextvars.ContextVar[list[Future[None]] | None] = contextvars.ContextVar(
    "ckptmap_deferred_checks", default=None
)


@contextlib.contextmanager
def checks_deferred() -> Iterator[None]:
    """Inside, `check` may run a source's integrity check beside the writing of its data (the
    output is not final until `settle_checks`, which AtomicFiles calls before moving it into place).
    Outside, checks run at once, so nothing unchecked is ever handed to a caller that keeps it."""
    token = _deferred.set([])
    try:
        yield
    finally:
        pending = _deferred.get() or []
        _deferred.reset(token)
        for future in pending:  # an error already on its way out wins; these only read
            future.exception()


def check(run: Callable[[], None]) -> None:
    """`run()` now, or, inside `checks_deferred`, on another thread while this one goes on. One
    check at a time: the one before is finished first, so no more than one tensor's source is
    held for it."""
    pending = _deferred.get()
    if pending is None or workers() < 2:
        run()
        return
    settle_checks()
    pending.append(_executor().submit(run))


def settle_checks() -> None:
    """Wait for the deferred checks; the first that failed raises its error here."""
    pending = _deferred.get() or []
    while pending:
        pending.pop(0).result()
