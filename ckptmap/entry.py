"""One tensor of a checkpoint: its canonical name, shape, dtype, key in the file, and lazy data.

Below everything that reads, maps, recognizes or shows tensors (formats, rules, cells): it imports
none of them, so each of them can use it without an import cycle. `ckptmap.tree` builds the
`Checkpoint` out of these and re-exports `TensorEntry`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import dtypes, kinds, lazy
from .errors import CkptmapError, FormatError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
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
    # What the file says about the layer this tensor belongs to that no shape shows (an ONNX node's
    # attributes: direction, linear_before_reset, activations), for recognition; None for most.
    settings: Mapping[str, Any] | None = field(default=None, repr=False)

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
