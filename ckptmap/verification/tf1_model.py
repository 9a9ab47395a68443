"""Fresh TF1 graphs for a recognized RNN, restored with tf.compat.v1.train.Saver.

The graph is what the names describe: each cell (LSTMCell, GRUCell, ..., under the cell name the
checkpoint gives it) sits in the very scope its variables were saved under, whether the original
code called it directly, wrapped it in `dynamic_rnn`, a MultiRNNCell, `bidirectional_dynamic_rnn`
or contrib's `stack_bidirectional_dynamic_rnn`, or named scopes of its own. An RNN that is not a
TF1 one gets the scopes TF's own wrappers give (`cells.tf1_cells.cell_scope`). Restoring
`by="checkpoint"` maps each variable to the key the checkpoint stores it under (a Saver var_list,
still TF's own restore op); `by="model"` asks the checkpoint for the graph's own names, as a user's
Saver would.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..cell_kinds import default_class, kind
from ..cells import tf1_cells
from ..cells.model import RNN, STACK_PER_DIRECTION
from ..cells.tf1_specs import spec_for
from ..tree import Checkpoint
from . import tf1_contrib_cells
from .backends import backend, import_framework, quiet_stderr
from .cases import Batch, Run
from .outcome import Outcome, framework_message

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TF1 cells need tf-keras; must precede the TF import
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def restore_and_run(
    rnn: RNN, ckpt: Checkpoint, batches: list[Batch], *, by: str, options: dict[str, Any]
) -> Outcome:
    tf = import_framework("tensorflow", backend("tf1").install)
    tf.get_logger().setLevel("ERROR")  # deprecation notices of the TF1 cell API
    v1 = tf.compat.v1
    model = _as_tf1(rnn)
    with tf.Graph().as_default() as graph, quiet_stderr():
        x, inputs, output, finals = _build(tf, v1, model, options)
        variables = {v.op.name: v for v in v1.global_variables()}
        names = _variable_names(model, variables)
        outcome = Outcome("tf1", list(names))
        var_list = _var_list(rnn, ckpt, names, variables, by, outcome)
        if outcome.missing or outcome.mismatched:
            return outcome
        with v1.Session(graph=graph) as sess:
            try:
                v1.train.Saver(var_list).restore(sess, str(ckpt.path))
            except tf.errors.OpError as e:
                outcome.error = framework_message(e.message)
                return outcome
            for batch in batches:
                feed = {x: batch.x.astype(x.dtype.as_numpy_dtype)}
                for key, parts in inputs.items():
                    for part, placeholder in parts.items():
                        feed[placeholder] = batch.states[key][part].astype(placeholder.dtype.as_numpy_dtype)
                y, states = sess.run((output, finals), feed)
                outcome.runs.append(Run(y, states))
    return outcome


def _as_tf1(rnn: RNN) -> RNN:
    """The RNN as a TF1 graph describes it: TF1 cell classes, TF's own scope names for the cells."""
    if rnn.framework == "tf1":
        return rnn
    cell_type = default_class("tf1", rnn.kind)
    return replace(rnn, framework="tf1", cell_type=cell_type, cell_name=None, cells=())


def _cell_scope(rnn: RNN, layer: int, reverse: bool) -> str:
    """Where this cell's variables live: the scope the checkpoint gives it (a cell called directly,
    a custom scope or cell name, any of TF's RNN wrappers), else the one TF's own wrappers give."""
    if rnn.cells:
        return rnn.cell(layer, reverse).scope
    return tf1_cells.cell_scope(rnn, layer, reverse)


def _cell(v1: Any, rnn: RNN, options: dict[str, Any], name: str) -> Any:
    """The cell the checkpoint's class names, if TF1 builds it for this kind, else the kind's default."""
    tf1 = kind(rnn.kind).of("tf1")
    class_name = rnn.cell_type if rnn.cell_type in tf1.classes else default_class("tf1", rnn.kind)
    if class_name in tf1.removed:  # a TF 1.x contrib cell: built from its TF 1.x code
        return tf1_contrib_cells.build(v1, class_name, rnn, name, options)
    forget_bias = float(options.get("forget_bias", 1.0))
    kwargs: dict[str, Any] = {}
    if class_name == "LSTMCell":
        kwargs = {"use_peepholes": rnn.peepholes, "num_proj": rnn.proj, "forget_bias": forget_bias}
    elif class_name == "BasicLSTMCell":
        kwargs = {"forget_bias": forget_bias}
    return getattr(v1.nn.rnn_cell, class_name)(rnn.units, name=name, **kwargs)


