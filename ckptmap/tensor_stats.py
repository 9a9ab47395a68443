"""Per-tensor value statistics (`ckptmap inspect --stats`): min, max, mean, std, zeros, NaN and Inf.

A tensor is walked in blocks of about a megabyte (`TensorEntry.blocks`' default: views of the
memory-mapped file), each block reduced to a partial summary on a worker thread (numpy's
reductions release the GIL) and the partials merged in order with Chan et al.'s pairwise update
of the mean and the sum of squared deviations, so neither memory nor float64 round-off grows with
the tensor. Mean, std, min and max are over the finite values; NaN and Inf are counted apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import lazy, parallel

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .entry import TensorEntry
else:
    np = lazy.module("numpy")


@dataclass(frozen=True)
class TensorStats:
    name: str
    count: int  # elements
    minimum: float | None  # of the finite values; None when there are none (or for strings)
    maximum: float | None
    mean: float | None
    std: float | None  # population standard deviation
    zeros: int
    nans: int
    infs: int

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "zero_fraction": self.zero_fraction}


@dataclass
class _Partial:
    """A summary of some elements, mergeable with another's."""

    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from `mean`
    minimum: float = math.inf
    maximum: float = -math.inf
    zeros: int = 0
    nans: int = 0
    infs: int = 0

    def merge(self, other: _Partial) -> None:
        n = self.finite + other.finite
        if other.finite:
            delta = other.mean - self.mean
            self.m2 += other.m2 + delta * delta * self.finite * other.finite / n
            self.mean += delta * other.finite / n
            self.minimum = min(self.minimum, other.minimum)
            self.maximum = max(self.maximum, other.maximum)
        self.finite = n
        self.zeros += other.zeros
        self.nans += other.nans
        self.infs += other.infs


def _summarize(block: np.ndarray) -> _Partial:
    flat = block.reshape(-1)
    if flat.dtype.kind == "b":
        flat = flat.astype(np.uint8)
    values = flat.astype(np.float64)
    finite = np.isfinite(values)
    nans = int(np.isnan(values).sum())
    kept = values[finite] if not finite.all() else values
    part = _Partial(zeros=int((flat == 0).sum()), nans=nans, infs=int(values.size - kept.size - nans))
    if kept.size:
        part.finite = int(kept.size)
        part.mean = float(kept.mean())
        part.m2 = float(((kept - part.mean) ** 2).sum())
        part.minimum, part.maximum = float(kept.min()), float(kept.max())
    return part


def tensor_stats(entry: TensorEntry) -> TensorStats:
    """The statistics of one tensor, read block by block."""
    if entry.dtype == "string":
        return TensorStats(entry.name, entry.size, None, None, None, None, 0, 0, 0)
    total = _Partial()
    for part in parallel.map_ahead(_summarize, entry.blocks()):
        total.merge(part)
    some = total.finite > 0
    return TensorStats(
        entry.name,
        entry.size,
        total.minimum if some else None,
        total.maximum if some else None,
        total.mean if some else None,
        math.sqrt(total.m2 / total.finite) if some else None,
        total.zeros,
        total.nans,
        total.infs,
    )


def histogram(entry: TensorEntry, low: float, high: float, bins: int = 40) -> tuple[list[int], list[float]]:
    """Counts of the finite values in `bins` equal bins over [low, high] (the tensor's min and max,
    from `tensor_stats`), and the bin edges; read block by block as the statistics are."""
    if high <= low:  # one value: one bin around it
        low, high = low - 0.5, high + 0.5

    def count(block: np.ndarray) -> np.ndarray:
        values = block.reshape(-1).astype(np.float64)
        return np.histogram(values[np.isfinite(values)], bins=bins, range=(low, high))[0]

    total = np.zeros(bins, np.int64)
    for part in parallel.map_ahead(count, entry.blocks()):
        total += part
    edges = np.linspace(low, high, bins + 1)
    return [int(c) for c in total], [float(e) for e in edges]
