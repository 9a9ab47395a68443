"""The RNNs of a checkpoint, also those still under TF <= 1.1 names.

Old names are found through the tf1-legacy-names mapping (which is where that knowledge lives),
so each found RNN comes with the view of the checkpoint its names refer to. That mapping (YAML and
the rule engine) is loaded only when some name could be an old one: a TF <= 1.1 cell variable ends
in one of the leaf names its renames start from, so `inspect` of a modern checkpoint skips it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cells.model import RNN
from .cells.recognize import find_in_entries
from .formats import registry

if TYPE_CHECKING:  # pragma: no cover
    from .tree import Checkpoint  # shown by display, which tree imports, which imports this

# The leaves tf1-legacy-names renames from (`weights`, `recurrent_weights`, `biases`, TF 0.x's
# `Linear/Matrix`, `Linear/Bias`, `W_0`, `B`, `W_F_diag`, `W_P_0`), also under a slot
# (`weights/Adam`). tests/cells/test_legacy_hint.py holds this against the mapping's renames.
LEGACY_LEAF = re.compile(r"(?:^|/)(?:\w*weights|biases|Matrix|Bias|W_\w+|B)(?:/|$)", re.MULTILINE)


@dataclass(frozen=True)
class Recognized:
    """An RNN found in a checkpoint, with the view of the checkpoint its names refer to."""

    rnn: RNN
    view: Checkpoint  # the checkpoint under the names `rnn` uses (renamed, for old TF names)
    original: MappingABC[str, str]  # each of `rnn`'s tensor names -> its name in the checkpoint itself
    legacy: bool = False


def recognize(ckpt: Checkpoint, *, partial: bool = False) -> list[Recognized]:
    """Every RNN in `ckpt`, also those under TF <= 1.1 names (found through tf1-legacy-names).

    `partial` also finds cells that lack some tensors, to say what they lack.
    """
    rnns = find_in_entries(ckpt.entries, partial=True) if partial else ckpt.rnns
    found = [Recognized(rnn, ckpt, {n: n for n in rnn.tensor_names}) for rnn in rnns]
    return found + _legacy(ckpt, partial)


def legacy_rnns(ckpt: Checkpoint) -> list[RNN]:
    """RNNs whose variables still carry TF <= 1.1 names; their tensor names are the modern ones.
    `tf1-to-torch` renames on its own; a TF checkpoint gets modern names with `tf1-legacy-names`."""
    return [r.rnn for r in _legacy(ckpt, partial=False)]


def may_hold_legacy_names(names: list[str]) -> bool:
    """Whether any of `names` ends in a leaf that tf1-legacy-names renames (a cheap pre-check)."""
    return LEGACY_LEAF.search("\n".join(names)) is not None


def _legacy(ckpt: Checkpoint, partial: bool) -> list[Recognized]:
    if ckpt.format not in registry.formats_of("tf1") or not may_hold_legacy_names(list(ckpt.entries)):
        return []
    from .rules.mapping import load as load_mapping

    legacy = load_mapping("tf1-legacy-names")
    if legacy.renames_nothing_in(ckpt.entries):
        return []
    renamed, plan = legacy.run(ckpt)
    origin = {t.name: t.sources[0] for t in plan.targets}
    return [
        Recognized(rnn, renamed, {n: origin[n] for n in rnn.tensor_names}, legacy=True)
        for rnn in find_in_entries(renamed.entries, partial=partial)
        if not set(rnn.tensor_names) <= set(ckpt.entries)
    ]
