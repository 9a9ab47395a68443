"""The table of cell kinds (ckptmap/cell_kinds.py) against the layouts, the TF1 cell specs, and the
frameworks themselves: every class it names exists, builds a cell of the kind's gate count, and
carries the state parts the table says."""

from __future__ import annotations

import numpy as np
import pytest

from ckptmap import cell_kinds
from ckptmap.cells import layouts, tf1_specs
from ckptmap.errors import RuleError
from ckptmap.rules import schema
from tests.frameworks import tf1

KINDS = cell_kinds.KINDS
BUILT = [(k, fw) for k in KINDS for fw in cell_kinds.FRAMEWORKS if k.of(fw).layout]
IN_TORCH = [k for k in KINDS if k.counterpart("torch")]
IN_KERAS = [k for k in KINDS if k.counterpart("keras")]
IN_TF2 = [k for k in KINDS if set(k.of("tf1").classes) - set(k.of("tf1").removed)]


@pytest.mark.parametrize(("kind", "framework"), BUILT, ids=[f"{k.name}-{fw}" for k, fw in BUILT])
def test_each_framework_layout_is_a_row_of_the_layouts_with_the_kinds_gates(kind, framework):
    row = layouts.layout(kind.of(framework).layout)
    assert row.framework == framework and row.cell == kind.name
    assert len(row.gates) == kind.gates


def test_every_tf1_cell_spec_is_a_class_of_its_kind_and_every_class_has_a_spec():
    for spec in tf1_specs.CELLS:
        assert spec.cell_type in cell_kinds.kind(spec.kind).of("tf1").classes
    specs = {spec.cell_type for spec in tf1_specs.CELLS}
    assert {c for k in KINDS for c in k.of("tf1").classes} <= specs | set(tf1_specs.READ_AS)
    assert set(tf1_specs.READ_AS.values()) <= specs


def test_a_kind_a_framework_lacks_says_why_and_one_it_has_names_a_layout_or_is_tf1_only():
    for kind in KINDS:
        for framework in cell_kinds.FRAMEWORKS:
            row = kind.of(framework)
            assert bool(row.classes) != bool(row.missing), (kind.name, framework)
            assert set(row.removed) <= set(row.classes)
        if not all(map(kind.counterpart, cell_kinds.FRAMEWORKS)):
            assert kind.of("tf1").classes == kind.of("tf1").removed and kind.of("tf1").layout is None


def test_every_measured_tf1_row_writes_its_axes_in_input_and_units():
    for spec in tf1_specs.CELLS:
        for role, axes in (spec.dims or {}).items():
            assert role in {**spec.members, **spec.optional}, (spec.cell_type, role)
            for text in axes:
                tf1_specs.axis_terms(text)  # KeyError on a name other than input and units


def test_kind_with_gates_and_default_classes():
    assert [cell_kinds.kind_with_gates(g * 8, 8) for g in (1, 2, 3, 4)] == ["rnn", None, "gru", "lstm"]
    assert cell_kinds.kind_with_gates(30, 8) is None and cell_kinds.kind_with_gates(8, 0) is None
    assert cell_kinds.default_class("tf1", "rnn") == "BasicRNNCell"
    assert cell_kinds.default_class("keras", "rnn") == "SimpleRNN"
    assert cell_kinds.kind_of_class("tf1", "BasicLSTMCell") == "lstm"
    with pytest.raises(RuleError, match="Unknown cell kind 'lsmt'"):
        cell_kinds.kind("lsmt")


@pytest.mark.parametrize("kind", IN_TORCH, ids=[k.name for k in IN_TORCH])
def test_torch_classes_have_the_gates_and_state_parts(kind):
    import torch

    module = getattr(torch.nn, kind.of("torch").builds.removeprefix("nn."))(3, 5)
    assert module.weight_hh_l0.shape == (kind.gates * 5, 5)
    _, state = module(torch.zeros(1, 2, 3))
    assert len(state) == len(kind.state) if isinstance(state, tuple) else len(kind.state) == 1


