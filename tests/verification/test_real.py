"""Verification on checkpoints from other people's projects (../shared/real_checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ckptmap
from ckptmap.verification.run import verify, verify_into

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason="../shared/real_checkpoints is not beside the checkout"
)


@pytest.mark.parametrize(
    ("folder", "dst", "mapping"),
    [
        ("poembot_v1_multilstm_oldnames", "m.pt", "tf1-to-torch"),  # V1 file, TF 0.x names: a Saver var_list
        ("sunrepe_multilstm_kernel_small", "m.pt", "tf1-to-torch"),
        (
            "torch_bilstm2_zip/bilstm.pt",
            "tf/model.ckpt",
            "torch-to-tf1",
        ),  # saved on "mps"; 2 layers, bidirectional
    ],
    ids=["tf0-v1-lstm", "tf12-lstm", "torch-bilstm"],
)
def test_real_conversions_verify_equal(tmp_path, folder, dst, mapping):
    ckptmap.convert(REAL / folder, tmp_path / dst, mapping=mapping)
    report = verify(REAL / folder, tmp_path / dst)
    assert report.ok and {p.verdict for p in report.pairs} == {"equal"}


def test_real_gru_stack_is_approximate_as_declared(tmp_path):
    src = REAL / "tidigits_multigru_weights_tf11"
    ckptmap.convert(src, tmp_path / "m.pt", mapping="tf1-to-torch")
    [pair] = verify(src, tmp_path / "m.pt").pairs
    assert pair.verdict == "approximate" and pair.first_step_abs <= pair.tolerance


def test_real_bidirectional_over_multirnncells_restores_into_tf1():
    # fracogno: bidirectional_dynamic_rnn over two 3-layer MultiRNNCells (no PyTorch counterpart).
    [result] = verify_into(REAL / "fracogno_bilstm_multirnn", "tf1").results
    assert result.ok and result.rnn.stacking == "per_direction"


def test_real_custom_cell_names_restore_into_tf1():
    # kokkini: LSTMCell(name="cell_1") with peepholes inside a MultiRNNCell; the fresh graph names its
    # cells as the checkpoint does, as the author's code did.
    [result] = verify_into(REAL / "kokkini_peephole_lstm_customname", "tf1").results
    assert result.ok and result.rnn.peepholes and result.rnn.layers == 2


def test_real_attention_decoder_cells_called_directly_restore_into_tf1():
    # g2p-seq2seq: the decoder's GRUCell is called inside attention_decoder/decoder (no rnn/ scope),
    # the encoder is a bidirectional_dynamic_rnn.
    report = verify_into(REAL / "g2p_attseq2seq_gru_kernel_tf12", "tf1")
    assert report.ok and sorted(r.rnn.scope for r in report.results) == [
        "model/att_seq2seq/decode/attention_decoder/decoder",
        "model/att_seq2seq/encode/bidi_rnn_encoder",
    ]


def test_real_old_names_are_paired_with_the_same_cells_old_names():
    # The same graph saved by TF 1.1: the fresh graph wants kernel/bias where the cells are, and each
    # missing name is offered the same cell's weights/biases, of the same direction.
    report = verify_into(REAL / "g2p_attseq2seq_gru_weights_tf11", "tf1")
    missing = {m.name: m.suggestion for r in report.results for m in r.missing}
    assert not report.ok and len(missing) == 12 and report.hints
    for name, suggestion in missing.items():
        assert suggestion == name.replace("/kernel", "/weights").replace("/bias", "/biases")
