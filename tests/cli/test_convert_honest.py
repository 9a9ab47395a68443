"""`convert` never calls a conversion that did nothing, or the wrong thing, a success: renames and
drops that match nothing, existing destinations, targets of the wrong shape, verification that
cannot run, and quick surgery with --drop / --keep-only. Each case failed (exit 0, or a silent
overwrite) before these checks existed."""

from __future__ import annotations

from pathlib import Path

import pytest

import ckptmap
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"


def test_a_rename_or_drop_that_matches_nothing_is_an_error(capsys, tmp_path):
    dst = tmp_path / "x.pt"
    code, _, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--rename", "^encoder/=enc/")
    assert code == 2 and "--rename '^encoder/=enc/' matches no tensor name" in err
    code, _, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--drop", "softmax")
    assert code == 2 and "--drop 'softmax' matches no tensor name" in err
    assert not dst.exists()


def test_drop_and_keep_only_leave_tensors_out_and_say_so(capsys, tmp_path):
    code, out, _ = run(capsys, "convert", LSTM2, tmp_path / "a.pt", "-m", "tf1-to-torch", "--drop", "_l1$")
    assert code == 0 and "4 by --drop '_l1$'" in out
    assert sorted(ckptmap.load(tmp_path / "a.pt").entries) == [
        "bias_hh_l0",
        "bias_ih_l0",
        "weight_hh_l0",
        "weight_ih_l0",
    ]
    code, out, _ = run(
        capsys, "convert", LSTM2, tmp_path / "b.pt", "-m", "tf1-to-torch", "--keep-only", "^weight_"
    )
    assert code == 0 and "by --keep-only" in out
    assert sorted(ckptmap.load(tmp_path / "b.pt").entries) == [
        "weight_hh_l0",
        "weight_hh_l1",
        "weight_ih_l0",
        "weight_ih_l1",
    ]


def test_an_existing_destination_needs_overwrite(capsys, tmp_path):
    dst = tmp_path / "x.pt"
    dst.write_bytes(b"keep me")
    code, _, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch")
    assert code == 2 and "exists; pass --overwrite" in err and dst.read_bytes() == b"keep me"
    code, _, _ = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--overwrite")
    assert code == 0 and len(ckptmap.load(dst).entries) == 8


def test_a_target_of_the_wrong_shape_is_refused_naming_the_rule_and_line(capsys, tmp_path):
    mapping = tmp_path / "no_transpose.yaml"
    mapping.write_text(
        "from: tf1\nto: torch\nrules:\n"
        "  - name: lstm, transpose forgotten\n"
        "    cell: tf1.lstm\n"
        "    to: torch.lstm\n"
        "    make:\n"
        "      weight_ih: kernel | split(0, [input, units], 0) | gates(tf1.lstm, torch.lstm)\n"
        "      weight_hh: kernel | split(0, [input, units], 1) | gates(tf1.lstm, torch.lstm) | T\n"
        "      bias_ih: bias | gates(tf1.lstm, torch.lstm)\n"
        "      bias_hh: zeros(4 * units)\n"
    )
    code, _, err = run(capsys, "convert", LSTM2, tmp_path / "x.pt", "-m", mapping)
    assert code == 2
    assert "rule 1 'lstm, transpose forgotten'" in err and "no_transpose.yaml:4" in err
    assert "weight_ih of layer 0" in err and "[3, 32]" in err and "[32, 3]" in err
    assert not (tmp_path / "x.pt").exists()


def test_include_carries_the_included_policies_and_rules_may_be_empty(tmp_path):
    mapping = tmp_path / "mine.yaml"
    mapping.write_text("include: [tf1-to-torch]\n")  # no rules of its own, no policies
    report = ckptmap.convert(
        SAMPLES / "tf1_lstm2", tmp_path / "x.pt", mapping, dry_run=True, params={"forget_bias": 1.0}
    )
    spec = ckptmap.mapping(mapping).spec
    assert (spec.slots, spec.bookkeeping, spec.unmatched) == ("drop", "drop", "keep")
    assert report.plan.rnns_converted == 1
    own = tmp_path / "own.yaml"
    own.write_text("include: [tf1-to-torch]\nslots: follow\nrules: []\n")
    assert ckptmap.mapping(own).spec.slots == "follow"  # a policy the file sets wins


@pytest.mark.parametrize("option", [["--tolerance", "1e-3"], ["--strict"]])
def test_verify_options_need_verify(capsys, tmp_path, option):
    code, _, err = run(capsys, "convert", LSTM2, tmp_path / "x.pt", "-m", "tf1-to-torch", *option)
    assert code == 2 and "go with --verify" in err


def test_convert_verify_says_what_it_wrote_first_and_strict_fails_approximations(capsys, tmp_path):
    dst = tmp_path / "gru.pt"
    code, out, err = run(
        capsys, "convert", SAMPLES / "tf1_gru", dst, "-m", "tf1-to-torch", "--verify", "--strict"
    )
    assert code == 1 and "did NOT verify" in err
    assert out.index(f"wrote {dst}") < out.index("APPROXIMATE")  # what was written, then the verdicts
    code, out, _ = run(
        capsys,
        "convert",
        SAMPLES / "tf1_lstm2",
        tmp_path / "l.pt",
        "-m",
        "tf1-to-torch",
        "--verify",
        "--tolerance",
        "1e-4",
    )
    assert code == 0 and "tolerance 0.0001" in out


def test_convert_verify_that_cannot_run_says_the_output_was_written(capsys, tmp_path, monkeypatch):
    from ckptmap.errors import UnsupportedError
    from ckptmap.verification import run as verification

    def no_framework(*args, **kwargs):  # as on a machine without TensorFlow installed
        raise UnsupportedError("Verifying needs tensorflow, which is not installed.")

    monkeypatch.setattr(verification, "verify", no_framework)
    dst = tmp_path / "x.pt"
    code, out, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--verify")
    assert code == 2 and f"wrote {dst}" in out
    assert f"{dst} was written, but could not be verified: Verifying needs tensorflow" in err
    assert dst.exists()
