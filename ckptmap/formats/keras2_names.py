"""tf-keras HDF5 weight names to canonical Keras names and back, in the order tf-keras lists weights.

A tf-keras .h5 layer group lists its weights by variable name, which is the name scope the
variable was created in: `gru/gru_cell/kernel:0`, `bidirectional/forward_lstm/lstm_cell/bias:0`,
Keras 3's `sequential/gru/gru_cell/kernel` (model name first, no `:0`), Keras 2.1's `gru_1/kernel:0`
(no cell scope) or `YT_1/kernel:0` in group `YT` (a uniquified scope), and for a nested model
`dense/kernel:0` without the outer name. Loading pairs a group's weights with the layer's
`_legacy_weights` by position (tf_keras/src/saving/legacy/hdf5_format.py), so a writer must list
them in that order: per object in creation order, forward before backward, and a nested model's
non-trainable weights after all its trainable ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..cell_kinds import kind_with_gates
from . import keras_names as kn

INDEX = re.compile(r":\d+$")  # TF's output index on variable names
_DIRECTION_RANK = {"forward_layer": 0, "backward_layer": 1}
_ROLE_RANK = {
    r: i for i, r in enumerate(("kernel", "recurrent_kernel", "bias", "embeddings", "gamma", "beta"))
}
_NON_TRAINABLE = ("moving_mean", "moving_variance")  # trainable=False by construction

Shape = tuple[int, ...]


def canonical_names(layer: str, weights: Sequence[tuple[str, Shape]]) -> list[str]:
    """Canonical names for the weights `(weight name, shape)` of layer group `layer`.

    >>> canonical_names("gru_1", [("gru_1/kernel:0", (5, 12)), ("gru_1/recurrent_kernel:0", (4, 12))])
    ['gru_1/cell/kernel', 'gru_1/cell/recurrent_kernel']
    """
    own = re.compile(re.escape(layer) + r"(?:_\d+)?")
    rests = []
    for w, _ in weights:
        parts = INDEX.sub("", w).split("/")
        hits = [i for i, p in enumerate(parts[:-1]) if own.fullmatch(p)]
        rests.append(parts[hits[-1] + 1 :] if hits else parts)  # no hit: a nested model's layers
    objects: dict[tuple[str, ...], list[int]] = {}
    for i, rest in enumerate(rests):
        objects.setdefault(tuple(rest[:-1]), []).append(i)
    rnn_objects = set()
    for obj, idx in objects.items():  # an RNN cell is told by its kernel/recurrent_kernel/bias trio
        roles = tuple(rests[i][-1] for i in idx)
        if roles == kn.RNN_CELL_ROLES[: len(roles)] and kn.rnn_cell_roles([weights[i][1] for i in idx]):
            rnn_objects.add(obj)
    names = []
    for rest in rests:
        obj, is_rnn = rest[:-1], tuple(rest[:-1]) in rnn_objects
        path = [_attribute(p, k == len(obj) - 1, is_rnn) for k, p in enumerate(obj)]
        if is_rnn and (not path or path[-1] != kn.CELL):
            path.append(kn.CELL)  # Keras 2.1: no cell scope in the weight name
        names.append("/".join([layer, *path, rest[-1]]))
    if len(set(names)) < len(names):  # an unusual layout: keep the weight names as they are
        names = ["/".join([layer, *rest]) for rest in rests]
    return names


def _attribute(part: str, last: bool, is_rnn: bool) -> str:
    if last and (part == kn.CELL or part.endswith("_cell")):
        return kn.CELL
    if is_rnn and part.startswith("forward_"):
        return "forward_layer"
    if is_rnn and part.startswith("backward_"):
        return "backward_layer"
    return part


def weight_names(layer: str, items: Sequence[tuple[tuple[str, ...], str, Shape]]) -> list[tuple[int, str]]:
    """tf-keras weight names for a layer's weights `(object path inside the layer, role, shape)`,
    as `(index into items, weight name)` in the order `load_weights` expects.

    >>> weight_names("gru", [((kn.CELL,), "bias", (12,)), ((kn.CELL,), "recurrent_kernel", (4, 12))])
    [(1, 'gru/gru_cell/recurrent_kernel:0'), (0, 'gru/gru_cell/bias:0')]
    """
    first: dict[tuple[str, ...], int] = {}
    for i, (obj, _, _) in enumerate(items):
        for k in range(len(obj) + 1):
            first.setdefault(obj[:k], i)

    def order(i: int) -> tuple[Any, ...]:
        obj, role, _ = items[i]
        where = tuple((_DIRECTION_RANK.get(obj[k - 1], 0), first[obj[:k]]) for k in range(1, len(obj) + 1))
        return (role in _NON_TRAINABLE, where, _ROLE_RANK.get(role, len(_ROLE_RANK)), i)

    shapes = {(obj, role): shape for obj, role, shape in items}
    out = []
    for i in sorted(range(len(items)), key=order):
        obj, role, _ = items[i]
        kind = _rnn_kind(shapes, obj)
        parts = [_keras_part(p, kind) for p in obj]
        own = not obj or obj[0] in kn.ATTRIBUTES  # the layer's own weight; else a nested model's layer
        out.append((i, "/".join([layer, *parts, role] if own else [*parts, role]) + ":0"))
    return out


def _rnn_kind(shapes: dict[tuple[tuple[str, ...], str], Shape], obj: tuple[str, ...]) -> str:
    """gru, lstm or simple_rnn from the gate count of the cell's recurrent kernel [units, g*units]."""
    cell = obj[: obj.index(kn.CELL) + 1] if kn.CELL in obj else (*obj, kn.CELL)
    rk = shapes.get((cell, "recurrent_kernel"), ())
    kind = kind_with_gates(rk[1], rk[0]) if len(rk) == 2 else None
    return kn.LAYER_KEYS[kind] if kind else "rnn"


def _keras_part(part: str, kind: str) -> str:
    if part == kn.CELL:
        return kn.CELL_NAMES.get(kind, "rnn_cell")
    if part in _DIRECTION_RANK:
        return f"{part.split('_')[0]}_{kind}"  # Bidirectional names its copies forward_<layer name>
    return part
