"""`verify --into tf1` builds what the names say: every way TF1 code places a cell restores.

Each layout is built as user code builds it, filled with distinct values, saved with tf's Saver
and run on fixed inputs. The fresh graph verification builds must restore that checkpoint with
TF's own Saver under the graph's own names (as the user's Saver would) and compute the same
outputs. The fresh graph used to wrap every cell in `rnn/` and stack bidirectional RNNs one way,
calling these valid checkpoints broken.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import ckptmap
from ckptmap.recognition import recognize
from ckptmap.suggest import pair
from ckptmap.verification.backends import backend
from ckptmap.verification.cases import Case, batches
from ckptmap.verification.report import APPROXIMATE, EQUAL, Missing
from ckptmap.verification.run import verify, verify_into
from tests.frameworks import tf1

INPUT, UNITS, STEPS = 3, 4, 5


def _unrolled(tf, cell, x):
    """A cell called directly, step by step, as attention decoders and hand-written loops do."""
    state = cell.zero_state(tf.shape(x)[0], tf.float32)
    outputs = []
    for t in range(STEPS):
        out, state = cell(x[:, t], state)
        outputs.append(out)
    return tf.stack(outputs, 1)


def _called_directly(tf, v1, x):
    with v1.variable_scope("Episodes"):
        return _unrolled(tf, v1.nn.rnn_cell.GRUCell(UNITS), x)


def _attention_decoder_cell(tf, v1, x):
    # legacy_seq2seq.attention_decoder calls its cell inside its own scopes (g2p-seq2seq's decoder).
    with v1.variable_scope("model/att_seq2seq/decode/attention_decoder/decoder"):
        return _unrolled(tf, v1.nn.rnn_cell.LSTMCell(UNITS), x)


def _stack_bidirectional(layers):
    def build(tf, v1, x):
        # contrib.rnn.stack_bidirectional_dynamic_rnn (tensorflow/contrib/rnn/python/ops/rnn.py):
        # per layer, bidirectional_dynamic_rnn under stack_bidirectional_rnn/cell_<k>.
        with v1.variable_scope("encoder/stack_bidirectional_rnn"):
            for k in range(layers):
                with v1.variable_scope(f"cell_{k}"):
                    cells = [v1.nn.rnn_cell.LSTMCell(UNITS) for _ in range(2)]
                    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(*cells, x, dtype=tf.float32)
                    x = tf.concat([fw, bw], -1)
        return x

    return build


def _bidirectional_own_scope(tf, v1, x):
    cells = [v1.nn.rnn_cell.GRUCell(UNITS) for _ in range(2)]
    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(*cells, x, dtype=tf.float32, scope="birnn")
    return tf.concat([fw, bw], -1)


def _per_direction_stacks(tf, v1, x):
    def stack():
        return v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.BasicRNNCell(UNITS) for _ in range(2)])

    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(stack(), stack(), x, dtype=tf.float32)
    return tf.concat([fw, bw], -1)


def _user_named_cells(tf, v1, x):
    # LSTMCell(name=...) inside a MultiRNNCell: rnn/multi_rnn_cell/cell_0/enc_l0/kernel.
    cells = [v1.nn.rnn_cell.LSTMCell(UNITS, use_peepholes=True, name=f"enc_l{k}") for k in range(2)]
    y, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.MultiRNNCell(cells), x, dtype=tf.float32)
    return y


def _own_rnn_scope(tf, v1, x):
    y, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.BasicLSTMCell(UNITS), x, dtype=tf.float32, scope="encoder_rnn")
    return y


LAYOUTS = {
    "cell-called-directly": (_called_directly, "Episodes/gru_cell/gates/kernel"),
    "attention-decoder-cell": (
        _attention_decoder_cell,
        "model/att_seq2seq/decode/attention_decoder/decoder/lstm_cell/kernel",
    ),
    "stack-bidirectional-1": (
        _stack_bidirectional(1),
        "encoder/stack_bidirectional_rnn/cell_0/bidirectional_rnn/bw/lstm_cell/kernel",
    ),
    "stack-bidirectional-2": (  # restored before too: kept as the reference layout
        _stack_bidirectional(2),
        "encoder/stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/lstm_cell/kernel",
    ),
    "bidirectional-own-scope": (_bidirectional_own_scope, "birnn/bw/gru_cell/candidate/kernel"),
    "per-direction-stacks": (
        _per_direction_stacks,
        "bidirectional_rnn/bw/multi_rnn_cell/cell_1/basic_rnn_cell/kernel",
    ),
    "user-named-cells": (_user_named_cells, "rnn/multi_rnn_cell/cell_1/enc_l1/w_f_diag"),
    "own-rnn-scope": (_own_rnn_scope, "encoder_rnn/basic_lstm_cell/kernel"),
}


def _save(directory, build) -> tuple[np.ndarray, np.ndarray]:
    """Build the layout, give each variable distinct values, save; return inputs and outputs."""
    tf, v1 = tf1()
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, STEPS, INPUT)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, STEPS, INPUT])
        y = build(tf, v1, x)
        sess.run(v1.global_variables_initializer())
        for v in v1.global_variables():
            v.load(rng.uniform(-0.6, 0.6, v.shape).astype(np.float32), sess)
        v1.train.Saver().save(sess, str(directory / "model.ckpt"), write_meta_graph=False)
        return xs, sess.run(y, {x: xs})


@pytest.fixture(params=list(LAYOUTS), ids=list(LAYOUTS))
def layout(request, tmp_path):
    build, sample = LAYOUTS[request.param]
    xs, ys = _save(tmp_path, build)
    return tmp_path, sample, xs, ys


def test_every_tf1_layout_restores_as_it_is_and_computes_the_same(layout):
    directory, sample, xs, ys = layout
    ckpt = ckptmap.load(directory)
    assert sample in ckpt.entries  # the layout names its variables as the test says
    report = verify_into(directory, "tf1")
    assert report.ok, [(m.name, m.suggestion) for r in report.results for m in r.missing]
    [found] = recognize(ckpt)
    data = replace(batches(found.rnn, (Case(2, STEPS, False),))[0], x=xs)
    outcome = backend("tf1").load().restore_and_run(found.rnn, ckpt, [data], by="model", options={})
    assert outcome.restored and sample in outcome.expected
    np.testing.assert_allclose(outcome.runs[0].output, ys, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("attention-decoder-cell", EQUAL),
        ("cell-called-directly", APPROXIMATE),
        ("stack-bidirectional-1", EQUAL),
    ],
)
def test_tf1_layouts_verify_against_their_torch_conversion(tmp_path, name, verdict):
    _save(tmp_path, LAYOUTS[name][0])
    ckptmap.convert(tmp_path, tmp_path / "m.pt", mapping="tf1-to-torch")
    report = verify(tmp_path, tmp_path / "m.pt")
    assert report.ok and [p.verdict for p in report.pairs] == [verdict]


def test_did_you_mean_prefers_the_same_direction_and_layer():
    # The fw cell saved under its own name: "did you mean" must not offer the bw kernel, one
    # letter away, nor the other layer's.
    fw = "bidirectional_rnn/fw/multi_rnn_cell/cell_1/lstm_cell/kernel"
    missing = [Missing(fw, (8, 16))]
    unused = [
        Missing("bidirectional_rnn/bw/multi_rnn_cell/cell_1/lstm_cell/kernel", (8, 16)),
        Missing("bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/kernel", (8, 16)),
        Missing("bidirectional_rnn/fw/multi_rnn_cell/cell_1/my_lstm/kernel", (8, 16)),
    ]
    pair(missing, unused)
    assert missing[0].suggestion == "bidirectional_rnn/fw/multi_rnn_cell/cell_1/my_lstm/kernel"
    torch_missing = [Missing("rnn/weight_ih_l1_reverse", (16, 8))]
    pair(torch_missing, [Missing("rnn/weight_ih_l1", (16, 8)), Missing("rnn/w_ih_l1_reverse", (16, 8))])
    assert torch_missing[0].suggestion == "rnn/w_ih_l1_reverse"
