"""What decides whether a batch rerun may skip a job, and one run of a manifest at a time."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file

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


def test_a_second_run_of_the_same_manifest_is_refused_and_writes_nothing(tree, capsys):
    with open(tree / "migrate.yaml", "rb") as held:  # what a running `ckptmap batch` holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err, report = batch(capsys, tree)
    assert code == 2 and report == {}
    assert err.strip() == (
        f"Error: {tree / 'migrate.yaml'}: another `ckptmap batch` is running this manifest; "
        "let it finish first."
    )
    assert not (tree / "out").exists() and not (tree / "migrate.yaml.state.json").exists()

    code, err, report = batch(capsys, tree)  # released: it runs
    assert code == 0 and status(report) == "done", err
