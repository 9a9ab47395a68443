"""Keras recurrent layers (GRU, LSTM, SimpleRNN, Bidirectional), by their canonical names.

Every Keras file format is read into the naming of formats/keras_names.py: `<layer>/cell/<role>` and,
for Bidirectional, `<layer>/forward_layer/cell/<role>` and `<layer>/backward_layer/cell/<role>`, with
roles kernel [input, g*units], recurrent_kernel [units, g*units] and bias (absent with
use_bias=False). The gate count g tells the kind: 3 GRU, 4 LSTM, 1 SimpleRNN. A GRU's bias of shape
[2, 3*units] means reset_after=True (input and recurrent biases), [3*units] means reset_after=False
(keras/src/layers/rnn/gru.py).

A tf.keras cell can also run inside a TF1 graph (`tf.compat.v1.nn.dynamic_rnn(tf.keras.layers.
LSTMCell(n), ...)`) and be saved by `tf.compat.v1.train.Saver`. There it holds the same three
variables right under its own name, with no `cell` attribute in between. TF 2.21 with tf-keras,
built and printed: `lstm_cell/kernel` at the root whatever the variable scope (dynamic_rnn under
TF2 control flow; `gru_cell_1` for the next cell of a kind), `<scope>/rnn/while/lstm_cell/kernel`
under TF1 control flow (`disable_v2_behavior`), `<scope>/rnn/lstm_cell/kernel` from static_rnn or a
tf.keras RNN layer named `rnn`, `<scope>/lstm/lstm_cell/kernel` from a tf.keras LSTM layer, and
`<cell name>/kernel` for a cell given a name. Each such cell is one Keras RNN of one layer, its
scope the path to the cell without the while loop's `while` frame (`<scope>/rnn/lstm_cell`), its
layout the Keras cell's (keras.lstm; keras.gru, reset_after as the bias says; keras.rnn).
Directions and stacks are not inferred: a cell's name does not say which it was.

A Keras RNN is one layer. Several layers stacked in a model are several RNNs here; when another
framework's multi-layer RNN becomes Keras layers they are named `<scope>`, `<scope>_1`, ... (the
scope flattened, `encoder/rnn` -> `encoder_rnn`; the kind's default name, `gru`, `gru_1`, ...,
when the scope is empty), as Keras names a fresh model's layers.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..cell_kinds import gate_count, kind_with_gates
from ..entry import TensorEntry
from ..errors import MappingError
from ..formats.keras_names import (
    CELL,
    CUDNN_CLASSES,
    DIRECTIONS,
    LAYER_CLASSES,
    LAYER_KEYS,
    RNN_CELL_ROLES,
)
from .model import RNN, CellRef, require_layer_stacking


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every Keras RNN layer whose cell weights are in `entries`."""
    cells: dict[str, dict[str, str]] = {}
    graph_cells: dict[str, dict[str, str]] = {}  # tf.keras cells a TF1 graph ran (module docstring)
    for name in entries:
        parent, _, role = name.rpartition("/")
        if role in RNN_CELL_ROLES and (parent == CELL or parent.endswith("/" + CELL)):
            cells.setdefault(parent, {})[role] = name
        elif role in RNN_CELL_ROLES:
            graph_cells.setdefault(parent, {})[role] = name
    graph_found = [
        _graph_cell(path, members, entries, partial)
        for path, members in graph_cells.items()
        if "recurrent_kernel" in members
    ]
    layers: dict[str, dict[bool, tuple[str, dict[str, str]]]] = {}
    for cell, members in cells.items():
        layer = cell[: -len(CELL)].rstrip("/")
        wrapper, _, direction = layer.rpartition("/")
        if direction in DIRECTIONS:
            layers.setdefault(wrapper, {})[direction == "backward_layer"] = (layer, members)
        else:
            layers.setdefault(layer, {})[False] = (layer, members)
    found = [_layer(scope, sides, entries, partial) for scope, sides in layers.items()]
    return [rnn for rnn in (*found, *graph_found) if rnn is not None]


def member_name(target: RNN, layer: int, reverse: bool, role: str) -> str:
    """The canonical name of one weight of a fresh Keras layer (see the module docstring)."""
    if role not in RNN_CELL_ROLES:
        raise MappingError(
            f"A Keras {target.kind.upper()} layer has no weight '{role}'; it has {', '.join(RNN_CELL_ROLES)}."
        )
    require_layer_stacking(target, "Keras")
    name = layer_name(target, layer)
    direction = f"{DIRECTIONS[1] if reverse else DIRECTIONS[0]}/" if target.bidirectional else ""
    return f"{name}/{direction}{CELL}/{role}"


def layer_name(target: RNN, layer: int) -> str:
    """The Keras layer an RNN's layer becomes. Another framework's scope is flattened
    (`encoder/rnn` -> `encoder_rnn`), as the built-in mappings flatten dense and embedding layers:
    a Keras model built to receive it holds its layers side by side, and a `/` would make the
    writer nest models that model does not have."""
    if target.cells:  # a Keras RNN kept as Keras keeps its own layer names
        return next(c.scope for c in target.cells if c.layer == layer)
    base = target.scope.replace("/", "_") or (
        "bidirectional" if target.bidirectional else LAYER_KEYS[target.kind]
    )
    return base if layer == 0 else f"{base}_{layer}"


def roles(kind: str) -> tuple[str, ...]:
    return RNN_CELL_ROLES


def implicit(rnn: RNN) -> dict[str, tuple[int, ...]]:
    """A layer built with use_bias=False acts as if its bias were zeros."""
    if rnn.bias:
        return {}
    width = gate_count(rnn.kind) * rnn.units
    return {"bias": (2, width) if rnn.reset_after else (width,)}


