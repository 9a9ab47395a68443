"""Which gate a conversion got wrong: each gate's pre-activation, recomputed on both sides.

Both RNNs of a pair are brought into one layout, PyTorch's, by the built-in mappings (a source in
TF1 through tf1-to-torch, a Keras destination through keras-to-torch, ...; a PyTorch side as it
is). Then for every layer, direction and gate block g, on the same random inputs x and states h,

    pre_g = W_ih[g] x + W_hh[g] h + b_ih[g] + b_hh[g]

is computed from each side's weights and compared. A swapped block, a transposed matrix or a lost
bias shows in the gate it belongs to, and only there. The sum takes both biases and both products
together, so where the two layouts keep a bias in different places (a GRU's b_hn folded into the
input bias by an approximate mapping) nothing is blamed that the outputs would not show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cells.layouts import layout
from ..cells.recognize import find_in_entries
from ..errors import CkptmapError
from ..pipeline import apply, resolve_mappings
from ..recognition import Recognized
from ..rules.mapping import builtin_chain

_CANONICAL = "torch"
GATE_NAMES = {
    "i": "input gate",
    "f": "forget gate",
    "g": "cell candidate",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate",
    "n": "candidate",
    "h": "state",
}


@dataclass(frozen=True)
class GateError:
    layer: int
    reverse: bool
    gate: str  # shared gate letter (cells/layouts.py)
    max_abs: float
    max_rel: float

    @property
    def label(self) -> str:
        direction = "bw" if self.reverse else "fw"
        return f"{GATE_NAMES.get(self.gate, self.gate)} ({self.gate}) of layer {self.layer} {direction}"

    def to_dict(self) -> dict[str, Any]:
        direction = "bw" if self.reverse else "fw"
        name = GATE_NAMES.get(self.gate, self.gate)
        return {"layer": self.layer, "direction": direction, "gate": self.gate, "name": name,
                "max_abs": self.max_abs, "max_rel": self.max_rel}  # fmt: skip


def gate_errors(source: Recognized, destination: Recognized, params: Mapping[str, Any]) -> list[GateError]:
    """Per layer, direction and gate, how far the destination's pre-activation is from the
    source's; [] where a side cannot be brought into PyTorch's layout (no built-in mapping, a
    projection or peepholes, which nn.LSTM's layout has no place for)."""
    ours, theirs = _canonical(source, params), _canonical(destination, params)
    if not ours or not theirs or ours.keys() != theirs.keys():
        return []
    kind = source.rnn.kind
    gates = layout(f"{_CANONICAL}.{kind}").gates
    rng = np.random.default_rng(0)
    out = []
    for key, mine in ours.items():
        other = theirs[key]
        if any(mine[r].shape != other[r].shape for r in mine):
            return []
        x = rng.standard_normal((mine["weight_ih"].shape[1], 8))
        h = rng.standard_normal((mine["weight_hh"].shape[1], 8))
        a, b = _pre(mine, x, h), _pre(other, x, h)
        units = a.shape[0] // len(gates)
        for k, gate in enumerate(gates):
            rows = slice(k * units, (k + 1) * units)
            err = float(np.abs(a[rows] - b[rows]).max())
            scale = float(np.abs(a[rows]).max()) or 1.0
            out.append(GateError(key[0], key[1], gate, err, err / scale))
    return out


def _pre(p: Mapping[str, np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    bias = p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    return p["weight_ih"] @ x + p["weight_hh"] @ h + np.reshape(bias, (-1, 1))


def _canonical(side: Recognized, params: Mapping[str, Any]) -> dict[tuple[int, bool], dict[str, np.ndarray]]:
    """(layer, reverse) -> the cell's weights in PyTorch's layout (float64)."""
    view = side.view
    entries = [view.entries[n] for n in side.rnn.tensor_names if n in view.entries]
    if len(entries) != len(side.rnn.tensor_names):
        return {}
    part = view.derived(entries)
    framework = side.rnn.framework
    if framework != _CANONICAL:
        chain = builtin_chain(framework, _CANONICAL)
        if not chain:
            return {}
        try:
            mappings = resolve_mappings(list(chain), {})
            known = {k: v for k, v in params.items() if any(k in m.params for m in mappings)}
            part, _ = apply(part, resolve_mappings(list(chain), known))
        except CkptmapError:  # a side no built-in mapping converts (refused: peepholes, projections)
            return {}
    found = find_in_entries(part.entries)
    if any(r.framework != _CANONICAL or r.proj for r in found) or not found:
        return {}
    cells: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    offset = 0
    for rnn in found:  # a stack of Keras layers is several modules: their layers follow each other
        for cell in rnn.cells:
            cells[(offset + cell.layer, cell.reverse)] = {
                role: np.asarray(part[name], np.float64) for role, name in cell.members.items()
            }
        offset += rnn.layers
    return cells
