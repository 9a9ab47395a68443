"""Make the benchmark's checkpoints with the real frameworks (run by bench/run.py, cached in bench/data/).

    python bench/make_data.py tf1 bench/data/tf1-2gb/model.ckpt --size-gb 2
    python bench/make_data.py torch bench/data/torch-2gb.pt --size-gb 2
    python bench/make_data.py keras bench/data/keras-2gb.weights.h5 --size-gb 2
    python bench/make_data.py tf1-many bench/data/tf1-many/model.ckpt --variables 5000

- tf1: a word-level LSTM language model as TF1 code builds it: an embedding, a MultiRNNCell of
  LSTMCells under `tf.compat.v1.nn.dynamic_rnn`, a softmax layer, trained one step with Adam (so the
  `Adam`/`Adam_1` slots hold real values) and saved by `tf.compat.v1.train.Saver`. 4 layers of 2048
  units; the vocabulary is sized so the whole checkpoint (weights and slots) is about `--size-gb`.
- torch: a GNMT-style seq2seq state dict saved by `torch.save`: source and target embeddings, an
  encoder and a decoder `nn.LSTM` of 2048 units, an output `nn.Linear`; the layer count is sized so
  the file is about `--size-gb`.
- keras: a stacked LSTM language model built with Keras 3 itself (`keras.Sequential`: an
  `Embedding`, `LSTM(2048, return_sequences=True)` layers, a `Dense` softmax) and saved by
  `model.save_weights` as a `.weights.h5`, the file `ckptmap convert -m keras-to-torch` reads in
  practice. Built with Keras rather than converted from the TF1 data with ckptmap, so the bench
  does not read ckptmap's own output; the layer count is sized so the file is about `--size-gb`
  (weights only: Keras does not save optimizer slots in it). Keras' initializers (an orthogonal
  matrix per recurrent kernel) take about a minute at 2 GB, once.
- tf1-many: thousands of small variables (a deep stack of small dense layers), for index parsing.

Layer sizes shrink for small `--size-gb` (quick runs), so the largest tensor stays a fraction of
the file. Each output is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

MB = 2**20


def tf1_shape(size_gb: float) -> dict[str, int]:
    """Units, layers, embedding width and vocabulary for a TF1 LM whose checkpoint is ~size_gb
    (weights + two Adam slots each = 3 copies)."""
    per_copy = size_gb * 2**30 / 3 / 4  # float32 elements in one copy of the weights
    units, layers, emb = 2048, 4, 512
    while units > 64 and _lstm_params(emb, units, layers) > 0.7 * per_copy:
        units //= 2
        emb = min(emb, units)
    vocab = int((per_copy - _lstm_params(emb, units, layers)) / (emb + units + 1)) // 8 * 8
    return {"units": units, "layers": layers, "embedding": emb, "vocab": max(vocab, 1000)}


def _lstm_params(inputs: int, units: int, layers: int) -> int:
    return sum(
        (inputs if k == 0 else units) * 4 * units + units * 4 * units + 4 * units for k in range(layers)
    )


def make_tf1(prefix: Path, size_gb: float) -> dict[str, object]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TF1 cells live in tf-keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    shape = tf1_shape(size_gb)
    units, layers, emb, vocab = shape["units"], shape["layers"], shape["embedding"], shape["vocab"]
    with tf.Graph().as_default():
        v1.set_random_seed(0)
        tokens = v1.placeholder(tf.int32, [None, None])
        targets = v1.placeholder(tf.int32, [None, None])
        embedding = v1.get_variable("embedding", [vocab, emb])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(units) for _ in range(layers)])
        outputs, _ = v1.nn.dynamic_rnn(cell, tf.nn.embedding_lookup(embedding, tokens), dtype=tf.float32)
        with v1.variable_scope("softmax"):
            w = v1.get_variable("w", [units, vocab])
            b = v1.get_variable("b", [vocab], initializer=v1.zeros_initializer())
        logits = tf.tensordot(outputs, w, 1) + b
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        rng = np.random.default_rng(0)
        feed = {tokens: rng.integers(0, vocab, (2, 5)), targets: rng.integers(0, vocab, (2, 5))}
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train, feed)  # one step, so the Adam slots are not all zeros
            _save_whole(saver, sess, prefix)
    return {"kind": "tf1", **shape}


def _save_whole(saver: Any, sess: Any, prefix: Path) -> None:
    """Save into a sibling folder, then rename it into place: an interrupted run leaves no
    half-written data behind for the next run to take as cached."""
    tmp = prefix.parent.with_name(prefix.parent.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    saver.save(sess, str(tmp / prefix.name), write_meta_graph=False)
    shutil.rmtree(prefix.parent, ignore_errors=True)
    tmp.rename(prefix.parent)


def torch_shape(size_gb: float) -> dict[str, int]:
    """Units, layers per LSTM, embedding width and vocabulary for a seq2seq state dict of ~size_gb."""
    total = size_gb * 2**30 / 4
    units, emb, vocab = 2048, 1024, 32000
    while units > 64 and 2 * vocab * emb + units * vocab + 2 * _lstm_params(emb, units, 2) > 0.9 * total:
        units, emb, vocab = units // 2, emb // 2, max(vocab // 2, 1000)
    fixed = 2 * vocab * emb + units * vocab + vocab
    layers = 1
    while fixed + 2 * _lstm_params(emb, units, layers + 1) <= total:
        layers += 1
    return {"units": units, "layers": layers, "embedding": emb, "vocab": vocab}


def make_torch(path: Path, size_gb: float) -> dict[str, object]:
    import torch

    shape = torch_shape(size_gb)
    units, layers, emb, vocab = shape["units"], shape["layers"], shape["embedding"], shape["vocab"]
    torch.manual_seed(0)

    class Seq2Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.src_embedding = torch.nn.Embedding(vocab, emb)
            self.tgt_embedding = torch.nn.Embedding(vocab, emb)
            self.encoder = torch.nn.LSTM(emb, units, num_layers=layers)
            self.decoder = torch.nn.LSTM(emb, units, num_layers=layers)
            self.output = torch.nn.Linear(units, vocab)

    with torch.no_grad():
        model = Seq2Seq()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.rename(path)
    return {"kind": "torch", **shape}


def keras_shape(size_gb: float) -> dict[str, int]:
    """Units, LSTM layers, embedding width and vocabulary for a Keras stacked LSTM of ~size_gb."""
    total = size_gb * 2**30 / 4
    units, emb, vocab = 2048, 1024, 32000
    while units > 64 and vocab * emb + units * vocab + _lstm_params(emb, units, 2) > 0.9 * total:
        units, emb, vocab = units // 2, emb // 2, max(vocab // 2, 1000)
    fixed = vocab * emb + units * vocab + vocab
    layers = 1
    while fixed + _lstm_params(emb, units, layers + 1) <= total:
        layers += 1
    return {"units": units, "layers": layers, "embedding": emb, "vocab": vocab}


def make_keras(path: Path, size_gb: float) -> dict[str, object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3, whose .weights.h5 this is
    import keras

    shape = keras_shape(size_gb)
    units, layers, emb, vocab = shape["units"], shape["layers"], shape["embedding"], shape["vocab"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, emb),
            *(keras.layers.LSTM(units, return_sequences=True) for _ in range(layers)),
            keras.layers.Dense(vocab),
        ]
    )
    tmp = path.with_name(path.name.removesuffix(".weights.h5") + ".tmp.weights.h5")  # Keras wants the suffix
    model.save_weights(tmp)
    tmp.rename(path)
    return {"kind": "keras", **shape}


def make_tf1_many(prefix: Path, variables: int) -> dict[str, object]:
    """`variables` small variables: a stack of dense layers (kernel + bias each) in nested scopes."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        for i in range(variables // 2):
            with v1.variable_scope(f"block_{i // 10}/dense_{i % 10}"):
                v1.get_variable("kernel", [16, 16])
                v1.get_variable("bias", [16])
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            _save_whole(saver, sess, prefix)
    return {"kind": "tf1-many", "variables": variables // 2 * 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["tf1", "torch", "keras", "tf1-many"])
    parser.add_argument("out", type=Path, help="TF prefix (dir/model.ckpt), .pt or .weights.h5 file")
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--variables", type=int, default=5000)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.kind == "tf1":
        info = make_tf1(args.out, args.size_gb)
    elif args.kind == "torch":
        info = make_torch(args.out, args.size_gb)
    elif args.kind == "keras":
        info = make_keras(args.out, args.size_gb)
    else:
        info = make_tf1_many(args.out, args.variables)
    info["seconds"] = round(time.perf_counter() - started, 1)
    json.dump(info, sys.stdout)
    print()


if __name__ == "__main__":
    main()
