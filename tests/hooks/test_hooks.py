"""Restore hooks against real models: PyTorch modules, TF1 graphs, Keras models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap
import ckptmap.keras
import ckptmap.tf1
import ckptmap.torch
from tests.frameworks import tf1

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"
TOL = 1e-5


def test_torch_module_loads_a_tf1_lstm_and_matches_tf(tmp_path):
    import torch

    io = np.load(LSTM2 / "io.npz")
    module = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True)
    report = ckptmap.torch.load_into(module, LSTM2, "tf1-to-torch")
    with torch.no_grad():
        y = module(torch.from_numpy(io["x"]))[0].numpy()
    np.testing.assert_allclose(y, io["y"], atol=TOL, rtol=0)
    assert report.complete and len(report.loaded) == 8 and len(report.converted) == 8
    assert "loaded" in str(report) and report.to_dict()["mappings"] == ["tf1-to-torch"]


def test_torch_strict_load_names_missing_and_unexpected_with_suggestions():
    import torch

    module = torch.nn.Sequential()
    module.add_module("encoder", torch.nn.LSTM(3, 8, num_layers=2, batch_first=True))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ckptmap.MappingError, match=r"did you mean weight_ih_l0\?.*Nothing was loaded") as err:
        ckptmap.torch.load_into(module, LSTM2, "tf1-to-torch")
    assert "encoder.weight_ih_l0" in str(err.value) and err.value.hint
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # untouched
    report = ckptmap.torch.load_into(module, LSTM2, "tf1-to-torch", rename={"^": "encoder/"})
    assert report.complete


def test_frozen_parameters_stay_unchanged_after_an_optimizer_step():
    import torch

    module = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True)
    report = ckptmap.torch.load_into(module, LSTM2, "tf1-to-torch", freeze=["*_l0"])
    assert sorted(report.frozen) == ["bias_hh_l0", "bias_ih_l0", "weight_hh_l0", "weight_ih_l0"]
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if n.endswith("_l0")}
    trained = {n: p.detach().clone() for n, p in module.named_parameters() if n.endswith("_l1")}
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    module(torch.randn(2, 4, 3))[0].square().sum().backward()
    optimizer.step()
    params = dict(module.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trained.items())
    with pytest.raises(ckptmap.UsageError, match=r"freeze pattern 'decoder\.\*' matches no parameter"):
        ckptmap.torch.load_into(module, LSTM2, "tf1-to-torch", freeze=["decoder.*"])


def _tf1_lstm_graph(tf, v1, scope: str):
    x = v1.placeholder(tf.float32, [None, None, 3])
    with v1.variable_scope(scope):
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(8) for _ in range(2)])
        y, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        head = v1.get_variable("head", [8, 2])
    return x, y, head


def test_tf1_restore_into_renamed_scopes_refuses_uncovered_variables_unless_asked():
    tf, v1 = tf1()
    io = np.load(LSTM2 / "io.npz")
    with tf.Graph().as_default(), v1.Session() as sess:
        x, y, _ = _tf1_lstm_graph(tf, v1, "model_3")
        with pytest.raises(
            ckptmap.MappingError, match=r"1 graph variables missing from the checkpoint \(model_3/head\)"
        ):
            ckptmap.tf1.restore(sess, LSTM2, rename={"^rnn/": "model_3/rnn/"})
        assert sess.run(v1.report_uninitialized_variables()).size == 5  # nothing was restored
        report = ckptmap.tf1.restore(sess, LSTM2, rename={"^rnn/": "model_3/rnn/"}, init_missing=True)
        assert report.initialized == ["model_3/head"] and len(report.loaded) == 4
        assert sess.run(v1.report_uninitialized_variables()).size == 0
        np.testing.assert_allclose(sess.run(y, {x: io["x"]}), io["y"], atol=TOL, rtol=0)


def test_tf1_restore_only_a_scope_and_from_pytorch():
    tf, v1 = tf1()
    io = np.load(SAMPLES / "torch_lstm.io.npz")
    with tf.Graph().as_default(), v1.Session() as sess:
        x, y, _ = _tf1_lstm_graph(tf, v1, "enc")
        report = ckptmap.tf1.restore(
            sess, SAMPLES / "torch_lstm.pt", rename={"^rnn/": "enc/rnn/"}, scope="enc/rnn"
        )
        assert report.mappings == ["torch-to-tf1", "--rename"] and len(report.converted) == 4
        np.testing.assert_allclose(sess.run(y, {x: io["x"]}), io["y"], atol=TOL, rtol=0)


@pytest.mark.parametrize("source", [LSTM2, SAMPLES / "torch_lstm.pt"], ids=["renamed-tf1", "mapped-torch"])
def test_assignment_map_feeds_init_from_checkpoint(tmp_path, source):
    tf, v1 = tf1()
    io = np.load(LSTM2 / "io.npz" if source == LSTM2 else SAMPLES / "torch_lstm.io.npz")
    am = ckptmap.tf1.assignment_map(
        source, rename={"^rnn/": "model_3/rnn/"}, scope="model_3", workdir=str(tmp_path)
    )
    assert (am.checkpoint == str(ckptmap.load(LSTM2).path)) == (
        source == LSTM2
    )  # renames only: the source itself
    with tf.Graph().as_default(), v1.Session() as sess:
        x, y, _ = _tf1_lstm_graph(tf, v1, "model_3")
        v1.train.init_from_checkpoint(*am)
        sess.run(v1.global_variables_initializer())
        np.testing.assert_allclose(sess.run(y, {x: io["x"]}), io["y"], atol=TOL, rtol=0)


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_keras_model_loads_through_load_into(flavour):
    import importlib

    keras = importlib.import_module("keras" if flavour == "keras3" else "tf_keras")
    io = np.load(SAMPLES / "torch_lstm.io.npz")
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.LSTM(8, return_sequences=True, name="lstm"),  # names as torch-to-keras gives
            keras.layers.LSTM(8, return_sequences=True, name="lstm_1"),
        ]
    )
    report = ckptmap.keras.load_into(model, SAMPLES / "torch_lstm.pt", freeze=["lstm"])
    assert (
        report.mappings == ["torch-to-keras"] and report.frozen == ["lstm"] and not model.layers[0].trainable
    )
    np.testing.assert_allclose(np.asarray(model(io["x"])), io["y"], atol=TOL, rtol=0)


def test_keras_gru_of_the_wrong_flavour_is_refused_with_a_hint():
    import keras

    model = keras.Sequential(
        [keras.Input((None, 3)), keras.layers.Bidirectional(keras.layers.GRU(4), name="bidirectional")]
    )
    with pytest.raises(ckptmap.MappingError, match="shape mismatches") as err:
        ckptmap.keras.load_into(model, SAMPLES / "tf1_bigru")
    assert "reset_after=False" in err.value.hint
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Bidirectional(
                keras.layers.GRU(4, return_sequences=True, reset_after=False), name="bidirectional"
            ),
        ]
    )
    io = np.load(SAMPLES / "tf1_bigru" / "io.npz")
    ckptmap.keras.load_into(model, SAMPLES / "tf1_bigru")
    np.testing.assert_allclose(
        np.asarray(model(io["x"])), io["y"], atol=TOL, rtol=0
    )  # exact: GRUCell = reset_after=False


# --- what the mapping says goes into the report ------------------------------------------------------------


def test_torch_load_into_says_a_tf1_gru_is_not_exact():
    import torch

    io = np.load(SAMPLES / "tf1_gru" / "io.npz")
    module = torch.nn.GRU(3, 4, batch_first=True)
    report = ckptmap.torch.load_into(module, SAMPLES / "tf1_gru", "tf1-to-torch", rename={"^encoder/": ""})
    [note] = [n for n in report.notes if n.startswith("NOT EXACT (encoder)")]
    assert "reset gate" in note and f"note: {note}" in str(report) and note in report.to_dict()["notes"]
    with torch.no_grad():
        y = module(torch.from_numpy(io["x"]))[0].numpy()
    # What "not exact" means: the first step from a zero state agrees, later steps drift.
    np.testing.assert_allclose(y[:, 0], io["y"][:, 0], atol=TOL, rtol=0)
    assert np.abs(y - io["y"]).max() > 1e-3


def test_tf1_restore_says_a_torch_gru_is_not_exact(tmp_path):
    import torch

    from tests.verification.conftest import INPUT, UNITS, torch_source

    src = torch_source(tmp_path / "gru.pt", "gru", zero_b_hn=True)  # b_hn = 0: the first step agrees
    module = torch.nn.GRU(INPUT, UNITS, batch_first=True)
    module.load_state_dict(torch.load(src, weights_only=True))
    xs = np.random.default_rng(1).standard_normal((2, 6, INPUT)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(xs))[0].numpy()
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, INPUT])
        y, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.GRUCell(UNITS), x, dtype=tf.float32)
        report = ckptmap.tf1.restore(sess, src)
        got = sess.run(y, {x: xs})
    assert report.mappings == ["torch-to-tf1"] and any("NOT EXACT ((root))" in n for n in report.notes)
    assert any("b_hn" in n for n in report.notes) and "note: NOT EXACT" in str(report)
    np.testing.assert_allclose(got[:, 0], expected[:, 0], atol=TOL, rtol=0)


def test_keras_load_into_carries_a_user_mappings_approximation(tmp_path):
    import keras

    lossy = tmp_path / "rounded.yaml"
    lossy.write_text(
        "name: rounded-kernels\ndescription: LSTM kernels as a quantizing exporter left them.\n"
        "from: keras\nto: keras\nunmatched: keep\nrules:\n"
        "  - name: rounded kernels\n    match: '(?P<layer>lstm(?:_1)?)/cell/kernel'\n"
        "    to: {'{layer}/cell/kernel': 'src'}\n    approximate: the exporter rounded the input kernels.\n"
    )
    io = np.load(SAMPLES / "torch_lstm.io.npz")
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.LSTM(8, return_sequences=True, name="lstm"),
            keras.layers.LSTM(8, return_sequences=True, name="lstm_1"),
        ]
    )
    report = ckptmap.keras.load_into(model, SAMPLES / "torch_lstm.pt", ["torch-to-keras", lossy])
    assert report.notes == [
        "NOT EXACT (lstm/cell/kernel, lstm_1/cell/kernel): the exporter rounded the input kernels."
    ]
    np.testing.assert_allclose(np.asarray(model(io["x"])), io["y"], atol=TOL, rtol=0)
