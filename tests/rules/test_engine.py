"""The engine on in-memory checkpoints: accounting for every tensor, policies, errors, laziness."""

from __future__ import annotations

import gc
import textwrap
import weakref
from collections import Counter

import numpy as np
import pytest

from ckptmap.errors import MappingError
from ckptmap.pipeline import apply, rename_all
from ckptmap.rules.mapping import Mapping, load
from ckptmap.rules.schema import parse
from ckptmap.tree import Checkpoint, TensorEntry

READS: Counter[str] = Counter()


def _ckpt(shapes: dict[str, tuple[int, ...]]) -> Checkpoint:
    def entry(i: int, name: str, shape: tuple[int, ...]) -> TensorEntry:
        def load() -> np.ndarray:
            READS[name] += 1
            return (np.arange(int(np.prod(shape)), dtype=np.float32) + 1000 * i).reshape(shape)

        return TensorEntry(name, shape, "float32", name, load)

    return Checkpoint([entry(i, n, s) for i, (n, s) in enumerate(shapes.items())], format="test")


def _mapping(text: str, **params) -> Mapping:
    return Mapping(parse(textwrap.dedent(text), "m.yaml"), params)


LSTM = {"enc/rnn/lstm_cell/kernel": (7, 16), "enc/rnn/lstm_cell/bias": (16,)}


def test_tf1_lstm_to_torch_names_shapes_and_values():
    ckpt = _ckpt({**LSTM, "embedding": (10, 3), "global_step": (), "enc/rnn/lstm_cell/kernel/Adam": (7, 16)})
    out, plan = load("tf1-to-torch", {"forget_bias": 0.5}).run(ckpt)
    assert list(out) == [
        "enc/weight_ih_l0",
        "enc/weight_hh_l0",
        "enc/bias_ih_l0",
        "enc/bias_hh_l0",
        "embedding/weight",  # a TF1 embedding table is nn.Embedding's weight
    ]
    kernel, bias = ckpt["enc/rnn/lstm_cell/kernel"], ckpt["enc/rnn/lstm_cell/bias"]
    i, j, f, o = np.split(kernel, 4, axis=1)
    np.testing.assert_array_equal(out["enc/weight_ih_l0"], np.concatenate([i, f, j, o], 1)[:3].T)
    np.testing.assert_array_equal(out["enc/weight_hh_l0"], np.concatenate([i, f, j, o], 1)[3:].T)
    bi, bj, bf, bo = np.split(bias, 4)
    np.testing.assert_array_equal(out["enc/bias_ih_l0"], np.concatenate([bi, bf + 0.5, bj, bo]))
    assert not out["enc/bias_hh_l0"].any()
    assert plan.renamed == [("embedding", "embedding/weight")]
    assert dict(plan.dropped) == {
        "global_step": "training bookkeeping",
        "enc/rnn/lstm_cell/kernel/Adam": "optimizer slot",
    }
    assert plan.exact


def test_apply_is_lazy_and_reads_a_shared_source_once():
    READS.clear()
    out = load("tf1-to-torch").apply(_ckpt(LSTM))
    assert not READS  # nothing read until a target is
    for name in out:
        out[name]
    assert READS == {"enc/rnn/lstm_cell/kernel": 1, "enc/rnn/lstm_cell/bias": 1}


@pytest.mark.parametrize("how", ["read", "blocks"])
def test_a_source_named_twice_in_a_target_is_read_once_and_let_go(how: str) -> None:
    m = _mapping("""
        rules:
          - match: 'x'
            to:
              both: cat(src | split(0, 2, 0), src | split(0, 2, 1) | T | T, axis=0)
              again: src | T
    """)
    loaded: list[weakref.ref] = []
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    expected = {"both": x, "again": x.T}

    def load() -> np.ndarray:
        array = x.copy()
        loaded.append(weakref.ref(array))
        return array

    out, _ = m.run(Checkpoint([TensorEntry("x", (4, 3), "float32", "x", load)], format="test"))
    for entry in out.entries.values():
        got = entry.read() if how == "read" else np.concatenate(list(entry.blocks(8)))
        np.testing.assert_array_equal(got.reshape(expected[entry.name].shape), expected[entry.name])
    del got
    gc.collect()
    assert len(loaded) == 1  # one read for both targets
    assert loaded[0]() is None  # and not kept after the last of them, though `out` still is


