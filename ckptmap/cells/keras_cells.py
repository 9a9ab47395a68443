"""Keras recurrent layers (GRU, LSTM, SimpleRNN, Bidirectional), by their canonical names.

Every Keras file format is read into the naming of formats/keras_names.py: `<layer>/cell/<role>` and,
for Bidirectional, `<layer>/forward_layer/cell/<role>` and `<layer>/backward_layer/cell/<role>`, with
roles kernel [input, g*units], recurrent_kernel [units, g*units] and bias (absent with
use_bias=False). The gate count g tells the kind: 3 GRU, 4 LSTM, 1 SimpleRNN. A GRU's bias of shape
[2, 3*units] means reset_after=True (input and recurrent biases), [3*units] means reset_after=False
(keras/src/layers/rnn/gru.py).

A Keras RNN is one layer. Several layers stacked in a model are several RNNs here; when another
framework's multi-layer RNN becomes Keras layers they are named `<scope>`, `<scope>_1`, ... (the
kind's default name, `gru`, `gru_1`, ..., when the scope is empty), as Keras names a fresh model's
layers.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import MappingError
from ..formats.keras_names import CELL, DIRECTIONS, LAYER_CLASSES, LAYER_KEYS, RNN_CELL_ROLES
from ..tree import TensorEntry
from .layouts import gate_count, kind_with_gates
from .model import RNN, CellRef, require_layer_stacking


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every Keras RNN layer whose cell weights are in `entries`."""
    cells: dict[str, dict[str, str]] = {}
    for name in entries:
        parent, _, role = name.rpartition("/")
        if role in RNN_CELL_ROLES and (parent == CELL or parent.endswith("/" + CELL)):
            cells.setdefault(parent, {})[role] = name
    layers: dict[str, dict[bool, tuple[str, dict[str, str]]]] = {}
    for cell, members in cells.items():
        layer = cell[: -len(CELL)].rstrip("/")
        wrapper, _, direction = layer.rpartition("/")
        if direction in DIRECTIONS:
            layers.setdefault(wrapper, {})[direction == "backward_layer"] = (layer, members)
        else:
            layers.setdefault(layer, {})[False] = (layer, members)
    found = [_layer(scope, sides, entries, partial) for scope, sides in layers.items()]
    return [rnn for rnn in found if rnn is not None]


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
    if target.cells:  # a Keras RNN kept as Keras keeps its own layer names
        return next(c.scope for c in target.cells if c.layer == layer)
    base = target.scope or ("bidirectional" if target.bidirectional else LAYER_KEYS[target.kind])
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
    refs = tuple(
        CellRef(0, reverse, scope, members, input_size) for reverse, (_, members) in sorted(sides.items())
    )
    first = next(iter(sides.values()))[1]["kernel"]
    return RNN(
        framework="keras",
        kind=kind,
        cell_type=LAYER_CLASSES[kind],
        scope=scope,
        input_size=input_size,
        units=units,
        layers=1,
        bidirectional=bidirectional,
        bias=has_bias,
        dtype=entries[first].dtype,
        reset_after=reset_after,
        cells=refs,
    )


def _measure(
    members: dict[str, str], entries: Mapping[str, TensorEntry], partial: bool
) -> tuple[str, int, int, bool, bool | None] | None:
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
    reset_after = None
    if kind == "gru":  # without a bias the weights cannot tell; Keras' default (True) is assumed
        reset_after = bias is None or len(bias) == 2
    if (
        bias is not None
        and not partial
        and bias not in (((recurrent[1],), (2, recurrent[1])) if kind == "gru" else ((recurrent[1],),))
    ):
        return None
    return kind, kernel[0], units, bias is not None, reset_after
