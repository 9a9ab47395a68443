"""RNN recognition against the names real TF1 graphs and PyTorch modules produce."""

from __future__ import annotations

import numpy as np
import pytest

from ckptmap.cells import tf1_cells
from ckptmap.cells.model import STACK_LAYERS, STACK_PER_DIRECTION
from ckptmap.tree import Checkpoint, TensorEntry
from tests.frameworks import build_tf1_rnn, tf1, torch_rnn


def _checkpoint(shapes: dict[str, tuple[int, ...]]) -> Checkpoint:
    return Checkpoint(
        [TensorEntry(n, s, "float32", n, lambda s=s: np.zeros(s, np.float32)) for n, s in shapes.items()],
        format="test",
    )


def _tf1_names(kind, **options) -> dict[str, tuple[int, ...]]:
    tf, v1 = tf1()
    with tf.Graph().as_default():
        build_tf1_rnn(kind, 3, 5, **options)
        return {v.name[:-2]: tuple(v.shape.as_list()) for v in v1.global_variables()}


TF1_CASES = [
    ("lstm", {}, "LSTMCell", 1, False, STACK_LAYERS, ""),
    ("basic_lstm", {"layers": 2}, "BasicLSTMCell", 2, False, STACK_LAYERS, ""),
    ("gru", {"layers": 3, "scope": "encoder"}, "GRUCell", 3, False, STACK_LAYERS, "encoder"),
    ("rnn", {"bidirectional": True, "scope": "enc/bi"}, "BasicRNNCell", 1, True, STACK_LAYERS, "enc/bi"),
    ("lstm", {"bidirectional": True, "layers": 2}, "LSTMCell", 2, True, STACK_LAYERS, ""),
    (
        "gru",
        {"bidirectional": True, "layers": 2, "stacking": "per_direction"},
        "GRUCell",
        2,
        True,
        STACK_PER_DIRECTION,
        "",
    ),
    ("lstm", {"proj": 2, "layers": 2}, "LSTMCell", 2, False, STACK_LAYERS, ""),
    ("lstm", {"peepholes": True}, "LSTMCell", 1, False, STACK_LAYERS, ""),
]


@pytest.mark.parametrize(
    ("kind", "options", "cell_type", "layers", "bidirectional", "stacking", "scope"),
    TF1_CASES,
    ids=[
        "lstm",
        "basic-lstm-2",
        "gru-3-scoped",
        "rnn-bi",
        "lstm-bi-2-stacked",
        "gru-bi-2-per-direction",
        "lstm-proj",
        "lstm-peepholes",
    ],
)
def test_recognizes_tf1_rnns(kind, options, cell_type, layers, bidirectional, stacking, scope):
    names = _tf1_names(kind, **options)
    [rnn] = _checkpoint(names).rnns
    assert (rnn.framework, rnn.cell_type, rnn.scope) == ("tf1", cell_type, scope)
    assert (rnn.input_size, rnn.units, rnn.layers, rnn.bidirectional) == (3, 5, layers, bidirectional)
    assert rnn.stacking == stacking
    assert rnn.proj == options.get("proj")
    assert rnn.peepholes == options.get("peepholes", False)
    assert sorted(rnn.tensor_names) == sorted(names)  # every variable belongs to the RNN


@pytest.mark.parametrize(
    ("kind", "options"),
    [(c[0], c[1]) for c in TF1_CASES],
    ids=[f"{c[0]}-{i}" for i, c in enumerate(TF1_CASES)],
)
def test_tf1_names_written_are_the_names_tf_creates(kind, options):
    names = _tf1_names(kind, **options)
    [rnn] = _checkpoint(names).rnns
    written = {tf1_cells.member_name(rnn, c.layer, c.reverse, role) for c in rnn.cells for role in c.members}
    assert written == set(names)


def test_a_custom_bidirectional_scope_stays_the_users_scope():
    # bidirectional_dynamic_rnn(scope="bi") names `bi/fw/...`, with no bidirectional_rnn scope. "bi" cannot
    # be told from a user's scope, so it stays one; written names use TF's default scope under it.
    shapes = {
        f"bi/{d}/basic_rnn_cell/{n}": s for d in ("fw", "bw") for n, s in (("kernel", (8, 5)), ("bias", (5,)))
    }
    [rnn] = _checkpoint(shapes).rnns
    assert (rnn.scope, rnn.bidirectional, rnn.input_size) == ("bi", True, 3)
    assert tf1_cells.member_name(rnn, 0, True, "kernel") == "bi/bidirectional_rnn/bw/basic_rnn_cell/kernel"


