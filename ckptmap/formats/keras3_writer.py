"""Writing Keras 3 `.weights.h5` files: where each canonical name goes.

Keras 3 keys a model's layers by class and position (`layers/gru`, `layers/gru_1`), not by name
(see keras3_h5), so a layer's class is worked out from its weights: a cell's gate count, a kernel's
rank, the normalization or embedding weights. Where they do not tell (a nested model, `vars/<i>`
names) the key its tensors had in a Keras 3 file (`TensorEntry.key`) decides, else its name taken
as a Keras default name (`sequential_2` -> `sequential`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from .. import kinds
from ..atomic import AtomicFiles
from ..cell_kinds import kind_with_gates
from ..errors import CkptmapError, UnsupportedError, WriteError, one_line
from ..tree import Checkpoint, TensorEntry
from .keras_names import (
    ATTRIBUTES,
    CELL,
    CELL_NAMES,
    CONTAINERS,
    DIRECTIONS,
    LAYER_KEYS,
    LAYER_ROLES,
    RNN_CELL_ROLES,
    UniqueKeys,
    layer_path,
    split,
)
from .stream import write_dataset

_KERNEL_KEYS = {2: "dense", 3: "conv1d", 4: "conv2d", 5: "conv3d"}


@dataclass
class _Node:
    name: str
    layers: dict[str, _Node] = field(default_factory=dict)
    attrs: dict[str, _Node] = field(default_factory=dict)
    vars: dict[str, TensorEntry] = field(default_factory=dict)
    hint: str | None = None  # the group key this layer had in a Keras 3 file, if its tensors say


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `ckpt` as a `.weights.h5` that Keras 3 `model.load_weights` accepts.

    Groups are keyed as Keras keys them (by class, numbered in checkpoint order), so a model whose
    layers have these names *and this order* loads it; they carry `name` attributes (the layer
    names; `gru_cell`, `forward_gru`, ... for the parts) and the empty `vars` groups Keras writes,
    though `load_weights` needs neither. Tensors are written a block of rows at a time;
    `progress(n)` gets each one's bytes.

    >>> write(read(Path("model.weights.h5")), Path("copy.weights.h5"))   # doctest: +SKIP
    [PosixPath('copy.weights.h5')]
    """
    path = Path(path)
    root = _tree(ckpt, path)
    groups: dict[str, str | None] = {}
    targets: dict[str, str] = {}
    _place(root, "", None, groups, targets, path)
    with AtomicFiles([path]) as out:
        try:
            with h5py.File(out.temp(path), "w") as f:
                for group, name in groups.items():
                    created = f.require_group(group)
                    if name:
                        created.attrs["name"] = name
                for entry in ckpt.entries.values():
                    if entry.dtype == "bfloat16":  # as Keras stores it
                        write_dataset(f, targets[entry.name], entry, "V2").attrs["dtype"] = "bfloat16"
                    else:
                        write_dataset(f, targets[entry.name], entry)
                    if progress is not None:
                        progress(entry.nbytes)
        except CkptmapError:
            raise
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise WriteError(f"{path}: could not write ({one_line(e) or type(e).__name__}).") from e
    return [path]


def unplaced(ckpt: Checkpoint) -> dict[str, str]:
    """The tensors a Keras 3 weights file has no place for, each with the reason: what a mapping
    with `unplaced: drop` leaves out (`write` refuses them with the same reason)."""
    problems: dict[str, str] = {}
    root = _tree(ckpt, Path("."), problems)
    _place(root, "", None, {}, {}, Path("."), problems)
    return problems


def _tree(ckpt: Checkpoint, path: Path, problems: dict[str, str] | None = None) -> _Node:
    root = _Node("")
    for entry in ckpt.entries.values():
        try:
            node, objects, role = _home(root, entry, path)
        except UnsupportedError as e:
            if problems is None:
                raise
            problems[entry.name] = str(e).removeprefix(f"{path}: ")
            continue
        hints = iter(_key_hints(entry.key, objects))
        for part in objects:
            if part in ATTRIBUTES:
                node = node.attrs.setdefault(part, _Node(part))
            else:
                node = node.layers.setdefault(part, _Node(part))
                node.hint = node.hint or next(hints, None)
        node.vars[role] = entry
    return root


def _home(root: _Node, entry: TensorEntry, path: Path) -> tuple[_Node, list[str], str]:
    """Where `entry` hangs in the object tree: the node to start from, the objects below it, its role."""
    if entry.dtype == "string":
        raise UnsupportedError(f"{path}: tensor '{entry.name}' holds strings; Keras weights are numbers.")
    objects, role = split(entry.name)
    if objects[:1] == ["optimizer"] and role.startswith("vars/"):
        return root.attrs.setdefault("optimizer", _Node("optimizer")), objects[1:], role  # optimizer state
    if entry.kind != kinds.WEIGHT:
        raise UnsupportedError(
            f"{path}: tensor '{entry.name}' is optimizer state ({entry.kind}); a Keras 3 "
            "weights file holds only optimizer/vars/<i>. Drop it before writing."
        )
    return root, objects, role


