"""Small builders shared by tests: fresh TF1 graphs and PyTorch modules, run on numpy inputs.

Each TF1 helper makes its own graph and session, so tests never share state. Inputs and weights
are seeded and distinct per element, so a swapped block or a transpose shows in the outputs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def tf1():
    import tensorflow as tf

    # Graphs are built inside `tf.Graph().as_default()`; eager stays on for everything else (Keras).
    return tf, tf.compat.v1


@contextlib.contextmanager
def tf1_training_graph():
    """A fresh graph and session in which gradients flow through `dynamic_rnn`. The switch that
    allows it is process-wide; it is put back after, or a later Keras `fit` fails to make its
    optimizer's variables."""
    tf, v1 = tf1()
    v1.experimental.output_all_intermediates(True)
    try:
        with tf.Graph().as_default(), v1.Session() as sess:
            yield sess
    finally:
        v1.experimental.output_all_intermediates(None)


def make_tf1_cell(
    kind: str, units: int, *, proj: int | None = None, peepholes: bool = False, name: str | None = None
):
    _, v1 = tf1()
    cells = v1.nn.rnn_cell
    if kind == "lstm":
        return cells.LSTMCell(units, num_proj=proj, use_peepholes=peepholes, name=name)
    if kind == "basic_lstm":
        return cells.BasicLSTMCell(units, name=name)
    if kind == "gru":
        return cells.GRUCell(units, name=name)
    if kind == "rnn":
        return cells.BasicRNNCell(units, name=name)
    raise ValueError(kind)


def build_tf1_rnn(
    kind: str,
    input_size: int,
    units: int,
    *,
    layers: int = 1,
    bidirectional: bool = False,
    stacking: str = "layers",
    scope: str | None = None,
    proj: int | None = None,
    peepholes: bool = False,
) -> Callable[[], object]:
    """Inside the current graph: the RNN as tf1 code builds it. Returns the output tensor's maker."""
    tf, v1 = tf1()
    x = v1.placeholder(tf.float32, [None, None, input_size], name="x")

    def cell():
        return make_tf1_cell(kind, units, proj=proj, peepholes=peepholes)

    def body():
        if not bidirectional:
            c = cell() if layers == 1 else v1.nn.rnn_cell.MultiRNNCell([cell() for _ in range(layers)])
            out, _ = v1.nn.dynamic_rnn(c, x, dtype=tf.float32)
            return out
        if layers == 1 or stacking == "per_direction":

            def side():
                return cell() if layers == 1 else v1.nn.rnn_cell.MultiRNNCell([cell() for _ in range(layers)])

            (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(side(), side(), x, dtype=tf.float32)
            return tf.concat([fw, bw], -1)
        # What contrib's stack_bidirectional_dynamic_rnn did (tensorflow/contrib/rnn/python/ops/rnn.py):
        # one bidirectional_dynamic_rnn per layer under stack_bidirectional_rnn/cell_<k>, each layer
        # reading both directions of the one before.
        inputs = x
        with v1.variable_scope("stack_bidirectional_rnn"):
            for k in range(layers):
                with v1.variable_scope(f"cell_{k}"):
                    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(cell(), cell(), inputs, dtype=tf.float32)
                    inputs = tf.concat([fw, bw], -1)
        return inputs

    if scope:
        with v1.variable_scope(scope):
            out = body()
    else:
        out = body()
    return x, out


def save_tf1_rnn(
    prefix: Path,
    kind: str,
    input_size: int,
    units: int,
    *,
    seed: int = 0,
    xs: np.ndarray | None = None,
    **options,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Build, fill each variable with distinct seeded values, save with tf's Saver; return values, outputs."""
    tf, v1 = tf1()
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x, out = build_tf1_rnn(kind, input_size, units, **options)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = {}
            for v in v1.global_variables():
                value = rng.uniform(-0.6, 0.6, v.shape).astype(v.dtype.as_numpy_dtype)
                v.load(value, sess)
                values[v.name[:-2]] = value
            v1.train.Saver().save(sess, str(prefix), write_meta_graph=False)
            y = sess.run(out, {x: xs}) if xs is not None else None
    return values, y


def run_tf1_restored(
    prefix: Path, kind: str, input_size: int, units: int, xs: np.ndarray, **options
) -> np.ndarray:
    """A fresh graph restored from `prefix` with tf's own Saver, run on `xs`."""
    tf, v1 = tf1()
    graph = tf.Graph()
    with graph.as_default():
        x, out = build_tf1_rnn(kind, input_size, units, **options)
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, str(prefix))
            return sess.run(out, {x: xs})


def torch_rnn(
    kind: str,
    input_size: int,
    units: int,
    *,
    layers: int = 1,
    bidirectional: bool = False,
    proj: int | None = None,
    bias: bool = True,
):
    import torch

    cls = {"lstm": torch.nn.LSTM, "basic_lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    extra = {"proj_size": proj} if proj else {}
    return cls(
        input_size,
        units,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=True,
        bias=bias,
        **extra,
    )


def run_torch(module, xs: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(xs))[0].numpy()


def inputs(batch: int = 2, steps: int = 5, size: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, size)).astype(np.float32)
