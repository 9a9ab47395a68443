"""Tell weights from what rides along with them: optimizer slots and bookkeeping.

A checkpoint written during training holds more than the model: TF1 optimizers add one or two
slot variables per weight (`kernel/Adam`, `kernel/Adam_1`), sometimes under the optimizer's own
scope (`OptimizeLoss/<weight>/Adam`); Adam adds `beta1_power`/`beta2_power`; training adds
`global_step`; TF2 adds `save_counter`, the object graph and `.OPTIMIZER_SLOT` entries.
Mappings treat these by kind (follow their weight, drop, keep), so every entry is classified once,
here, from names and, where the reader gives them, shapes.

Slots of an optimizer with a name of its own (`AdamOptimizer(name="train_op")` makes
`kernel/train_op`, `kernel/train_op_1`) are told by what TF's slot_creator does, not by the name:
a slot is created as `<variable>/<optimizer name>` (then `_1`, `_2`, ... for the optimizer's
further slots) with the variable's own shape. A child of a weight with the weight's shape is
therefore a slot candidate, and it is taken for one only with evidence that its leaf names an
optimizer (see `_named_slots`): one twin child is not enough, since a user may create
`dense/kernel/extra` of the same shape by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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


def classify(
    names: Iterable[str], shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, Classified]:
    """Classify canonical names; a slot is only a slot when its weight is in the same checkpoint.
    With `shapes` (name -> shape), slots of optimizers with names of their own are found too."""
    names = list(names)
    present = set(names)
    named = _named_slots(names, shapes) if shapes is not None else {}
    out: dict[str, Classified] = {}
    for name in names:
        out[name] = named.get(name) or _classify_one(name, present)
    return out


# A slot's leaf: the optimizer's name, then `_<k>` for its k-th further slot (slot_creator makes
# them under `variable_scope(None, default_name=<var>/<name>)`, which numbers repeats).
_NUMBERED = re.compile(r"(?P<base>.+)_(?P<k>[1-9]\d*)")


def _named_slots(names: list[str], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Classified]:
    """Slots of optimizers whose names this module does not know, from the checkpoint's shapes.

    A child `<var>/<leaf>` with `<var>`'s shape (a shape twin) is a slot when its optimizer name
    (the leaf without a trailing `_<k>`) is confirmed by either
    - a pair: one variable has twins named both `<name>` and `<name>_1` (the two slots of Adam,
      Adadelta, Ftrl, RMSProp: `kernel/train_op`, `kernel/train_op_1`), or
    - repetition: twins named `<name>` under two or more variables (an optimizer makes its slots
      for every variable it trains; one-slot optimizers such as Momentum or Adagrad, EMA shadows).
    A single hand-made `dense/kernel/extra` of the kernel's shape is neither, so it stays a weight;
    a child of another shape is never a slot. Adam's `beta1_power` is not used as evidence: it
    does not carry the optimizer's name, and Adam's slots come in pairs anyway.
    """
    twins: dict[str, set[str]] = {}  # variable -> leaves of its shape twins
    for name in names:
        parent, _, leaf = name.rpartition("/")
        if parent and parent in shapes and shapes[name] == shapes[parent] and not _SLOT_LEAF.fullmatch(leaf):
            twins.setdefault(parent, set()).add(leaf)
    holders: dict[str, int] = {}
    optimizers = set()
    for leaves in twins.values():
        for leaf in leaves:
            holders[leaf] = holders.get(leaf, 0) + 1
            if f"{leaf}_1" in leaves:
                optimizers.add(leaf)
    optimizers.update(leaf for leaf, count in holders.items() if count > 1)
    out = {}
    for parent, leaves in twins.items():
        for leaf in leaves:
            m = _NUMBERED.fullmatch(leaf)
            if leaf in optimizers or (m and m["base"] in optimizers and m["base"] in leaves):
                out[f"{parent}/{leaf}"] = Classified(SLOT, parent)
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
