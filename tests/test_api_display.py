"""The API's objects print as the CLI does: `print(ckpt)` is `ckptmap inspect`, `print(report)`
is what `convert` and `diff` print, and each `repr` stays one short line."""

from __future__ import annotations

from pathlib import Path

import ckptmap
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"


def _one_line(text: str, *parts: str) -> None:
    """A short repr: one line, its length mostly the paths it names (tmp_path's are long)."""
    assert "\n" not in text and len(text) < 320, text
    assert all(p in text for p in parts), text


def test_a_checkpoint_prints_as_inspect_shows_it(capsys):
    ckpt = ckptmap.load(LSTM2)
    _, out, _ = run(capsys, "inspect", ckpt.path)
    shown = str(ckpt)
    assert shown.replace("print(ckpt.tree()) shows them", "--all shows them") + "\n" == out
    assert "LSTMCell at (root): input 3, units 8, 2 layers" in shown and "Adam" not in shown
    _one_line(repr(ckpt), "<Checkpoint tf", "tf1_lstm2", "15 tensors")


def test_a_tree_prints_every_tensor_as_inspect_all_does(capsys):
    ckpt = ckptmap.load(LSTM2)
    _, out, _ = run(capsys, "inspect", ckpt.path, "--all")
    tree = str(ckpt.tree())
    assert "      Adam_1 (slot)" in tree and "global_step (bookkeeping)" in tree
    assert f"\n\n{tree}\n\n" in out  # the same lines, between inspect's header and its RNNs
    rnn = ckpt.tree().children["rnn"]
    assert str(rnn).startswith("multi_rnn_cell/\n  cell_0/lstm_cell/\n    bias ")
    _one_line(repr(rnn), "<ScopeNode 'rnn'", "12 tensors")
    _one_line(repr(ckpt.tree()), "<ScopeNode '(root)'", "15 tensors")


def test_a_conversion_report_prints_as_convert_does(capsys, tmp_path):
    dst = tmp_path / "lstm.pt"
    report = ckptmap.convert(LSTM2, dst, mapping="tf1-to-torch", dry_run=True)
    _, out, _ = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--dry-run")
    assert str(report) + "\n" == out
    assert "weight_ih_l0" in str(report) and "dropped 11: 3 training bookkeeping, 8 optimizer slot" in out
    _one_line(repr(report), "<ConversionReport", "tf1_lstm2 -> ", "lstm.pt (torch)", "8 converted", "dry run")
    written = ckptmap.convert(LSTM2, dst, mapping="tf1-to-torch")
    assert f"  wrote {dst}" in str(written) and "written (" in str(written)


def test_a_diff_report_prints_as_diff_does(capsys, tmp_path):
    ckptmap.convert(LSTM2, tmp_path / "ren" / "model.ckpt", rename={"kernel$": "weights"})
    report = ckptmap.diff(LSTM2, tmp_path / "ren", values=True)
    code, out, _ = run(capsys, "diff", LSTM2, tmp_path / "ren", "--values")
    assert code == 1 and str(report) + "\n" == out
    assert "Only in" in str(report) and "Values of 13 tensors in both: 13 identical" in str(report)
    _one_line(repr(report), "<DiffReport", "2 only in a", "2 only in b", "0 values differ")
    assert "values differ" not in repr(ckptmap.diff(LSTM2, LSTM2))  # not compared, not claimed
