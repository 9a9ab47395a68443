"""Flax recurrent cells (linen and nnx), by the parameter trees they save.

A cell is a scope whose children are its Dense layers, each holding `kernel` [in, out] and maybe
`bias` (flax/linen/recurrent.py, flax/nnx/nn/recurrent.py, flax 0.12):

    linen LSTMCell, OptimizedLSTMCell  ii if ig io (no bias), hi hf hg ho (bias)   one per gate
    nnx LSTMCell                       the same, the forget gate spelled `if_`
    linen GRUCell                      ir iz in (bias), hr hz (no bias), hn (bias)
    linen SimpleCell                   i (bias), h (no bias)
    nnx OptimizedLSTMCell              dense_i [in, 4h] (no bias), dense_h [h, 4h] (bias)   fused
    nnx GRUCell                        dense_i [in, 3h] (bias), dense_h [h, 3h] (no bias)
    nnx SimpleCell                     dense_i [in, h] (bias), dense_h [h, h] (no bias)

`nn.RNN(cell)` keeps the cell under `cell`, `nn.Bidirectional` its two RNNs under `forward_rnn`
and `backward_rnn`; a cell made inline in a `@compact` method is bound to the parent instead
(`LSTMCell_0`), and a file saved from `model.init` starts with `params`. An RNN here is one cell
(or one forward/backward pair), its scope the path without `params`, `cell` and the direction.
A stack of cells is a stack of RNNs, as Keras layers are. Roles are `<dense>_<kernel|bias>`
(`if_kernel` for both spellings of the forget gate: `if` alone is a Python keyword).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..entry import TensorEntry
from ..errors import MappingError
from .model import RNN, CellRef, require_layer_stacking

DIRECTIONS = ("forward_rnn", "backward_rnn")  # flax/linen/recurrent.py Bidirectional's attributes
_CELL = "cell"  # nn.RNN's attribute
_ROOT = "params"  # the collection `model.init` puts parameters in


@dataclass(frozen=True)
class FlaxCell:
    """One cell class: its kind, and each Dense child with whether it has a bias."""

    name: str
    kind: str
    denses: Mapping[str, bool]
    fused: bool = False  # gates fused along the kernels' output axis (nnx)

    def roles(self) -> dict[str, str]:
        """role -> the path under the cell (`if_kernel` -> `if/kernel`)."""
        out = {}
        for dense, bias in self.denses.items():
            for leaf in ("kernel", "bias") if bias else ("kernel",):
                out[f"{dense.rstrip('_')}_{leaf}"] = f"{dense}/{leaf}"
        return out


def _lstm(forget: str) -> dict[str, bool]:
    return {
        "ii": False,
        forget: False,
        "ig": False,
        "io": False,
        "hi": True,
        "hf": True,
        "hg": True,
        "ho": True,
    }


CELLS: tuple[FlaxCell, ...] = (
    FlaxCell("LSTMCell", "lstm", _lstm("if")),
    # The same parameters as LSTMCell (read as one): a class a mapping may build (`as:`).
    FlaxCell("OptimizedLSTMCell", "lstm", _lstm("if")),
    FlaxCell("nnx.LSTMCell", "lstm", _lstm("if_")),
    FlaxCell("GRUCell", "gru", {"ir": True, "iz": True, "in": True, "hr": False, "hz": False, "hn": True}),
    FlaxCell("SimpleCell", "rnn", {"i": True, "h": False}),
    FlaxCell("nnx.OptimizedLSTMCell", "lstm", {"dense_i": False, "dense_h": True}, fused=True),
    FlaxCell("nnx.GRUCell", "gru", {"dense_i": True, "dense_h": False}, fused=True),
    FlaxCell("nnx.SimpleCell", "rnn", {"dense_i": True, "dense_h": False}, fused=True),
)
_BY_NAME = {c.name: c for c in CELLS}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def cell_class(name: str) -> FlaxCell:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise MappingError(f"Unknown Flax cell '{name}'; known: {', '.join(_BY_NAME)}.") from None


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every Flax cell (or Bidirectional pair) whose parameters are in `entries`."""
    scopes: dict[str, dict[str, str]] = {}  # cell path -> {dense/leaf: name}
    for name in entries:
        head, _, leaf = name.rpartition("/")
        cell, _, dense = head.rpartition("/")
        if leaf in ("kernel", "bias") and dense:
            scopes.setdefault(cell, {})[f"{dense}/{leaf}"] = name
    cells = {path: m for path, held in scopes.items() if (m := _measure(held, entries))}
    found: list[RNN] = []
    for path, (cls, members, inputs, units) in cells.items():
        wrapper, direction = _direction(path)
        if direction == DIRECTIONS[1] and f"{wrapper}/{DIRECTIONS[0]}/{_CELL}" in cells:
            continue  # taken with its forward half
        pair = cells.get(f"{wrapper}/{DIRECTIONS[1]}/{_CELL}") if direction == DIRECTIONS[0] else None
        if pair is not None and pair[0] == cls and pair[3] == units:
            refs = (CellRef(0, False, path, members, inputs), CellRef(0, True, path, pair[1], pair[2]))
            found.append(_rnn(cls, _scope(wrapper), refs, units, entries))
        else:
            scope = _scope(path[: -len(_CELL)].rstrip("/") if path.split("/")[-1] == _CELL else path)
            found.append(_rnn(cls, scope, (CellRef(0, False, path, members, inputs),), units, entries))
    return found


