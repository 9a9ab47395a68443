"""The Keras mappings through `verify`, each pair with the verdict the mathematics gives it:
Keras GRU(reset_after=True) <-> nn.GRU exact, TF1 GRUCell <-> GRU(reset_after=False) exact, the other
GRU pairs approximate; LSTM and SimpleRNN exact; stacked and Bidirectional layers too."""

from __future__ import annotations

import pytest

import ckptmap
from ckptmap.verification.report import APPROXIMATE, EQUAL
from ckptmap.verification.run import verify
from tests.verification.conftest import keras3_source, tf1_source, tf_keras_source, torch_source

CASES = [
    # mapping, source, kind, options, destination, verdict
    ("keras-to-torch", "keras3", "gru", {}, "m.pt", EQUAL),
    ("keras-to-torch", "keras3", "gru", {"bidirectional": True}, "m.pt", EQUAL),
    ("keras-to-torch", "keras3", "gru", {"reset_after": False}, "m.pt", APPROXIMATE),
    ("keras-to-torch", "keras3", "lstm", {"bidirectional": True, "layers": 2}, "m.pt", EQUAL),
    ("keras-to-torch", "keras3", "rnn", {}, "m.pt", EQUAL),
    ("keras-to-torch", "keras2", "gru", {"bidirectional": True}, "m.pt", EQUAL),
    ("keras-to-torch", "tf2", "lstm", {"layers": 2}, "m.safetensors", EQUAL),
    ("torch-to-keras", "torch", "gru", {"bidirectional": True, "layers": 2}, "k.weights.h5", EQUAL),
    ("torch-to-keras", "torch", "lstm", {}, "k.weights.h5", EQUAL),
    ("torch-to-keras", "torch", "rnn", {"layers": 2}, "k.weights.h5", EQUAL),
    ("torch-to-keras", "torch", "lstm", {"bidirectional": True}, "k.h5", EQUAL),  # Keras 2 / tf-keras file
    ("torch-to-keras", "torch", "gru", {"layers": 2}, "tf2/ckpt", EQUAL),  # TF2 checkpoint for tf-keras
    ("tf1-to-keras", "tf1", "gru", {}, "k.weights.h5", EQUAL),  # TF1 GRUCell is GRU(reset_after=False)
    ("tf1-to-keras", "tf1", "gru", {"layers": 2, "bidirectional": True}, "k.weights.h5", EQUAL),
    ("tf1-to-keras", "tf1", "lstm", {"layers": 2}, "k.weights.h5", EQUAL),
    ("tf1-to-keras", "tf1", "basic_lstm", {"bidirectional": True}, "k.weights.h5", EQUAL),
    ("tf1-to-keras", "tf1", "rnn", {"layers": 2, "bidirectional": True}, "k.weights.h5", EQUAL),
    ("keras-to-tf1", "keras3", "gru", {"reset_after": False, "bidirectional": True}, "tf/model.ckpt", EQUAL),
    ("keras-to-tf1", "keras3", "gru", {"zero_recurrent_h_bias": True}, "tf/model.ckpt", APPROXIMATE),
    ("keras-to-tf1", "keras3", "lstm", {"bidirectional": True}, "tf/model.ckpt", EQUAL),
    ("keras-to-tf1", "keras3", "rnn", {}, "tf/model.ckpt", EQUAL),
]


def _source(tmp_path, source, kind, options):
    if source == "keras3":
        return keras3_source(tmp_path / "src.weights.h5", kind, **options)
    if source == "keras2":
        return tf_keras_source(tmp_path / "src.h5", kind, **options)
    if source == "tf2":
        return tf_keras_source(tmp_path / "src" / "ckpt", kind, **options)
    if source == "torch":
        return torch_source(tmp_path / "src.pt", kind, **options)
    return tf1_source(tmp_path / "src" / "model.ckpt", kind, **options)


@pytest.mark.parametrize(
    ("mapping", "source", "kind", "options", "dst", "verdict"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)],
)
def test_keras_mappings_verify_with_their_expected_verdicts(
    tmp_path, mapping, source, kind, options, dst, verdict
):
    src = _source(tmp_path, source, kind, options)
    target = tmp_path / dst
    to = "tf2" if dst.startswith("tf2/") else None
    ckptmap.convert(src, target, mapping=mapping, to=to)
    report = verify(src, target.parent if to == "tf2" else target, mapping=mapping)
    assert [p.verdict for p in report.pairs] and all(p.verdict == verdict for p in report.pairs), [
        (p.verdict, p.message, p.max_abs, p.first_step_abs) for p in report.pairs
    ]
    assert report.ok
