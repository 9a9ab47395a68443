"""Fresh ONNX graphs of LSTM / GRU / RNN nodes, run by onnxruntime.

The weights come from onnx's own loader (`onnx.load` and `onnx.numpy_helper.to_array` of the
initializer each tensor was read from), not from ckptmap's reader. The graph is one node per layer
(onnx/defs/rnn/defs.cc: X [steps, batch, input], W/R/B stacked over directions, initial_h and
initial_c [directions, batch, units]); layer k+1 reads layer k's Y [steps, directions, batch,
units] transposed and reshaped to [steps, batch, directions * units], which is how torch.onnx
stacks nn.LSTM layers, and how PyTorch concatenates directions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cell_kinds import default_class, kind
from ..cells.model import RNN
from ..tree import Checkpoint
from .backends import backend, import_framework
from .cases import Batch, Run
from .outcome import Outcome, framework_message

_OPSET = 14  # the newest opset whose RNN operators every onnxruntime since 1.10 runs


def restore_and_run(
    rnn: RNN, ckpt: Checkpoint, batches: list[Batch], *, by: str, options: dict[str, Any]
) -> Outcome:
    onnx = import_framework("onnx", backend("onnx").install)
    ort = import_framework("onnxruntime", backend("onnx").install)
    names = [name for cell in rnn.cells for name in cell.members.values()]
    outcome = Outcome("onnx", names)
    try:
        weights = _weights(onnx, rnn, ckpt)
        model = _graph(onnx, rnn, weights)
        onnx.checker.check_model(model)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx or onnxruntime refused the model: report their words
        outcome.error = framework_message(e)
        return outcome
    for batch in batches:
        outcome.runs.append(_run(rnn, session, batch))
    return outcome


def _weights(onnx: Any, rnn: RNN, ckpt: Checkpoint) -> dict[tuple[int, str], np.ndarray]:
    """(layer, W|R|B|P) -> the node input, directions stacked, as onnx itself loads the file."""
    from onnx import numpy_helper

    model = onnx.load(str(ckpt.path))
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    placed = ckpt.metadata["initializers"]
    out: dict[tuple[int, str], np.ndarray] = {}
    for layer in range(rnn.layers):
        cells = [rnn.cell(layer, reverse) for reverse in ((False, True) if rnn.bidirectional else (False,))]
        for role in cells[0].members:
            parts = []
            for cell in cells:
                initializer, index = placed[cell.members[role]]
                parts.append(arrays[initializer][index])
            out[(layer, role)] = np.stack(parts).astype(np.float32)
    return out


def _graph(onnx: Any, rnn: RNN, weights: dict[tuple[int, str], np.ndarray]) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    op = default_class("onnx", rnn.kind)
    carries_c = "c" in kind(rnn.kind).state
    directions = 2 if rnn.bidirectional else 1
    nodes, inputs, outputs, initializers = [], [], [], []
    x = "x"
    inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["steps", "batch", rnn.input_size]))
    initializers.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "flat_shape"))
    for layer in range(rnn.layers):
        names = {}
        for role in ("W", "R", "B", "P"):
            if (layer, role) in weights:
                names[role] = f"{role}_{layer}"
                initializers.append(numpy_helper.from_array(weights[(layer, role)], names[role]))
        state = ["h", "c"] if carries_c else ["h"]
        for part in state:
            inputs.append(
                helper.make_tensor_value_info(
                    f"{part}0_{layer}", TensorProto.FLOAT, [directions, "batch", rnn.units]
                )
            )
        node_inputs = [x, names["W"], names["R"], names.get("B", ""), "", "h0_" + str(layer)]
        if carries_c:
            node_inputs += ["c0_" + str(layer), names.get("P", "")]
        node_outputs = [f"y_{layer}", f"h_{layer}"] + ([f"c_{layer}"] if carries_c else [])
        attributes: dict[str, Any] = {
            "hidden_size": rnn.units,
            "direction": "bidirectional" if rnn.bidirectional else "forward",
        }
        if rnn.kind == "gru":
            attributes["linear_before_reset"] = int(bool(rnn.reset_after))
        nodes.append(helper.make_node(op, node_inputs, node_outputs, name=f"{op}_{layer}", **attributes))
        nodes.append(helper.make_node("Transpose", [f"y_{layer}"], [f"yt_{layer}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"yt_{layer}", "flat_shape"], [f"x_{layer + 1}"]))
        x = f"x_{layer + 1}"
        for out in node_outputs[1:]:
            outputs.append(
                helper.make_tensor_value_info(out, TensorProto.FLOAT, [directions, "batch", rnn.units])
            )
    width = directions * rnn.units
    outputs.insert(0, helper.make_tensor_value_info(x, TensorProto.FLOAT, ["steps", "batch", width]))
    graph = helper.make_graph(nodes, "ckptmap_verify", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])


def _run(rnn: RNN, session: Any, batch: Batch) -> Run:
    carries_c = "c" in kind(rnn.kind).state
    reverses = (False, True) if rnn.bidirectional else (False,)
    feed = {"x": np.ascontiguousarray(batch.x.transpose(1, 0, 2))}
    for layer in range(rnn.layers):
        for part in ("h", "c") if carries_c else ("h",):
            feed[f"{part}0_{layer}"] = np.stack([batch.states[(layer, r)][part] for r in reverses])
    results = session.run(None, feed)
    y, finals = results[0], results[1:]
    per_layer = 2 if carries_c else 1
    states = {}
    for layer in range(rnn.layers):
        h = finals[layer * per_layer]
        c = finals[layer * per_layer + 1] if carries_c else None
        for d, reverse in enumerate(reverses):
            states[(layer, reverse)] = {"h": h[d], **({"c": c[d]} if c is not None else {})}
    return Run(np.ascontiguousarray(y.transpose(1, 0, 2)), states)
