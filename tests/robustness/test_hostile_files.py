"""Special files (FIFOs, devices, sockets, broken links, link loops) where ckptmap expects a
checkpoint, a mapping file, a manifest or batch's own files, and mapping files too large to be one.

Each once hung (a FIFO blocks the open until a writer comes), read without end (/dev/zero), or
ended as an "Internal error". Every one must now be one `Error:` line naming the file, exit 2,
with nothing written, before any job of a batch runs. Inputs that could hang run the CLI in its
own process under a timeout and an address-space limit, so a regression fails the test instead
of the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clirun import run
from tests.robustness.test_bad_input import assert_refused, run_cli

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
TORCH = SAMPLES / "torch_lstm.pt"
MEMORY = 1 << 30  # the CLI converts a small file in far less; reading /dev/zero whole does not
TIMEOUT = 30  # seconds; each refusal takes one start of the CLI (about a second)

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")


def cli(*args: object) -> tuple[int, str, str]:
    done = run_cli(*args, timeout=TIMEOUT, memory=MEMORY)
    return done.returncode, done.stdout, done.stderr


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def unix_socket(path: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # the name stays after the socket is closed
    s.close()
    return path


def link(path: Path, target: str | Path) -> Path:
    os.symlink(target, path)
    return path


# --------------------------------------------------------------------------------- sources

# Each makes a source in a folder and returns (path to pass, path the error names, what it says).
SOURCES: dict[str, Callable[[Path], tuple[Path, Path, str]]] = {
    # Sniffing opened it to read magic bytes: the open blocked until a writer came.
    "fifo": lambda d: (f := fifo(d / "model.pt"), f, "not a regular file (a FIFO)"),
    "link to a fifo": lambda d: (
        link(d / "model.pt", fifo(d / "pipe")),
        d / "model.pt",
        "not a regular file (a FIFO)",
    ),
    # Was "not a checkpoint ckptmap can read (tried: ...nine formats)": it is not a file at all.
    "device": lambda d: (Path(os.devnull), Path(os.devnull), "not a regular file (a character device)"),
    "socket": lambda d: (s := unix_socket(d / "model.pt"), s, "not a regular file (a socket)"),
    # A TF prefix whose .index is a FIFO; was "not a checkpoint ckptmap can read".
    "fifo index": lambda d: (
        d / "model.ckpt",
        fifo(d / "model.ckpt.index"),
        "not a regular file (a FIFO)",
    ),
    # A data shard named by the user; was "its data shard ... is missing", which it is not.
    "fifo data shard": lambda d: (
        f := fifo(d / "model.ckpt.data-00000-of-00001"),
        f,
        "not a regular file (a FIFO)",
    ),
    # Both were "no such file, directory or checkpoint prefix", which hides what to fix.
    "broken link": lambda d: (
        b := link(d / "model.pt", d / "gone.pt"),
        b,
        f"a broken symbolic link (to {d / 'gone.pt'})",
    ),
    "link loop": lambda d: (
        link(d / "model.pt", d / "model.pt"),
        d / "model.pt",
        "Too many levels of symbolic links",
    ),
}


@pytest.mark.parametrize("make", SOURCES.values(), ids=SOURCES.keys())
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_a_source_that_is_not_a_regular_file_is_refused_and_never_opened(tmp_path, make, command):
    (tmp_path / "in").mkdir()
    src, named, problem = make(tmp_path / "in")
    out = tmp_path / "out"
    extra = [out / "x.safetensors"] if command == "convert" else []
    code, stdout, err = cli(command, src, *extra)
    line = assert_refused(code, stdout, err, named, nothing_in=out)
    assert problem in line


def test_a_directory_holding_a_fifo_beside_its_checkpoint_reads_the_checkpoint(tmp_path):
    # The FIFO is not a candidate (it is not a file), so the one checkpoint is found without
    # blocking on the FIFO; this was so before and must stay so.
    shutil.copy(TORCH, tmp_path / "lstm.pt")
    fifo(tmp_path / "other.pt")
    done = run_cli("inspect", tmp_path, timeout=TIMEOUT, memory=MEMORY)
    assert done.returncode == 0, done.stderr
    assert "PyTorch file, 8 tensors" in done.stdout


# ----------------------------------------------------------------------------------- mappings


def test_a_mapping_file_that_is_a_fifo_device_or_link_to_one_is_refused(tmp_path):
    # -m /dev/zero read until memory ran out; -m with a FIFO blocked forever.
    pipe = fifo(tmp_path / "map.yaml")
    for mapping, named, kind in [
        (Path("/dev/zero"), "/dev/zero", "a character device"),
        (pipe, pipe, "a FIFO"),
        (link(tmp_path / "via.yaml", pipe), tmp_path / "via.yaml", "a FIFO"),
    ]:
        out = tmp_path / "out"
        code, stdout, err = cli("convert", TORCH, out / "x.safetensors", "-m", mapping)
        line = assert_refused(code, stdout, err, named, nothing_in=out)
        assert f"not a regular file ({kind})" in line


def test_an_include_naming_a_fifo_is_refused_naming_it(tmp_path):
    fifo(tmp_path / "base.yaml")
    (tmp_path / "mine.yaml").write_text("include: [base.yaml]\nrules: []\n")
    code, stdout, err = cli(
        "convert", TORCH, tmp_path / "out" / "x.safetensors", "-m", tmp_path / "mine.yaml"
    )
    line = assert_refused(code, stdout, err, tmp_path / "base.yaml", nothing_in=tmp_path / "out")
    assert "not a regular file (a FIFO)" in line


def test_a_mapping_file_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path, capsys):
    # Valid YAML: it used to be parsed (at ~200 KB/s) and applied. Real mappings are a few KB.
    big = tmp_path / "big.yaml"
    big.write_text("rules: []\n" + "# padding\n" * 220_000)
    started = time.perf_counter()
    code, out, err = run(capsys, "convert", TORCH, tmp_path / "out" / "x.safetensors", "-m", big)
    line = assert_refused(code, out, err, big, nothing_in=tmp_path / "out")
    assert "more than 1 MiB, too large for a mapping file" in line
    assert time.perf_counter() - started < 5


# -------------------------------------------------------------------------------------- batch


def manifest(root: Path, src: str, dst: str = "out/{stem}.safetensors") -> Path:
    path = root / "m.yaml"
    path.write_text(f"defaults:\n  mapping: []\njobs:\n  - {{src: '{src}', dst: '{dst}'}}\n")
    return path


def assert_no_job_ran(root: Path) -> None:
    assert not (root / "out").exists()
    assert not (root / "m.yaml.state.json").exists()


def test_a_manifest_that_is_a_fifo_is_refused(tmp_path):
    path = fifo(tmp_path / "m.yaml")
    code, out, err = cli("batch", path)
    assert "not a regular file (a FIFO)" in assert_refused(code, out, err, path)


@pytest.mark.parametrize("src", ["runs/*.pt", "runs/b.pt"], ids=["glob", "plain path"])
def test_a_manifest_source_that_is_a_fifo_is_refused_before_any_job(tmp_path, src):
    # The job's worker blocked in the sniffer's open(): the batch never ended.
    (tmp_path / "runs").mkdir()
    shutil.copy(TORCH, tmp_path / "runs" / "a.pt")
    fifo(tmp_path / "runs" / "b.pt")
    code, out, err = cli("batch", manifest(tmp_path, src), "--jobs", 1)
    line = assert_refused(code, out, err, tmp_path / "runs" / "b.pt")
    assert "m.yaml:4" in line and "is a FIFO, not a checkpoint" in line
    assert_no_job_ran(tmp_path)


def test_a_glob_matching_a_link_loop_is_refused_naming_it(tmp_path):
    # Path.resolve raised RuntimeError("Symlink loop") while checking overlaps: "Internal error".
    (tmp_path / "runs").mkdir()
    shutil.copy(TORCH, tmp_path / "runs" / "a.pt")
    link(tmp_path / "runs" / "loop.pt", "loop.pt")
    code, out, err = cli("batch", manifest(tmp_path, "runs/*.pt"), "--jobs", 1)
    line = assert_refused(code, out, err, tmp_path / "runs" / "loop.pt")
    assert "Too many levels of symbolic links" in line
    assert_no_job_ran(tmp_path)


def test_a_link_loop_under_a_double_star_glob_is_walked_once(tmp_path, capsys):
    # runs/a/up -> .. made glob list runs/a/x.pt, runs/a/up/a/x.pt, ... 40 levels deep: 41 jobs
    # converting one file. Each directory is now entered once.
    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(TORCH, tmp_path / "runs" / "a" / "x.pt")
    link(tmp_path / "runs" / "a" / "up", "..")
    path = manifest(tmp_path, "runs/**/*.pt", "out/{dir}/{stem}.safetensors")
    code, _, err = run(capsys, "batch", path, "--jobs", 1, "--report", tmp_path / "r.json")
    assert code == 0, err
    jobs = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert [(j["source"], j["status"]) for j in jobs] == [("runs/a/x.pt", "done")]


DESTINATIONS: dict[str, Callable[[Path], object]] = {
    # Path.resolve raised RuntimeError("Symlink loop") while checking overlaps: "Internal error".
    "link loop": lambda p: link(p, p.name),
    # The job ran and failed at its rename; now the manifest is refused before any job.
    "directory": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("make", DESTINATIONS.values(), ids=DESTINATIONS.keys())
def test_a_destination_that_is_not_a_regular_file_is_refused_before_any_job(tmp_path, capsys, make):
    shutil.copy(TORCH, tmp_path / "a.pt")
    path = manifest(tmp_path, "a.pt", "out/a.safetensors")
    (tmp_path / "out").mkdir()
    make(tmp_path / "out" / "a.safetensors")
    code, out, err = run(capsys, "batch", path, "--jobs", 1)
    line = assert_refused(code, out, err, "m.yaml:4: dst out/a.safetensors")
    assert "remove it or choose another" in line
    assert not (tmp_path / "m.yaml.state.json").exists()


def test_a_lock_file_that_is_a_fifo_is_refused(tmp_path):
    # Opening it to write blocked until a reader came.
    shutil.copy(TORCH, tmp_path / "a.pt")
    path = manifest(tmp_path, "a.pt")
    lock = fifo(tmp_path / "m.yaml.lock")
    code, out, err = cli("batch", path, "--jobs", 1)
    assert "not a regular file (a FIFO)" in assert_refused(code, out, err, lock)
    assert_no_job_ran(tmp_path)


def test_a_state_file_that_is_a_fifo_is_refused_with_how_to_fix(tmp_path):
    shutil.copy(TORCH, tmp_path / "a.pt")
    path = manifest(tmp_path, "a.pt")
    state = fifo(tmp_path / "m.yaml.state.json")
    code, out, err = cli("batch", path, "--jobs", 1)
    line = assert_refused(code, out, err, state)
    assert "not a regular file (a FIFO)" in line and "delete it" in line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A batch of one job that ran, with its state file."""
    root = tmp_path_factory.mktemp("finished")
    shutil.copy(TORCH, root / "a.pt")
    manifest(root, "a.pt")
    code, err = _batch(root)
    assert code == 0, err
    return root


