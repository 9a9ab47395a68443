"""ONNX `LSTM`, `GRU` and `RNN` nodes, by the names and settings formats/onnx_model.py gives them.

The reader names a node's weights `<node>/<forward|reverse>/<W|R|B|P>`, one tensor per direction
(W [gates*h, input], R [gates*h, h], B [2*gates*h], P [3h]; onnx/defs/rnn/defs.cc), and hands each
the node's attributes as `settings`. A stacked network is one node per layer in ONNX (torch.onnx
exports nn.LSTM(num_layers=2) at `enc` as nodes `/enc/LSTM` and `/enc/LSTM_1`, the second reading
the first one's Y through Transpose and Reshape): nodes chained that way, of the same op, size and
direction, are the layers of one RNN here, scoped at the module path (`enc`).

A node whose activations are not the operator's defaults, or that clips or couples its input and
forget gates, computes what no other framework's cell does: it is recognized, and `unsupported`
says why no mapping converts it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..cell_kinds import default_class, gate_count, kind_of_class
from ..entry import TensorEntry
from ..errors import MappingError
from ..formats.onnx_names import DIRECTIONS as NODE_DIRECTIONS
from ..formats.onnx_names import ROLE_INPUTS
from .model import RNN, CellRef, require_layer_stacking

DIRECTIONS = NODE_DIRECTIONS["bidirectional"]  # forward, reverse: the reader's names of the halves
_ROLES = {kind: tuple(ROLE_INPUTS[default_class("onnx", kind)]) for kind in ("lstm", "gru", "rnn")}
# The activations each op uses when the node names none (onnx/defs/rnn/defs.cc, "Default").
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_NODE_SUFFIX = re.compile(r"(?:LSTM|GRU|RNN)(?:_\d+)?")


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every RNN node (or chain of nodes) whose weights are in `entries`."""
    nodes: dict[str, tuple[Mapping[str, Any], dict[str, dict[str, str]]]] = {}
    for name, entry in entries.items():
        settings = entry.settings
        if not settings or "op" not in settings or not name.startswith(settings["scope"] + "/"):
            continue
        direction, _, role = name[len(settings["scope"]) + 1 :].partition("/")
        if direction in DIRECTIONS and role in ROLE_INPUTS[settings["op"]]:
            members = nodes.setdefault(settings["scope"], (settings, {}))[1]
            members.setdefault(direction, {})[role] = name
    measured = {
        scope: m
        for scope, (settings, members) in nodes.items()
        if (m := _measure(settings, members, entries))
    }
    return [_rnn(chain, measured, entries) for chain in _chains(measured)]


def member_name(target: RNN, layer: int, reverse: bool, role: str) -> str:
    """The name a weight of a fresh node has: what torch.onnx calls the nodes of a module (`enc`
    -> `enc/LSTM`, `enc/LSTM_1`), as formats/onnx_model.py reads them."""
    roles_ = _ROLES.get(target.kind, ())
    if role not in roles_:
        raise MappingError(
            f"An ONNX {target.kind.upper()} node has no input '{role}'; it has {', '.join(roles_)}."
        )
    require_layer_stacking(target, "ONNX")
    op = target.kind.upper()
    node = f"{op}_{layer}" if layer else op
    prefix = f"{target.scope}/" if target.scope else ""
    return f"{prefix}{node}/{DIRECTIONS[1] if reverse else DIRECTIONS[0]}/{role}"


def roles(kind: str) -> tuple[str, ...]:
    return _ROLES.get(kind, ())


def implicit(rnn: RNN) -> dict[str, tuple[int, ...]]:
    """Inputs a node may leave out, which act as zeros: B, and an LSTM's peepholes P."""
    out: dict[str, tuple[int, ...]] = {}
    if not rnn.bias:
        out["B"] = (2 * gate_count(rnn.kind) * rnn.units,)
    if rnn.kind == "lstm" and not rnn.peepholes:
        out["P"] = (3 * rnn.units,)
    return out


_Measured = tuple[
    Mapping[str, Any], dict[str, dict[str, str]], str, int, int
]  # settings, members, kind, input, units


