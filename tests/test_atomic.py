"""AtomicFiles at its edges: a destination directory made at the same moment by another writer
(batch workers), and a start that fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptmap import parallel
from ckptmap.atomic import AtomicFiles
from ckptmap.errors import FormatError, WriteError


def test_a_directory_another_writer_makes_meanwhile_is_used_and_left_alone(tmp_path, monkeypatch) -> None:
    shared = tmp_path / "out"
    real_mkdir = Path.mkdir

    def beaten_to_it(self: Path, *args, **kwargs) -> None:
        if self == shared:
            os.mkdir(shared)  # the other worker wins the race between our exists() and mkdir()
            raise FileExistsError(17, "File exists", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", beaten_to_it)
    with pytest.raises(RuntimeError), AtomicFiles([shared / "a.pt"]) as out:
        out.temp(shared / "a.pt").write_bytes(b"partial")
        raise RuntimeError("the job failed")
    assert shared.is_dir() and list(shared.iterdir()) == []  # not ours to remove; nothing left in it
    with AtomicFiles([shared / "b.pt"]) as out:
        out.temp(shared / "b.pt").write_bytes(b"done")
    assert (shared / "b.pt").read_bytes() == b"done"


def test_a_failed_start_leaves_no_check_deferred(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CKPTMAP_THREADS", "2")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(WriteError) as failed:  # kept alive to the end, as a caller's `except ... as e`
        AtomicFiles([tmp_path / "file" / "x.pt"]).__enter__()  # its parent is a file

    def bad() -> None:
        raise FormatError("checksum mismatch")

    with pytest.raises(FormatError, match="checksum mismatch"):
        parallel.check(bad)  # at once, not queued for a commit that will never come
    del failed
