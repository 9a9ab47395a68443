"""The normalized model: a checkpoint as an ordered map of canonical names to lazy entries.

Every reader produces a `Checkpoint`; the rule engine produces one too (whose entries compute
their data from source entries), and every writer consumes one. Canonical names are
`/`-separated scopes without TF's `:0` suffix or TF2's `/.ATTRIBUTES/VARIABLE_VALUE`; each entry
keeps the key it had in its file. Nothing is read until `TensorEntry.read()` is called, so
listing a multi-GB checkpoint costs only its index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import dtypes, kinds, lazy
from .errors import CkptmapError, FormatError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .cells.recognize import RNN
else:
    np = lazy.module("numpy")


@dataclass(frozen=True, eq=False)
class TensorEntry:
    """One tensor: its canonical name, shape, dtype name (see `dtypes`), original key, kind,
    and a loader that returns its data as a numpy array when (and only when) asked."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    key: str
    loader: Callable[[], np.ndarray] = field(repr=False)
    kind: str = kinds.WEIGHT
    slot_of: str | None = None
    # A mapped target can be computed a block of rows at a time: `pieces(max_bytes)` (see `blocks`).
    pieces: Callable[[int], Iterator[np.ndarray]] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return math.prod(map(int, self.shape))  # exact, where numpy's int64 product wraps; () -> 1

    @property
    def nbytes(self) -> int:
        if self.dtype == "string":
            return 0
        return self.size * dtypes.by_name(self.dtype).itemsize

    def read(self) -> np.ndarray:
        """Load the data; raises `FormatError` if the file disagrees with the index."""
        with self._reading():
            array = self.loader()
        if tuple(array.shape) != self.shape:
            raise FormatError(
                f"Tensor '{self.name}': data has shape {tuple(array.shape)}, the index says {self.shape}."
            )
        return array

    def blocks(self, max_bytes: int = 1 << 20) -> Iterator[np.ndarray]:
        """The data as C-contiguous blocks of whole leading-axis rows, about `max_bytes` each (a
        scalar is one block), whose bytes in turn are the tensor's: what a writer streams. A mapped
        target is computed a block at a time, so the whole tensor never exists in memory; any
        other is read and sliced (views, no copies)."""
        if self.pieces is not None:
            with self._reading():
                yield from self.pieces(max_bytes)
            return
        array = np.asarray(self.read(), order="C")  # ascontiguousarray would make a scalar 1-D
        if not self.shape:
            yield array
            return
        step = rows_per_block(self.shape, array.itemsize, max_bytes)
        for start in range(0, self.shape[0], step):
            yield array[start : start + step]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except CkptmapError:
            raise
        except (OSError, ValueError, EOFError, OverflowError) as e:
            raise FormatError(f"Tensor '{self.name}': could not read its data ({e}).") from e

    def renamed(self, name: str, *, slot_of: str | None = None) -> TensorEntry:
        return dataclasses.replace(self, name=name, slot_of=slot_of)


def rows_per_block(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> int:
    """How many leading-axis rows of a tensor make a block of at most `max_bytes` (at least one)."""
    return max(1, max_bytes // max(1, math.prod(shape[1:]) * itemsize))


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
                TensorEntry(e.name, e.shape, e.dtype, e.key, e.loader, c.kind, c.slot_of, e.pieces)
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

    def weights(self) -> list[TensorEntry]:
        return [e for e in self.entries.values() if e.kind == kinds.WEIGHT]

    @cached_property
    def rnns(self) -> list[RNN]:
        """The recurrent networks recognized from names and shapes (see `ckptmap.cells`)."""
        from .cells.recognize import find_rnns

        return find_rnns(self)

    def tree(self) -> ScopeNode:
        """The scopes as a tree, for display: `ckpt.tree().children["rnn"]`."""
        return build_tree(self.entries.values())


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
