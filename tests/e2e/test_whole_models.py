"""Whole models, not bare RNNs: an embedding, a 2-layer LSTM and a dense head, trained one step with
Adam, convert between TF1, PyTorch and Keras 3 with the built-in mappings in one command each, and
each framework's own loader restores the result into the same architecture with the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.clirun import ok, run
from tests.frameworks import tf1, tf1_training_graph

VOCAB, DIM, UNITS, LAYERS, BATCH, STEPS = 11, 5, 6, 2, 3, 4


def _ids() -> np.ndarray:
    return np.random.default_rng(7).integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32)


def save_tf1_language_model(prefix: Path, *, learning_rate_variable: bool = False) -> np.ndarray:
    """TF1 code as people wrote it: get_variable("embedding") + embedding_lookup, a MultiRNNCell of
    LSTMCells under dynamic_rnn, tf.compat.v1.layers.dense, AdamOptimizer with a global_step (and,
    if asked, the learning rate as a bare `Variable`). All weights random (biases too), one
    training step, then Saver. Returns the logits after it."""
    tf, v1 = tf1()
    rng = np.random.default_rng(0)
    with tf1_training_graph() as sess:
        ids = v1.placeholder(tf.int32, [None, None])
        embedding = v1.get_variable("embedding", [VOCAB, DIM])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(UNITS) for _ in range(LAYERS)])
        out, _ = v1.nn.dynamic_rnn(cell, v1.nn.embedding_lookup(embedding, ids), dtype=tf.float32)
        logits = v1.layers.dense(out, VOCAB)
        loss = tf.reduce_mean(tf.square(logits))
        rate = v1.Variable(0.01, trainable=False, name="Variable") if learning_rate_variable else 0.01
        step = v1.train.AdamOptimizer(rate).minimize(loss, global_step=v1.train.get_or_create_global_step())
        sess.run(v1.global_variables_initializer())
        for var in v1.trainable_variables():
            sess.run(var.assign(rng.normal(0, 0.5, var.shape.as_list()).astype(np.float32)))
        sess.run(step, {ids: _ids()})
        v1.train.Saver().save(sess, str(prefix))
        return sess.run(logits, {ids: _ids()})


def tf1_logits(prefix: Path) -> np.ndarray:
    """The same TF1 graph, fresh, restored by Saver from `prefix`."""
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        ids = v1.placeholder(tf.int32, [None, None])
        embedding = v1.get_variable("embedding", [VOCAB, DIM])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(UNITS) for _ in range(LAYERS)])
        out, _ = v1.nn.dynamic_rnn(cell, v1.nn.embedding_lookup(embedding, ids), dtype=tf.float32)
        logits = v1.layers.dense(out, VOCAB)
        v1.train.Saver().restore(sess, str(prefix))
        return sess.run(logits, {ids: _ids()})


def torch_model():
    import torch

    class LanguageModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, DIM)
            self.rnn = torch.nn.LSTM(DIM, UNITS, LAYERS, batch_first=True)
            self.dense = torch.nn.Linear(UNITS, VOCAB)

        def forward(self, ids):
            return self.dense(self.rnn(self.embedding(ids))[0])

    return LanguageModel()


def torch_logits(model) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(_ids()).long()).numpy()


def keras_model():
    import keras

    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, DIM),
            *(keras.layers.LSTM(UNITS, return_sequences=True) for _ in range(LAYERS)),
            keras.layers.Dense(VOCAB),
        ]
    )


def test_tf1_model_with_adam_converts_to_keras3_in_one_command(tmp_path, capsys):
    expected = save_tf1_language_model(tmp_path / "tf" / "model.ckpt")
    ok("convert", str(tmp_path / "tf"), str(tmp_path / "m.weights.h5"), "-m", "tf1-to-keras")
    out = capsys.readouterr().out
    assert "optimizer slot" in out and "training bookkeeping" in out  # said, not silently
    model = keras_model()
    model.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(model.predict(_ids(), verbose=0), expected, atol=1e-5)


def tf_keras_model():
    import tf_keras

    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            layers.InputLayer((None,), dtype="int32"),
            layers.Embedding(VOCAB, DIM),
            *(layers.LSTM(UNITS, return_sequences=True) for _ in range(LAYERS)),
            layers.Dense(VOCAB),
        ]
    )


def test_tf1_model_converts_to_a_keras2_file_tf_keras_loads_by_layer_order(tmp_path):
    expected = save_tf1_language_model(tmp_path / "tf" / "model.ckpt")
    ok("convert", str(tmp_path / "tf"), str(tmp_path / "m.h5"), "-m", "tf1-to-keras")
    model = tf_keras_model()
    model.load_weights(str(tmp_path / "m.h5"))  # by order: the TF names' sorted order would not load
    np.testing.assert_allclose(model.predict(_ids(), verbose=0), expected, atol=1e-5)


def test_tf1_model_converts_to_a_tf2_checkpoint_of_a_keras_model(tmp_path):
    expected = save_tf1_language_model(tmp_path / "tf" / "model.ckpt")
    ok("convert", str(tmp_path / "tf"), str(tmp_path / "tf2" / "ckpt"), "-m", "tf1-to-keras", "--to", "tf2")
    model = tf_keras_model()
    model.load_weights(str(tmp_path / "tf2" / "ckpt")).assert_existing_objects_matched()
    np.testing.assert_allclose(model.predict(_ids(), verbose=0), expected, atol=1e-5)


def test_tf1_model_converts_to_a_torch_module_and_back(tmp_path):
    expected = save_tf1_language_model(tmp_path / "tf" / "model.ckpt")
    ok("convert", str(tmp_path / "tf"), str(tmp_path / "m.pt"), "-m", "tf1-to-torch")
    import torch

    model = torch_model()
    model.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    np.testing.assert_allclose(torch_logits(model), expected, atol=1e-5)

    ok("convert", str(tmp_path / "m.pt"), str(tmp_path / "back" / "model.ckpt"), "-m", "torch-to-tf1")
    np.testing.assert_allclose(tf1_logits(tmp_path / "back" / "model.ckpt"), expected, atol=1e-5)


def test_torch_model_converts_to_keras3_and_back(tmp_path):
    import torch

    torch.manual_seed(0)
    model = torch_model()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    expected = torch_logits(model)

    ok("convert", str(tmp_path / "m.pt"), str(tmp_path / "m.weights.h5"), "-m", "torch-to-keras")
    keras = keras_model()
    keras.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(keras.predict(_ids(), verbose=0), expected, atol=1e-5)

    # The module `rnn` became Keras layers `rnn` and `rnn_1`; each Keras layer becomes a module of
    # its own name, so the stack is renamed back into one nn.LSTM (as keras-to-torch's header says).
    ok(
        "convert",
        str(tmp_path / "m.weights.h5"),
        str(tmp_path / "back.pt"),
        "-m",
        "keras-to-torch",
        "--rename",
        r"^rnn_1/(\w+)_l0=rnn/\1_l1",
    )
    again = torch_model()
    again.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    np.testing.assert_allclose(torch_logits(again), expected, atol=1e-5)


def test_tensors_a_keras_file_has_no_place_for_are_dropped_and_named(tmp_path, capsys):
    expected = save_tf1_language_model(tmp_path / "tf" / "model.ckpt", learning_rate_variable=True)
    ok("convert", str(tmp_path / "tf"), str(tmp_path / "m.weights.h5"), "-m", "tf1-to-keras")
    assert "1 with no place in a keras3 file (Variable)" in capsys.readouterr().out
    model = keras_model()
    model.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(model.predict(_ids(), verbose=0), expected, atol=1e-5)


def test_a_mapping_for_another_framework_or_without_rnn_rules_is_no_success(tmp_path, capsys):
    save_tf1_language_model(tmp_path / "tf" / "model.ckpt")
    code, _, err = run(capsys, "convert", tmp_path / "tf", tmp_path / "x.pt", "-m", "torch-to-tf1")
    assert code == 1 and "converts torch checkpoints" in err and "tf1-to-torch" in err
    assert not (tmp_path / "x.pt").exists()
    mapping = tmp_path / "grus.yaml"  # a user's mapping whose only cell rule is for GRUs
    mapping.write_text(
        "from: tf1\nto: torch\nrules:\n  - cell: tf1.gru\n    to: torch.gru\n"
        "    make: {weight_ih: gates_kernel, weight_hh: gates_kernel, bias_ih: gates_bias, "
        "bias_hh: candidate_bias}\n"
    )
    code, _, err = run(capsys, "convert", tmp_path / "tf", tmp_path / "x.pt", "-m", mapping)
    assert code == 1 and "converted none of the 1 RNN(s)" in err and not (tmp_path / "x.pt").exists()
    code, _, _ = run(capsys, "convert", tmp_path / "tf", tmp_path / "x.pt", "-m", mapping, "--allow-noop")
    assert code == 0 and (tmp_path / "x.pt").exists()