def member_name(target: RNN, layer: int, reverse: bool, role: str) -> str:
    """The parameter path of one weight of a fresh cell: `params/<layer>/cell/<dense>/<leaf>`, the
    layer the RNN's scope (`RNN_<k>` for the layers of a stack at the root), a Bidirectional's
    halves under `forward_rnn` and `backward_rnn`; a Flax RNN kept as Flax keeps its paths."""
    require_layer_stacking(target, "Flax")
    cls = cell_class(target.cell_type or default_cell(target.kind))
    roles_ = cls.roles()
    if role not in roles_:
        raise MappingError(f"A Flax {cls.name} has no parameter '{role}'; it has {', '.join(roles_)}.")
    if target.cells:
        return f"{target.cell(layer, reverse).scope}/{roles_[role]}"
    base = target.scope if target.layers == 1 else f"{target.scope or 'RNN'}_{layer}"
    direction = DIRECTIONS[reverse] if target.bidirectional else ""
    return "/".join(p for p in (_ROOT, base, direction, _CELL, roles_[role]) if p)


def roles(kind: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r for c in CELLS if c.kind == kind for r in c.roles()))


def implicit(rnn: RNN) -> dict[str, tuple[int, ...]]:
    return {}


def default_cell(kind: str) -> str:
    return next(c.name for c in CELLS if c.kind == kind)


def _measure(
    held: dict[str, str], entries: Mapping[str, TensorEntry]
) -> tuple[FlaxCell, dict[str, str], int, int] | None:
    """(class, role -> name, input size, units) of the first cell class whose parameters these are."""
    shapes = {path: entries[name].shape for path, name in held.items()}
    for cls in CELLS:
        paths = cls.roles()
        if set(paths.values()) != set(held):
            continue
        kernels = {dense: shapes[f"{dense}/kernel"] for dense in cls.denses}
        if any(len(shape) != 2 for shape in kernels.values()):
            continue
        inputs = next(shape[0] for dense, shape in kernels.items() if _reads_input(dense))
        units = next(shape[0] for dense, shape in kernels.items() if not _reads_input(dense))
        width = units * (_GATES[cls.kind] if cls.fused else 1)
        if any(shape != (inputs if _reads_input(d) else units, width) for d, shape in kernels.items()):
            continue
        if any(shapes[f"{dense}/bias"] != (width,) for dense, bias in cls.denses.items() if bias):
            continue
        return cls, {role: held[path] for role, path in paths.items()}, inputs, units
    return None


def _reads_input(dense: str) -> bool:
    """Whether a cell's Dense reads the input (`ii`, `in`, `i`, `dense_i`) rather than the state."""
    return dense == "dense_i" or (dense != "dense_h" and dense.startswith("i"))


def _direction(path: str) -> tuple[str, str]:
    """(the Bidirectional's path, forward_rnn or backward_rnn) for a cell of one, else (path, "")."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[-1] == _CELL and parts[-2] in DIRECTIONS:
        return "/".join(parts[:-2]), parts[-2]
    return path, ""


def _scope(path: str) -> str:
    parts = path.split("/") if path else []
    return "/".join(parts[1:] if parts[:1] == [_ROOT] else parts)


def _rnn(
    cls: FlaxCell, scope: str, refs: tuple[CellRef, ...], units: int, entries: Mapping[str, TensorEntry]
) -> RNN:
    first = next(iter(refs[0].members.values()))
    return RNN(
        framework="flax",
        kind=cls.kind,
        cell_type=cls.name,
        scope=scope,
        input_size=refs[0].input_size,
        units=units,
        layers=1,
        bidirectional=len(refs) == 2,
        dtype=entries[first].dtype,
        reset_after=True if cls.kind == "gru" else None,
        cells=refs,
    )
