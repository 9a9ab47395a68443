"""Fresh TF1 graphs for a recognized RNN, restored with tf.compat.v1.train.Saver.

The graph is what TF1 code builds: `dynamic_rnn` over a cell or a MultiRNNCell,
`bidirectional_dynamic_rnn` (over MultiRNNCells for per-direction stacks), or the per-layer
scopes of contrib's `stack_bidirectional_dynamic_rnn`, under the RNN's own scope. Its variables
therefore carry the names `cells.tf1_cells.member_name` gives. Restoring `by="checkpoint"` maps
each variable to the key the checkpoint stores it under (a Saver var_list, still TF's own restore
op); `by="model"` asks the checkpoint for the graph's own names, as a user's Saver would.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

from ..cells import tf1_cells
from ..cells.model import RNN, STACK_PER_DIRECTION
from ..tree import Checkpoint
from .backends import backend, import_framework, quiet_stderr
from .cases import Batch, Run
from .outcome import Outcome

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
        x, inputs, output, finals = _build(tf, v1, model, float(options.get("forget_bias", 1.0)))
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
                outcome.error = e.message.strip().splitlines()[0]
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
        return replace(rnn, cell_name=None)
    cell_type = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "BasicRNNCell"}[rnn.kind]
    return replace(rnn, framework="tf1", cell_type=cell_type, cell_name=None)


def _cell(v1: Any, rnn: RNN, forget_bias: float) -> Any:
    cells = v1.nn.rnn_cell
    if rnn.kind == "lstm" and rnn.cell_type == "BasicLSTMCell":
        return cells.BasicLSTMCell(rnn.units, forget_bias=forget_bias)
    if rnn.kind == "lstm":
        return cells.LSTMCell(
            rnn.units, use_peepholes=rnn.peepholes, num_proj=rnn.proj, forget_bias=forget_bias
        )
    return cells.GRUCell(rnn.units) if rnn.kind == "gru" else cells.BasicRNNCell(rnn.units)


def _build(tf: Any, v1: Any, rnn: RNN, forget_bias: float) -> tuple[Any, dict, Any, dict]:
    """Placeholders for inputs and initial states, the RNN, its output and final states."""
    dtype = tf.bfloat16 if rnn.dtype == "bfloat16" else tf.as_dtype(rnn.dtype)
    x = v1.placeholder(dtype, [None, None, rnn.input_size], name="inputs")
    inputs: dict[tuple[int, bool], dict[str, Any]] = {}

    def state(layer: int, reverse: bool) -> Any:
        parts = {"h": v1.placeholder(dtype, [None, rnn.proj or rnn.units])}
        if rnn.kind == "lstm":
            parts["c"] = v1.placeholder(dtype, [None, rnn.units])
        inputs[(layer, reverse)] = parts
        return v1.nn.rnn_cell.LSTMStateTuple(parts["c"], parts["h"]) if rnn.kind == "lstm" else parts["h"]

    def cell() -> Any:
        return _cell(v1, rnn, forget_bias)

    def stack(reverse: bool) -> tuple[Any, Any]:
        if rnn.layers == 1:
            return cell(), state(0, reverse)
        return v1.nn.rnn_cell.MultiRNNCell([cell() for _ in range(rnn.layers)]), tuple(
            state(k, reverse) for k in range(rnn.layers)
        )

    raw: dict[tuple[int, bool], Any] = {}
    scope = v1.variable_scope(rnn.scope) if rnn.scope else contextlib.nullcontext()
    with scope:
        if not rnn.bidirectional:
            c, s0 = stack(False)
            output, final = v1.nn.dynamic_rnn(c, x, initial_state=s0)
            raw.update(_per_layer(final, rnn.layers, False))
        elif rnn.layers == 1 or rnn.stacking == STACK_PER_DIRECTION:
            (cf, sf), (cb, sb) = stack(False), stack(True)
            (fw, bw), (final_fw, final_bw) = v1.nn.bidirectional_dynamic_rnn(
                cf, cb, x, initial_state_fw=sf, initial_state_bw=sb
            )
            output = tf.concat([fw, bw], -1)
            raw.update(_per_layer(final_fw, rnn.layers, False))
            raw.update(_per_layer(final_bw, rnn.layers, True))
        else:
            # contrib.rnn.stack_bidirectional_dynamic_rnn: one bidirectional_dynamic_rnn per layer under
            # stack_bidirectional_rnn/cell_<k>, each reading both directions of the layer before.
            output = x
            with v1.variable_scope("stack_bidirectional_rnn"):
                for k in range(rnn.layers):
                    with v1.variable_scope(f"cell_{k}"):
                        (fw, bw), (final_fw, final_bw) = v1.nn.bidirectional_dynamic_rnn(
                            cell(),
                            cell(),
                            output,
                            initial_state_fw=state(k, False),
                            initial_state_bw=state(k, True),
                        )
                    output = tf.concat([fw, bw], -1)
                    raw[(k, False)], raw[(k, True)] = final_fw, final_bw
    finals = {key: ({"h": s.h, "c": s.c} if rnn.kind == "lstm" else {"h": s}) for key, s in raw.items()}
    return x, inputs, output, finals


def _per_layer(final: Any, layers: int, reverse: bool) -> dict[tuple[int, bool], Any]:
    return {(0, reverse): final} if layers == 1 else {(k, reverse): final[k] for k in range(layers)}


def _variable_names(model: RNN, variables: dict[str, Any]) -> dict[str, tuple[int, bool, str]]:
    """Each graph variable's (layer, reverse, role), found through the naming table."""
    names = {}
    for layer in range(model.layers):
        for reverse in (False, True) if model.bidirectional else (False,):
            for role in tf1_cells.cell_roles(model):
                name = tf1_cells.member_name(model, layer, reverse, role)
                if name in variables:
                    names[name] = (layer, reverse, role)
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
