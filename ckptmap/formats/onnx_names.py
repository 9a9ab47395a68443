"""An ONNX graph's initializers as a checkpoint: RNN weights named after their nodes, with the
nodes' attributes as settings.

The weights of an `LSTM`, `GRU` or `RNN` node (onnx/defs/rnn/defs.cc: inputs W 1, R 2, B 3, and an
LSTM's peepholes P 7) are named `<node>/<forward|reverse>/<W|R|B|P>`, one tensor per direction,
since ONNX stacks both directions of a bidirectional node in one initializer; the node `/enc/LSTM`
gives `enc/LSTM/forward/W` whatever the exporter called the initializer (`onnx::LSTM_381`). Every
such tensor carries the node's attributes and the output Y of the RNN node feeding it, if any
(`TensorEntry.settings`), for cells/onnx_cells.py. Other initializers keep their names (`fc.bias`
reads as `fc/bias`, as PyTorch's state-dict names do).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import dtypes
from ..errors import CkptmapError, FormatError
from ..tree import Checkpoint, TensorEntry
from .onnx_data import ModelFiles, external_files
from .onnx_graph import Graph, Initializer, Node

FORMAT = "onnx"
# The weight inputs of each RNN operator, by position (onnx/defs/rnn/defs.cc).
ROLE_INPUTS = {
    "LSTM": {"W": 1, "R": 2, "B": 3, "P": 7},
    "GRU": {"W": 1, "R": 2, "B": 3},
    "RNN": {"W": 1, "R": 2, "B": 3},
}
DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",), "bidirectional": ("forward", "reverse")}
# Ops that pass a sequence through unchanged in content (layout and shape only): an RNN node whose
# input comes from another one through these is the next layer of the same stack.
_RESHAPING = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Flatten", "Cast"}
_MAX_CHAIN = 32  # reshaping ops between two layers; torch.onnx puts two
_MAX_NOTES = 5  # per kind of note, so a crafted graph cannot print thousands of lines
_STRING = 8  # TensorProto.DataType STRING


def checkpoint(path: Path, graph: Graph) -> Checkpoint:
    files = ModelFiles(path)
    by_name = {i.name: i for i in graph.initializers}
    if len(by_name) != len(graph.initializers):
        raise FormatError(f"{path}: two initializers have the same name.")
    producers = {out: n for n in graph.nodes for out in n.outputs if out}
    entries: list[TensorEntry] = []
    placed: dict[str, tuple[str, int | None]] = {}  # canonical name -> (initializer, direction index)
    skipped: list[str] = []
    used: set[str] = set()
    for node, scope in _rnn_nodes(graph):
        roles = [(role, node.inputs[k]) for role, k in ROLE_INPUTS[node.op_type].items()
                 if len(node.inputs) > k and node.inputs[k]]  # fmt: skip
        computed = [name for _, name in roles if name not in by_name]
        if computed or any(name in used for _, name in roles):
            what = f"computes {computed[0]}" if computed else "shares its weights with another RNN node"
            skipped.append(f"ONNX node {node.name or scope} ({node.op_type}) {what}")
            continue
        settings = _settings(path, node, scope, producers)
        directions = DIRECTIONS[settings["direction"]]
        for role, name in roles:
            init = by_name[name]
            if not init.dims or init.dims[0] != len(directions):
                raise FormatError(
                    f"{path}: {node.op_type} node {node.name or scope}: input {role} ({name}) has shape "
                    f"{list(init.dims)}, not [{len(directions)}, ...] for direction {settings['direction']}."
                )
            dt = _dtype(init)
            if dt is None:
                raise FormatError(
                    f"{path}: {node.op_type} node {node.name or scope}: input {role} holds strings."
                )
            used.add(name)
            for index, direction in enumerate(directions):
                canonical = f"{scope}/{direction}/{role}"
                entries.append(_entry(files, init, dt, canonical, index, settings))
                placed[canonical] = (name, index)
    unread: list[str] = []
    taken = {e.name for e in entries}
    for init in graph.initializers:
        if init.name in used:
            continue
        dt = _dtype(init)
        if dt is None:  # strings, float8, int4: no weights of an RNN
            unread.append(init.name)
            continue
        canonical = plain_name(init.name)
        if canonical in taken:
            canonical = init.name
        if canonical in taken:
            raise FormatError(f"{path}: initializer '{init.name}' has the name an RNN weight is read under.")
        taken.add(canonical)
        entries.append(_entry(files, init, dt, canonical, None, None))
        placed[canonical] = (init.name, None)
    return Checkpoint(
        entries,
        format=FORMAT,
        path=path,
        files=[path, *external_files(path, graph)],
        notes=_notes(graph, used, skipped, unread),
        metadata={
            "ir_version": graph.ir_version,
            "producer": graph.producer,
            "opsets": graph.opsets,
            "initializers": placed,
        },
    )


def plain_name(name: str) -> str:
    """A dotted PyTorch parameter path (`fc.bias`) as the canonical `fc/bias`; others as they are."""
    return name.replace(".", "/") if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name) else name


def _notes(graph: Graph, used: set[str], skipped: list[str], unread: list[str]) -> list[str]:
    notes = [f"{s}; its weights are not read as an RNN." for s in skipped[:_MAX_NOTES]]
    if len(skipped) > _MAX_NOTES:
        notes.append(f"... and {len(skipped) - _MAX_NOTES} more RNN nodes like those.")
    if used:
        notes.append("RNN weights are named <node>/<direction>/<W|R|B|P>: ONNX keeps both directions in one "
                     "initializer.")  # fmt: skip
    if unread:
        shown = ", ".join(unread[:_MAX_NOTES]) + (
            f" and {len(unread) - _MAX_NOTES} more" if len(unread) > 5 else ""
        )
        notes.append(
            f"Initializers of types ckptmap does not read (strings, float8, int4) are left out: {shown}."
        )
    if graph.sparse_initializers:
        notes.append(f"{graph.sparse_initializers} sparse initializers are not read.")
    if any(n.has_subgraph for n in graph.nodes):
        notes.append("Initializers inside subgraphs (If, Loop, Scan bodies) are not read.")
    return notes


def _dtype(init: Initializer) -> dtypes.DType | None:
    if init.data_type == _STRING:
        return None
    try:
        return dtypes.from_onnx(init.data_type)
    except CkptmapError:
        return None


def _rnn_nodes(graph: Graph) -> list[tuple[Node, str]]:
    """RNN nodes with the scope their weights are named under: the node's name without the
    leading `/` torch.onnx gives it (`/enc/LSTM_1` -> `enc/LSTM_1`), else `<op>_<k>`."""
    out: list[tuple[Node, str]] = []
    seen: set[str] = set()
    counters: dict[str, int] = {}
    for node in graph.nodes:
        if node.op_type not in ROLE_INPUTS or node.domain not in ("", "ai.onnx"):
            continue
        scope = "/".join(p for p in node.name.split("/") if p and p not in (".", ".."))
        while not scope or scope in seen:
            k = counters[node.op_type] = counters.get(node.op_type, -1) + 1
            scope = f"{node.op_type}_{k}"
        seen.add(scope)
        out.append((node, scope))
    return out


def _settings(path: Path, node: Node, scope: str, producers: Mapping[str, Node]) -> dict[str, Any]:
    """The node's attributes (the operator's defaults filled in), checked for their types, and
    the Y of the RNN node feeding this one, if any: what recognition needs beyond shapes."""
    attrs = node.attributes

    def get(name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = attrs.get(name, default)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FormatError(
                f"{path}: {node.op_type} node {node.name or scope}: attribute {name} is {value!r}."
            )
        return value

    direction = get("direction", str, "forward")
    if direction not in DIRECTIONS:
        raise FormatError(f"{path}: {node.op_type} node {node.name or scope}: direction '{direction}'.")
    texts = get("activations", list, [])
    if not all(isinstance(a, str) for a in texts):
        raise FormatError(f"{path}: {node.op_type} node {node.name or scope}: activations {texts!r}.")
    return {
        "op": node.op_type,
        "node": node.name,
        "scope": scope,
        "direction": direction,
        "hidden_size": get("hidden_size", int, 0) or None,
        "linear_before_reset": get("linear_before_reset", int, 0),
        "activations": tuple(texts),
        "clip": get("clip", (float, int, type(None)), None),
        "input_forget": get("input_forget", int, 0),
        "layout": get("layout", int, 0),
        "y": node.outputs[0] if node.outputs else "",
        "fed_by": _feeding_rnn(node, producers),
    }


def _feeding_rnn(node: Node, producers: Mapping[str, Node]) -> str | None:
    """The output Y of the RNN node that reaches `node`'s X through reshaping ops only."""
    name = node.inputs[0] if node.inputs else ""
    for _ in range(_MAX_CHAIN):
        producer = producers.get(name)
        if producer is None:
            return None
        if producer.op_type in ROLE_INPUTS:
            return name if producer.outputs[0] == name else None  # Y, not the final state
        if producer.op_type not in _RESHAPING or not producer.inputs:
            return None
        name = producer.inputs[0]
    return None


def _entry(
    files: ModelFiles, init: Initializer, dt: dtypes.DType, name: str, index: int | None,
    settings: Mapping[str, Any] | None,
) -> TensorEntry:  # fmt: skip
    shape = init.dims if index is None else init.dims[1:]

    def load() -> Any:
        array = files.array(init, dt).reshape(init.dims)
        return array if index is None else array[index]

    return TensorEntry(name, tuple(shape), dt.name, init.name, load, settings=settings)
