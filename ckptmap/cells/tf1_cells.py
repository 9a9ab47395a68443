"""TF1 cells: which variables each cell creates, and the scopes TF wraps them in.

Names below are those of TF >= 1.2 (`tf.compat.v1.nn.rnn_cell`, tensorflow/python/ops/rnn_cell_impl.py
and rnn.py). A cell's variables sit under its own scope (`lstm_cell`), under the structure scopes
TF adds: `rnn` (dynamic_rnn), `multi_rnn_cell/cell_<k>` (MultiRNNCell), `bidirectional_rnn/fw|bw`
(bidirectional_dynamic_rnn), `stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/fw|bw`
(contrib stack_bidirectional_dynamic_rnn). What is left in front is the user's own scope.
Names of TF <= 1.1 are handled by the `tf1-legacy-names` mapping, not here.

The same table (tf1_specs) serves both ways: `find` reads cells out of a checkpoint (tf1_candidates
says which scopes hold cells, also cells the user named), `member_name` writes the names a freshly
built graph would look for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .. import cell_kinds
from ..cell_kinds import KIND_NAMES
from ..entry import TensorEntry
from ..errors import MappingError
from .layouts import layout
from .model import NOTE_UNEVEN, RNN, STACK_LAYERS, STACK_PER_DIRECTION, CellRef
from .tf1_candidates import candidates
from .tf1_specs import CELLS, PEEPHOLES, TF1Cell, axis_terms, kind_roles, spec_for

__all__ = ["CELLS", "TF1Cell", "cell_roles", "cell_scope", "find", "implicit", "member_name", "roles"]
_CELL_K = re.compile(r"cell_(\d+)")


@dataclass(frozen=True)
class _Found:
    spec: TF1Cell
    scope: str  # full scope of the cell
    members: dict[str, str]
    input_size: int
    units: int
    proj: int | None
    dtype: str


@dataclass(frozen=True)
class _Place:
    user_scope: str
    form: str  # "rnn" | "bidi" | "stack_bidi"
    layer: int
    reverse: bool


def find(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """Every TF1 RNN in `entries` (weights only), grouped from its cells. With `partial`, cells
    that miss some of their tensors count too, when their kernel gives the sizes."""
    groups: dict[tuple[str, str], list[tuple[_Place, list[_Found]]]] = {}
    for scope, specs in candidates(entries).items():
        readings = [found for spec in specs if (found := _measure(scope, spec, entries, partial))]
        readings.sort(key=lambda f: -len(f.members))  # of two rows of a class, the one that reads more
        if readings:
            place = _parse_place(scope)
            groups.setdefault((place.user_scope, place.form), []).append((place, readings))
    return [rnn for (scope, form), cells in groups.items() if (rnn := _choose(scope, form, cells))]


def cell_scope(target: RNN, layer: int, reverse: bool) -> str:
    """The scope a fresh TF1 graph gives this cell (inverse of `_parse_place`)."""
    parts = [target.scope] if target.scope else []
    direction = "bw" if reverse else "fw"
    stacked = _spec_for(target).always_stacked
    if not target.bidirectional:
        parts.append("rnn")
        if target.layers > 1 or stacked:
            parts += ["multi_rnn_cell", f"cell_{layer}"]
    elif target.layers == 1 and not stacked:
        parts += ["bidirectional_rnn", direction]
    elif target.stacking == STACK_PER_DIRECTION:
        parts += ["bidirectional_rnn", direction, "multi_rnn_cell", f"cell_{layer}"]
    else:
        parts += ["stack_bidirectional_rnn", f"cell_{layer}", "bidirectional_rnn", direction]
    parts.append(target.cell_name or _spec_for(target).scope_name)
    return "/".join(parts)


def member_name(target: RNN, layer: int, reverse: bool, role: str) -> str:
    spec = _spec_for(target)
    path = spec.members.get(role) or spec.optional.get(role)
    if path is None:
        roles = ", ".join([*spec.members, *spec.optional])
        raise MappingError(f"A TF1 {spec.cell_type} has no tensor '{role}'; its tensors are {roles}.")
    return f"{cell_scope(target, layer, reverse)}/{path}"


def roles(kind: str) -> tuple[str, ...]:
    return kind_roles(kind)


def cell_roles(rnn: RNN) -> tuple[str, ...]:
    """The tensors the cell class of `rnn` can have (BasicLSTMCell: no peepholes, no projection)."""
    spec = _spec_for(rnn)
    return (*spec.members, *spec.optional)


def implicit(rnn: RNN) -> dict[str, tuple[int, ...]]:
    return {}  # every TF1 cell stores all of its variables


def _spec_for(target: RNN) -> TF1Cell:
    return spec_for(target.cell_type, target.kind)


def _measure(scope: str, spec: TF1Cell, entries: Mapping[str, TensorEntry], partial: bool) -> _Found | None:
    required = {role: f"{scope}/{path}" for role, path in spec.members.items()}
    if not partial and any(name not in entries for name in required.values()):
        return None
    paths = {**spec.members, **spec.optional}
    members = {role: f"{scope}/{path}" for role, path in paths.items() if f"{scope}/{path}" in entries}
    shapes = {role: entries[name].shape for role, name in members.items()}
    if partial:  # sizes from the kernels alone, so a tensor of the wrong shape is reported, not hidden
        shapes = {role: shape for role, shape in shapes.items() if "kernel" in role}
    dims = _measured_by_dims(spec.dims, shapes) if spec.dims is not None else _DIMS[spec.kind](shapes)
    if dims is None:
        return None
    input_size, units, proj = dims
    dtype = entries[next(iter(members.values()))].dtype
    return _Found(spec, scope, members, input_size, units, proj, dtype)


# Sizes come from the kernels; every other tensor present must agree with them. A cell missing
# some tensors (what `verify --into` reports) is still measured when its kernel is there.
Shapes = Mapping[str, tuple[int, ...]]


def _measured_by_dims(dims: Mapping[str, tuple[str, ...]], s: Shapes) -> tuple[int, int, int | None] | None:
    """Input and units from shapes written as sums of `input` and `units` (TF1Cell.dims): units
    from an axis that is units alone, input from one that holds it; every shape present must fit."""
    if any(role not in dims or len(shape) != len(dims[role]) for role, shape in s.items()):
        return None
    axes = [
        (size, terms)
        for role, shape in s.items()
        for size, text in zip(shape, dims[role], strict=True)
        if (terms := axis_terms(text)) is not None
    ]
    units = next((size // b for size, (a, b, _) in axes if a == 0 and b > 0 and size % b == 0), 0)
    input_size = next(
        (
            (size - b * units - c) // a
            for size, (a, b, c) in axes
            if a > 0 and (size - b * units - c) % a == 0
        ),
        0,
    )
    if units <= 0 or input_size <= 0:
        return None
    if any(size != a * input_size + b * units + c for size, (a, b, c) in axes):
        return None
    return input_size, units, None


def _lstm_dims(s: Shapes) -> tuple[int, int, int | None] | None:
    kernel = s.get("kernel")
    if kernel is None or len(kernel) != 2 or kernel[1] % 4:
        return None
    units = kernel[1] // 4
    proj = None
    if "projection_kernel" in s:
        p = s["projection_kernel"]
        if len(p) != 2 or p[0] != units:
            return None
        proj = p[1]
    if s.get("bias", (4 * units,)) != (4 * units,) or any(s[r] != (units,) for r in PEEPHOLES if r in s):
        return None
    input_size = kernel[0] - (proj or units)
    return (input_size, units, proj) if input_size > 0 else None


def _gru_dims(s: Shapes) -> tuple[int, int, int | None] | None:
    gk, ck = s.get("gates_kernel"), s.get("candidate_kernel")
    if ck is not None and len(ck) == 2:
        rows, units = ck
    elif gk is not None and len(gk) == 2 and gk[1] % 2 == 0:
        rows, units = gk[0], gk[1] // 2
    else:
        return None
    expected = {
        "gates_kernel": (rows, 2 * units), "gates_bias": (2 * units,),
        "candidate_kernel": (rows, units), "candidate_bias": (units,),
        "candidate_input_kernel": (rows - units, units), "candidate_input_bias": (units,),
        "candidate_hidden_kernel": (units, units), "candidate_hidden_bias": (units,),
    }  # fmt: skip
    if any(s[role] != shape for role, shape in expected.items() if role in s):
        return None
    return (rows - units, units, None) if rows > units else None


def _rnn_dims(s: Shapes) -> tuple[int, int, int | None] | None:
    kernel = s.get("kernel")
    if kernel is None or len(kernel) != 2 or s.get("bias", (kernel[1],)) != (kernel[1],):
        return None
    input_size = kernel[0] - kernel[1]
    return (input_size, kernel[1], None) if input_size > 0 else None


_DIMS = {"lstm": _lstm_dims, "gru": _gru_dims, "rnn": _rnn_dims}


def _reset_after(spec: TF1Cell) -> bool | None:
    if spec.reset_after is not None:
        return spec.reset_after
    key = cell_kinds.kind(spec.kind).of("tf1").layout  # kinds with no counterpart have no gate layout
    return layout(key).reset_after if key else None


def _parse_place(cell_scope_name: str) -> _Place:
    parts = cell_scope_name.split("/")[:-1]
    layer, reverse, form = 0, False, "rnn"
    if len(parts) >= 2 and parts[-2] == "multi_rnn_cell" and (m := _CELL_K.fullmatch(parts[-1])):
        layer = int(m.group(1))
        parts = parts[:-2]
    if parts and parts[-1] in ("fw", "bw"):
        reverse, form = parts[-1] == "bw", "bidi"
        parts = parts[:-1]
        if parts and parts[-1] == "bidirectional_rnn":
            parts = parts[:-1]
        if len(parts) >= 2 and parts[-2] == "stack_bidirectional_rnn" and (m := _CELL_K.fullmatch(parts[-1])):
            layer, form = int(m.group(1)), "stack_bidi"
            parts = parts[:-2]
    elif parts and parts[-1] == "rnn":
        parts = parts[:-1]
    return _Place("/".join(parts), form, layer, reverse)


def _choose(user_scope: str, form: str, cells: list[tuple[_Place, list[_Found]]]) -> RNN | None:
    """The RNN these cells make. A custom-named kernel-and-bias cell may read as an LSTM or a
    vanilla RNN (tf1_candidates); the kind whose layers chain wins, and none when both do."""
    if all(len(readings) == 1 for _, readings in cells):
        return _group_rnn(user_scope, form, [(place, readings[0]) for place, readings in cells])
    fits = []
    for kind in KIND_NAMES:
        picked = [(p, next((f for f in readings if f.spec.kind == kind), None)) for p, readings in cells]
        chosen = [(p, f) for p, f in picked if f is not None]
        if len(chosen) < len(picked) or not _chained(form, chosen):
            continue
        if rnn := _group_rnn(user_scope, form, chosen):
            fits.append(rnn)
    return fits[0] if len(fits) == 1 else None


def _chained(form: str, cells: list[tuple[_Place, _Found]]) -> bool:
    """Whether each layer reads what the layer below puts out (both directions of it when the
    layers of a bidirectional RNN are stacked), and the first layer's directions read the same."""
    by = {(p.layer, p.reverse): f for p, f in cells}
    for (layer, reverse), f in by.items():
        if layer == 0:
            below = [] if not reverse else [by.get((0, False))]
            wanted = below[0].input_size if below and below[0] else f.input_size
        else:
            below = [by.get((layer - 1, r)) for r in ((False, True) if form == "stack_bidi" else (reverse,))]
            wanted = sum(b.proj or b.units for b in below if b is not None)
        if None in below or f.input_size != wanted:
            return False
    return True


