"""Find the RNNs in a checkpoint, and name the tensors of a cell in any framework.

Each framework family is a module with `find(entries) -> list[RNN]`, `member_name(target, layer,
reverse, role) -> str` and `roles(kind)`; this table is the only place that lists them, so adding
a family (Keras, next) is one module and one row.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from .. import kinds
from ..errors import RuleError
from .model import RNN

if TYPE_CHECKING:  # pragma: no cover
    from ..entry import TensorEntry
    from ..tree import Checkpoint  # whose `rnns` are found here: tree imports this module

FAMILIES: dict[str, str] = {
    "tf1": "ckptmap.cells.tf1_cells",
    "torch": "ckptmap.cells.torch_cells",
    "keras": "ckptmap.cells.keras_cells",
    "onnx": "ckptmap.cells.onnx_cells",
    "flax": "ckptmap.cells.flax_cells",
}


def family(framework: str) -> ModuleType:
    try:
        return importlib.import_module(FAMILIES[framework])
    except KeyError:
        raise RuleError(f"Unknown framework '{framework}'; known: {', '.join(FAMILIES)}.") from None


def find_rnns(ckpt: Checkpoint) -> list[RNN]:
    return find_in_entries(ckpt.entries)


def find_in_entries(entries: Mapping[str, TensorEntry], *, partial: bool = False) -> list[RNN]:
    """RNNs among the weights of `entries`, in the order their first tensor appears. `partial`
    also finds cells that miss some tensors (to say what is missing, not to convert them)."""
    weights = {name: e for name, e in entries.items() if e.kind == kinds.WEIGHT}
    order = {name: i for i, name in enumerate(weights)}
    found: list[RNN] = []
    for framework in FAMILIES:
        found.extend(family(framework).find(weights, partial=partial))
    return sorted(found, key=lambda rnn: min(order[n] for n in rnn.tensor_names))
