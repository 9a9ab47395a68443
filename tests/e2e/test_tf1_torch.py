"""TF1 <-> PyTorch through the CLI, checked by the frameworks themselves.

Checkpoints are written by tf.compat.v1's Saver and torch.save, converted by `ckptmap convert`,
restored by the other framework (Saver.restore into a fresh graph; torch.load(weights_only=True)
then load_state_dict(strict=True)) and run on the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.clirun import ok as cli
from tests.frameworks import inputs, run_tf1_restored, run_torch, save_tf1_rnn, torch_rnn

TOL = 1e-5
INPUT, UNITS = 3, 5

BI, TWO = {"bidirectional": True}, {"layers": 2}
EXACT = {
    "lstm": ("lstm", {}), "lstm-2": ("lstm", TWO), "lstm-bi": ("lstm", BI),
    "lstm-2-bi": ("lstm", {**TWO, **BI}),
    "basic-lstm-2": ("basic_lstm", TWO), "basic-lstm-bi": ("basic_lstm", BI),
    "rnn": ("rnn", {}), "rnn-2": ("rnn", TWO), "rnn-bi": ("rnn", BI), "rnn-2-bi": ("rnn", {**TWO, **BI}),
    "lstm-proj-2": ("lstm", {"proj": 2, "layers": 2}), "lstm-scoped": ("lstm", {"scope": "model/encoder"}),
}  # fmt: skip
UNSCOPED = {k: v for k, v in EXACT.items() if "scope" not in v[1]}


def load_torch(path: Path, kind: str, *, scope: str = "", **options):
    import torch

    state = torch.load(path, weights_only=True)
    prefix = scope.replace("/", ".") + "." if scope else ""
    assert all(k.startswith(prefix) for k in state), list(state)
    module = torch_rnn(kind, INPUT, UNITS, **options)
    module.load_state_dict({k[len(prefix) :]: v for k, v in state.items()}, strict=True)
    return module


def save_torch(path: Path, kind: str, seed: int = 0, **options):
    import torch

    torch.manual_seed(seed)
    module = torch_rnn(kind, INPUT, UNITS, **options)
    with torch.no_grad():
        for p in module.parameters():  # distinct values in biases too (torch starts them uniform as well)
            p.uniform_(-0.6, 0.6)
    torch.save(module.state_dict(), path)
    return module


@pytest.mark.parametrize(("kind", "options"), EXACT.values(), ids=EXACT.keys())
def test_tf1_to_torch_matches_outputs(tmp_path, kind, options):
    xs = inputs(size=INPUT)
    _, y_tf = save_tf1_rnn(tmp_path / "tf" / "model.ckpt", kind, INPUT, UNITS, xs=xs, **options)
    cli("convert", tmp_path / "tf", tmp_path / "m.pt", "--mapping", "tf1-to-torch")
    torch_options = {k: v for k, v in options.items() if k != "scope"}
    module = load_torch(tmp_path / "m.pt", kind, scope=options.get("scope", ""), **torch_options)
    np.testing.assert_allclose(run_torch(module, xs), y_tf, atol=TOL, rtol=0)


@pytest.mark.parametrize(("kind", "options"), UNSCOPED.values(), ids=UNSCOPED.keys())
def test_torch_to_tf1_matches_outputs(tmp_path, kind, options):
    xs = inputs(size=INPUT)
    module = save_torch(tmp_path / "m.pt", kind, **options)
    cli("convert", tmp_path / "m.pt", tmp_path / "tf" / "model.ckpt", "--mapping", "torch-to-tf1")
    # torch-to-tf1 writes LSTMCell names; build LSTMCells (BasicLSTMCell would need --rename).
    tf_kind = "lstm" if kind == "basic_lstm" else kind
    y_tf = run_tf1_restored(tmp_path / "tf" / "model.ckpt", tf_kind, INPUT, UNITS, xs, **options)
    np.testing.assert_allclose(y_tf, run_torch(module, xs), atol=TOL, rtol=0)


def test_forget_bias_parameter_matches_cells_built_with_it(tmp_path):
    import tensorflow as tf

    from tests.frameworks import tf1

    _, v1 = tf1()
    xs = inputs(size=INPUT)
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, INPUT])
        y, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.LSTMCell(UNITS, forget_bias=0.25), x, dtype=tf.float32)
        sess.run(v1.global_variables_initializer())
        for v in v1.global_variables():
            v.load(np.random.default_rng(3).uniform(-0.6, 0.6, v.shape).astype(np.float32), sess)
        y_tf = sess.run(y, {x: xs})
        v1.train.Saver().save(sess, str(tmp_path / "tf" / "model.ckpt"), write_meta_graph=False)
    cli("convert", tmp_path / "tf", tmp_path / "right.pt", "-m", "tf1-to-torch", "--set", "forget_bias=0.25")
    cli("convert", tmp_path / "tf", tmp_path / "default.pt", "-m", "tf1-to-torch")
    right = run_torch(load_torch(tmp_path / "right.pt", "lstm"), xs)
    default = run_torch(load_torch(tmp_path / "default.pt", "lstm"), xs)
    np.testing.assert_allclose(right, y_tf, atol=TOL, rtol=0)
    assert np.abs(default - y_tf).max() > 1e-3  # the default 1.0 is wrong for these cells, and it shows


@pytest.mark.parametrize(
    "options", [{}, {"layers": 2}, {"bidirectional": True}], ids=["gru", "gru-2", "gru-bi"]
)
def test_tf1_gru_to_torch_agrees_on_the_first_step_only(tmp_path, options):
    xs = inputs(size=INPUT)
    _, y_tf = save_tf1_rnn(tmp_path / "tf" / "model.ckpt", "gru", INPUT, UNITS, xs=xs, **options)
    cli("convert", tmp_path / "tf", tmp_path / "m.pt", "-m", "tf1-to-torch")
    y = run_torch(load_torch(tmp_path / "m.pt", "gru", **options), xs)
    if options.get("layers", 1) == 1:  # the first step from a zero state: forward at t=0, backward at t=-1
        np.testing.assert_allclose(y[:, 0, :UNITS], y_tf[:, 0, :UNITS], atol=TOL, rtol=0)
        if options.get("bidirectional"):
            np.testing.assert_allclose(y[:, -1, UNITS:], y_tf[:, -1, UNITS:], atol=TOL, rtol=0)
    else:  # layer 2's first step sees layer 1's first output, itself exact
        np.testing.assert_allclose(y[:, 0], y_tf[:, 0], atol=TOL, rtol=0)
    assert np.abs(y - y_tf).max() > 1e-4  # later steps differ: the mapping's "approximate" is true


def test_torch_gru_to_tf1_first_step_when_b_hn_is_zero(tmp_path):
    import torch

    xs = inputs(size=INPUT)
    module = save_torch(tmp_path / "m.pt", "gru")
    with torch.no_grad():
        module.bias_hh_l0[2 * UNITS :] = 0  # b_hn sits inside r * (...) in torch; TF1 cannot hold it
    torch.save(module.state_dict(), tmp_path / "m.pt")
    cli("convert", tmp_path / "m.pt", tmp_path / "tf" / "model.ckpt", "-m", "torch-to-tf1")
    y_tf = run_tf1_restored(tmp_path / "tf" / "model.ckpt", "gru", INPUT, UNITS, xs)
    y = run_torch(module, xs)
    np.testing.assert_allclose(y_tf[:, 0], y[:, 0], atol=TOL, rtol=0)
    assert np.abs(y - y_tf).max() > 1e-4


@pytest.mark.parametrize(
    ("kind", "options", "forget_bias"),
    [
        ("lstm", {"layers": 2, "bidirectional": True}, "0"),
        ("lstm", {"layers": 2}, "1.0"),
        ("gru", {"layers": 2}, None),
        ("rnn", {"bidirectional": True}, None),
    ],
    ids=["lstm-fb0", "lstm-fb1", "gru", "rnn-bi"],
)
def test_tf1_to_torch_to_tf1_reproduces_every_value(tmp_path, kind, options, forget_bias):
    import ckptmap

    values, _ = save_tf1_rnn(tmp_path / "a" / "model.ckpt", kind, INPUT, UNITS, **options)
    fb = ["--set", f"forget_bias={forget_bias}"] if forget_bias else []
    cli("convert", tmp_path / "a", tmp_path / "m.pt", "-m", "tf1-to-torch", *fb)
    cli("convert", tmp_path / "m.pt", tmp_path / "b" / "model.ckpt", "-m", "torch-to-tf1", *fb)
    back = ckptmap.load(tmp_path / "b")
    assert sorted(back) == sorted(values)
    for name, value in values.items():
        got = back[name]
        if forget_bias == "1.0" and name.endswith("lstm_cell/bias"):
            # +1.0 then -1.0 in float32 rounds the f block to the spacing of floats near 1 (2**-23).
            np.testing.assert_allclose(got, value, atol=2**-23, rtol=0)
            f = slice(2 * UNITS, 3 * UNITS)
            np.testing.assert_array_equal(np.delete(got, np.r_[f]), np.delete(value, np.r_[f]))
        else:
            np.testing.assert_array_equal(got, value)
