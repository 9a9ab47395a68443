"""`ckptmap batch` end to end: a dozen real checkpoints of mixed kinds (TF1 Saver, torch.save, Keras 3
and tf-keras save_weights, the bundled samples), one of them damaged, run in worker processes.

The first migration runs once per module (`migrated`); tests that rerun it work on a copy made
with timestamps kept, as `cp -a` would, so each starts from the same finished state.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ckptmap.cli import main
from ckptmap.cli.main import INTERRUPTED
from tests.e2e.test_samples_and_real import samples_module
from tests.frameworks import inputs, run_tf1_restored, run_torch, save_tf1_rnn, tf1, torch_rnn
from tests.verification.conftest import keras_model

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
INPUT, UNITS = 3, 5

MANIFEST = """\
defaults:
  mapping: tf1-to-torch
jobs:
  - src: samples/tf1_lstm2
    dst: out/torch/lstm2.pt
    verify: true
  - src: samples/tf1_gru
    dst: out/st/tf1_gru.safetensors
  - src: samples/tf10_oldnames
    dst: out/tf/oldnames/model.ckpt
    mapping: tf1-legacy-names
  - src: samples/torch_lstm.pt
    dst: out/tf/torch_lstm/model.ckpt
    mapping: torch-to-tf1
    verify: true
  - src: torch/*.pt
    dst: out/st/{stem}.safetensors
    mapping: []
  - src: tf1/*/model.ckpt.index
    dst: out/torch/{parent}.pt
    set: {forget_bias: 1.0}
  - src: keras3/*.weights.h5
    dst: out/torch/keras3_{stem}.pt
    mapping: keras-to-torch
  - src: keras2/*.h5
    dst: out/torch/keras2_{stem}.pt
    mapping: keras-to-torch
"""
CORRUPT = "tf1/cut/model.ckpt.index"  # a TF1 GRU whose data shard lost its second half


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: dict

    def job(self, source: str) -> dict:
        return next(j for j in self.report["jobs"] if j["source"] == source)

    def statuses(self) -> dict[str, str]:
        return {j["source"]: j["status"] for j in self.report["jobs"]}


def batch(root: Path, *args: str) -> Run:
    """`ckptmap batch` in this process (its workers are real processes); the report comes back too."""
    report = root / "report.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        pytest.raises(SystemExit) as done,
    ):
        main(["batch", str(root / "migrate.yaml"), "--report", str(report), *args])
    return Run(done.value.code or 0, stdout.getvalue(), stderr.getvalue(), json.loads(report.read_text()))


def save_torch(path: Path, kind: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    module = torch_rnn(kind, INPUT, UNITS)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, p.shape).astype(np.float32)))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return {k: v.numpy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Twelve checkpoints written by the frameworks themselves, and the manifest that migrates them."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("sources")
    for name in ("tf1_lstm2", "tf1_gru", "tf10_oldnames"):
        shutil.copytree(SAMPLES / name, root / "samples" / name)
    shutil.copy(SAMPLES / "torch_lstm.pt", root / "samples")
    for seed, kind in enumerate(("lstm", "gru", "rnn")):
        save_torch(root / "torch" / f"{kind}.pt", kind, seed)
    for seed, (name, kind) in enumerate((("lstm", "lstm"), ("rnn", "rnn"), ("cut", "gru"))):
        (root / "tf1" / name).mkdir(parents=True)
        _, y = save_tf1_rnn(root / "tf1" / name / "model.ckpt", kind, INPUT, UNITS, seed=seed, xs=inputs())
        np.save(root / "tf1" / name / "y.npy", y)
    shard = root / "tf1" / "cut" / "model.ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    # Layer names count per session ("gru_10" after other tests): cleared, the layers are gru, lstm.
    for framework, kind, name in ((keras, "gru", "gru.weights.h5"), (tf_keras, "lstm", "lstm.h5")):
        framework.backend.clear_session()
        model = keras_model(framework, kind)
        folder = root / ("keras3" if framework is keras else "keras2")
        folder.mkdir()
        model.save_weights(str(folder / name))
        np.save(folder / "y.npy", np.asarray(model(inputs())))
    (root / "migrate.yaml").write_text(MANIFEST)
    return root


@pytest.fixture(scope="module")
def migrated(sources, tmp_path_factory) -> tuple[Path, Run]:
    root = tmp_path_factory.mktemp("migrated") / "m"
    shutil.copytree(sources, root)
    return root, batch(root)


@pytest.fixture
def rerun_tree(migrated, tmp_path) -> Path:
    """A copy of the finished migration, timestamps kept."""
    root = tmp_path / "m"
    shutil.copytree(migrated[0], root)
    return root


def output_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in (root / "out").rglob("*") if p.is_file()}


def test_a_dozen_checkpoints_migrate_and_the_corrupt_one_fails_alone(migrated):
    root, run = migrated
    assert run.code == 1 and len(run.report["jobs"]) == 12
    assert run.report["counts"] == {"done": 11, "skipped": 0, "failed": 1, "interrupted": 0, "cancelled": 0}
    cut = run.job(CORRUPT)
    assert cut["status"] == "failed" and cut["line"] == 19 and cut["job"] == "6.1"
    assert "model.ckpt.data-00000-of-00001 is truncated" in cut["error"]
    # On stdout: the table and the failure's one-line message; on stderr: the count.
    assert f"job 6.1 ({CORRUPT}, line 19): Tensor " in run.out and "12 jobs: " in run.out
    assert run.err == "Error: 1 of 12 jobs failed; a rerun retries them and skips the finished ones.\n"
    # Nothing of the failed job is left behind, not even a hidden temporary.
    assert not (root / "out" / "torch" / "cut.pt").exists()
    assert not [p for p in (root / "out").rglob(".*")]


def test_outputs_restore_in_their_frameworks(migrated):
    import torch
    from safetensors.numpy import load_file

    root, _ = migrated
    xs = inputs()
    lstm = torch_rnn("lstm", INPUT, UNITS)  # TF1 LSTMCell -> nn.LSTM: same outputs as TF computed
    lstm.load_state_dict(torch.load(root / "out" / "torch" / "lstm.pt", weights_only=True), strict=True)
    np.testing.assert_allclose(run_torch(lstm, xs), np.load(root / "tf1" / "lstm" / "y.npy"), atol=1e-5)
    rnn = torch_rnn("rnn", INPUT, UNITS)
    rnn.load_state_dict(torch.load(root / "out" / "torch" / "rnn.pt", weights_only=True), strict=True)
    np.testing.assert_allclose(run_torch(rnn, xs), np.load(root / "tf1" / "rnn" / "y.npy"), atol=1e-5)
    for keras_dir, kind in (("keras3", "gru"), ("keras2", "lstm")):  # layer "gru" -> an nn.GRU "gru"
        model = torch.nn.Module()
        setattr(model, kind, torch_rnn(kind, INPUT, UNITS))
        state = torch.load(root / "out" / "torch" / f"{keras_dir}_{kind}.pt", weights_only=True)
        model.load_state_dict(state, strict=True)
        y = run_torch(getattr(model, kind), xs)
        np.testing.assert_allclose(y, np.load(root / keras_dir / "y.npy"), atol=1e-5)
    # nn.LSTM state dict -> TF1 variables, restored by tf's own Saver (the sample's README example).
    sample = np.load(SAMPLES / "torch_lstm.io.npz")
    prefix = root / "out" / "tf" / "torch_lstm" / "model.ckpt"
    y = run_tf1_restored(prefix, "lstm", 3, 8, sample["x"], layers=2)
    np.testing.assert_allclose(y, sample["y"], atol=1e-5)
    # torch.save -> safetensors without a mapping: the same tensors under the same names.
    written = load_file(root / "out" / "st" / "gru.safetensors")
    original = torch.load(root / "torch" / "gru.pt", weights_only=True)
    assert sorted(written) == sorted(original)
    assert all(np.array_equal(written[k], original[k].numpy()) for k in original)
    # TF 1.0 names -> today's, restored by tf's own Saver into the graph TF builds today.
    tf, v1 = tf1()
    oldnames = np.load(SAMPLES / "tf10_oldnames" / "io.npz")
    with tf.Graph().as_default():
        x, y = samples_module().oldnames_graph(tf, v1)
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, str(root / "out" / "tf" / "oldnames" / "model.ckpt"))
            np.testing.assert_allclose(sess.run(y, {x: oldnames["x"]}), oldnames["y"], atol=1e-5)


def test_report_has_a_line_per_job_with_mapping_bytes_and_verdicts(migrated):
    root, run = migrated
    lstm2 = run.job("samples/tf1_lstm2")
    assert (lstm2["job"], lstm2["line"], lstm2["destination"], lstm2["mapping"]) == (
        "1",
        4,
        "out/torch/lstm2.pt",
        ["tf1-to-torch"],
    )
    assert (
        lstm2["status"] == "done" and lstm2["bytes_written"] == (root / "out/torch/lstm2.pt").stat().st_size
    )
    assert (
        lstm2["verify"]["ok"] and lstm2["verify"]["verdicts"] == ["equal"] and not lstm2["verify"]["errors"]
    )
    assert run.job("samples/torch_lstm.pt")["verify"]["verdicts"] == ["equal"]
    assert run.job("samples/tf1_gru")["verify"] is None  # not asked for
    gru = run.job("samples/tf1_gru")
    assert gru["exact"] is False and "reset" in gru["approximations"][0]  # TF1 GRUCell -> nn.GRU
    globbed = [j for j in run.report["jobs"] if j["line"] == 16]
    assert [(j["job"], j["destination"]) for j in globbed] == [
        ("5.1", "out/st/gru.safetensors"),
        ("5.2", "out/st/lstm.safetensors"),
        ("5.3", "out/st/rnn.safetensors"),
    ] and all(j["mapping"] == [] for j in globbed)
    assert run.report["workers"] == min(12, len(os.sched_getaffinity(0)))  # one per CPU, one per job at most


def test_a_rerun_skips_finished_jobs_untouched_and_retries_the_failed_one(rerun_tree):
    before = output_times(rerun_tree)
    run = batch(rerun_tree)
    assert run.code == 1
    assert {s for src, s in run.statuses().items() if src != CORRUPT} == {"skipped"}
    assert run.job(CORRUPT)["status"] == "failed" and "truncated" in run.job(CORRUPT)["error"]
    assert output_times(rerun_tree) == before
    # Repaired, it runs; everything else is still skipped, and the exit code is 0.
    for f in (rerun_tree / "tf1" / "rnn").glob("model.ckpt.*"):
        shutil.copy(f, rerun_tree / "tf1" / "cut" / f.name)
    run = batch(rerun_tree)
    assert run.code == 0 and run.report["counts"]["skipped"] == 11 and run.job(CORRUPT)["status"] == "done"


def test_force_redoes_every_job(rerun_tree):
    before = output_times(rerun_tree)
    run = batch(rerun_tree, "--force")
    assert run.code == 1 and run.report["counts"]["done"] == 11
    after = output_times(rerun_tree)
    assert all(after[f] != t for f, t in before.items())


def test_a_changed_source_option_or_output_reruns_just_that_job(rerun_tree):
    from safetensors.numpy import load_file

    new_values = save_torch(rerun_tree / "torch" / "rnn.pt", "rnn", seed=7)  # a new source, new mtime
    manifest = rerun_tree / "migrate.yaml"
    gru = "    dst: out/st/tf1_gru.safetensors\n"
    manifest.write_text(manifest.read_text().replace(gru, gru + "    rename: {'^': 'gru.'}\n"))
    (rerun_tree / "out" / "torch" / "rnn.pt").unlink()  # a deleted output
    run = batch(rerun_tree)
    ran = {src for src, status in run.statuses().items() if status != "skipped"}
    assert ran == {"torch/rnn.pt", "samples/tf1_gru", "tf1/rnn/model.ckpt.index", CORRUPT}
    assert all(
        name.startswith("gru.") for name in load_file(rerun_tree / "out" / "st" / "tf1_gru.safetensors")
    )
    written = load_file(rerun_tree / "out" / "st" / "rnn.safetensors")
    assert all(np.array_equal(written[k], v) for k, v in new_values.items())


def test_verify_on_the_command_line_reruns_jobs_that_were_not_verified(rerun_tree, monkeypatch):
    # Only the keras2 job, so the check stays cheap: the others are not in this manifest.
    manifest = rerun_tree / "migrate.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text[: text.index("  - src: samples/tf1_lstm2")] + text[text.index("  - src: keras2") :]
    )
    run = batch(rerun_tree, "--verify")
    [job] = run.report["jobs"]
    assert run.code == 0 and job["status"] == "done" and job["verify"]["verdicts"] == ["equal"]
    assert batch(rerun_tree, "--verify").report["jobs"][0]["status"] == "skipped"


# Loaded by every interpreter of the batch below (its workers inherit PYTHONPATH): reading
# stuck.pt blocks until Ctrl-C. A named pipe once did this, but sources that are not regular
# files are now refused before any job runs.
STUCK_HOOK = """\
import time

from ckptmap.formats import registry

_read = registry.read


def read(path, **options):
    while str(path).endswith("stuck.pt"):
        time.sleep(0.1)
    return _read(path, **options)


registry.read = read
"""


def test_ctrl_c_stops_cleanly_with_exit_130_and_a_rerun_resumes(sources, tmp_path):
    # The job of stuck.pt blocks (see STUCK_HOOK) until Ctrl-C: a job that is surely running
    # when the signal comes, whatever the machine's speed.
    root = tmp_path / "m"
    shutil.copytree(sources / "torch", root / "torch")
    shutil.copy(root / "torch" / "gru.pt", root / "torch" / "stuck.pt")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(STUCK_HOOK)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]),
    }
    (root / "migrate.yaml").write_text("jobs:\n  - {src: 'torch/*.pt', dst: 'out/{stem}.safetensors'}\n")
    cmd = [
        sys.executable,
        "-m",
        "ckptmap",
        "batch",
        str(root / "migrate.yaml"),
        "-j",
        "2",
        "--report",
        str(root / "r.json"),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    state = root / "migrate.yaml.state.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        state.exists() and len(json.loads(state.read_text())["outputs"]) == 3
    ):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted: 3 of 4 jobs finished; the others were stopped" in err and "Traceback" not in err
    assert INTERRUPTED not in err  # "no output was left behind" is not true of a batch: 3 outputs stay
    report = json.loads((root / "r.json").read_text())
    assert report["interrupted"] and report["jobs"][-1]["status"] == "interrupted"
    assert sorted(p.name for p in (root / "out").iterdir()) == [
        "gru.safetensors",
        "lstm.safetensors",
        "rnn.safetensors",
    ]
    run = batch(root)  # in this process: no hook
    assert run.code == 0 and run.statuses() == {
        "torch/gru.pt": "skipped",
        "torch/lstm.pt": "skipped",
        "torch/rnn.pt": "skipped",
        "torch/stuck.pt": "done",
    }


def test_the_parent_imports_no_framework_even_when_its_workers_verify(sources, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(sources / "torch", root / "torch")
    job = "{src: torch/lstm.pt, dst: out/lstm.safetensors, verify: true}"
    (root / "migrate.yaml").write_text(f"jobs:\n  - {job}\n")
    code = (
        "import sys\n"
        "from ckptmap.batch import run_batch\n"
        f"report = run_batch({str(root / 'migrate.yaml')!r})\n"
        "assert report.ok and report.results[0].verify['verdicts'] == ['equal'], report.to_dict()\n"
        "assert not {'tensorflow', 'torch', 'keras'} & set(sys.modules), 'a framework was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
