"""Sources for verification tests, written by the real frameworks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.frameworks import build_tf1_rnn, tf1, torch_rnn

INPUT, UNITS = 3, 5
LEGACY = {"kernel": "weights", "bias": "biases"}  # TF 1.0-1.1 names of cell variables


def tf1_source(prefix: Path, kind: str, *, legacy: bool = False, seed: int = 0, **options) -> Path:
    """A TF1 checkpoint saved by tf's Saver, with distinct values everywhere (biases included);
    with `legacy`, under the names TF 1.0 gave the same variables."""
    tf, v1 = tf1()
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default(), v1.Session() as sess:
        build_tf1_rnn(kind, INPUT, UNITS, **options)
        sess.run(v1.global_variables_initializer())
        names = {}
        for v in v1.global_variables():
            v.load(rng.uniform(-0.5, 0.5, v.shape).astype(np.float32), sess)
            scope, leaf = v.op.name.rsplit("/", 1)
            names[f"{scope}/{LEGACY[leaf]}" if legacy and leaf in LEGACY else v.op.name] = v
        v1.train.Saver(names).save(sess, str(prefix), write_meta_graph=False)
    return prefix.parent


def torch_source(path: Path, kind: str, *, seed: int = 0, zero_b_hn: bool = False, **options) -> Path:
    """A state dict from torch.save; `zero_b_hn` zeroes the GRU's b_hn, which TF1 cannot hold."""
    import torch

    torch.manual_seed(seed)
    module = torch_rnn(kind, INPUT, UNITS, **options)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.uniform_(-0.5, 0.5)
            if zero_b_hn and name.startswith("bias_hh"):
                p[2 * UNITS :] = 0
    torch.save(module.state_dict(), path)
    return path


def keras_model(keras, kind: str, *, layers: int = 1, bidirectional: bool = False, reset_after: bool = True,
                seed: int = 0, zero_recurrent_h_bias: bool = False):  # fmt: skip
    """A Sequential of `layers` recurrent layers (Keras 3 `keras` or tf-keras) with distinct weights."""
    cls = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM, "rnn": keras.layers.SimpleRNN}[kind]
    extra = {"reset_after": reset_after} if kind == "gru" else {}
    stack = []
    for _ in range(layers):
        inner = cls(UNITS, return_sequences=True, **extra)
        stack.append(keras.layers.Bidirectional(inner) if bidirectional else inner)
    model = keras.Sequential([keras.Input((None, INPUT)), *stack])
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        w = rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
        if zero_recurrent_h_bias and w.shape == (
            2,
            3 * UNITS,
        ):  # GRU(reset_after=True) b_rh: TF1 cannot hold it
            w[1, 2 * UNITS :] = 0
        weights.append(w)
    model.set_weights(weights)
    return model


def keras3_source(path: Path, kind: str, **options) -> Path:
    """A Keras 3 model saved with model.save_weights(...weights.h5)."""
    import keras

    keras_model(keras, kind, **options).save_weights(path)
    return path


def tf_keras_source(path: Path, kind: str, **options) -> Path:
    """A tf-keras model saved with save_weights: .h5 for Keras 2 weights, a prefix for a TF2 checkpoint."""
    import tf_keras

    keras_model(tf_keras, kind, **options).save_weights(str(path))
    return path if path.suffix == ".h5" else path.parent