@pytest.mark.parametrize(
    ("kind", "options", "module"),
    [
        ("lstm", {}, "nn.LSTM"),
        ("gru", {"layers": 2, "bidirectional": True}, "nn.GRU"),
        ("rnn", {"layers": 3}, "nn.RNN"),
        ("lstm", {"proj": 2, "layers": 2, "bidirectional": True}, "nn.LSTM"),
        ("lstm", {"bias": False}, "nn.LSTM"),
    ],
    ids=["lstm", "gru-bi-2", "rnn-3", "lstm-proj-bi", "lstm-nobias"],
)
def test_recognizes_torch_modules(kind, options, module):
    import torch

    model = torch.nn.Sequential()
    model.add_module("encoder", torch_rnn(kind, 3, 5, **options))
    shapes = {k.replace(".", "/"): tuple(v.shape) for k, v in model.state_dict().items()}
    [rnn] = _checkpoint(shapes).rnns
    assert (rnn.framework, rnn.cell_type, rnn.scope, rnn.input_size, rnn.units) == (
        "torch",
        module,
        "encoder",
        3,
        5,
    )
    assert (rnn.layers, rnn.bidirectional, rnn.proj, rnn.bias) == (
        options.get("layers", 1),
        options.get("bidirectional", False),
        options.get("proj"),
        options.get("bias", True),
    )


def test_dense_layers_and_embeddings_are_not_rnns():
    ckpt = _checkpoint(
        {"dense/kernel": (8, 4), "dense/bias": (4,), "embedding": (10, 3), "decoder/weight": (4, 4)}
    )
    assert ckpt.rnns == []


def test_peephole_lstm_with_a_custom_cell_name_is_found():
    # As in a real project: LSTMCell(name="cell_1") inside a MultiRNNCell.
    shapes = {
        f"rnn/multi_rnn_cell/cell_0/cell_1/{n}": s
        for n, s in {
            "kernel": (115, 200),
            "bias": (200,),
            "w_f_diag": (50,),
            "w_i_diag": (50,),
            "w_o_diag": (50,),
        }.items()
    }
    [rnn] = _checkpoint(shapes).rnns
    assert (rnn.cell_type, rnn.cell_name, rnn.units, rnn.input_size, rnn.peepholes) == (
        "LSTMCell",
        "cell_1",
        50,
        65,
        True,
    )


def test_slots_do_not_confuse_recognition():
    ckpt = _checkpoint(
        {
            "rnn/basic_rnn_cell/kernel": (7, 4),
            "rnn/basic_rnn_cell/bias": (4,),
            "rnn/basic_rnn_cell/kernel/Adam": (7, 4),
            "rnn/basic_rnn_cell/kernel/Adam_1": (7, 4),
            "beta1_power": (),
        }
    )
    [rnn] = ckpt.rnns
    assert rnn.tensor_names == ["rnn/basic_rnn_cell/kernel", "rnn/basic_rnn_cell/bias"]
    assert ckpt.entries["rnn/basic_rnn_cell/kernel/Adam"].kind == "slot"
    assert ckpt.entries["beta1_power"].kind == "bookkeeping"


# --- partial recognition: cells that lack or misshape tensors are still found, to be reported -----


def _found(shapes: dict[str, tuple[int, ...]], *, partial: bool):
    from ckptmap.cells.recognize import find_in_entries

    return find_in_entries(_checkpoint(shapes).entries, partial=partial)


def test_a_keras_bidirectional_layer_missing_one_bias_is_found_partly() -> None:
    shapes = {}
    for side in ("forward_layer", "backward_layer"):
        shapes[f"bidi/{side}/cell/kernel"] = (3, 20)
        shapes[f"bidi/{side}/cell/recurrent_kernel"] = (5, 20)
    shapes["bidi/forward_layer/cell/bias"] = (20,)
    assert _found(shapes, partial=False) == []  # the directions differ: not a whole layer
    [rnn] = _found(shapes, partial=True)
    assert (rnn.kind, rnn.bidirectional, rnn.units, rnn.input_size, rnn.bias) == ("lstm", True, 5, 3, True)


def test_a_keras_lstm_with_a_scalar_bias_is_not_an_lstm() -> None:
    shapes = {"lstm/cell/kernel": (3, 20), "lstm/cell/recurrent_kernel": (5, 20), "lstm/cell/bias": ()}
    assert _found(shapes, partial=False) == []
    shapes["lstm/cell/bias"] = (20,)
    assert [r.kind for r in _found(shapes, partial=False)] == ["lstm"]


def test_a_torch_module_with_a_misshapen_weight_ih_is_found_partly() -> None:
    shapes = {"gru.weight_ih_l0": (15, 3), "gru.weight_hh_l0": (15, 5), "gru.weight_ih_l1": (15,),
              "gru.weight_hh_l1": (15, 5)}  # fmt: skip
    assert _found({k.replace(".", "/"): v for k, v in shapes.items()}, partial=False) == []
    [rnn] = _found({k.replace(".", "/"): v for k, v in shapes.items()}, partial=True)
    assert (rnn.kind, rnn.layers, rnn.units) == ("gru", 2, 5)