def _group_rnn(user_scope: str, form: str, cells: list[tuple[_Place, _Found]]) -> RNN | None:
    kinds = {f.spec.kind for _, f in cells}
    types = {f.spec.cell_type for _, f in cells}
    if len(kinds) != 1:
        return None  # a MultiRNNCell mixing kinds has no single-module counterpart
    bidirectional = form != "rnn"
    layers = max(p.layer for p, _ in cells) + 1
    expected = {(k, r) for k in range(layers) for r in ((False, True) if bidirectional else (False,))}
    if {(p.layer, p.reverse) for p, _ in cells} != expected:
        return None
    cells.sort(key=lambda pf: (pf[0].layer, pf[0].reverse))
    first = cells[0][1]
    refs = tuple(CellRef(p.layer, p.reverse, f.scope, f.members, f.input_size) for p, f in cells)
    stacking = STACK_PER_DIRECTION if form == "bidi" and layers > 1 else STACK_LAYERS
    rnn = RNN(
        framework="tf1",
        kind=first.spec.kind,
        cell_type=sorted(types)[0],
        scope=user_scope,
        input_size=first.input_size,
        units=first.units,
        layers=layers,
        bidirectional=bidirectional,
        stacking=stacking,
        proj=first.proj,
        peepholes=any(r in first.members for r in PEEPHOLES),
        dtype=first.dtype,
        cell_name=first.scope.rpartition("/")[2],
        # GRUCell resets h before the matmul; CudnnCompatibleGRUCell after it
        reset_after=_reset_after(first.spec),
        cells=refs,
    )
    if any(f.units != first.units or f.proj != first.proj for _, f in cells):
        rnn = replace(rnn, notes=(*rnn.notes, NOTE_UNEVEN))
    return rnn