def _measure(
    settings: Mapping[str, Any], members: dict[str, dict[str, str]], entries: Mapping[str, TensorEntry]
) -> _Measured | None:
    directions = NODE_DIRECTIONS[settings["direction"]]
    kind = kind_of_class("onnx", settings["op"])
    if kind is None or set(members) != set(directions):
        return None
    shapes = [{role: entries[name].shape for role, name in m.items()} for m in members.values()]
    first = shapes[0]
    if any("W" not in s or "R" not in s or s != first for s in shapes) or len(first["R"]) != 2:
        return None
    gates, units = first["R"]
    if gates != gate_count(kind) * units or len(first["W"]) != 2 or first["W"][0] != gates:
        return None
    if first.get("B", (2 * gates,)) != (2 * gates,) or first.get("P", (3 * units,)) != (3 * units,):
        return None
    return settings, members, kind, first["W"][1], units


def _chains(measured: Mapping[str, _Measured]) -> list[list[str]]:
    """Node scopes grouped into stacks, in file order: a node joins the node whose Y it reads when
    both are the same op, direction, size and bias, of the same module (`enc/LSTM`, `enc/LSTM_1`;
    an encoder feeding a decoder stays two RNNs), and it reads all of that node's Y."""
    by_y = {m[0]["y"]: scope for scope, m in measured.items() if m[0]["y"]}
    next_of: dict[str, str] = {}
    for scope, (settings, _, _, inputs, units) in measured.items():
        before = by_y.get(settings.get("fed_by") or "")
        if before is None or before in next_of:
            continue
        prev = measured[before]
        directions = 2 if settings["direction"] == "bidirectional" else 1
        this = measured[scope]
        same = (prev[0]["op"], prev[0]["direction"], prev[4], _has(prev, "B"), _has(prev, "P")) == (
            settings["op"], settings["direction"], units, _has(this, "B"), _has(this, "P"),
        )  # fmt: skip
        if (
            same
            and _module(before) == _module(scope)
            and inputs == directions * units
            and settings["direction"] != "reverse"
        ):
            next_of[before] = scope
    following = set(next_of.values())
    chains = []
    for scope in measured:
        if scope in following:
            continue
        chain = [scope]
        while chain[-1] in next_of:
            chain.append(next_of[chain[-1]])
        chains.append(chain)
    return chains


def _module(scope: str) -> str:
    """The module path of a node named as torch.onnx names them (`enc` of `enc/LSTM_1`), else the
    node's own path."""
    head, _, last = scope.rpartition("/")
    return head if _NODE_SUFFIX.fullmatch(last) else scope


def _has(m: _Measured, role: str) -> bool:
    return all(role in members for members in m[1].values())


def _rnn(chain: list[str], measured: Mapping[str, _Measured], entries: Mapping[str, TensorEntry]) -> RNN:
    settings, members, kind, inputs, units = measured[chain[0]]
    refs = []
    for layer, scope in enumerate(chain):
        for direction, roles_ in measured[scope][1].items():
            refs.append(CellRef(layer, direction == "reverse", scope, dict(roles_), measured[scope][3]))
    module = _module(chain[0])
    first = next(iter(members.values()))
    return RNN(
        framework="onnx",
        kind=kind,
        cell_type=settings["op"],
        scope=module,
        input_size=inputs,
        units=units,
        layers=len(chain),
        bidirectional=settings["direction"] == "bidirectional",
        peepholes=_has(measured[chain[0]], "P"),
        bias=_has(measured[chain[0]], "B"),
        dtype=entries[first["W"]].dtype,
        reset_after=bool(settings["linear_before_reset"]) if kind == "gru" else None,
        cells=tuple(refs),
        unsupported="; ".join(filter(None, (_unsupported(measured[s][0], units) for s in chain))),
    )


def _unsupported(settings: Mapping[str, Any], units: int) -> str:
    """Why a node computes what no other framework's cell does, or ""."""
    op, node = settings["op"], settings["node"] or settings["scope"]
    default = _DEFAULT_ACTIVATIONS[op]
    per_direction = len(default)
    activations = tuple(settings["activations"])
    directions = [activations[i : i + per_direction] for i in range(0, len(activations), per_direction)]
    if activations and any(
        tuple(a.lower() for a in d) != tuple(a.lower() for a in default) for d in directions
    ):
        return f"node {node} uses activations {', '.join(activations)}, not {', '.join(default)}"
    if settings["clip"] is not None:
        return f"node {node} clips its cell inputs at {settings['clip']}"
    if settings["input_forget"]:
        return f"node {node} couples its input and forget gates (input_forget=1)"
    if settings["direction"] == "reverse":
        return f"node {node} runs backward only (direction=reverse)"
    if settings["hidden_size"] not in (None, units):
        return f"node {node} says hidden_size {settings['hidden_size']}, its weights have {units} units"
    return ""