def test_gru_conversion_is_declared_approximate():
    shapes = {
        "rnn/gru_cell/gates/kernel": (7, 8),
        "rnn/gru_cell/gates/bias": (8,),
        "rnn/gru_cell/candidate/kernel": (7, 4),
        "rnn/gru_cell/candidate/bias": (4,),
    }
    plan = load("tf1-to-torch").plan(_ckpt(shapes))
    assert not plan.exact
    [approx] = plan.approximations
    assert "reset gate" in approx.reason and "first step" in approx.reason


def test_peepholes_are_refused_with_the_reason():
    shapes = {
        **LSTM,
        "enc/rnn/lstm_cell/w_f_diag": (4,),
        "enc/rnn/lstm_cell/w_i_diag": (4,),
        "enc/rnn/lstm_cell/w_o_diag": (4,),
    }
    with pytest.raises(MappingError, match=r"rule 1 'peephole lstm' .*refused: LSTM peepholes"):
        load("tf1-to-torch").run(_ckpt(shapes))


def test_bidirectional_over_multi_rnn_cells_is_refused():
    shapes = {
        f"bidirectional_rnn/{d}/multi_rnn_cell/cell_{k}/gru_cell/{n}": s
        for d in ("fw", "bw")
        for k in range(2)
        for n, s in (
            ("gates/kernel", (9, 8)),
            ("gates/bias", (8,)),
            ("candidate/kernel", (9, 4)),
            ("candidate/bias", (4,)),
        )
    }
    with pytest.raises(MappingError, match="each direction is stacked on its own"):
        load("tf1-to-torch").run(_ckpt(shapes))


def test_torch_to_tf1_writes_dynamic_rnn_names_and_folds_both_biases():
    shapes = {
        f"dec/{r}_l{k}": s
        for k in range(2)
        for r, s in (("weight_ih", (16, 4)), ("weight_hh", (16, 4)), ("bias_ih", (16,)), ("bias_hh", (16,)))
    }
    ckpt = _ckpt(shapes)
    out = load("torch-to-tf1").apply(ckpt)
    assert set(out) == {
        f"dec/rnn/multi_rnn_cell/cell_{k}/lstm_cell/{n}" for k in range(2) for n in ("kernel", "bias")
    }
    b = ckpt["dec/bias_ih_l1"] + ckpt["dec/bias_hh_l1"]
    bi, bf, bg, bo = np.split(b, 4)
    np.testing.assert_array_equal(
        out["dec/rnn/multi_rnn_cell/cell_1/lstm_cell/bias"], np.concatenate([bi, bg, bf - 1.0, bo])
    )


def test_torch_module_without_biases_converts_with_zero_biases():
    ckpt = _ckpt({"weight_ih_l0": (12, 3), "weight_hh_l0": (12, 4)})  # nn.GRU(bias=False)
    out = load("torch-to-tf1").apply(ckpt)
    assert not out["rnn/gru_cell/gates/bias"].any() and not out["rnn/gru_cell/candidate/bias"].any()


def test_legacy_names_rename_only_cell_variables_and_slots_follow():
    ckpt = _ckpt(
        {
            "RNN/MultiRNNCell/Cell0/GRUCell/Gates/Linear/Matrix": (6, 4),
            "RNN/MultiRNNCell/Cell0/GRUCell/Gates/Linear/Bias": (4,),
            "RNN/MultiRNNCell/Cell0/GRUCell/Candidate/Linear/Matrix": (6, 2),
            "RNN/MultiRNNCell/Cell0/GRUCell/Candidate/Linear/Bias": (2,),
            "BiRNN/FW/LSTMCell/W_0": (7, 16),
            "BiRNN/FW/LSTMCell/B": (16,),
            "BiRNN/FW/LSTMCell/W_0/Adam": (7, 16),
            "enc/rnn/basic_lstm_cell/weights": (7, 16),
            "enc/rnn/basic_lstm_cell/biases": (16,),
            "OptimizeLoss/enc/rnn/basic_lstm_cell/weights/Adam_1": (7, 16),
            "dense/weights": (4, 2),
            "dense/Linear/Matrix": (4, 2),
            "global_step": (),
        }
    )
    out, plan = load("tf1-legacy-names").run(ckpt)
    assert list(out) == [
        "rnn/multi_rnn_cell/cell_0/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_0/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_0/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_0/gru_cell/candidate/bias",
        "bidirectional_rnn/fw/lstm_cell/kernel",
        "bidirectional_rnn/fw/lstm_cell/bias",
        "bidirectional_rnn/fw/lstm_cell/kernel/Adam",
        "enc/rnn/basic_lstm_cell/kernel",
        "enc/rnn/basic_lstm_cell/bias",
        "OptimizeLoss/enc/rnn/basic_lstm_cell/kernel/Adam_1",
        "dense/weights",
        "dense/Linear/Matrix",
        "global_step",
    ]
    np.testing.assert_array_equal(
        out["bidirectional_rnn/fw/lstm_cell/kernel/Adam"], ckpt["BiRNN/FW/LSTMCell/W_0/Adam"]
    )
    assert out.entries["bidirectional_rnn/fw/lstm_cell/kernel/Adam"].kind == "slot"
    assert not plan.dropped


