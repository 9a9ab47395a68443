"""The normalized model: a checkpoint as an ordered map of canonical names to lazy entries.

Every reader produces a `Checkpoint`; the rule engine produces one too (whose entries compute
their data from source entries), and every writer consumes one. Canonical names are
`/`-separated scopes without TF's `:0` suffix or TF2's `/.ATTRIBUTES/VARIABLE_VALUE`; each entry
keeps the key it had in its file. Nothing is read until `TensorEntry.read()` is called, so
listing a multi-GB checkpoint costs only its index.

`ckpt.rnns` and `print(ckpt)` import recognition and display when asked; those modules, and the
rules that make mapped checkpoints, never import this one at run time (they take `TensorEntry`
from `ckptmap.entry` and make checkpoints with `derived`), so the imports have no cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import kinds
from .entry import TensorEntry, rows_per_block
from .errors import FormatError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .cells.model import RNN

__all__ = ["Checkpoint", "ScopeNode", "TensorEntry", "build_tree", "canonical_tf_name", "rows_per_block"]


class Checkpoint(Mapping[str, "np.ndarray"]):
    """A read-only, lazy map from canonical names to numpy arrays.

    `ckpt[name]` reads one tensor; `ckpt.entries[name]` gives its `TensorEntry` without reading.
    `format`, `path` and `files` say where it came from; `notes` carry what the reader had to
    decide on the user's behalf (which nested state dict it picked, that a pickled module was
    taken apart without running its code).

    >>> ckpt = ckptmap.load("sample_checkpoints/tf1_lstm2")       # doctest: +SKIP
    >>> ckpt.entries["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"].shape   # doctest: +SKIP
    (11, 32)
    """

    def __init__(
        self,
        entries: Iterable[TensorEntry],
        *,
        format: str,
        path: str | Path | None = None,
        files: Iterable[Path] = (),
        notes: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        classify: bool = True,
    ) -> None:
        entries = list(entries)
        if classify:
            classes = kinds.classify([e.name for e in entries], {e.name: e.shape for e in entries})
            entries = [
                TensorEntry(
                    e.name, e.shape, e.dtype, e.key, e.loader, c.kind, c.slot_of, e.pieces, e.settings
                )
                for e in entries
                if (c := classes[e.name])  # not dataclasses.replace: 4x slower, over thousands of entries
            ]
        self.entries: dict[str, TensorEntry] = {}
        for e in entries:
            if e.name in self.entries:
                raise FormatError(f"{path or format}: two tensors are both named '{e.name}'.")
            self.entries[e.name] = e
        self.format = format
        self.path = Path(path) if path is not None else None
        self.files: tuple[Path, ...] = tuple(files)
        self.notes: list[str] = list(notes)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # Mapping protocol: values are arrays, read on access.
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            entry = self.entries[name]
        except KeyError:
            raise KeyError(f"No tensor named '{name}' in {self.path or 'the checkpoint'}.") from None
        return entry.read()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path is not None else ""
        return f"<Checkpoint {self.format}{where} ({len(self)} tensors, {self.nbytes} bytes)>"

    def __str__(self) -> str:
        """What `ckptmap inspect` prints: the tree of weights, the RNNs, what is not a weight."""
        from . import display

        return "\n".join(display.checkpoint(self, shows_hidden="print(ckpt.tree()) shows them"))

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def derived(
        self, entries: Iterable[TensorEntry], *, metadata: Mapping[str, Any] | None = None
    ) -> Checkpoint:
        """A checkpoint of the same origin (format, path, files, notes) holding `entries` as they
        are, not classified again: what a mapping makes of this one."""
        return Checkpoint(
            entries,
            format=self.format,
            path=self.path,
            files=self.files,
            notes=self.notes,
            metadata=self.metadata if metadata is None else metadata,
            classify=False,
        )

    def weights(self) -> list[TensorEntry]:
        return [e for e in self.entries.values() if e.kind == kinds.WEIGHT]

    @cached_property
    def rnns(self) -> list[RNN]:
        """The recurrent networks recognized from names and shapes (see `ckptmap.cells`)."""
        from .cells.recognize import find_rnns

        return find_rnns(self)

    def tree(self, entries: Iterable[TensorEntry] | None = None) -> ScopeNode:
        """The scopes as a tree, for display: `ckpt.tree().children["rnn"]`; of `entries` (some of
        this checkpoint's) only, when given."""
        return build_tree(self.entries.values() if entries is None else entries)


@dataclass
class ScopeNode:
    """A scope in the name tree; leaves hold their `TensorEntry`."""

    name: str
    children: dict[str, ScopeNode] = field(default_factory=dict)
    entry: TensorEntry | None = None

    @property
    def nbytes(self) -> int:
        own = self.entry.nbytes if self.entry else 0
        return own + sum(c.nbytes for c in self.children.values())

    @property
    def count(self) -> int:
        own = 1 if self.entry else 0
        return own + sum(c.count for c in self.children.values())

    def walk(self, depth: int = 0) -> Iterator[tuple[int, ScopeNode]]:
        for child in self.children.values():
            yield depth, child
            yield from child.walk(depth + 1)

    def __str__(self) -> str:
        """The tree as `ckptmap inspect --all` draws it: scopes, then tensors with shape, dtype, size."""
        from . import display

        return "\n".join(display.tree(self))

    def __repr__(self) -> str:  # not the dataclass's, which would spell out every child
        return f"<ScopeNode {self.name or '(root)'!r} ({self.count} tensors, {self.nbytes} bytes)>"


def build_tree(entries: Iterable[TensorEntry]) -> ScopeNode:
    root = ScopeNode("")
    for entry in entries:
        node = root
        for part in entry.name.split("/"):
            node = node.children.setdefault(part, ScopeNode(part))
        node.entry = entry
    return root


def canonical_tf_name(key: str) -> str:
    """TF variable names to canonical names: drop `:0` and TF2's attribute suffix."""
    for suffix in ("/.ATTRIBUTES/VARIABLE_VALUE",):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    if key.endswith(":0"):
        key = key[:-2]
    return key
