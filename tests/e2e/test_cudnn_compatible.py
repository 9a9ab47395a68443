"""TF1 `tf.contrib.cudnn_rnn` checkpoints as their saveables write them: the canonical variables of
CudnnCompatibleLSTMCell / CudnnCompatibleGRUCell under `rnn/multi_rnn_cell/cell_<k>` (one
direction) or `stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/fw|bw` (both), names and
arithmetic from TF 1.15 (tensorflow/contrib/cudnn_rnn/python/ops/cudnn_rnn_ops.py:
CudnnCompatibleGRUCell.call; CudnnCompatibleLSTMCell is LSTMBlockCell(forget_bias=0)).

TensorFlow 2 cannot build those cells, so each checkpoint is written with get_variable under the
canonical names, and its outputs are computed here in numpy from TF 1.15's code. The conversions
to nn.GRU / nn.LSTM (load_state_dict(strict=True)) and to Keras (load_weights) must give them
exactly; `ckptmap verify` must call them EQUAL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap
from tests.clirun import run
from tests.frameworks import tf1

IN, UNITS, STEPS, BATCH = 3, 4, 5, 2
RNG = np.random.default_rng(3)
X = RNG.standard_normal((BATCH, STEPS, IN)).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def gru_weights(rng: np.random.Generator, inputs: int) -> dict[str, np.ndarray]:
    shapes = {
        "gates/kernel": (inputs + UNITS, 2 * UNITS),
        "gates/bias": (2 * UNITS,),
        "candidate/input_projection/kernel": (inputs, UNITS),
        "candidate/input_projection/bias": (UNITS,),
        "candidate/hidden_projection/kernel": (UNITS, UNITS),
        "candidate/hidden_projection/bias": (UNITS,),
    }
    return {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in shapes.items()}


def gru_reference(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """TF 1.15 CudnnCompatibleGRUCell.call, step by step."""
    h, out = np.zeros((x.shape[0], UNITS), np.float32), []
    for t in range(x.shape[1]):
        xt = x[:, t]
        r, u = np.split(sigmoid(np.concatenate([xt, h], 1) @ w["gates/kernel"] + w["gates/bias"]), 2, axis=1)
        candidate = xt @ w["candidate/input_projection/kernel"] + w["candidate/input_projection/bias"]
        hidden = h @ w["candidate/hidden_projection/kernel"] + w["candidate/hidden_projection/bias"]
        c = np.tanh(candidate + r * hidden)
        h = (1 - u) * c + u * h
        out.append(h)
    return np.stack(out, 1)


def lstm_reference(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """LSTMBlockCell(forget_bias=0): gates i, c, f, o along the kernel's columns."""
    h = c = np.zeros((x.shape[0], UNITS), np.float32)
    out = []
    for t in range(x.shape[1]):
        i, g, f, o = np.split(np.concatenate([x[:, t], h], 1) @ w["kernel"] + w["bias"], 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def save(prefix: Path, variables: dict[str, np.ndarray]) -> None:
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        for name, value in variables.items():
            v1.get_variable(name, initializer=value)
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(prefix))


