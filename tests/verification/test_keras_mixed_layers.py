"""A Keras 3 file mixing recurrent layers of different kinds verifies layer by layer.

The fresh Keras model holds every recurrent layer of the file (Keras 3 finds layers by class and
position); each must be fed its own state inputs: an LSTM has two per direction, a GRU or a
SimpleRNN one. Counting another layer's inputs with the verified layer's state parts made Keras
refuse the inputs ("expects 5 named input(s) ... but it received 4").
"""

from __future__ import annotations

import numpy as np

from ckptmap.verification.report import EQUAL
from ckptmap.verification.run import verify
from tests.clirun import run


def _mixed_model(path):
    """Keras 3 functional model: GRU -> Bidirectional(LSTM) -> SimpleRNN, distinct weights."""
    import keras

    x = keras.Input((None, 3))
    y = keras.layers.GRU(4, return_sequences=True)(x)
    y = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(y)
    y = keras.layers.SimpleRNN(6, return_sequences=True)(y)
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save_weights(path)
    return path


def test_keras3_mixed_rnn_kinds_verify_against_torch_and_back(capsys, tmp_path):
    src = _mixed_model(tmp_path / "a.weights.h5")
    code, _, err = run(capsys, "convert", src, tmp_path / "b.pt", "-m", "keras-to-torch")
    assert code == 0, err
    code, out, err = run(capsys, "verify", src, tmp_path / "b.pt")
    assert code == 0 and "Internal error" not in err, err
    assert "OK: 3 equal." in out
    for kind in ("LSTM at bidirectional", "GRU at gru", "SimpleRNN at simple_rnn"):
        assert kind in out

    # The reverse: PyTorch modules into a Keras 3 file of the same three layers.
    code, _, err = run(
        capsys, "convert", tmp_path / "b.pt", tmp_path / "c.weights.h5", "-m", "torch-to-keras"
    )
    assert code == 0, err
    report = verify(tmp_path / "b.pt", tmp_path / "c.weights.h5")
    assert sorted(p.destination.kind for p in report.pairs) == ["gru", "lstm", "rnn"]
    assert report.ok and all(p.verdict == EQUAL for p in report.pairs), [
        (p.verdict, p.message) for p in report.pairs
    ]
