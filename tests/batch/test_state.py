"""What decides whether a batch rerun may skip a job, and one run of a manifest at a time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from ckptmap.batch import run_batch, state
from ckptmap.batch.manifest import load as load_manifest
from ckptmap.batch.state import State
from ckptmap.errors import UsageError
from ckptmap.rules import mapping
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"

# A user's mapping whose rule that renames comes from a file it includes.
MINE = "include: [parts/base.yaml]\nrules:\n  - rename: {'^old/': 'new/'}\n"
BASE = "rules:\n  - rename: {'^': '%s'}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES / "tf1_gru", tmp_path / "tf1_gru")
    (tmp_path / "maps" / "parts").mkdir(parents=True)
    (tmp_path / "maps" / "mine.yaml").write_text(MINE)
    (tmp_path / "maps" / "parts" / "base.yaml").write_text(BASE % "base.")
    (tmp_path / "migrate.yaml").write_text(
        "jobs:\n  - {src: tf1_gru, dst: out/gru.safetensors, mapping: maps/mine.yaml}\n"
    )
    return tmp_path


def batch(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, str, dict]:
    code, _, err = run(capsys, "batch", root / "migrate.yaml", "--report", root / "report.json", "--jobs", 1)
    report = root / "report.json"
    return code, err, json.loads(report.read_text()) if report.exists() else {}


def status(report: dict) -> str:
    [job] = report["jobs"]
    return job["status"]


def test_editing_a_file_the_mapping_includes_reruns_the_job(tree, capsys):
    code, err, report = batch(capsys, tree)
    assert code == 0 and status(report) == "done", err
    assert all(k.startswith("base.") for k in load_file(tree / "out" / "gru.safetensors"))
    assert status(batch(capsys, tree)[2]) == "skipped"

    (tree / "maps" / "parts" / "base.yaml").write_text(BASE % "next.")  # same size, new content
    code, err, report = batch(capsys, tree)
    assert code == 0 and status(report) == "done", err
    assert all(k.startswith("next.") for k in load_file(tree / "out" / "gru.safetensors"))


def test_a_second_run_while_one_runs_is_refused_and_writes_nothing(tree, capsys):
    (tree / "migrate.yaml").write_text(
        "jobs:\n  - {src: tf1_gru, dst: out/a.pt, mapping: tf1-to-torch}\n"
        "  - {src: tf1_gru, dst: out/b.pt, mapping: tf1-to-torch}\n"
    )
    refused: list[str] = []

    def second_run(progress) -> None:  # called while the first run is going
        if progress.done == 1 and not refused:
            with pytest.raises(UsageError) as e:
                run_batch(tree / "migrate.yaml", jobs=1, report=tree / "second.json")
            refused.append(str(e.value))

    first = run_batch(tree / "migrate.yaml", jobs=1, progress=second_run)
    assert first.exit_code == 0 and refused == [
        f"{tree / 'migrate.yaml'}: another `ckptmap batch` is running this manifest "
        "(migrate.yaml.lock is locked); let it finish first."
    ]
    assert not (tree / "second.json").exists()
    assert run_batch(tree / "migrate.yaml", jobs=1).exit_code == 0  # released: runs, skips both


def test_a_refused_run_leaves_no_output_and_no_state(tree, capsys):
    import fcntl  # POSIX, as the lock is

    with open(tree / "migrate.yaml.lock", "ab") as held:  # what a running `ckptmap batch` holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err, report = batch(capsys, tree)
    assert code == 2 and report == {} and "another `ckptmap batch` is running" in err
    assert not (tree / "out").exists() and not (tree / "migrate.yaml.state.json").exists()


def test_an_included_built_in_counts_by_name_wherever_ckptmap_is_installed(tree, monkeypatch):
    (tree / "maps" / "parts" / "base.yaml").write_text("include: [tf1-to-torch]\n" + BASE % "base.")
    [job] = load_manifest(tree / "migrate.yaml").jobs
    here = State.load(tree / "migrate.yaml").signature(job)["mapping"]
    assert "@sha256:" in here[0]  # hashed, not given up on
    moved = tree / "elsewhere" / "mappings"
    shutil.copytree(mapping._builtin_dir(), moved)
    monkeypatch.setattr(mapping, "_builtin_dir", lambda: moved)
    assert State.load(tree / "migrate.yaml").signature(job)["mapping"] == here
    built_in = moved / "tf1-to-torch.yaml"
    built_in.write_text(built_in.read_text() + "# another build of the same version\n")
    assert State.load(tree / "migrate.yaml").signature(job)["mapping"] == here


def _entry(i: int) -> dict:
    """A state entry shaped as `State.record` writes one: a TF source of two files, one output."""
    fingerprint = [123_456_789, 1_733_300_000_123_456_789]
    return {
        "signature": {
            "source": f"runs/experiment_{i:06d}/model.ckpt",
            "destination": f"out/experiment_{i:06d}/model.safetensors",
            "mapping": ["maps/mine.yaml@sha256:0123456789abcdef"],
            "params": {"hidden": 512},
            "rename": [],
            "to": None,
            "ckptmap": "1.0.0",
        },
        "sources": {
            f"runs/experiment_{i:06d}/model.ckpt.index": fingerprint,
            f"runs/experiment_{i:06d}/model.ckpt.data-00000-of-00001": fingerprint,
        },
        "outputs": {f"out/experiment_{i:06d}/model.safetensors": fingerprint},
        "verified": False,
    }


def test_the_state_of_a_large_batch_is_kept(tmp_path: Path) -> None:
    # 24,000 jobs make a state file over 16 MiB, which was then read as damaged: every rerun ran
    # every job again, and saved an oversized file again. The bound now grows with the jobs.
    jobs = 24_000
    manifest = tmp_path / "migrate.yaml"
    path = tmp_path / "migrate.yaml.state.json"
    entries = {f"out/experiment_{i:06d}/model.safetensors": _entry(i) for i in range(jobs)}
    State(path, tmp_path, entries, limit=state.size_bound(jobs)).save()
    assert path.stat().st_size > state.MAX_BYTES
    assert State.load(manifest, jobs).entries == entries
    assert State.load(manifest, 1).entries == {}  # a file that large for one job: damaged


def test_a_state_only_its_compact_form_fits_is_saved_compact(tmp_path: Path) -> None:
    # Entries larger than the bound allows a job when indented are written without the indent,
    # so the next run still reads them.
    jobs, entries = 3, {f"d{i}": _entry(i) for i in range(3)}
    limit = len(json.dumps({"version": state.VERSION, "outputs": entries}, separators=(",", ":"))) + 100
    State(tmp_path / "m.yaml.state.json", tmp_path, entries, limit=limit).save()
    text = (tmp_path / "m.yaml.state.json").read_text()
    assert len(text) <= limit and "\n " not in text
    loaded = State.load(tmp_path / "m.yaml", jobs)
    assert loaded.entries == entries
