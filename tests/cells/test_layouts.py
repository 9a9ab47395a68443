"""Pin every gate-layout row of ckptmap/cells/layouts.py against the real framework.

Probe: a one-unit cell with zero weights, every gate block's bias saturated one way and the block
under test the other way, one step from a known state. Each gate then leaves a distinct fingerprint
in the new state, so the test reads off which gate the framework keeps in that block.
"""

from __future__ import annotations

import numpy as np
import pytest

from ckptmap.cells.layouts import layout, permutation
from tests.frameworks import make_tf1_cell, tf1

HIGH, LOW = 30.0, -30.0
C0 = 0.5  # LSTM: c0; GRU: h0

# LSTM, all blocks HIGH but the probed one LOW: c1 = sigmoid(f)*c0 + sigmoid(i)*tanh(g).
LSTM_FINGERPRINT = {0.5: "i", 1.0: "f", -0.5: "g", 1.5: "o"}
# GRU, all blocks LOW but the probed one HIGH: h1 = (1-z)*n + z*h0 with n = tanh(bias of n).
GRU_FINGERPRINT = {-1.0: "r", 0.5: "z", 1.0: "n"}


def _tf1_step(kind: str, bias: np.ndarray) -> float:
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        cell = make_tf1_cell(kind, 1)
        x = tf.zeros([1, 1])
        if kind in ("lstm", "basic_lstm"):
            state = v1.nn.rnn_cell.LSTMStateTuple(tf.constant([[C0]]), tf.zeros([1, 1]))
            _, new = cell(x, state)
            probe = new.c
        else:
            _, probe = cell(x, tf.constant([[C0]]))
        sess.run(v1.global_variables_initializer())
        for v in v1.global_variables():
            v.load(np.zeros(v.shape, np.float32), sess)
        if kind == "gru":
            by_name = {
                v.name.split("/")[-2] + "/" + v.name.split("/")[-1][:-2]: v for v in v1.global_variables()
            }
            by_name["gates/bias"].load(bias[:2], sess)
            by_name["candidate/bias"].load(bias[2:], sess)
        else:
            [b] = [v for v in v1.global_variables() if v.name.endswith("bias:0")]
            b.load(bias, sess)
        return float(sess.run(probe)[0, 0])


def _torch_step(kind: str, bias: np.ndarray) -> float:
    import torch

    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](1, 1)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.bias_ih_l0.copy_(torch.from_numpy(bias))
        x = torch.zeros(1, 1, 1)
        if kind == "lstm":
            _, (_, c) = module(x, (torch.zeros(1, 1, 1), torch.full((1, 1, 1), C0)))
            return float(c)
        _, h = module(x, torch.full((1, 1, 1), C0))
        return float(h)


def _onnx_step(kind: str, bias: np.ndarray) -> float:
    """One step of a one-unit ONNX node run by onnxruntime: `bias` as Wb, zeros as Rb and weights."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    op, gates = {"lstm": ("LSTM", 4), "gru": ("GRU", 3)}[kind]
    weights = {
        "W": np.zeros((1, gates, 1), np.float32),
        "R": np.zeros((1, gates, 1), np.float32),
        "B": np.concatenate([bias, np.zeros(gates, np.float32)])[None],
        "h0": np.full((1, 1, 1), 0.0 if kind == "lstm" else C0, np.float32),
        "c0": np.full((1, 1, 1), C0, np.float32),
    }
    inputs = ["x", "W", "R", "B", "", "h0"] + (["c0"] if kind == "lstm" else [])
    probe = "c" if kind == "lstm" else "h"
    node = helper.make_node(op, inputs, ["y", "h", "c"][: 3 if kind == "lstm" else 2], hidden_size=1)
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1])],
        [helper.make_tensor_value_info(probe, TensorProto.FLOAT, [1, 1, 1])],
        [numpy_helper.from_array(v, k) for k, v in weights.items() if k in inputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(session.run([probe], {"x": np.zeros((1, 1, 1), np.float32)})[0].ravel()[0])


def _identify(step, kind: str, n_blocks: int) -> list[str]:
    fingerprint = LSTM_FINGERPRINT if n_blocks == 4 else GRU_FINGERPRINT
    base, probe = (HIGH, LOW) if n_blocks == 4 else (LOW, HIGH)
    found = []
    for k in range(n_blocks):
        bias = np.full(n_blocks, base, np.float32)
        bias[k] = probe
        value = step(kind, bias)
        matches = [g for v, g in fingerprint.items() if abs(v - value) < 1e-3]
        assert len(matches) == 1, f"block {k} gave {value}, no gate has that fingerprint"
        found.append(matches[0])
    return found


@pytest.mark.parametrize(
    ("key", "step", "kind", "blocks"),
    [
        ("tf1.lstm", _tf1_step, "lstm", 4),
        ("tf1.lstm", _tf1_step, "basic_lstm", 4),  # BasicLSTMCell shares LSTMCell's layout
        ("tf1.gru", _tf1_step, "gru", 3),  # [gates/bias | candidate/bias]
        ("torch.lstm", _torch_step, "lstm", 4),
        ("torch.gru", _torch_step, "gru", 3),
        ("onnx.lstm", _onnx_step, "lstm", 4),
        ("onnx.gru", _onnx_step, "gru", 3),
    ],
    ids=["tf1-lstm", "tf1-basic-lstm", "tf1-gru", "torch-lstm", "torch-gru", "onnx-lstm", "onnx-gru"],
)
def test_layout_matches_the_framework(key, step, kind, blocks):
    assert tuple(_identify(step, kind, blocks)) == layout(key).gates


def test_tf1_lstm_adds_forget_bias_at_run_time_not_in_the_variable():
    # All-zero variables, c0 = 0.5: with forget_bias=1.0 added at run time, c1 = sigmoid(1) * c0.
    value = _tf1_step("lstm", np.zeros(4, np.float32))
    assert value == pytest.approx(C0 / (1 + np.exp(-1.0)), abs=1e-6)


def test_tf1_kernels_stack_inputs_before_state():
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        cell = make_tf1_cell("rnn", 1)
        out, _ = cell(tf.ones([1, 1]), tf.zeros([1, 1]))
        sess.run(v1.global_variables_initializer())
        kernel = next(v for v in v1.global_variables() if v.name.endswith("kernel:0"))
        kernel.load(np.array([[0.3], [0.9]], np.float32), sess)
        next(v for v in v1.global_variables() if v.name.endswith("bias:0")).load(
            np.zeros(1, np.float32), sess
        )
        assert float(sess.run(out)[0, 0]) == pytest.approx(np.tanh(0.3))  # row 0 multiplies the input


def test_permutation_maps_blocks_by_gate_name():
    assert permutation(layout("tf1.lstm"), layout("torch.lstm")) == [0, 2, 1, 3]
    assert permutation(layout("torch.lstm"), layout("tf1.lstm")) == [0, 2, 1, 3]
    assert permutation(layout("keras.gru"), layout("torch.gru")) == [1, 0, 2]
