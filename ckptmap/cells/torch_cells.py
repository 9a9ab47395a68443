"""PyTorch recurrent modules: nn.LSTM, nn.GRU and nn.RNN, by their state-dict names.

A module registers `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` (and
`weight_hr_l{k}` with `proj_size`) per layer k, with a `_reverse` suffix for the backward
direction (torch/nn/modules/rnn.py, RNNBase.__init__). The module's path in its parent model is
the prefix (`encoder.weight_ih_l0`, canonical `encoder/weight_ih_l0`). The three modules share
names; the number of gate blocks in `weight_hh` tells them apart (4 LSTM, 3 GRU, 1 RNN).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..cell_kinds import default_class, kind_with_gates
from ..entry import TensorEntry
from ..errors import MappingError
from .layouts import layout
from .model import NOTE_UNEVEN, RNN, CellRef, require_layer_stacking

ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_NAME = re.compile(
    r"(?:(?P<scope>.+)/)?(?P<role>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)"
    r"(?P<rev>_reverse)?"
)


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every nn.LSTM / nn.GRU / nn.RNN whose parameters are in `entries`. With `partial`, a module
    whose biases or other parameters are partly missing or misshapen still counts (to report them);
    its first layer's two weights give the sizes."""
    modules: dict[str, dict[tuple[int, bool], dict[str, str]]] = {}
    for name in entries:
        m = _NAME.fullmatch(name)
        if m:
            cell = modules.setdefault(m["scope"] or "", {}).setdefault((int(m["layer"]), bool(m["rev"])), {})
            cell[m["role"]] = name
    return [rnn for scope, cells in modules.items() if (rnn := _module(scope, cells, entries, partial))]


def member_name(target: RNN, layer: int, reverse: bool, role: str) -> str:
    """The state-dict name (canonical) of one parameter of a fresh module."""
    if role not in ROLES:
        raise MappingError(
            f"A PyTorch {target.kind.upper()} has no parameter '{role}'; it has {', '.join(ROLES)}."
        )
    require_layer_stacking(target, "PyTorch")
    if NOTE_UNEVEN in target.notes:
        raise MappingError(
            f"{target.describe()}: its layers differ in size; one PyTorch module needs equal layers."
        )
    prefix = f"{target.scope}/" if target.scope else ""
    return f"{prefix}{role}_l{layer}{'_reverse' if reverse else ''}"


def roles(kind: str) -> tuple[str, ...]:
    return ROLES


def implicit(rnn: RNN) -> dict[str, tuple[int, ...]]:
    """Roles a module without biases (`bias=False`) lacks, which act as zeros."""
    gates = len(rnn.layout.gates) * rnn.units
    return {} if rnn.bias else {"bias_ih": (gates,), "bias_hh": (gates,)}


def _module(
    scope: str,
    cells: dict[tuple[int, bool], dict[str, str]],
    entries: Mapping[str, TensorEntry],
    partial: bool,
) -> RNN | None:
    layers = max(layer for layer, _ in cells) + 1
    bidirectional = any(rev for _, rev in cells)
    expected = {(k, r) for k in range(layers) for r in ((False, True) if bidirectional else (False,))}
    if set(cells) != expected or any({"weight_ih", "weight_hh"} - set(c) for c in cells.values()):
        return None
    first = cells[(0, False)]
    shape = {role: entries[name].shape for role, name in first.items()}
    proj = shape["weight_hr"][0] if "weight_hr" in shape else None
    units = shape["weight_hr"][1] if proj else shape["weight_hh"][1]
    kind = kind_with_gates(shape["weight_hh"][0], units)
    if kind is None:
        return None
    gates = shape["weight_hh"][0]
    has_bias = "bias_ih" in first or (
        partial and any("bias_ih" in c or "bias_hh" in c for c in cells.values())
    )
    refs = []
    for (layer, rev), members in sorted(cells.items()):
        s = {role: entries[name].shape for role, name in members.items()}
        if partial:  # a misshapen or missing weight_ih is reported, not measured
            inputs = (
                s["weight_ih"][1]
                if len(s.get("weight_ih", ())) == 2
                else (proj or units) * (2 if bidirectional else 1)
            )
            refs.append(CellRef(layer, rev, scope, dict(members), inputs))
            continue
        recurrent = proj or units
        if s["weight_hh"] != (gates, recurrent) or len(s["weight_ih"]) != 2 or s["weight_ih"][0] != gates:
            return None
        if has_bias and (s.get("bias_ih") != (gates,) or s.get("bias_hh") != (gates,)):
            return None
        if proj and s.get("weight_hr") != (proj, units):
            return None
        if layer > 0 and s["weight_ih"][1] != recurrent * (2 if bidirectional else 1):
            return None
        refs.append(CellRef(layer, rev, scope, dict(members), s["weight_ih"][1]))
    return RNN(
        framework="torch",
        kind=kind,
        cell_type=default_class("torch", kind),
        scope=scope,
        input_size=refs[0].input_size,
        units=units,
        layers=layers,
        bidirectional=bidirectional,
        proj=proj,
        bias=has_bias,
        dtype=entries[first["weight_ih"]].dtype,
        reset_after=layout(f"torch.{kind}").reset_after,  # nn.GRU: r * (W_hn h + b_hn)
        cells=tuple(refs),
    )
