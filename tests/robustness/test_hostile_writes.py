"""Hostile destinations and sources that change under a conversion (issue 12, part 3).

Each case failed before its fix: a FIFO, a device or a directory in the destination's place was
replaced by a regular file; a commit whose last rename failed left an older checkpoint half
replaced; Ctrl-C in the final fsync left the temporary behind while saying it did not; a source
truncated while it was read killed the command with SIGBUS, silently, leaving its temporary.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptmap
from ckptmap import atomic
from ckptmap.cli.main import INTERRUPTED
from ckptmap.cli.supervise import BUS_ERROR
from ckptmap.errors import WriteError
from ckptmap.tree import Checkpoint, TensorEntry
from ckptmap.verification import run as verification_run
from tests.clirun import run

DESTINATIONS = {"torch": "model.pt", "safetensors": "model.safetensors", "tf": "model.ckpt"}
FILES = {  # what each writes, in the order AtomicFiles renames them
    "torch": ["model.pt"],
    "safetensors": ["model.safetensors"],
    "tf": ["model.ckpt.data-00000-of-00001", "model.ckpt.index", "checkpoint"],
}


def source(path: Path, tensors: int = 2, shape: tuple[int, int] = (4, 3), first: int = 0) -> Path:
    """A safetensors file of distinct tensors, written a tensor at a time (large ones too)."""
    entries = [
        TensorEntry(f"t{i}", shape, "float32", f"t{i}", lambda i=i: np.full(shape, first + i, np.float32))
        for i in range(tensors)
    ]
    ckptmap.save(Checkpoint(entries, format="numpy"), path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def start(*args: object) -> subprocess.Popen[str]:
    """The real `ckptmap` command (supervised) in a process of its own, its address space limited
    to 2 GB so a regression fails the test instead of the machine (callers add the timeout)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.Popen(
        [sys.executable, "-m", "ckptmap", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )


def assert_one_error(code: int, out: str, err: str, names: object) -> str:
    lines = err.splitlines()
    assert code == 2, err
    assert not out and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert str(names) in lines[0], err
    return lines[0]


# ------------------------------------------------------------------- 1. destinations not regular


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _directory(p: Path) -> None:
    p.mkdir()
    (p / "keep").write_bytes(b"mine")


def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))  # the file stays after the socket is closed
    s.close()


def _link_to_dev_null(p: Path) -> None:
    p.symlink_to("/dev/null")


def _link_to_fifo(p: Path) -> None:
    os.mkfifo(p.with_name("fifo"))
    p.symlink_to(p.with_name("fifo"))


