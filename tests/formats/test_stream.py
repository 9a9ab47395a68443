"""Streaming writers: BlockStream's writing thread never hides an error, never outlives its
writer, and never lets a tensor's bytes disagree with the offsets computed from its shape; every
writer, the HDF5 ones too, takes a mapped target a block at a time, never whole."""

from __future__ import annotations

import errno
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ckptmap
from ckptmap.errors import FormatError, WriteError
from ckptmap.formats import keras2_h5, keras3_writer, safetensors_file, tf_bundle, torch_zip
from ckptmap.formats.stream import BlockStream
from ckptmap.tree import Checkpoint, TensorEntry

BIG = np.arange(6 << 20, dtype=np.float32).reshape(-1, 1024)  # 24 MB: several blocks


def _entry(name: str = "w", pieces=None, array: np.ndarray = BIG) -> TensorEntry:
    return TensorEntry(name, array.shape, "float32", name, lambda: array, pieces=pieces)


# Every writer, with an output name it accepts; tensors are named as a Keras layer's would be.
WRITERS = {
    "safetensors": (safetensors_file, "out"),
    "torch": (torch_zip, "out"),
    "tf": (tf_bundle, "out"),
    "keras2": (keras2_h5, "out.h5"),
    "keras3": (keras3_writer, "out.weights.h5"),
}
A, B = "dense/kernel", "dense_1/kernel"


class _DiskFillsUp(io.RawIOBase):
    def __init__(self, room: int) -> None:
        self.room, self.got = room, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        data = memoryview(data).cast("B")
        if len(self.got) + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.got += data
        return len(data)


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ckptmap-writer"]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_bytes_arrive_in_order_with_their_checksum(monkeypatch, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    f = _DiskFillsUp(1 << 30)
    with BlockStream(f) as out:
        out.write(b"head")
        total = out.tensor(_entry(), lambda crc, data: crc + int(data.size))
        out.write(b"tail")
    assert total == BIG.nbytes
    assert bytes(f.got) == b"head" + BIG.tobytes() + b"tail"
    assert _writer_threads() == []


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_full_disk_on_the_writing_thread_reaches_the_caller(monkeypatch, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    with pytest.raises(OSError, match="No space left"), BlockStream(_DiskFillsUp(5 << 20)) as out:
        out.tensor(_entry())
    assert _writer_threads() == []


class _SourceVanishes(_DiskFillsUp):
    """write(2) of a block whose memory-mapped source was truncated: the kernel says EFAULT."""

    def write(self, data) -> int:  # type: ignore[override]
        if len(self.got) >= (4 << 20):
            raise OSError(errno.EFAULT, "Bad address")
        return super().write(data)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_source_truncated_under_its_map_is_named_not_the_disk(monkeypatch, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    vanished = r"Tensor 'w': its source file changed or was truncated"
    with pytest.raises(FormatError, match=vanished), BlockStream(_SourceVanishes(1 << 30)) as out:
        out.tensor(_entry())
    assert _writer_threads() == []


def test_an_exit_on_ctrl_c_never_waits_on_the_queue(monkeypatch) -> None:
    """CI once hung here: a Ctrl-C between a lock's acquire and its `with` block leaves the queue's
    lock held, and an exit that drained the queue waited on it forever."""
    monkeypatch.setenv("CKPTMAP_THREADS", "2")
    stream = BlockStream(_DiskFillsUp(1 << 30))
    left: list[str] = []

    def interrupted() -> None:
        try:
            with stream as out:
                out.write(b"head")
                stream._queue.mutex.acquire()  # what such a Ctrl-C leaves behind
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            left.append("out")

    caller = threading.Thread(target=interrupted, daemon=True)
    started = time.monotonic()
    caller.start()
    caller.join(30)
    try:
        assert left == ["out"] and time.monotonic() - started < 10
    finally:
        stream._queue.mutex.release()  # the writer, stuck on it, can now see it should stop
    for thread in _writer_threads():
        thread.join(5)
    assert _writer_threads() == []


def _fails_after_one_block(max_bytes: int) -> Iterator[np.ndarray]:
    yield BIG[:1]
    raise FormatError("the source ends early")


def _one_row_short(max_bytes: int) -> Iterator[np.ndarray]:
    yield BIG[:-1]


@pytest.mark.parametrize("kind", WRITERS)
def test_a_source_failing_mid_tensor_leaves_nothing(tmp_path: Path, kind: str) -> None:
    writer, name = WRITERS[kind]
    ckpt = Checkpoint([_entry(A), _entry(B, _fails_after_one_block)], format="test")
    with pytest.raises(FormatError, match="ends early"):
        writer.write(ckpt, tmp_path / name)
    assert list(tmp_path.iterdir()) == [] and _writer_threads() == []


@pytest.mark.parametrize("kind", WRITERS)
def test_blocks_that_disagree_with_the_shape_are_refused(tmp_path: Path, kind: str) -> None:
    writer, name = WRITERS[kind]
    ckpt = Checkpoint([_entry(A, _one_row_short)], format="test")
    with pytest.raises(WriteError, match="its shape needs"):
        writer.write(ckpt, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", WRITERS)
def test_big_endian_arrays_are_stored_little_endian(tmp_path: Path, kind: str) -> None:
    writer, name = WRITERS[kind]
    big = np.arange(12, dtype=">f4").reshape(3, 4)
    ckpt = Checkpoint([TensorEntry(A, (3, 4), "float32", A, lambda: big)], format="test")
    path = writer.write(ckpt, tmp_path / name)[0]
    [back] = ckptmap.load(path if writer is not tf_bundle else tmp_path / name).values()
    np.testing.assert_array_equal(back, big)
    assert back.dtype == np.float32
    if kind.startswith("keras"):  # the readers would swap a big-endian dataset back: look at the file
        import h5py

        with h5py.File(path) as f:
            stored: list[np.dtype] = []
            f.visititems(lambda _, obj: stored.append(obj.dtype) if isinstance(obj, h5py.Dataset) else None)
        assert [d.str for d in stored] == ["<f4"]


def _never_whole() -> np.ndarray:
    raise AssertionError("the writer read the whole tensor")


@pytest.mark.parametrize("kind", WRITERS)
def test_a_mapped_target_is_written_a_block_at_a_time(tmp_path: Path, kind: str) -> None:
    writer, name = WRITERS[kind]
    asked: list[int] = []

    def pieces(max_bytes: int) -> Iterator[np.ndarray]:
        step = max_bytes // BIG[0].nbytes
        for start in range(0, len(BIG), step):
            asked.append(start)
            yield BIG[start : start + step].copy()

    entry = TensorEntry(A, BIG.shape, "float32", A, _never_whole, pieces=pieces)
    path = writer.write(Checkpoint([entry], format="test"), tmp_path / name)[0]
    [back] = ckptmap.load(path if writer is not tf_bundle else tmp_path / name).values()
    np.testing.assert_array_equal(back, BIG)
    assert len(asked) > 1
