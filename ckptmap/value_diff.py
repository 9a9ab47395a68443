"""Compare two checkpoints' values, tensor by tensor and block by block (`ckptmap diff --values`).

Tensors are paired by canonical name; those of the same shape in both are compared. Each pair is
read one tensor at a time and walked in aligned blocks of about a megabyte (`TensorEntry.blocks`:
views of the memory-mapped file, or computed a block at a time for a mapped checkpoint), so the
float64 copies the arithmetic needs are only ever a block, and neither checkpoint is in memory
whole.

Differences: `max_abs` is the largest |a - b|; `max_rel` is `max_abs` over the largest finite
magnitude in either tensor (as `verify` relates an error to its output's scale). NaN against NaN
and inf against the same inf are equal; NaN or inf against anything else is an infinite
difference. Integers are compared exactly in their own type.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import lazy
from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .tree import Checkpoint, TensorEntry
else:
    np = lazy.module("numpy")

BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class ValueDiff:
    """How the values of one tensor differ between two checkpoints."""

    name: str
    max_abs: float | None  # None for strings, which are compared for equality only
    max_rel: float | None
    identical: bool  # every element equal
    equal: bool  # identical, or `max_abs` within the tolerance
    # Signal-to-quantization-noise ratio, 10 log10(sum a^2 / sum (a - b)^2) over the elements finite
    # in both: how a dtype cast or a quantization of `a` came out (inf when nothing differs there).
    sqnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Strict JSON has no Infinity: an infinite difference (NaN against a number) is null.
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return {
            "name": self.name,
            "max_abs": finite(self.max_abs),
            "max_rel": finite(self.max_rel),
            "identical": self.identical,
            "equal": self.equal,
            "sqnr_db": finite(self.sqnr_db),
        }


def check_tolerance(tolerance: float) -> float:
    if not (tolerance >= 0 and math.isfinite(tolerance)):  # NaN fails both
        raise UsageError(f"--tolerance {tolerance}: expected a number >= 0.")
    return float(tolerance)


def compare(a: Checkpoint, b: Checkpoint, tolerance: float = 0.0) -> list[ValueDiff]:
    """A `ValueDiff` for every tensor in both `a` and `b` with the same shape, in `a`'s order.
    Tensors whose dtypes cannot be compared (a string against numbers) are left out: the
    dtype change already tells them apart."""
    tolerance = check_tolerance(tolerance)
    out = []
    for name, ea in a.entries.items():
        eb = b.entries.get(name)
        if eb is None or ea.shape != eb.shape or (ea.dtype == "string") != (eb.dtype == "string"):
            continue
        out.append(compare_entries(ea, eb, tolerance))
    return out


def compare_entries(ea: TensorEntry, eb: TensorEntry, tolerance: float = 0.0) -> ValueDiff:
    """The differences between two tensors of one shape, read a block at a time."""
    if ea.dtype == "string":  # TF string tensors: small, and not numbers
        same = bool(np.array_equal(ea.read(), eb.read()))
        return ValueDiff(ea.name, None, None, same, same)
    max_abs, scale, identical, signal, noise = 0.0, 0.0, True, 0.0, 0.0
    for x, y in _aligned(ea.blocks(BLOCK_BYTES), eb.blocks(BLOCK_BYTES)):
        block_abs, block_scale, block_identical = _block(x, y)
        max_abs, scale = max(max_abs, block_abs), max(scale, block_scale)
        identical = identical and block_identical
        if not block_identical:
            block_signal, block_noise = _powers(x, y)
            signal, noise = signal + block_signal, noise + block_noise
        else:
            signal += _powers(x, x)[0]
    if identical:
        return ValueDiff(ea.name, 0.0, 0.0, True, True, math.inf)
    rel = max_abs / scale if scale > 0 and math.isfinite(max_abs) else math.inf
    return ValueDiff(ea.name, max_abs, rel, False, max_abs <= tolerance, _sqnr(signal, noise))


def _powers(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """sum |x|^2 and sum |x - y|^2 over the elements finite in both."""
    wide = np.complex128 if "c" in (x.dtype.kind, y.dtype.kind) else np.float64
    xw, yw = x.astype(wide), y.astype(wide)
    both = np.isfinite(xw) & np.isfinite(yw)
    return float(np.sum(np.abs(xw[both]) ** 2)), float(np.sum(np.abs(xw[both] - yw[both]) ** 2))


def _sqnr(signal: float, noise: float) -> float | None:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else None


def _block(x: np.ndarray, y: np.ndarray) -> tuple[float, float, bool]:
    """Largest |x - y|, largest finite magnitude, and whether every element is equal."""
    wide = np.complex128 if "c" in (x.dtype.kind, y.dtype.kind) else np.float64
    xw, yw = x.astype(wide), y.astype(wide)
    # In the stored type when both share it: int64s beyond 2**53 differ where their float64s do not.
    same = (x == y) if x.dtype == y.dtype else (xw == yw)
    if not (x.dtype.kind in "iub" and y.dtype.kind in "iub"):
        same |= np.isnan(xw) & np.isnan(yw)
    scale = max(_largest_finite(xw), _largest_finite(yw))
    if same.all():
        return 0.0, scale, True
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(xw[~same] - yw[~same])
    diff[np.isnan(diff)] = np.inf  # NaN against a number, inf against -inf or a number
    largest = float(diff.max())
    # Only unequal int64s whose float64s coincide (beyond 2**53) get here with 0: they differ by 1 or more.
    return largest or 1.0, scale, False


def _largest_finite(values: np.ndarray) -> float:
    magnitude = np.abs(values)
    finite = magnitude[np.isfinite(magnitude)]
    return float(finite.max()) if finite.size else 0.0


def _aligned(xs: Iterator[np.ndarray], ys: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Equally long flat pieces of two streams of blocks that hold the same elements in the same
    order (their blocks may split differently: dtypes of different sizes give other row counts)."""
    x = y = None
    while True:
        if x is None or not x.size:
            x = _next_flat(xs)
        if y is None or not y.size:
            y = _next_flat(ys)
        if x is None or y is None:
            return
        n = min(x.size, y.size)
        yield x[:n], y[:n]
        x, y = x[n:], y[n:]


def _next_flat(blocks: Iterator[np.ndarray]) -> np.ndarray | None:
    for block in blocks:
        flat = np.asarray(block).reshape(-1)
        if flat.size:
            return flat
    return None
