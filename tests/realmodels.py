"""A corpus of small but realistic models, written by the real frameworks, for the real-model matrix.

Real checkpoints are not textbook RNNs: an embedding and a head sit around the RNNs, optimizers
leave slots and a global step, seq2seq decoders call their cells directly, Keras models mix layer
kinds, and PyTorch users pickle whole modules. Each builder here trains or randomizes one such
model and saves it the way its framework's users do; `build_all` makes the whole corpus.

    python -m tests.realmodels OUT_DIR     # write the corpus (TF, PyTorch and Keras installed)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.frameworks import tf1, tf1_training_graph

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VOCAB, DIM, UNITS, STEPS, BATCH = 11, 5, 6, 4, 3


@dataclass(frozen=True)
class Source:
    name: str
    path: Path  # what `ckptmap convert` takes
    framework: str  # tf1 | torch | keras
    description: str


def token_ids(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32)


def _randomize_and_train(sess, v1, step, feed, seed: int) -> None:
    """Every trainable variable random (biases too, so a lost bias shows), then one Adam step so
    the optimizer's slots hold real values."""
    rng = np.random.default_rng(seed)
    sess.run(v1.global_variables_initializer())
    for var in v1.trainable_variables():
        sess.run(var.assign(rng.normal(0, 0.5, var.shape.as_list()).astype(np.float32)))
    sess.run(step, feed)


def tf1_language_model(out: Path) -> Source:
    """embedding + MultiRNNCell(2 x LSTMCell) under dynamic_rnn + tf.layers.dense, Adam, global_step."""
    tf, v1 = tf1()
    with tf1_training_graph() as sess:
        ids = v1.placeholder(tf.int32, [None, None])
        embedding = v1.get_variable("embedding", [VOCAB, DIM])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(UNITS) for _ in range(2)])
        outputs, _ = v1.nn.dynamic_rnn(cell, v1.nn.embedding_lookup(embedding, ids), dtype=tf.float32)
        logits = v1.layers.dense(outputs, VOCAB)
        loss = tf.reduce_mean(tf.square(logits))
        step = v1.train.AdamOptimizer(0.01).minimize(loss, global_step=v1.train.get_or_create_global_step())
        _randomize_and_train(sess, v1, step, {ids: token_ids()}, seed=0)
        v1.train.Saver().save(sess, str(out / "model.ckpt"))
    return Source("tf1-lm", out, "tf1", "TF1 embedding + 2-layer LSTM + dense, Adam slots, global_step")


def tf1_seq2seq_attention(out: Path) -> Source:
    """A seq2seq with attention as TF1 code wrote it by hand: a GRU encoder under dynamic_rnn, a
    decoder GRUCell called directly step by step (no `rnn/` scope), dense attention and output
    layers, an embedding per side, Adam."""
    tf, v1 = tf1()
    with tf1_training_graph() as sess:
        source, target = v1.placeholder(tf.int32, [None, None]), v1.placeholder(tf.int32, [None, STEPS])
        with v1.variable_scope("encoder"):
            table = v1.get_variable("embedding", [VOCAB, DIM])
            encoded, state = v1.nn.dynamic_rnn(
                v1.nn.rnn_cell.GRUCell(UNITS), v1.nn.embedding_lookup(table, source), dtype=tf.float32
            )
        with v1.variable_scope("decoder", reuse=v1.AUTO_REUSE):
            table = v1.get_variable("embedding", [VOCAB, DIM])
            inputs = v1.nn.embedding_lookup(table, target)
            cell = v1.nn.rnn_cell.GRUCell(UNITS)
            steps = []
            for t in range(STEPS):
                query = v1.layers.dense(state, UNITS, use_bias=False, name="attention_query")
                weights = tf.nn.softmax(tf.reduce_sum(encoded * query[:, None, :], -1))
                context = tf.reduce_sum(weights[:, :, None] * encoded, 1)
                output, state = cell(tf.concat([inputs[:, t], context], -1), state)
                steps.append(output)
            logits = v1.layers.dense(tf.stack(steps, 1), VOCAB, name="output_projection")
        step = v1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean(tf.square(logits)))
        _randomize_and_train(sess, v1, step, {source: token_ids(1), target: token_ids(2)}, seed=1)
        v1.train.Saver().save(sess, str(out / "model.ckpt"))
    return Source(
        "tf1-seq2seq", out, "tf1", "TF1 seq2seq: GRU encoder, attention decoder calling its GRUCell"
    )


def keras3_mixed(out: Path) -> Source:
    """A Keras 3 functional model mixing GRU, Bidirectional(LSTM) and SimpleRNN around an Embedding
    and a Dense head, saved with save_weights."""
    import keras

    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, DIM)(ids)
    x = keras.layers.GRU(UNITS, return_sequences=True)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=True))(x)
    x = keras.layers.SimpleRNN(UNITS, return_sequences=True)(x)
    model = keras.Model(ids, keras.layers.Dense(VOCAB)(x))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    path = out / "model.weights.h5"
    model.save_weights(path)
    return Source(
        "keras3-mixed", path, "keras", "Keras 3: Embedding, GRU, Bidirectional(LSTM), SimpleRNN, Dense"
    )


def torch_language_model(out: Path, *, whole: bool) -> Source:
    """nn.Embedding + nn.LSTM(2 layers) + nn.Linear, saved as a state dict or (whole) pickled."""
    import torch

    from tests.realmodels_torch import LanguageModel

    torch.manual_seed(3)
    model = LanguageModel(VOCAB, DIM, UNITS)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    path = out / ("module.pt" if whole else "state.pt")
    torch.save(model if whole else model.state_dict(), path)
    kind = "the whole module, pickled" if whole else "a state dict"
    return Source(f"torch-lm-{'module' if whole else 'state'}", path, "torch", f"PyTorch {kind}")


BUILDERS: tuple[Callable[[Path], Source], ...] = (
    tf1_language_model,
    tf1_seq2seq_attention,
    keras3_mixed,
    lambda out: torch_language_model(out, whole=False),
    lambda out: torch_language_model(out, whole=True),
)


def build_all(root: Path) -> list[Source]:
    sources = []
    for k, build in enumerate(BUILDERS):
        folder = root / f"{k}"
        folder.mkdir(parents=True, exist_ok=True)
        sources.append(build(folder))
    return sources


if __name__ == "__main__":
    for s in build_all(Path(sys.argv[1])):
        print(f"{s.name:18} {s.path}  {s.description}")
