"""Write the bundled sample checkpoints with the real frameworks.

    python sample_checkpoints/make_samples.py [OUT_DIR]     (needs ckptmap[tf,torch])

Each sample is small (a few KB), seeded, and comes with `io.npz`: an input batch `x` and the output
`y` the framework that wrote the checkpoint computes on it, so a converted checkpoint can be
checked against the original without the original framework installed.

    tf1_lstm2/       2-layer LSTMCell (input 3, 8 units) via dynamic_rnn, trained one Adam step:
                     Adam slots, beta powers and global_step ride along, as in a real training run
    tf1_gru/         GRUCell (input 3, 4 units) under the user scope `encoder`
    tf1_bigru/       bidirectional_dynamic_rnn over GRUCells (input 3, 4 units)
    tf10_oldnames/   the names TF 1.0/1.1 wrote (`gru_cell/gates/weights`, `lstm_cell/biases`): a 2-layer
                     GRU encoder, an LSTM decoder and a tf.layers dense layer (`dense/kernel`)
    torch_lstm.pt    nn.LSTM(3, 8, num_layers=2) state dict from torch.save
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

INPUT, STEPS, BATCH = 3, 5, 2


def _tf():
    import tensorflow as tf

    return tf, tf.compat.v1  # graph mode only inside each sample's own tf.Graph()


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)


def _start(sess, v1, seed: int) -> None:
    """Initialize, then put distinct seeded values in every weight (TF's initializers leave biases at
    0 or 1, which would hide a misplaced bias block); optimizer slots keep what training gives them."""
    sess.run(v1.global_variables_initializer())
    rng = np.random.default_rng(seed)
    for v in v1.trainable_variables():
        v.load(rng.uniform(-0.5, 0.5, v.shape).astype(np.float32), sess)


def _record(sess, v1, folder: Path, x, y, xs: np.ndarray, var_list=None) -> None:
    """Save the checkpoint, a relocatable state file, and io.npz with the model's outputs on `xs`."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "io.npz", x=xs, y=sess.run(y, {x: xs}))
    v1.train.Saver(var_list).save(sess, str(folder / "model.ckpt"), write_meta_graph=False)
    # The state file TF writes names absolute paths; keep the sample relocatable.
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )


def tf1_lstm2(out: Path) -> None:
    tf, v1 = _tf()
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, None, INPUT])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(8) for _ in range(2)])
        y, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean(tf.square(y)), global_step=step)
        _start(sess, v1, seed=2)
        xs = _x(3)
        sess.run(train, {x: xs})
        _record(sess, v1, out / "tf1_lstm2", x, y, xs)


def tf1_gru(out: Path) -> None:
    tf, v1 = _tf()
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, INPUT])
        with v1.variable_scope("encoder"):
            y, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.GRUCell(4), x, dtype=tf.float32)
        _start(sess, v1, seed=4)
        _record(sess, v1, out / "tf1_gru", x, y, _x(5))


def tf1_bigru(out: Path) -> None:
    tf, v1 = _tf()
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, INPUT])
        cells = [v1.nn.rnn_cell.GRUCell(4) for _ in range(2)]
        (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(*cells, x, dtype=tf.float32)
        _start(sess, v1, seed=6)
        _record(sess, v1, out / "tf1_bigru", x, tf.concat([fw, bw], -1), _x(7))


def oldnames_graph(tf, v1):
    """The tf10_oldnames model as today's TF builds it: returns (x placeholder, output)."""
    x = v1.placeholder(tf.float32, [None, None, INPUT])
    with v1.variable_scope("encoder"):
        stack = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.GRUCell(4) for _ in range(2)])
        h, _ = v1.nn.dynamic_rnn(stack, x, dtype=tf.float32)
    with v1.variable_scope("decoder"):
        h, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.LSTMCell(4), h, dtype=tf.float32)
    return x, v1.layers.dense(h, 2, name="dense")


def tf10_oldnames(out: Path) -> None:
    """A modern graph saved under the names TF 1.0/1.1 gave the same variables."""
    tf, v1 = _tf()
    with tf.Graph().as_default(), v1.Session() as sess:
        x, y = oldnames_graph(tf, v1)
        old = {"kernel": "weights", "bias": "biases"}
        var_list = {}
        for v in v1.global_variables():
            scope, leaf = v.name[:-2].rsplit("/", 1)
            # TF 1.0 named only the cells' variables weights/biases; tf.layers already said kernel.
            renamed = leaf in old and "_cell" in scope
            var_list[f"{scope}/{old[leaf]}" if renamed else f"{scope}/{leaf}"] = v
        _start(sess, v1, seed=8)
        _record(sess, v1, out / "tf10_oldnames", x, y, _x(9), var_list)


def torch_lstm(out: Path) -> None:
    import torch

    torch.manual_seed(10)
    module = torch.nn.LSTM(INPUT, 8, num_layers=2, batch_first=True)
    xs = _x(11)
    with torch.no_grad():
        y = module(torch.from_numpy(xs))[0].numpy()
    torch.save(module.state_dict(), out / "torch_lstm.pt")
    np.savez(out / "torch_lstm.io.npz", x=xs, y=y)


SAMPLES = (tf1_lstm2, tf1_gru, tf1_bigru, tf10_oldnames, torch_lstm)


def main(out: Path) -> None:
    for make in SAMPLES:
        target = out / make.__name__
        if target.is_dir():  # a fresh directory: no stale shards or state files
            shutil.rmtree(target)
        make(out)
        print(f"wrote {make.__name__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
