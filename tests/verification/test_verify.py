"""Verification must fail when a conversion is wrong, say where, and check restores as they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import ckptmap
from ckptmap.verification.report import DIFFERS
from ckptmap.verification.run import verify, verify_into
from tests.clirun import run
from tests.verification.conftest import UNITS, tf1_source, torch_source

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"


def _swap_blocks(path: Path, name: str, a: int, b: int) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    w = state[name].clone()
    n = w.shape[0] // (4 if "lstm" in str(path) else 3)
    state[name][a * n : (a + 1) * n], state[name][b * n : (b + 1) * n] = (
        w[b * n : (b + 1) * n],
        w[a * n : (a + 1) * n],
    )
    torch.save(state, path)


def test_verify_exits_1_when_a_gate_is_swapped(capsys, tmp_path):
    dst = tmp_path / "lstm.pt"
    run(capsys, "convert", SAMPLES / "tf1_lstm2", dst, "-m", "tf1-to-torch")
    code, out, _ = run(capsys, "verify", SAMPLES / "tf1_lstm2", dst)
    assert code == 0 and "EQUAL" in out and "OK: 1 equal." in out
    _swap_blocks(dst, "weight_hh_l1", 1, 2)  # f and g of the second layer's recurrent weights
    code, out, _ = run(capsys, "verify", SAMPLES / "tf1_lstm2", dst)
    assert code == 1 and "DIFFERS" in out and "FAILED: 1 differs (max abs error" in out


def test_verify_fails_when_forget_bias_was_left_out(tmp_path):
    src = SAMPLES / "tf1_lstm2"  # built with LSTMCell's default forget_bias=1.0
    ckptmap.convert(src, tmp_path / "m.pt", mapping="tf1-to-torch", params={"forget_bias": 0.0})
    [pair] = verify(src, tmp_path / "m.pt").pairs
    assert pair.verdict == DIFFERS
    # The forget gate multiplies c0: invisible in one step from zeros, plain from a random state.
    assert pair.first_step_abs < 1e-5
    assert max(c.max_abs for c in pair.cases if "random state" in c.case) > 1e-2


def test_an_approximate_gru_with_a_swapped_gate_still_fails(tmp_path):
    # "approximate" is granted only when the first step from a zero state agrees.
    ckptmap.convert(SAMPLES / "tf1_gru", tmp_path / "gru.pt", mapping="tf1-to-torch")
    _swap_blocks(tmp_path / "gru.pt", "encoder.weight_ih_l0", 0, 1)  # r and z
    [pair] = verify(SAMPLES / "tf1_gru", tmp_path / "gru.pt").pairs
    assert pair.verdict == DIFFERS and pair.approximate


def test_torch_gru_with_b_hn_does_not_verify_and_says_why(tmp_path):
    src = torch_source(tmp_path / "gru.pt", "gru")
    ckptmap.convert(src, tmp_path / "tf" / "model.ckpt", mapping="torch-to-tf1")
    [pair] = verify(src, tmp_path / "tf").pairs
    assert pair.verdict == DIFFERS and "b_hn" in pair.approximate


def test_verify_reports_errors_per_rnn_as_json(capsys, tmp_path):
    src = tf1_source(tmp_path / "a" / "model.ckpt", "rnn", scope="enc", layers=2)
    run(capsys, "convert", src, tmp_path / "m.pt", "-m", "tf1-to-torch")
    code, out, _ = run(capsys, "verify", src, tmp_path / "m.pt", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["mappings"] == ["tf1-to-torch"]
    [pair] = data["pairs"]
    assert (
        pair["verdict"] == "equal"
        and pair["source"]["scope"] == "enc"
        and pair["destination"]["cell_type"] == "nn.RNN"
    )
    cases = {c["case"] for c in pair["cases"]}
    assert "batch 3 x 1 steps, zero state" in cases and any("random state" in c for c in cases)
    assert all(c["output_abs"] <= 1e-5 and c["state_abs"] <= 1e-5 for c in pair["cases"])


def test_verify_picks_the_builtin_mapping_when_none_is_given():
    report = verify(SAMPLES / "torch_lstm.pt", SAMPLES / "torch_lstm.pt")
    assert report.mappings == [] and report.ok
    assert verify(SAMPLES / "tf1_gru", SAMPLES / "tf1_gru").mappings == ["tf1-legacy-names"]


def test_a_destination_without_the_rnn_is_reported(tmp_path):
    ckptmap.convert(SAMPLES / "tf1_lstm2", tmp_path / "m.pt", mapping="tf1-to-torch", rename={"^": "other."})
    report = verify(SAMPLES / "tf1_lstm2", tmp_path / "m.pt")  # verified without the rename: no counterpart
    assert not report.ok and report.pairs[0].verdict == "no counterpart" and report.unpaired


def test_convert_verify_succeeds_and_prints_the_table(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "convert",
        SAMPLES / "torch_lstm.pt",
        tmp_path / "tf" / "model.ckpt",
        "-m",
        "torch-to-tf1",
        "--verify",
    )
    assert code == 0 and not err and "Converted" in out and "OK: 1 equal." in out


def test_convert_verify_failure_keeps_the_output_and_exits_1(capsys, tmp_path):
    # A user's mapping that forgets to reorder the gates: it converts, loads, and computes garbage.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - cell: tf1.lstm\n    to: torch.lstm\n    make:\n"
        "      weight_ih: kernel | split(0, [input, units], 0) | T\n"
        "      weight_hh: kernel | split(0, [input, units], 1) | T\n"
        "      bias_ih: bias\n      bias_hh: zeros(4 * units)\n"
    )
    dst = tmp_path / "m.pt"
    code, out, err = run(capsys, "convert", SAMPLES / "tf1_lstm2", dst, "-m", bad, "--verify")
    assert code == 1 and dst.is_file()
    assert "DIFFERS" in out and f"{dst} was written but did NOT verify" in err


def test_verify_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "verify", SAMPLES / "tf1_gru")
    assert code == 2 and "either DST" in err
    code, _, err = run(capsys, "verify", SAMPLES / "tf1_gru", "--into", "jax")
    assert code == 2 and "Cannot verify in 'jax'" in err


# --- verify --into ------------------------------------------------------------------------------------------


def test_into_tf1_complete_checkpoint_restores_and_runs(capsys):
    code, out, _ = run(capsys, "verify", SAMPLES / "tf1_lstm2", "--into", "tf1")
    assert code == 0 and "restores and runs" in out and "OK: every RNN restores completely and runs." in out


def test_into_tf1_names_what_old_names_lack_with_suggestions(capsys):
    code, out, _ = run(capsys, "verify", SAMPLES / "tf10_oldnames", "--into", "tf1")
    assert code == 1
    assert (
        "missing encoder/rnn/multi_rnn_cell/cell_0/gru_cell/gates/kernel [7, 8]: it would stay uninitialized "
        "(did you mean encoder/rnn/multi_rnn_cell/cell_0/gru_cell/gates/weights?)"
    ) in out
    assert "dense/kernel [4, 2]" in out  # read by no RNN
    assert "--mapping tf1-legacy-names" in out


def test_into_tf1_reports_a_missing_tensor_and_a_wrong_shape(tmp_path):
    src = tf1_source(tmp_path / "a" / "model.ckpt", "gru", layers=2)
    full = ckptmap.load(src)
    keep = {n: full[n] for n in full if n != "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias"}
    keep["rnn/multi_rnn_cell/cell_0/gru_cell/gates/bias"] = np.zeros(3, np.float32)  # should be [2 * UNITS]
    entries = [ckptmap.TensorEntry(n, v.shape, "float32", n, lambda v=v: v) for n, v in keep.items()]
    ckptmap.save(ckptmap.Checkpoint(entries, format="tf"), tmp_path / "b" / "model.ckpt")
    report = verify_into(tmp_path / "b", "tf1")
    [result] = report.results
    assert not report.ok
    assert [m.name for m in result.missing] == ["rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias"]
    assert result.mismatched == [("rnn/multi_rnn_cell/cell_0/gru_cell/gates/bias", (2 * UNITS,), (3,))]


def test_into_torch_through_the_builtin_mapping_and_a_missing_bias(tmp_path):
    import torch

    assert verify_into(SAMPLES / "tf1_lstm2", "torch").mappings == ["tf1-to-torch"]
    src = torch_source(tmp_path / "m.pt", "lstm", layers=2)
    state = torch.load(src, weights_only=True)
    del state["bias_hh_l1"]
    torch.save(state, tmp_path / "cut.pt")
    [result] = verify_into(tmp_path / "cut.pt", "torch").results
    assert [m.name for m in result.missing] == ["bias_hh_l1"] and not result.ok


def test_into_works_on_a_copy_and_leaves_the_source_alone(tmp_path):
    src = tmp_path / "lstm.pt"
    shutil.copy(SAMPLES / "torch_lstm.pt", src)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert verify_into(src, "tf1").ok
    assert sorted(p.name for p in tmp_path.iterdir()) == before
