"""Small tf-keras models for the Keras format tests, with distinct weights and fixed layer names.

Every model reads token ids through an Embedding, runs one RNN arrangement and ends in a Dense
head. Layer names are given explicitly, so a model built twice in one process has the same names
and `load_weights(by_name=True)` can match them. Weights are seeded and distinct per element, so a
swapped gate block, a transpose or a mixed-up layer shows in the outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VOCAB, EMBED, UNITS = 11, 3, 4


def _layers():
    import tf_keras

    return tf_keras, tf_keras.layers


def _rnn(kind: str, name: str, **kw):
    _, layers = _layers()
    make = {"gru": layers.GRU, "lstm": layers.LSTM, "simple_rnn": layers.SimpleRNN}[kind]
    return make(UNITS, name=name, **kw)


def _model(body: Callable[[object], object]):
    keras, layers = _layers()
    tokens = keras.Input((None,), dtype="int32")
    x = layers.Embedding(VOCAB, EMBED, name="embedding")(tokens)
    x = body(x)
    return keras.Model(tokens, layers.Dense(2, name="head")(x))


def _nested(x):
    keras, layers = _layers()
    x = _rnn("gru", "gru")(x)
    inner = keras.Sequential(
        [
            layers.Dense(3, name="inner_dense"),
            layers.BatchNormalization(name="inner_bn"),
            layers.Dense(2, name="inner_out"),
        ],
        name="inner",
    )
    return inner(x)


def _bidirectional(x):
    _, layers = _layers()
    x = layers.Bidirectional(_rnn("lstm", "lstm", return_sequences=True), name="bidirectional")(x)
    return layers.Bidirectional(_rnn("gru", "gru"), name="bidirectional_1")(x)


def _stacked(x):
    x = _rnn("gru", "gru", return_sequences=True)(x)
    x = _rnn("lstm", "lstm", return_sequences=True)(x)
    return _rnn("simple_rnn", "simple_rnn")(x)


BUILDERS: dict[str, Callable[[], object]] = {
    "gru_reset_after": lambda: _model(lambda x: _rnn("gru", "gru", reset_after=True)(x)),
    "gru_reset_before": lambda: _model(lambda x: _rnn("gru", "gru", reset_after=False)(x)),
    "lstm": lambda: _model(lambda x: _rnn("lstm", "lstm")(x)),
    "simple_rnn": lambda: _model(lambda x: _rnn("simple_rnn", "simple_rnn")(x)),
    "bidirectional": lambda: _model(_bidirectional),
    "stacked": lambda: _model(_stacked),
    # A Sequential inside the model, with BatchNormalization: tf-keras lists a nested model's
    # non-trainable statistics after all its trainable weights.
    "nested": lambda: _model(_nested),
}


def build(kind: str, *, seed: int | None = 0):
    """A fresh model; with a seed, its weights are set to seeded distinct values."""
    model = BUILDERS[kind]()
    if seed is not None:
        rng = np.random.default_rng(seed)
        values = []
        for w in model.weights:
            value = rng.normal(0, 0.5, w.shape).astype(np.float32)
            values.append(np.abs(value) + 0.5 if "moving_variance" in w.name else value)
        model.set_weights(values)
    return model


def tokens() -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, (2, 5)).astype(np.int32)


def outputs(model) -> np.ndarray:
    return np.asarray(model(tokens(), training=False))


def legacy_weights(model) -> list[np.ndarray]:
    """The weights in the order tf-keras writes .h5 files: per layer, trainable then non-trainable."""
    return [
        np.asarray(v) for layer in model.layers for v in layer.trainable_weights + layer.non_trainable_weights
    ]


def canonical_names(model, *, tf2: bool = False) -> list[str]:
    """The names ckptmap should give `legacy_weights(model)`, worked out from the model objects."""
    keras, layers = _layers()
    names = []
    k = 0
    for layer in model.layers:
        weights = layer.trainable_weights + layer.non_trainable_weights
        if not weights:
            continue
        top = f"layer_with_weights-{k}" if tf2 else layer.name
        k += 1
        inner = {}
        for v in weights:
            role = v.name.split("/")[-1].split(":")[0]
            if isinstance(layer, layers.Bidirectional):
                side = "forward_layer" if "/forward_" in v.name else "backward_layer"
                names.append(f"{top}/{side}/cell/{role}")
            elif isinstance(layer, layers.RNN):
                names.append(f"{top}/cell/{role}")
            elif isinstance(layer, keras.Model):
                owner = next(s for s in layer.layers if any(v is w for w in s.weights))
                if tf2:
                    with_weights = [s for s in layer.layers if s.weights]
                    inner[owner.name] = f"layer_with_weights-{with_weights.index(owner)}"
                names.append(f"{top}/{inner.get(owner.name, owner.name)}/{role}")
            else:
                names.append(f"{top}/{role}")
    return names
