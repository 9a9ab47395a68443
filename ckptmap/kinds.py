"""Tell weights from what rides along with them: optimizer slots and bookkeeping.

A checkpoint written during training holds more than the model: TF1 optimizers add one or two
slot variables per weight (`kernel/Adam`, `kernel/Adam_1`), sometimes under the optimizer's own
scope (`OptimizeLoss/<weight>/Adam`); Adam adds `beta1_power`/`beta2_power`; training adds
`global_step`; TF2 adds `save_counter`, the object graph and `.OPTIMIZER_SLOT` entries.
Mappings treat these by kind (follow their weight, drop, keep), so every entry is classified once,
here, from names alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

WEIGHT = "weight"
SLOT = "slot"
BOOKKEEPING = "bookkeeping"

# Slot names TF1 optimizers create (tensorflow/python/training/*.py, `_zeros_slot(var, "m", self._name)`
# names the slot after the optimizer; a second slot gets `_1`). ExponentialMovingAverage shadows
# follow the same `var/<name>` pattern.
_SLOT_LEAF = re.compile(
    r"(?:Adam|AdamW|LazyAdam|Adamax|AdaMax|Nadam|Momentum|RMSProp|Adagrad|AdagradDA|ProximalAdagrad|"
    r"Adadelta|Ftrl|Lamb|LAMB|ExponentialMovingAverage|Adafactor[a-z_]*)(?:_\d+)?"
)
_BOOKKEEPING_LEAF = re.compile(
    r"global_step|save_counter|beta1_power|beta2_power|_CHECKPOINTABLE_OBJECT_GRAPH|"
    r"learning_rate|iter|iterations|decay|epoch|step"
)
# TF2 object-based checkpoints: the optimizer and its slots live under these path parts.
_TF2_SLOT_MARK = "/.OPTIMIZER_SLOT/"


@dataclass(frozen=True)
class Classified:
    kind: str
    slot_of: str | None = None  # for slots: the weight the slot belongs to


def classify(names: Iterable[str]) -> dict[str, Classified]:
    """Classify canonical names; a slot is only a slot when its weight is in the same checkpoint."""
    names = list(names)
    present = set(names)
    out: dict[str, Classified] = {}
    for name in names:
        out[name] = _classify_one(name, present)
    return out


def _classify_one(name: str, present: set[str]) -> Classified:
    if _TF2_SLOT_MARK in name:
        return Classified(SLOT, name.split(_TF2_SLOT_MARK, 1)[0])
    parent, _, leaf = name.rpartition("/")
    if parent and _SLOT_LEAF.fullmatch(leaf):
        owner = _find_owner(parent, present)
        if owner is not None:
            return Classified(SLOT, owner)
    if _BOOKKEEPING_LEAF.fullmatch(leaf) and _looks_scalar_bookkeeping(name):
        return Classified(BOOKKEEPING)
    if name.startswith("optimizer/") or name == "_CHECKPOINTABLE_OBJECT_GRAPH":
        return Classified(BOOKKEEPING)
    return Classified(WEIGHT)


def _find_owner(parent: str, present: set[str]) -> str | None:
    """The weight a slot belongs to: its parent path, or a suffix of it when the optimizer
    prefixed its own scope (`OptimizeLoss/model/x/kernel/Adam` belongs to `model/x/kernel`)."""
    candidate = parent
    while True:
        if candidate in present:
            return candidate
        if "/" not in candidate:
            return None
        candidate = candidate.split("/", 1)[1]


def _looks_scalar_bookkeeping(name: str) -> bool:
    # `global_step` anywhere, Adam's powers anywhere; the generic leaves (`step`, `iter`, ...) only
    # at the root or under an optimizer scope, so a model weight named `decay` stays a weight.
    leaf = name.rpartition("/")[2]
    if leaf in ("global_step", "save_counter", "beta1_power", "beta2_power", "_CHECKPOINTABLE_OBJECT_GRAPH"):
        return True
    return "/" not in name or name.startswith("optimizer/") or "OptimizeLoss/" in name
