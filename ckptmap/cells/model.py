"""What a recognized RNN is, independent of the framework that saved it.

`RNN` describes one recurrent network (one `dynamic_rnn`, one `nn.LSTM`): kind, sizes, layers,
direction and how its layers are stacked. `CellRef` is one cell instance inside it (one layer, one
direction) with the canonical names of its tensors by role. Verification builds fresh models from
an `RNN`; the rule engine converts cell by cell through `CellRef`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..cell_kinds import default_class
from ..errors import MappingError
from .layouts import GateLayout, layout

# How layers of a bidirectional RNN are stacked. "layers": each layer reads the previous layer's
# output, both directions concatenated (nn.LSTM(bidirectional=True, num_layers=n), TF1
# stack_bidirectional_dynamic_rnn). "per_direction": each direction is its own stack that never
# sees the other (TF1 bidirectional_dynamic_rnn over two MultiRNNCells). They agree for one layer.
STACK_LAYERS = "layers"
STACK_PER_DIRECTION = "per_direction"
# Set on an RNN whose layers have different sizes (possible in a TF1 MultiRNNCell, not in nn.LSTM).
NOTE_UNEVEN = "layers differ in size"


def require_layer_stacking(target: RNN, framework: str) -> None:
    """Refuse a per-direction stack: PyTorch and Keras feed both directions into the next layer."""
    if target.bidirectional and target.layers > 1 and target.stacking == STACK_PER_DIRECTION:
        raise MappingError(
            f"{target.describe()}: each direction is stacked on its own (bidirectional_dynamic_rnn over "
            f"MultiRNNCells), while stacked bidirectional {framework} layers feed both directions into the "
            f"next; no {framework} model computes the same thing, so this RNN is not converted."
        )


@dataclass(frozen=True)
class CellRef:
    layer: int
    reverse: bool
    scope: str
    members: Mapping[str, str]  # role -> canonical tensor name
    input_size: int

    @property
    def direction(self) -> str:
        return "bw" if self.reverse else "fw"


@dataclass(frozen=True)
class RNN:
    framework: str  # "tf1" | "torch" | "keras" | "onnx"
    kind: str  # "lstm" | "gru" | "rnn"
    cell_type: str  # "LSTMCell", "BasicLSTMCell", "GRUCell", "BasicRNNCell", "nn.LSTM", ...
    scope: str  # the user's scope or module path, canonical ('' at the root)
    input_size: int
    units: int
    layers: int
    bidirectional: bool
    stacking: str = STACK_LAYERS
    proj: int | None = None
    peepholes: bool = False
    bias: bool = True
    dtype: str = "float32"
    cell_name: str | None = None  # TF1: the scope the cell made ("lstm_cell", or a custom name)
    reset_after: bool | None = None  # GRU: reset gate after the recurrent matmul (torch, Keras default)
    cells: tuple[CellRef, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Why no mapping may convert it, when the file says it computes what no other framework's cell
    # does (an ONNX node with other activations, or clip); "" for a plain cell.
    unsupported: str = ""

    @property
    def layout(self) -> GateLayout:
        return layout(f"{self.framework}.{self.kind}")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def tensor_names(self) -> list[str]:
        return [name for cell in self.cells for name in cell.members.values()]

    def cell(self, layer: int, reverse: bool = False) -> CellRef:
        for c in self.cells:
            if c.layer == layer and c.reverse == reverse:
                return c
        raise KeyError(f"{self.describe()} has no cell for layer {layer}, {'bw' if reverse else 'fw'}")

    @property
    def class_name(self) -> str:
        """The cell or layer class: the recorded one, else the one its framework builds for the kind."""
        return self.cell_type or default_class(self.framework, self.kind)

    def describe(self) -> str:
        where = self.scope or "(root)"
        direction = "bidirectional" if self.bidirectional else "unidirectional"
        extra = []
        if self.proj:
            extra.append(f"proj {self.proj}")
        if self.peepholes:
            extra.append("peepholes")
        if self.framework in ("keras", "onnx") and self.kind == "gru":
            extra.append(f"reset_after={self.reset_after}")
        if self.bidirectional and self.layers > 1 and self.stacking == STACK_PER_DIRECTION:
            extra.append("each direction stacked alone")
        if self.unsupported:
            extra.append(f"not convertible: {self.unsupported}")
        tail = f", {', '.join(extra)}" if extra else ""
        return (
            f"{self.class_name} at {where}: input {self.input_size}, units {self.units}, "
            f"{self.layers} layer{'s' if self.layers != 1 else ''}, {direction}{tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cells"] = [
            {
                "layer": c.layer,
                "direction": c.direction,
                "scope": c.scope,
                "input_size": c.input_size,
                "tensors": dict(c.members),
            }
            for c in self.cells
        ]
        data["direction"] = "bidirectional" if self.bidirectional else "unidirectional"
        return data