@pytest.fixture(scope="module")
def cudnn_gru(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2-layer CudnnGRU under `encoder`, as its saveable writes it."""
    rng = np.random.default_rng(0)
    layers = [gru_weights(rng, IN), gru_weights(rng, UNITS)]
    variables = {
        f"encoder/rnn/multi_rnn_cell/cell_{k}/cudnn_compatible_gru_cell/{path}": value
        for k, weights in enumerate(layers)
        for path, value in weights.items()
    }
    prefix = tmp_path_factory.mktemp("cudnn_gru") / "model.ckpt"
    save(prefix, variables)
    return prefix, gru_reference(layers[1], gru_reference(layers[0], X))


@pytest.fixture(scope="module")
def cudnn_bilstm(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 1-layer bidirectional CudnnLSTM, as its saveable writes it."""
    rng = np.random.default_rng(1)
    sides = {
        d: {"kernel": rng.normal(0, 0.5, (IN + UNITS, 4 * UNITS)), "bias": rng.normal(0, 0.5, 4 * UNITS)}
        for d in ("fw", "bw")
    }
    place = "stack_bidirectional_rnn/cell_0/bidirectional_rnn"
    variables = {
        f"{place}/{d}/cudnn_compatible_lstm_cell/{role}": value.astype(np.float32)
        for d, weights in sides.items()
        for role, value in weights.items()
    }
    prefix = tmp_path_factory.mktemp("cudnn_lstm") / "model.ckpt"
    save(prefix, variables)
    weights = {d: {k: v.astype(np.float32) for k, v in w.items()} for d, w in sides.items()}
    fw = lstm_reference(weights["fw"], X)
    bw = lstm_reference(weights["bw"], X[:, ::-1])[:, ::-1]
    return prefix, np.concatenate([fw, bw], -1)


def test_inspect_names_the_cudnn_compatible_cells(cudnn_gru, capsys):
    code, out, _ = run(capsys, "inspect", cudnn_gru[0])
    assert code == 0
    assert "CudnnCompatibleGRUCell at encoder: input 3, units 4, 2 layers, unidirectional" in out


def test_a_cudnn_gru_converts_exactly_to_nn_gru(cudnn_gru, tmp_path, capsys):
    import torch

    prefix, expected = cudnn_gru
    code, out, err = run(capsys, "convert", prefix, tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 0, err
    assert "NOT EXACT" not in out + err
    module = torch.nn.Module()
    module.encoder = torch.nn.GRU(IN, UNITS, 2, batch_first=True)
    module.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    with torch.no_grad():
        got = module.encoder(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    code, out, err = run(capsys, "verify", prefix, tmp_path / "m.pt")
    assert code == 0 and out.splitlines()[-1] == "OK: 1 equal.", out + err


def test_a_cudnn_gru_converts_exactly_to_a_keras_gru(cudnn_gru, tmp_path, capsys):
    import keras

    prefix, expected = cudnn_gru
    code, _, err = run(capsys, "convert", prefix, tmp_path / "m.weights.h5", "-m", "tf1-to-keras")
    assert code == 0, err
    model = keras.Sequential(
        [
            keras.Input((None, IN)),
            keras.layers.GRU(UNITS, return_sequences=True),
            keras.layers.GRU(UNITS, return_sequences=True),
        ]
    )
    model.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(model.predict(X, verbose=0), expected, atol=1e-5)


def test_a_bidirectional_cudnn_lstm_converts_exactly_to_nn_lstm(cudnn_bilstm, tmp_path, capsys):
    import torch

    prefix, expected = cudnn_bilstm
    code, _, err = run(capsys, "convert", prefix, tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 0, err
    lstm = torch.nn.LSTM(IN, UNITS, bidirectional=True, batch_first=True)
    lstm.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    with torch.no_grad():
        got = lstm(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    code, out, err = run(capsys, "verify", prefix, tmp_path / "m.pt")
    assert code == 0 and out.splitlines()[-1] == "OK: 1 equal.", out + err


def test_nn_gru_goes_to_cudnn_rnns_canonical_names_and_back_exactly(tmp_path, capsys):
    # torch-to-tf1 --set cudnn=true writes what a bidirectional 2-layer CudnnGRU's saveable writes
    # (cudnn_rnn_ops.py _TFCanonicalNamePrefix), computing what TF 1.15's cell computes.
    import torch

    torch.manual_seed(0)
    gru = torch.nn.GRU(IN, UNITS, 2, bidirectional=True, batch_first=True)
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "gru.pt",
        tmp_path / "m.ckpt",
        "-m",
        "torch-to-tf1",
        "--set",
        "cudnn=true",
    )
    assert code == 0, err
    tf = ckptmap.load(tmp_path / "m.ckpt")
    place = "stack_bidirectional_rnn/cell_{k}/bidirectional_rnn/{d}/cudnn_compatible_gru_cell"
    assert sorted(tf) == sorted(
        f"{place.format(k=k, d=d)}/{path}"
        for k in (0, 1)
        for d in ("fw", "bw")
        for path in gru_weights(RNG, IN)
    )
    with torch.no_grad():
        expected = gru(torch.from_numpy(X))[0].numpy()
    layer0 = [
        gru_reference({p: tf[f"{place.format(k=0, d=d)}/{p}"] for p in gru_weights(RNG, IN)}, x)
        for d, x in (("fw", X), ("bw", X[:, ::-1]))
    ]
    below = np.concatenate([layer0[0], layer0[1][:, ::-1]], -1)
    layer1 = [
        gru_reference({p: tf[f"{place.format(k=1, d=d)}/{p}"] for p in gru_weights(RNG, IN)}, x)
        for d, x in (("fw", below), ("bw", below[:, ::-1]))
    ]
    np.testing.assert_allclose(np.concatenate([layer1[0], layer1[1][:, ::-1]], -1), expected, atol=1e-5)
    code, _, err = run(capsys, "convert", tmp_path / "m.ckpt", tmp_path / "back.pt", "-m", "tf1-to-torch")
    assert code == 0, err
    # The r and u gates' two biases come back summed into bias_ih: the same GRU, other parameters.
    again = torch.nn.GRU(IN, UNITS, 2, bidirectional=True, batch_first=True)
    again.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(X))[0].numpy(), expected, atol=1e-5)


def test_a_keras_lstm_goes_to_a_one_layer_cudnn_lstms_names(tmp_path, capsys):
    import keras

    model = keras.Sequential(
        [keras.Input((None, IN)), keras.layers.LSTM(UNITS, return_sequences=True, name="enc")]
    )
    model.set_weights([RNG.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save_weights(tmp_path / "m.weights.h5")
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "m.weights.h5",
        tmp_path / "m.ckpt",
        "-m",
        "keras-to-tf1",
        "--set",
        "cudnn=true",
    )
    assert code == 0, err
    tf = ckptmap.load(tmp_path / "m.ckpt")
    cell = "enc/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"  # a stack's name even for one layer
    assert sorted(tf) == [f"{cell}/bias", f"{cell}/kernel"]
    weights = {"kernel": tf[f"{cell}/kernel"], "bias": tf[f"{cell}/bias"]}
    np.testing.assert_allclose(lstm_reference(weights, X), model.predict(X, verbose=0), atol=1e-5)
