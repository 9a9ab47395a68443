"""The RNNs of a checkpoint, also those still under TF <= 1.1 names.

Old names are found through the tf1-legacy-names mapping (which is where that knowledge lives),
so each found RNN comes with the view of the checkpoint its names refer to.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from dataclasses import dataclass

from .cells.model import RNN
from .cells.recognize import find_in_entries
from .rules.mapping import load as load_mapping
from .tree import Checkpoint


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


def _legacy(ckpt: Checkpoint, partial: bool) -> list[Recognized]:
    legacy = load_mapping("tf1-legacy-names") if ckpt.format in ("tf", "tf-v1") else None
    if legacy is None or legacy.renames_nothing_in(ckpt.entries):
        return []
    renamed, plan = legacy.run(ckpt)
    origin = {t.name: t.sources[0] for t in plan.targets}
    return [
        Recognized(rnn, renamed, {n: origin[n] for n in rnn.tensor_names}, legacy=True)
        for rnn in find_in_entries(renamed.entries, partial=partial)
        if not set(rnn.tensor_names) <= set(ckpt.entries)
    ]
