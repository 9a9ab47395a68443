"""Keras 2 `CuDNNLSTM` / `CuDNNGRU` weights (.h5), against tf-keras' own conversion.

tf-keras builds these layers on a CPU (it only runs them on a GPU) and saves their weights in
cuDNN's layout: a bias [2*g*units] and input-kernel gate blocks holding cuDNN's matrices row by
row. Its `load_weights` of such a file into a plain LSTM / GRU(reset_after=True) converts them
(tf_keras/src/saving/legacy/hdf5_format.py, `_convert_rnn_weights`): that real loader is the
reference every conversion here must match, exactly for the Keras files and numerically for
PyTorch and TF1 (restored by their own loaders through `ckptmap verify`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ckptmap
from tests.clirun import run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

IN, UNITS = 3, 5
X = np.random.default_rng(7).standard_normal((2, 6, IN)).astype(np.float32)
REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"
TEXTGENRNN = REAL / "textgenrnn_keras215_cudnnlstm2_attention" / "hacker_news.hdf5"


def tf_keras_layer(kind: str, cudnn: bool):
    import tf_keras
    from tf_keras.src.layers import CuDNNGRU, CuDNNLSTM

    if cudnn:
        return (CuDNNLSTM if kind == "lstm" else CuDNNGRU)(UNITS, name="rnn_1")
    if kind == "lstm":
        return tf_keras.layers.LSTM(UNITS, return_sequences=True, name="rnn_1")
    return tf_keras.layers.GRU(UNITS, return_sequences=True, reset_after=True, name="rnn_1")


def tf_keras_model(kind: str, cudnn: bool):
    import tf_keras

    return tf_keras.Sequential([tf_keras.Input((None, IN)), tf_keras_layer(kind, cudnn)])


@pytest.fixture(scope="module", params=["lstm", "gru"])
def cudnn_file(request, tmp_path_factory) -> tuple[str, Path, list[np.ndarray], np.ndarray]:
    """(kind, a CuDNN layer's .h5, the weights tf-keras loads from it into a plain layer, its outputs)."""
    kind = request.param
    rng = np.random.default_rng(0)
    model = tf_keras_model(kind, cudnn=True)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp(f"cudnn_{kind}") / "weights.h5"
    model.save_weights(str(path))
    plain = tf_keras_model(kind, cudnn=False)
    plain.load_weights(str(path))  # tf-keras converts the CuDNN weights here
    return kind, path, plain.get_weights(), plain.predict(X, verbose=0)


def test_inspect_names_the_cudnn_layer(cudnn_file, capsys):
    kind, path, _, _ = cudnn_file
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert f"{'CuDNNLSTM' if kind == 'lstm' else 'CuDNNGRU'} at rnn_1: input 3, units 5, 1 layer" in out


def test_keras_cudnn_writes_what_tf_keras_loads_into_keras3(cudnn_file, tmp_path, capsys):
    import keras

    kind, path, expected, outputs = cudnn_file
    code, _, err = run(capsys, "convert", path, tmp_path / "m.weights.h5", "-m", "keras-cudnn")
    assert code == 0, err
    layer = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    model = keras.Sequential([keras.Input((None, IN)), layer(UNITS, return_sequences=True, name="rnn_1")])
    model.load_weights(tmp_path / "m.weights.h5")
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.predict(X, verbose=0), outputs, atol=1e-5)


def test_keras_cudnn_writes_a_keras2_file_of_plain_layers(cudnn_file, tmp_path, capsys):
    kind, path, expected, _ = cudnn_file
    code, _, err = run(capsys, "convert", path, tmp_path / "m.h5", "-m", "keras-cudnn")
    assert code == 0, err
    model = tf_keras_model(kind, cudnn=False)
    model.load_weights(str(tmp_path / "m.h5"))
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_cudnn_file_written_back_still_loads_into_the_cudnn_layer(cudnn_file, tmp_path, capsys):
    kind, path, _, _ = cudnn_file
    code, _, err = run(capsys, "convert", path, tmp_path / "same.h5")
    assert code == 0, err
    original, copy = tf_keras_model(kind, cudnn=True), tf_keras_model(kind, cudnn=True)
    original.load_weights(str(path))
    copy.load_weights(str(tmp_path / "same.h5"))
    for got, want in zip(copy.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_keras_to_torch_matches_tf_keras_conversion(cudnn_file, tmp_path, capsys):
    import torch

    kind, path, _, outputs = cudnn_file
    code, _, err = run(capsys, "convert", path, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 0, err
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(IN, UNITS, batch_first=True)
    state = {k.removeprefix("rnn_1."): v for k, v in torch.load(tmp_path / "m.pt", weights_only=True).items()}
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = module(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(got, outputs, atol=1e-5)


@pytest.mark.parametrize("mapping,suffix", [("keras-to-torch", "pt"), ("keras-to-tf1", "ckpt")])
def test_verify_calls_the_conversions_equal(cudnn_file, mapping, suffix, tmp_path, capsys):
    # verify restores the source with tf-keras' loader (which converts it) and the target with
    # PyTorch's or a TF1 Saver; a CuDNNGRU goes to TF1's CudnnCompatibleGRUCell, exact as a GRUCell is not.
    _, path, _, _ = cudnn_file
    dst = tmp_path / f"m.{suffix}"
    assert run(capsys, "convert", path, dst, "-m", mapping)[0] == 0
    code, out, err = run(capsys, "verify", path, dst, "-m", mapping)
    assert code == 0 and out.splitlines()[-1] == "OK: 1 equal.", out + err


@pytest.mark.skipif(not TEXTGENRNN.is_file(), reason="../shared/real_checkpoints is not here")
def test_textgenrnn_cudnn_lstms_convert_to_what_tf_keras_loads(tmp_path, capsys):
    # minimaxir/textgenrnn's weights (Keras 2.1.5): two CuDNNLSTM(128) over a 100-wide embedding.
    import tf_keras

    code, out, _ = run(capsys, "inspect", TEXTGENRNN)
    assert code == 0 and "CuDNNLSTM at rnn_1: input 100, units 128" in out and "CuDNNLSTM at rnn_2" in out
    reference = tf_keras.Sequential(
        [
            tf_keras.Input((None, 100)),
            tf_keras.layers.LSTM(128, return_sequences=True, name="rnn_1"),
            tf_keras.layers.LSTM(128, return_sequences=True, name="rnn_2"),
        ]
    )
    reference.load_weights(str(TEXTGENRNN), by_name=True)
    code, _, err = run(capsys, "convert", TEXTGENRNN, tmp_path / "m.h5", "-m", "keras-cudnn")
    assert code == 0, err
    weights = ckptmap.load(tmp_path / "m.h5")  # its custom attention layer stays, as Keras 2 keeps it
    for layer in ("rnn_1", "rnn_2"):
        want = reference.get_layer(layer).get_weights()
        got = [weights[f"{layer}/cell/{role}"] for role in ("kernel", "recurrent_kernel", "bias")]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    code, _, err = run(capsys, "convert", TEXTGENRNN, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 0, err
    code, out, err = run(capsys, "verify", TEXTGENRNN, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 0 and out.splitlines()[-1] == "OK: 2 equal.", out + err