def _batch(root: Path) -> tuple[int, str]:
    done = run_cli("batch", root / "m.yaml", "--jobs", 1, "--report", root / "r.json", timeout=TIMEOUT)
    return done.returncode, done.stderr


def _damage_types(doc: dict) -> str:
    # Sound JSON, right signature, wrong types: iterating `outputs` raised TypeError.
    [entry] = doc["outputs"].values()
    entry["outputs"] = 5
    return json.dumps(doc)


DAMAGE: dict[str, Callable[[str], str]] = {
    "wrong types": lambda text: _damage_types(json.loads(text)),
    # Nested past the parser's recursion limit: RecursionError, an "Internal error".
    "json bomb": lambda text: "[" * 200_000 + "]" * 200_000,
    # Counted as no state before too (pinned: the established behaviour).
    "truncated": lambda text: text[: len(text) // 2],
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_state_file_counts_as_none_and_the_job_runs_again(finished, tmp_path, damage):
    # A rerun is always safe: damage costs the time of the jobs, never a batch that cannot start.
    root = tmp_path / "root"
    shutil.copytree(finished, root, symlinks=True)
    state = root / "m.yaml.state.json"
    state.write_text(damage(state.read_text()))
    code, err = _batch(root)
    assert code == 0, err
    [job] = json.loads((root / "r.json").read_text())["jobs"]
    assert job["status"] == "done"
    assert json.loads(state.read_text())["outputs"]["out/a.safetensors"]["verified"] is False  # sound again


def test_every_refusal_words_a_file_kind_alike(tmp_path):
    # The writer said "a named pipe (FIFO)" where every reader says "a FIFO": one wording
    # (rawio.kind) for every message about a file that is not regular.
    from ckptmap.atomic import AtomicFiles
    from ckptmap.errors import WriteError

    pipe = fifo(tmp_path / "x.safetensors")
    with pytest.raises(WriteError, match=r"exists and is a FIFO, not a regular file"), AtomicFiles([pipe]):
        pass
