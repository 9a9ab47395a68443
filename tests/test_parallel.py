"""ckptmap.parallel: work split over threads gives the bytes a single thread would."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ckptmap import parallel
from ckptmap.cells.layouts import layout
from ckptmap.rules import ops


def test_the_fast_extra_gives_isal_crc32() -> None:
    pytest.importorskip("isal", reason="the `fast` extra is not installed")  # CI installs [all]
    assert parallel._crc32 is not zlib.crc32


@pytest.mark.parametrize("threads", ["1", "2"])  # one piece, or pieces combined
@pytest.mark.parametrize("implementation", ["fastest", "zlib"])
@pytest.mark.parametrize("size", [0, 1, 7, 8 << 20, (16 << 20) + 3, 40 << 20])
def test_crc32_in_pieces_is_zlibs(monkeypatch, size: int, implementation: str, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    if implementation == "zlib":  # what runs without the `fast` extra
        monkeypatch.setattr(parallel, "_crc32", zlib.crc32)
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert parallel.crc32(data) == zlib.crc32(data)
    assert parallel.crc32(data, 0xDEADBEEF) == zlib.crc32(data, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("a", "b"), [(b"", b""), (b"", b"x"), (b"x", b""), (b"hello ", b"world"), (b"ab" * 999, b"z" * 4097)]
)
def test_crc32_combine(a: bytes, b: bytes) -> None:
    assert parallel.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_ranges_cover_every_row_once(monkeypatch, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    for total in (0, 1, 2, 5, 1000):
        parts = parallel.ranges(total, 1 << 30)
        assert [i for start, stop in parts for i in range(start, stop)] == list(range(total))
        assert len(parts) == max(1, min(int(threads), total))


def test_a_worker_exception_reaches_the_caller() -> None:
    def work(start: int, stop: int) -> None:
        if start:
            raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        parallel.each([(0, 1), (1, 2)], work)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_big_transposes_reorders_and_concatenations_match_numpy(monkeypatch, threads: str) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    x = np.random.default_rng(0).standard_normal((1024, 4096)).astype(np.float32)  # 16 MB: 2 parts
    transposed = ops.c_order(ops.Transpose().apply([x]))
    assert transposed.flags.c_contiguous and np.array_equal(transposed, x.T)
    tf_kernel = ops.Gates(layout("torch.lstm"), layout("tf1.lstm")).apply(
        [ops.Transpose().apply([x.T.copy()])]
    )
    i, f, g, o = np.split(x, 4, axis=1)  # x.T.copy() transposed back is x; torch i f g o -> TF i g f o
    assert tf_kernel.flags.c_contiguous and np.array_equal(tf_kernel, np.concatenate([i, g, f, o], axis=1))
    i, j, f, o = np.split(x, 4, axis=1)
    reordered = ops.Gates(layout("tf1.lstm"), layout("torch.lstm")).apply([x])
    assert np.array_equal(reordered, np.concatenate([i, f, j, o], axis=1))
    assert np.array_equal(ops.Concat(1).apply([x[:, :1000], x[:, 1000:]]), x)
    assert np.array_equal(ops.Concat(-1).apply([x[:, :5], x[:, 5:]]), x)