def _layer(
    scope: str,
    sides: dict[bool, tuple[str, dict[str, str]]],
    entries: Mapping[str, TensorEntry],
    partial: bool,
) -> RNN | None:
    bidirectional = True in sides
    if bidirectional and False not in sides:
        return None
    measured = [m for _, members in sides.values() if (m := _measure(members, entries, partial))]
    # Both directions are one layer; partly, a bias one of them lacks is what there is to report.
    if len(measured) != len(sides) or len({m[:3] if partial else m for m in measured}) != 1:
        return None
    kind, input_size, units = measured[0][:3]
    with_bias = [m for m in measured if m[3]]
    has_bias, reset_after = bool(with_bias), (with_bias or measured)[0][4]
    # What a SavedModel's metadata says of the layer (formats/saved_model.py); nothing elsewhere.
    settings = next(
        (
            s
            for _, m in sides.values()
            for n in m.values()
            if "keras_class" in (s := entries[n].settings or {})
        ),
        {},
    )
    if kind == "gru" and not has_bias and isinstance(settings.get("reset_after"), bool):  # else: the default
        reset_after = settings["reset_after"]  # the weights cannot tell
    cudnn = any(m[5] for m in measured)
    refs = tuple(
        CellRef(0, reverse, scope, members, input_size) for reverse, (_, members) in sorted(sides.items())
    )
    first = next(iter(sides.values()))[1]["kernel"]
    return RNN(
        framework="keras",
        kind=kind,
        cell_type=CUDNN_CLASSES[kind] if cudnn else LAYER_CLASSES[kind],
        scope=scope,
        input_size=input_size,
        units=units,
        layers=1,
        bidirectional=bidirectional,
        bias=has_bias,
        dtype=entries[first].dtype,
        reset_after=reset_after,
        cells=refs,
        unsupported=_unsupported(settings, kind, scope),
    )


# The values of a recurrent layer's config that compute what the other frameworks' cells do
# (keras/src/layers/rnn/*.py defaults); a SavedModel's metadata may say otherwise.
_CONVERTIBLE: dict[str, tuple[object, ...]] = {
    "activation": ("tanh",),
    "recurrent_activation": ("sigmoid",),  # LSTM and GRU only
    "go_backwards": (False,),
    "reset_after": (True, False),  # GRU only; the mappings tell the two apart
}


def _unsupported(settings: Mapping[str, object], kind: str, scope: str) -> str:
    """Why a layer whose config the file gives computes what other frameworks' cells do not."""
    for key, allowed in _CONVERTIBLE.items():
        if key not in settings or (key == "recurrent_activation" and kind == "rnn"):
            continue
        value = settings[key]
        if not any(value == a and type(value) is type(a) for a in allowed):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            return f"layer {scope} has {key}={shown}, not {' or '.join(map(repr, allowed))}"
    return ""


# tf-keras' cell classes (tf_keras/src/layers/rnn/{lstm,gru,simple_rnn}.py), prefixed so they do not
# read as TF1's LSTMCell and GRUCell.
GRAPH_CELL_CLASSES = {"lstm": "keras.LSTMCell", "gru": "keras.GRUCell", "rnn": "keras.SimpleRNNCell"}


def _graph_cell(
    path: str, members: dict[str, str], entries: Mapping[str, TensorEntry], partial: bool
) -> RNN | None:
    """One tf.keras cell that a TF1 graph ran, as a one-layer Keras RNN (module docstring)."""
    measured = _measure(members, entries, partial)
    if measured is None:
        return None
    kind, input_size, units, has_bias, reset_after, cudnn = measured
    if cudnn:  # a tf.keras cell in a TF1 graph has no cuDNN twin
        return None
    head, _, cell_name = path.rpartition("/")
    if head == "while" or head.endswith("/while"):  # the frame TF1's while loop names its ops after
        head = head[: -len("while")].rstrip("/")
    scope = f"{head}/{cell_name}" if head else cell_name
    return RNN(
        framework="keras",
        kind=kind,
        cell_type=GRAPH_CELL_CLASSES[kind],
        scope=scope,
        input_size=input_size,
        units=units,
        layers=1,
        bidirectional=False,
        bias=has_bias,
        dtype=entries[members["kernel"]].dtype,
        reset_after=reset_after,
        cells=(CellRef(0, False, scope, dict(members), input_size),),
    )


def _measure(
    members: dict[str, str], entries: Mapping[str, TensorEntry], partial: bool
) -> tuple[str, int, int, bool, bool | None, bool] | None:
    """(kind, input size, units, has a bias, reset_after, Keras 2 CuDNN layer) from the shapes."""
    if "kernel" not in members or "recurrent_kernel" not in members:
        return None
    kernel, recurrent = entries[members["kernel"]].shape, entries[members["recurrent_kernel"]].shape
    if len(kernel) != 2 or len(recurrent) != 2 or kernel[1] != recurrent[1]:
        return None
    units = recurrent[0]
    kind = kind_with_gates(recurrent[1], units)
    if kind is None:
        return None
    bias = entries[members["bias"]].shape if "bias" in members else None
    # CuDNNLSTM / CuDNNGRU keep cuDNN's two biases end to end (formats/keras_names.py CUDNN_CLASSES);
    # a CuDNNGRU is a GRU(reset_after=True).
    cudnn = kind in CUDNN_CLASSES and bias == (2 * recurrent[1],)
    reset_after = None
    if kind == "gru":  # without a bias the weights cannot tell; Keras' default (True) is assumed
        reset_after = bias is None or len(bias) == 2 or cudnn
    fits = ((recurrent[1],), (2, recurrent[1])) if kind == "gru" else ((recurrent[1],),)
    if bias is not None and not partial and not cudnn and bias not in fits:
        return None
    return kind, kernel[0], units, bias is not None, reset_after, cudnn