def _key_hints(key: str, objects: list[str]) -> list[str]:
    """The layer keys of a Keras 3 dataset path (`layers/sequential/layers/lstm/cell/vars/0` ->
    sequential, lstm) when they line up with the layers of the canonical name."""
    parts = key.split("/")
    if len(parts) < 2 or parts[-2] != "vars":
        return []
    keys = [parts[i + 1] for i in range(len(parts) - 3) if parts[i] in CONTAINERS]
    return keys if len(keys) == len(layer_path(objects)) else []


def _place(
    node: _Node,
    where: str,
    attr: str | None,
    groups: dict[str, str | None],
    targets: dict[str, str],
    path: Path,
    problems: dict[str, str] | None = None,
) -> None:
    """Record the groups of `node` (at `where`) and its tensors' dataset paths, recursively.
    With `problems`, tensors that have no place are recorded there with the reason, not raised."""
    prefix = f"{where}/" if where else ""
    groups[f"{prefix}vars"] = _group_name(node, attr)
    try:
        indices = _indices(node, attr, path)
    except UnsupportedError as e:
        if problems is None:
            raise
        problems.update((entry.name, str(e).removeprefix(f"{path}: ")) for entry in node.vars.values())
        indices = {}
    for role, index in indices.items():
        targets[node.vars[role].name] = f"{prefix}vars/{index}"
    unique = UniqueKeys()
    for child in node.layers.values():
        _place(child, f"{prefix}layers/{unique(_class_key(child))}", None, groups, targets, path, problems)
    for name, child in node.attrs.items():
        _place(child, f"{prefix}{name}", name, groups, targets, path, problems)


def _indices(node: _Node, attr: str | None, path: Path) -> dict[str, str]:
    named = [r for r in node.vars if not r.startswith("vars/")]
    if not named:
        # `vars/007` is index 7; kept as text, since int() refuses over 4300 digits.
        return {r: r[5:].lstrip("0") or "0" for r in node.vars}
    entry = node.vars[named[0]]
    if len(named) < len(node.vars):
        raise UnsupportedError(
            f"{path}: tensor '{entry.name}': its layer mixes named weights and vars/<i>; "
            "name all of them one way."
        )
    if attr is None and not node.name:
        raise UnsupportedError(
            f"{path}: tensor '{entry.name}' names no layer; Keras keeps weights per layer."
        )
    order = RNN_CELL_ROLES if attr == CELL else _role_order(set(named))
    if order is None or not set(named) <= set(order):
        known = set(RNN_CELL_ROLES) if attr == CELL else {r for roles in LAYER_ROLES.values() for r in roles}
        role = next((r for r in named if r not in known), named[-1])
        what = "an RNN cell has no" if attr == CELL else "no Keras layer ckptmap knows has a"
        raise UnsupportedError(
            f"{path}: cannot place tensor '{node.vars[role].name}': {what} weight '{role}' beside "
            f"{', '.join(r for r in named if r != role) or 'nothing else'}; name it '<layer>/vars/<i>' "
            "to give its index."
        )
    # Keras numbers only the variables a layer has (Dense(use_bias=False) stores its kernel as 0).
    return {r: str(i) for i, r in enumerate(r for r in order if r in node.vars)}


def _role_order(roles: set[str]) -> tuple[str, ...] | None:
    return next((order for order in LAYER_ROLES.values() if roles <= set(order)), None)


def _class_key(node: _Node) -> str:
    """The snake-case class Keras keys this layer's group by, as far as its weights tell."""
    if any(d in node.attrs for d in DIRECTIONS):
        return "bidirectional"
    if CELL in node.attrs and (kind := _cell_kind(node.attrs[CELL])):
        return kind
    roles = set(node.vars)
    kernel = node.vars.get("kernel")
    if node.layers or not roles or any(r.startswith("vars/") for r in roles):
        key = None  # a nested model, or nothing that tells the class
    elif "embeddings" in roles:
        key = "embedding"
    elif roles & {"moving_mean", "moving_variance"}:
        key = "batch_normalization"
    elif roles & {"gamma", "beta"}:
        key = "layer_normalization"
    else:
        key = _KERNEL_KEYS.get(len(kernel.shape)) if kernel is not None else None
    # Else the key the layer had in a Keras 3 file, else its name: Keras' defaults are `<class key>_<n>`.
    return key or re.sub(r"_\d+$", "", node.hint or node.name)


def _cell_kind(cell: _Node) -> str | None:
    recurrent = cell.vars.get("recurrent_kernel") or cell.vars.get("vars/1")
    if recurrent is None or len(recurrent.shape) != 2:
        return None
    units, width = recurrent.shape
    kind = kind_with_gates(width, units)
    return LAYER_KEYS[kind] if kind else None


def _group_name(node: _Node, attr: str | None) -> str | None:
    if attr is None:
        return node.name or None
    if attr == CELL:
        kind = _cell_kind(node)
        return CELL_NAMES[kind] if kind else None
    if attr in DIRECTIONS and CELL in node.attrs and (kind := _cell_kind(node.attrs[CELL])):
        return f"{attr.split('_')[0]}_{kind}"
    return None
