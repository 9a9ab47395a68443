"""AtomicFiles at its edges: a destination directory made at the same moment by another writer
(batch workers), a start that fails, and a commit cut short, in-process or by the process's death."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from ckptmap import atomic, parallel
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


def _old_checkpoint(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    for name in ("m.data", "m.index"):
        (folder / name).write_bytes(b"old " + name.encode())
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_commit_cut_short_puts_every_replaced_file_back(tmp_path, monkeypatch) -> None:
    old = _old_checkpoint(tmp_path / "out")
    finals = [tmp_path / "out" / n for n in ("m.data", "m.new", "m.index")]
    real, calls = os.replace, []

    def replace(a: object, b: object) -> None:
        calls.append(b)
        if len(calls) == 3:  # data and the new file are in place, then the index fails
            raise OSError(5, "Input/output error")
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match="Input/output error"), AtomicFiles(finals) as out:
        for final in finals:
            out.temp(final).write_bytes(b"new")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == old


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a process that dies in its commit")
def test_recover_undoes_the_commit_of_a_process_that_died_in_it(tmp_path) -> None:
    # What the CLI's supervisor does when its child is killed (SIGKILL, SIGBUS) mid-commit: the
    # child's journal tells it which files to put back and which to remove.
    old = _old_checkpoint(tmp_path / "out")
    finals = [tmp_path / "out" / n for n in ("m.data", "m.new", "m.index")]
    with tempfile.TemporaryFile() as journal:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                atomic.journal_to(journal.fileno())
                real, calls = os.replace, []

                def replace(a: object, b: object) -> None:
                    calls.append(b)
                    if len(calls) == 3:
                        os._exit(9)  # dies between two renames, as a killed process would
                    real(a, b)

                os.replace = replace  # type: ignore[assignment]
                with AtomicFiles(finals) as out:
                    for final in finals:
                        out.temp(final).write_bytes(b"new")
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 9
        assert (tmp_path / "out" / "m.data").read_bytes() == b"new"  # half replaced: what we undo
        journal.seek(0)
        assert atomic.recover(journal.read()) == []
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == old


def test_recover_leaves_a_finished_commit_alone(tmp_path) -> None:
    old = _old_checkpoint(tmp_path / "out")
    with tempfile.TemporaryFile() as journal:
        atomic.journal_to(journal.fileno())
        try:
            with AtomicFiles([tmp_path / "out" / "m.data"]) as out:
                out.temp(tmp_path / "out" / "m.data").write_bytes(b"new")
        finally:
            atomic.journal_to(None)
        journal.seek(0)
        assert atomic.recover(journal.read()) == [tmp_path / "out" / "m.data"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {**old, "m.data": b"new"}
