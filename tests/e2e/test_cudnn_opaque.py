"""A TF1 checkpoint holding only a cuDNN buffer (`<scope>/opaque_kernel`, as tf.contrib.cudnn_rnn
layers save it) converts with `-m cudnn-opaque` and the sizes given into the PyTorch parameters
the buffer holds: loaded by `load_state_dict(strict=True)` into nn.LSTM / nn.GRU, they are the
parameters a real cuDNN laid out in that buffer (tests/data/cudnn_layouts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.clirun import run
from tests.frameworks import tf1

DATA = Path(__file__).resolve().parents[1] / "data" / "cudnn_layouts"
CASES = {
    "lstm_in3_h4_l2_bi": ("lstm", 3, 4, 2, True, 0),
    "gru_in5_h7_l1_uni": ("gru", 5, 7, 1, False, 0),
    "lstm_in5_h7_l2_uni_proj2": ("lstm", 5, 7, 2, False, 2),
    "rnn_tanh_in3_h4_l1_bi": ("rnn", 3, 4, 1, True, 0),
}


def save_opaque(prefix: Path, buffer: np.ndarray) -> None:
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        variable = v1.get_variable("cudnn_lstm/opaque_kernel", initializer=buffer)
        v1.get_variable("global_step", initializer=np.int64(7))
        sess.run(v1.global_variables_initializer())
        assert variable.shape.as_list() == [buffer.size]
        v1.train.Saver().save(sess, str(prefix))


def sizes(kind: str, input_size: int, units: int, layers: int, bidirectional: bool, proj: int) -> list[str]:
    values = {"kind": kind, "input_size": input_size, "units": units, "layers": layers}
    values |= {"bidirectional": str(bidirectional).lower(), "proj": proj}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_cudnn_buffer_becomes_the_torch_module_cudnn_laid_out(tmp_path, capsys, name):
    import torch

    arrays = np.load(DATA / f"{name}.npz")
    save_opaque(tmp_path / "cudnn.ckpt", arrays["buffer"])
    kind, input_size, units, layers, bidirectional, proj = CASES[name]
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "cudnn.ckpt",
        tmp_path / "m.pt",
        "-m",
        "cudnn-opaque",
        *sizes(*CASES[name]),
    )
    assert code == 0, err
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    extra = {"proj_size": proj} if proj else {}
    module = torch.nn.Module()
    module.cudnn_lstm = cls(input_size, units, layers, bidirectional=bidirectional, **extra)
    module.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    for param, value in module.cudnn_lstm.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), arrays[f"param:{param}"], err_msg=param)


def test_sizes_that_do_not_fit_the_buffer_are_refused_and_nothing_is_written(tmp_path, capsys):
    save_opaque(tmp_path / "cudnn.ckpt", np.load(DATA / "lstm_in3_h4_l2_bi.npz")["buffer"])
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "cudnn.ckpt",
        tmp_path / "m.pt",
        "-m",
        "cudnn-opaque",
        *sizes("lstm", 3, 4, 1, False, 0),
    )
    assert code == 2 and "opaque_kernel" in err and "holds 736 values" in err and "take 144" in err
    assert not (tmp_path / "m.pt").exists()
    code, _, err = run(capsys, "convert", tmp_path / "cudnn.ckpt", tmp_path / "m.pt", "-m", "cudnn-opaque")
    assert code == 2 and "does not record its network's sizes; set kind, input_size, units" in err
    assert not (tmp_path / "m.pt").exists()


def test_beside_the_canonical_tensors_the_buffer_is_dropped_and_named(tmp_path, capsys):
    # What tf.train.Saver writes for a CudnnLSTM layer: the buffer and, from its saveable, the
    # canonical tensors. The canonical ones are converted; the buffer has no place in nn.LSTM.
    import torch

    tf, v1 = tf1()
    rng = np.random.default_rng(0)
    cell = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.get_variable("cudnn_lstm/opaque_kernel", initializer=rng.normal(size=144).astype(np.float32))
        v1.get_variable(f"{cell}/kernel", initializer=rng.normal(size=(7, 16)).astype(np.float32))
        v1.get_variable(f"{cell}/bias", initializer=rng.normal(size=16).astype(np.float32))
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(tmp_path / "m.ckpt"))
    code, out, err = run(capsys, "convert", tmp_path / "m.ckpt", tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 0, err
    assert "'cudnn buffer'" in out and "(cudnn_lstm/opaque_kernel)" in out
    module = torch.nn.Module()
    module.cudnn_lstm = torch.nn.LSTM(3, 4)
    module.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)


def test_a_buffer_alone_under_tf1_to_torch_is_no_success_and_points_to_cudnn_opaque(tmp_path, capsys):
    # tf1-to-torch drops the buffer (it converts the canonical tensors beside it); alone, that
    # would leave an empty file: exit 1, nothing written, and the drop's reason names the way.
    save_opaque(tmp_path / "m.ckpt", np.zeros(144, np.float32))
    code, _, err = run(capsys, "convert", tmp_path / "m.ckpt", tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 1 and not (tmp_path / "m.pt").exists()
    assert "left nothing of" in err and "-m cudnn-opaque" in err