def test_chained_mappings_convert_old_names_to_torch():
    ckpt = _ckpt(
        {
            "rnnlm/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix": (7, 16),
            "rnnlm/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Bias": (16,),
        }
    )
    out, plan = apply(ckpt, [load("tf1-legacy-names"), load("tf1-to-torch")])
    assert list(out) == ["rnnlm/weight_ih_l0", "rnnlm/weight_hh_l0", "rnnlm/bias_ih_l0", "rnnlm/bias_hh_l0"]
    assert plan.targets[0].sources == ("rnnlm/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix",)


def test_two_rules_writing_one_target_is_an_error_naming_both():
    m = _mapping("""
        rules:
          - {name: first, match: a, to: c}
          - {name: second, match: b, to: c}
    """)
    with pytest.raises(
        MappingError, match=r"both be named 'c': from rule 1 'first' .*\('a'\) and rule 2 'second'"
    ):
        m.run(_ckpt({"a": (2,), "b": (2,)}))


def test_unmatched_error_lists_the_leftovers():
    m = _mapping("""
        unmatched: error
        rules: [{match: a, to: b}]
    """)
    with pytest.raises(MappingError, match=r"no rule takes 'x', 'y' \(unmatched: error\)"):
        m.run(_ckpt({"a": (2,), "x": (1,), "y": (1,)}))


def test_a_cell_rule_must_use_every_tensor_of_the_cell():
    m = _mapping("""
        rules:
          - cell: tf1.lstm
            to: torch.lstm
            make: {weight_ih: kernel | T}
    """)
    with pytest.raises(MappingError, match="does not use the cell's bias"):
        m.run(_ckpt(LSTM))


def test_match_rule_with_inputs_templates_and_ops():
    m = _mapping("""
        params: {scale: 2.0}
        rules:
          - match: '(?P<pre>.*)q_(?P<k>\\d+)(?P<rev>_r)?'
            inputs: {other: '{pre}k_{k}{rev|}'}
            to:
              '{pre}qk_l{k}{rev?_reverse}': cat(src, other, axis=0) | scale(scale) | reshape([2, -1])
    """)
    ckpt = _ckpt({"m/q_0": (3,), "m/k_0": (3,), "m/q_1_r": (3,), "m/k_1_r": (3,)})
    out, plan = m.run(ckpt)
    assert list(out) == ["m/qk_l0", "m/qk_l1_reverse"]
    np.testing.assert_array_equal(
        out["m/qk_l1_reverse"], 2 * np.concatenate([ckpt["m/q_1_r"], ckpt["m/k_1_r"]]).reshape(2, 3)
    )
    assert plan.targets[1].sources == ("m/q_1_r", "m/k_1_r")


def test_match_rule_input_that_does_not_exist_is_an_error():
    m = _mapping("""
        rules: [{match: '(?P<p>.*)/w', inputs: {b: '{p}/b'}, to: {'{p}/wb': 'cat(src, b)'}}]
    """)
    with pytest.raises(MappingError, match=r"its input b = 'x/b' is not in the checkpoint"):
        m.run(_ckpt({"x/w": (2,)}))


def test_shape_errors_name_rule_and_tensor():
    m = _mapping("""
        rules: [{match: w, to: {v: 'src | split(0, 4, 0)'}}]
    """)
    with pytest.raises(
        MappingError, match=r"rule 1 \(m.yaml:2\) on 'w': split: 6 elements do not split into 4"
    ):
        m.run(_ckpt({"w": (6,)}))


def test_final_renames_apply_to_every_target_and_refuse_collisions():
    ckpt = _ckpt({"model_1/a": (1,), "model_1/b": (1,)})
    out, _ = rename_all(ckpt, {"^model_1/": "model_3/"})
    assert list(out) == ["model_3/a", "model_3/b"]
    with pytest.raises(MappingError, match="both 'model_1/a' and 'model_1/b' the name 'x'"):
        rename_all(ckpt, {"^.*$": "x"})