@pytest.mark.parametrize("kind", IN_KERAS, ids=[k.name for k in IN_KERAS])
def test_keras_classes_have_the_gates_and_state_parts(kind):
    import keras

    keras_row = kind.of("keras")
    layer = getattr(keras.layers, keras_row.builds)(5, return_state=True)
    outputs = layer(np.zeros((1, 2, 3), "float32"))
    assert len(outputs) - 1 == len(kind.state)  # the output, then each state part
    assert tuple(layer.cell.recurrent_kernel.shape) == (5, kind.gates * 5)
    assert layer.cell.name == keras_row.cell_name
    assert keras.src.utils.naming.to_snake_case(keras_row.builds) == keras_row.key


@pytest.mark.parametrize("kind", IN_TF2, ids=[k.name for k in IN_TF2])
def test_tf1_classes_build_the_kinds_gates_and_state_parts(kind):
    tf, v1 = tf1()
    for class_name in set(kind.of("tf1").classes) - set(kind.of("tf1").removed):
        with tf.Graph().as_default():
            cell = getattr(v1.nn.rnn_cell, class_name)(5)
            state = cell.zero_state(1, tf.float32)
            assert len(state) == len(kind.state) if isinstance(state, tuple) else len(kind.state) == 1
            v1.nn.dynamic_rnn(cell, v1.placeholder(tf.float32, [1, 2, 3]), dtype=tf.float32)
            # The gate axis of every kernel together (GRUCell: gates/kernel [r, u] + candidate/kernel).
            kernels = [v.shape.as_list() for v in v1.global_variables() if len(v.shape) == 2]
            assert sum(shape[1] for shape in kernels) == kind.gates * 5


def test_a_when_fact_the_kind_does_not_have_is_refused_naming_the_facts_it_has():
    text = "name: t\nrules:\n  - cell: tf1.lstm\n    when: {reset_after: true}\n    refuse: not a GRU\n"
    with pytest.raises(RuleError, match=r"'when' takes .*peepholes.*not 'reset_after'"):
        schema.parse(text, "t.yaml")


IN_ONNX = [k for k in KINDS if k.counterpart("onnx")]
IN_FLAX = [k for k in KINDS if k.counterpart("flax")]


@pytest.mark.parametrize("kind", IN_ONNX, ids=[k.name for k in IN_ONNX])
def test_onnx_classes_are_operators_whose_weights_have_the_gates(kind):
    import onnx

    schema_ = onnx.defs.get_schema(kind.of("onnx").builds, 14)
    w = next(i for i in schema_.inputs if i.name == "W")
    assert f"{kind.gates}*hidden_size" in w.description.replace(" ", "") or kind.gates == 1
    assert len([o for o in schema_.outputs if o.name.startswith("Y_")]) == len(kind.state)  # Y_h (, Y_c)


@pytest.mark.parametrize("kind", IN_FLAX, ids=[k.name for k in IN_FLAX])
def test_flax_classes_are_the_recognized_cells_and_carry_the_state_parts(kind):
    import jax
    from flax import linen, nnx

    from ckptmap.cells import flax_cells

    for class_name in kind.of("flax").classes:
        assert flax_cells.cell_class(class_name).kind == kind.name  # the family knows it
        if class_name.startswith("nnx."):
            cell = getattr(nnx, class_name.removeprefix("nnx."))(3, 5, rngs=nnx.Rngs(0))
            carry = cell.initialize_carry((1, 3), nnx.Rngs(0))
        else:
            carry = getattr(linen, class_name)(5).initialize_carry(jax.random.PRNGKey(0), (1, 3))
        assert len(carry) == len(kind.state) if isinstance(carry, tuple) else len(kind.state) == 1
    assert {c.name for c in flax_cells.CELLS if c.kind == kind.name} <= set(kind.of("flax").classes)