SPECIAL = {
    "fifo": _fifo,
    "directory": _directory,
    "socket": _socket,
    "symlink_to_dev_null": _link_to_dev_null,
    "symlink_to_fifo": _link_to_fifo,
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")
@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("to", list(DESTINATIONS))
def test_a_destination_that_is_not_a_regular_file_is_refused(capsys, kind: str, to: str) -> None:
    # A short directory name: a socket's path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="ckw") as d:
        folder = Path(d)
        src = source(folder / "src.safetensors")
        out = folder / "out"
        out.mkdir()
        # For TF, the `checkpoint` state file is the special one: the data and index must not
        # be written either.
        special = out / ("checkpoint" if to == "tf" else DESTINATIONS[to])
        SPECIAL[kind](special)
        before = {p.name: os.lstat(p).st_mode for p in out.iterdir()}
        code, stdout, err = run(capsys, "convert", src, out / DESTINATIONS[to], "--to", to)
        line = assert_one_error(code, stdout, err, special)
        assert "not a regular file" in line
        assert {p.name: os.lstat(p).st_mode for p in out.iterdir()} == before  # nothing written
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlink_to_a_regular_file_is_replaced_and_its_target_kept(tmp_path, capsys) -> None:
    # The documented choice (AtomicFiles): the link is replaced, as os.replace does; what it
    # pointed to is not written through.
    src = source(tmp_path / "src.safetensors")
    target = tmp_path / "elsewhere.pt"
    target.write_bytes(b"not to be touched")
    dst = tmp_path / "model.pt"
    dst.symlink_to(target)
    code, _, err = run(capsys, "convert", src, dst, "--to", "torch", "--overwrite")
    assert code == 0, err
    assert not dst.is_symlink() and ckptmap.load(dst).entries["t1"].read()[0, 0] == 1
    assert target.read_bytes() == b"not to be touched"


# A property: whatever is in the destination's place, a write either succeeds as documented or is
# refused with nothing changed.
PLACES = ["missing", "regular", "dangling_link", "link_to_regular", *SPECIAL]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(place=st.sampled_from(PLACES), to=st.sampled_from(list(DESTINATIONS)), which=st.integers(0, 2))
def test_any_destination_is_written_or_refused_untouched(place: str, to: str, which: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ckw") as d:
        folder = Path(d)
        ckpt = ckptmap.load(source(folder / "src.safetensors"))
        out = folder / "out"
        out.mkdir()
        names = FILES[to]
        victim = out / names[which % len(names)]  # any file of a multi-file checkpoint
        if place == "regular":
            victim.write_bytes(b"old")
        elif place == "dangling_link":
            victim.symlink_to(out / "nowhere")
        elif place == "link_to_regular":
            (folder / "target").write_bytes(b"old")
            victim.symlink_to(folder / "target")
        elif place != "missing":
            SPECIAL[place](victim)
        before = {p.name: os.lstat(p).st_mode for p in out.iterdir()}
        if place in SPECIAL:
            with pytest.raises(WriteError, match="not a regular file"):
                ckptmap.save(ckpt, out / DESTINATIONS[to], format=to)
            assert {p.name: os.lstat(p).st_mode for p in out.iterdir()} == before
        else:
            ckptmap.save(ckpt, out / DESTINATIONS[to], format=to)
            assert ckptmap.load(out / DESTINATIONS[to]).entries["t1"].read()[0, 0] == 1
            assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary, no backup
        if place == "link_to_regular":
            assert (folder / "target").read_bytes() == b"old"


# --------------------------------------------------------------------- 2. an all-or-nothing commit


def _failing_replace(monkeypatch: pytest.MonkeyPatch, fail_on: int, error: BaseException) -> None:
    """os.replace in ckptmap.atomic fails on its `fail_on`-th call, as the OS might."""
    real, calls = os.replace, []

    def replace(a: object, b: object) -> None:
        calls.append(b)
        if len(calls) == fail_on:
            raise error
        real(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.parametrize(
    "error", [OSError(5, "Input/output error"), KeyboardInterrupt()], ids=["eio", "ctrl_c"]
)
def test_a_failed_last_rename_leaves_the_older_checkpoint_as_it_was(
    tmp_path, capsys, monkeypatch, error: BaseException
) -> None:
    out = tmp_path / "out"
    old_src = source(tmp_path / "old.safetensors")
    code, _, err = run(capsys, "convert", old_src, out / "model.ckpt", "--to", "tf")
    assert code == 0, err
    old = snapshot(out)
    assert sorted(old) == ["checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    new = source(tmp_path / "new.safetensors", first=10)
    _failing_replace(monkeypatch, 3, error)  # data, index, then the `checkpoint` state file fails
    code, _, err = run(capsys, "convert", new, out / "model.ckpt", "--to", "tf", "--overwrite")
    if isinstance(error, KeyboardInterrupt):
        assert code == 130 and err == INTERRUPTED + "\n", err
    else:
        line = assert_one_error(code, "", err, out)
        assert "Input/output error" in line and "as it was" in line
    assert snapshot(out) == old  # byte for byte, and no temporary or backup beside it
    assert ckptmap.load(out / "model.ckpt").entries["t1"].read()[0, 0] == 1


def test_a_new_checkpoint_whose_commit_fails_leaves_nothing(tmp_path, monkeypatch) -> None:
    ckpt = ckptmap.load(source(tmp_path / "src.safetensors"))
    _failing_replace(monkeypatch, 2, OSError(28, "No space left on device"))  # the index's rename
    with pytest.raises(WriteError, match="No space left"):
        ckptmap.save(ckpt, tmp_path / "out" / "m.ckpt")
    assert not (tmp_path / "out").exists()  # the data file renamed first is gone with its directory


# ------------------------------------------------------------- 3 and 4. Ctrl-C, and what is said of it


@pytest.mark.parametrize("to", list(DESTINATIONS))
def test_ctrl_c_in_the_final_fsync_leaves_no_temporary_and_the_old_output(
    tmp_path, capsys, monkeypatch, to: str
) -> None:
    out = tmp_path / "out"
    dst = out / DESTINATIONS[to]
    assert run(capsys, "convert", source(tmp_path / "old.safetensors"), dst, "--to", to)[0] == 0
    old = snapshot(out)
    new = source(tmp_path / "new.safetensors", first=10)

    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_fsync", interrupted)
    code, _, err = run(capsys, "convert", new, dst, "--to", to, "--overwrite")
    assert code == 130 and err == INTERRUPTED + "\n", err
    assert snapshot(out) == old


def test_ctrl_c_while_verifying_does_not_claim_that_nothing_was_left(tmp_path, capsys, monkeypatch) -> None:
    # `convert --verify` has written its output before it verifies: an interrupt there keeps it.
    def interrupted(*args: object, **options: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(verification_run, "verify", interrupted)
    dst = tmp_path / "out" / "model.safetensors"
    code, _, err = run(capsys, "convert", source(tmp_path / "src.safetensors"), dst, "--verify")
    assert code == 130, err
    assert INTERRUPTED not in err and str(dst) in err and "already written" in err
    assert ckptmap.load(dst).entries["t1"].read()[0, 0] == 1


# --------------------------------------------------------------- 5. a source truncated while read


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 96 MB in 6 tensors: the command is still reading it well after its output has 8 MB.
    return source(tmp_path_factory.mktemp("big") / "big.safetensors", 6, (2048, 2048))


def _convert_while_truncating(src: Path, dst: Path, to: str) -> subprocess.CompletedProcess[str]:
    """`ckptmap convert SRC DST` that sees SRC cut to 4 KB once 8 MB of its output are written."""
    process = start("convert", src, dst, "--to", to)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        temps = list(dst.parent.glob(".*.tmp")) if dst.parent.exists() else []
        if any(t.exists() and t.stat().st_size > (8 << 20) for t in temps):
            os.truncate(src, 4096)  # what `torch.save` does first when it saves in place again
            break
        time.sleep(0.002)
    try:
        out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the conversion hung after its source was truncated")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor forks on Linux only")
@pytest.mark.parametrize(
    "to, how",
    [
        ("torch", "SIGBUS"),  # the CRC32 of each member reads the map in user space
        ("tf", "SIGBUS"),  # the CRC32C likewise
        ("safetensors", "vanished"),  # passed through: the kernel copies from the map, EFAULT
    ],
)
def test_a_source_truncated_while_it_is_read_is_one_line_and_leaves_nothing(
    tmp_path, big_source: Path, to: str, how: str
) -> None:
    seen = []
    for attempt in range(3):  # the truncation may come too late: then the output must be right
        work = tmp_path / f"src{attempt}.safetensors"
        work.write_bytes(big_source.read_bytes())
        dst = tmp_path / f"out{attempt}" / DESTINATIONS[to]
        done = _convert_while_truncating(work, dst, to)
        if done.returncode == 0:
            assert ckptmap.load(dst).entries["t5"].read()[-1, -1] == 5
            seen.append("finished first")
            continue
        line = assert_one_error(done.returncode, done.stdout, done.stderr, "truncated")
        assert not dst.parent.exists() or not list(dst.parent.iterdir()), list(dst.parent.iterdir())
        seen.append("SIGBUS" if line == f"Error: {BUS_ERROR}" else "vanished" if "vanished" in line else line)
        if seen[-1] == how:
            return
    pytest.fail(f"never saw {how}: {seen}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor forks on Linux only")
def test_sigterm_mid_write_removes_the_temporary_and_still_ends_the_command(tmp_path, big_source) -> None:
    # The parent passes SIGTERM on; the child dies of it without cleaning up, the parent cleans
    # up for it, then dies of SIGTERM too, as an unsupervised command would.
    dst = tmp_path / "out" / "model.pt"
    process = start("convert", big_source, dst, "--to", "torch")
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        temps = list(dst.parent.glob(".*.tmp")) if dst.parent.exists() else []
        if any(t.exists() and t.stat().st_size > (1 << 20) for t in temps):
            break
        time.sleep(0.002)
    assert process.poll() is None, "the conversion finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, err
    assert not dst.parent.exists(), list(dst.parent.iterdir())


def test_in_process_calls_are_never_forked(tmp_path, capsys) -> None:
    # ckptmap.cli.main(argv) runs in the caller's process: its pid writes the output.
    src = source(tmp_path / "s.safetensors")
    pids = []
    real = atomic.AtomicFiles.__enter__

    def enter(self: atomic.AtomicFiles) -> atomic.AtomicFiles:
        pids.append(os.getpid())
        return real(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(atomic.AtomicFiles, "__enter__", enter)
        assert run(capsys, "convert", src, tmp_path / "o.pt")[0] == 0
    assert pids == [os.getpid()]