def _build(tf: Any, v1: Any, rnn: RNN, options: dict[str, Any]) -> tuple[Any, dict, Any, dict]:
    """Placeholders for inputs and initial states, the RNN, its output and final states.

    Each cell runs in its own `dynamic_rnn` inside the exact scope the names give it, so the graph
    reads what the checkpoint holds however the original code wrapped the cell. The arithmetic is
    that of the original: a MultiRNNCell computes layer after layer, a bw direction runs on the
    reversed sequence (bidirectional_dynamic_rnn reverses it with array_ops.reverse when no
    sequence_length is given; tensorflow/python/ops/rnn.py), and `stacking` says whether a layer of a
    bidirectional RNN reads both directions of the layer before or only its own direction's.
    """
    dtype = tf.bfloat16 if rnn.dtype == "bfloat16" else tf.as_dtype(rnn.dtype)
    x = v1.placeholder(dtype, [None, None, rnn.input_size], name="inputs")
    carries_c = "c" in kind(rnn.kind).state  # an LSTM's state is (c, h)
    inputs: dict[tuple[int, bool], dict[str, Any]] = {}
    raw: dict[tuple[int, bool], Any] = {}

    def run(layer: int, reverse: bool, sequence: Any) -> Any:
        parts = {"h": v1.placeholder(dtype, [None, rnn.proj or rnn.units])}
        if carries_c:
            parts["c"] = v1.placeholder(dtype, [None, rnn.units])
        inputs[(layer, reverse)] = parts
        initial = v1.nn.rnn_cell.LSTMStateTuple(parts["c"], parts["h"]) if carries_c else parts["h"]
        parent, _, name = _cell_scope(rnn, layer, reverse).rpartition("/")
        if reverse:
            sequence = tf.reverse(sequence, [1])
        with _exact_scope(v1, parent) as scope:
            output, raw[(layer, reverse)] = v1.nn.dynamic_rnn(
                _cell(v1, rnn, options, name), sequence, initial_state=initial, scope=scope
            )
        return tf.reverse(output, [1]) if reverse else output

    if not rnn.bidirectional:
        output = x
        for k in range(rnn.layers):
            output = run(k, False, output)
    elif rnn.stacking == STACK_PER_DIRECTION:
        fw = bw = x
        for k in range(rnn.layers):
            fw, bw = run(k, False, fw), run(k, True, bw)
        output = tf.concat([fw, bw], -1)
    else:
        output = x
        for k in range(rnn.layers):
            output = tf.concat([run(k, False, output), run(k, True, output)], -1)
    finals = {key: ({"h": s.h, "c": s.c} if carries_c else {"h": s}) for key, s in raw.items()}
    return x, inputs, output, finals


@contextlib.contextmanager
def _exact_scope(v1: Any, name: str) -> Iterator[Any]:
    """The variable scope called `name` from the root ('' is the root itself), to hand to
    dynamic_rnn as a VariableScope: given one, dynamic_rnn re-enters it instead of opening `rnn`."""
    if not name:
        yield v1.get_variable_scope()
        return
    with v1.variable_scope(name) as scope:
        yield scope


def _variable_names(model: RNN, variables: dict[str, Any]) -> dict[str, tuple[int, bool, str]]:
    """Each graph variable's (layer, reverse, role), from its cell's scope and the cell's table."""
    spec = spec_for(model.cell_type, model.kind)
    paths = {**spec.members, **spec.optional}
    names = {}
    for layer in range(model.layers):
        for reverse in (False, True) if model.bidirectional else (False,):
            scope = _cell_scope(model, layer, reverse)
            for role, path in paths.items():
                if f"{scope}/{path}" in variables:
                    names[f"{scope}/{path}"] = (layer, reverse, role)
    stray = sorted(set(variables) - set(names))
    if stray:  # the builder and the naming table disagree: a bug in ckptmap, not in the checkpoint
        raise AssertionError(f"TF1 graph made variables the naming table does not know: {stray}")
    return names


def _var_list(
    rnn: RNN,
    ckpt: Checkpoint,
    names: dict[str, tuple[int, bool, str]],
    variables: dict[str, Any],
    by: str,
    outcome: Outcome,
) -> dict[str, Any]:
    by_key = {e.key: e for e in ckpt.entries.values()}
    var_list = {}
    for name, (layer, reverse, role) in names.items():
        if by == "checkpoint":
            canonical = rnn.cell(layer, reverse).members.get(role)
            entry = ckpt.entries.get(canonical) if canonical else None
        else:
            entry = by_key.get(name)
        shape = tuple(variables[name].shape.as_list())
        if entry is None:
            outcome.missing.append((name, shape))
        elif entry.shape != shape:
            outcome.mismatched.append((name, shape, entry.shape))
        else:
            var_list[entry.key] = variables[name]
    return var_list
