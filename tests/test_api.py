"""The documented Python API: ckptmap.load / mapping / save / convert / verify and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"


def test_load_is_lazy_and_gives_names_entries_arrays_rnns_and_a_tree():
    ckpt = ckptmap.load(LSTM2)
    entry = ckpt.entries["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"]
    assert (entry.shape, entry.dtype, entry.kind) == ((11, 32), "float32", "weight")
    assert isinstance(ckpt["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"], np.ndarray)
    assert "global_step" in ckpt.names and ckpt.entries["global_step"].kind == "bookkeeping"
    [rnn] = ckpt.rnns
    assert (rnn.kind, rnn.layers, rnn.units) == ("lstm", 2, 8)
    assert ckpt.tree().children["rnn"].children["multi_rnn_cell"].count == 12
    with pytest.raises(KeyError, match="No tensor named 'nope'"):
        ckpt["nope"]


def test_mapping_apply_is_lazy_and_plan_explains(monkeypatch):
    ckpt = ckptmap.load(LSTM2)
    reads = []
    for entry in ckpt.entries.values():
        original = entry.loader
        object.__setattr__(
            entry, "loader", lambda original=original, name=entry.name: reads.append(name) or original()
        )
    m = ckptmap.mapping("tf1-to-torch", forget_bias=0.5)
    out = m.apply(ckpt)
    assert reads == [] and list(out)[:2] == ["weight_ih_l0", "weight_hh_l0"]
    plan = m.plan(ckpt)
    assert plan.params == {"forget_bias": 0.5, "cudnn_forget_bias": 0.0}
    assert plan.exact and len(plan.dropped) == 11
    assert plan.targets[0].sources == ("rnn/multi_rnn_cell/cell_0/lstm_cell/kernel",)


def test_save_and_convert_and_verify(tmp_path):
    out = ckptmap.mapping("tf1-to-torch").apply(ckptmap.load(LSTM2))
    files = ckptmap.save(out, tmp_path / "a.bin", format="safetensors")
    assert files == [tmp_path / "a.bin"] and sorted(ckptmap.load(tmp_path / "a.bin", format="safetensors"))
    report = ckptmap.convert(
        LSTM2, tmp_path / "b.pt", mapping="tf1-to-torch", params={"forget_bias": 1.0}, rename={"^": "lstm/"}
    )
    assert isinstance(report, ckptmap.ConversionReport) and report.exact and report.bytes_written > 0
    assert report.plan.targets[0].name == "lstm/weight_ih_l0"
    checked = ckptmap.verify(LSTM2, tmp_path / "b.pt", mapping="tf1-to-torch", rename={"^": "lstm/"})
    assert checked.ok and checked.exit_code == 0
    assert ckptmap.verify(LSTM2, into="torch").ok


def test_errors_are_ckptmap_errors_with_the_cli_messages(tmp_path):
    with pytest.raises(ckptmap.SourceNotFoundError, match="no such file"):
        ckptmap.load(tmp_path / "missing.pt")
    with pytest.raises(ckptmap.UsageError, match="No built-in mapping named 'x'"):
        ckptmap.mapping("x")
    with pytest.raises(ckptmap.UsageError, match="either dst"):
        ckptmap.verify(LSTM2)
    assert issubclass(ckptmap.FormatError, ValueError) and issubclass(
        ckptmap.SourceNotFoundError, FileNotFoundError
    )
