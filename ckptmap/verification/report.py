"""Verification results as plain data: what was compared, how far apart, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cells.model import RNN
from .cases import Run
from .gates import GateError

EQUAL, APPROXIMATE, DIFFERS, MISSING, NO_RESTORE = (
    "equal",
    "approximate",
    "differs",
    "no counterpart",
    "no restore",
)

# Default tolerances: tight enough that a swapped gate or a lost forget_bias (errors of order 0.1)
# always shows, loose enough for the float rounding two frameworks' kernels disagree by.
_TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2}


def tolerance_for(dtype: str, requested: float | None = None) -> float:
    return requested if requested is not None else _TOLERANCE.get(dtype, 1e-5)


@dataclass
class CaseErrors:
    case: str
    output_abs: float
    output_rel: float
    state_abs: float
    state_rel: float
    allowed: float = 0.0  # the tolerance, or the drift float rounding alone causes here if larger
    # The outputs' error at each time step (largest over the batch and the units): an approximate
    # GRU shows zero at step 1 and its growth after; a wrong conversion is large from the first.
    step_abs: list[float] = field(default_factory=list)
    step_rel: list[float] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max(self.output_abs, self.state_abs)

    @property
    def within(self) -> bool:
        return self.max_abs <= self.allowed


# How far above the measured rounding drift two frameworks may land (see verify.run).
DRIFT_FACTOR = 10.0


def compare(case: str, a: Run, b: Run) -> CaseErrors:
    out_abs, out_rel = _diff(a.output, b.output)
    state_pairs = [
        (a.states[k][p], b.states[k][p])
        for k in a.states
        if k in b.states
        for p in a.states[k]
        if p in b.states[k]
    ]
    diffs = [_diff(x, y) for x, y in state_pairs] or [(0.0, 0.0)]
    step_abs, step_rel = _per_step(a.output, b.output)
    return CaseErrors(
        case, out_abs, out_rel, max(d[0] for d in diffs), max(d[1] for d in diffs), 0.0, step_abs, step_rel
    )


def _per_step(a: np.ndarray, b: np.ndarray) -> tuple[list[float], list[float]]:
    """Absolute and relative error of each time step of outputs [batch, steps, width]."""
    if a.shape != b.shape or a.ndim != 3 or not a.size:
        return [], []
    err = np.abs(a.astype(np.float64) - b.astype(np.float64)).max(axis=(0, 2))
    scale = np.abs(b.astype(np.float64)).max(axis=(0, 2))
    rel = np.divide(err, scale, out=err.copy(), where=scale > 0)
    return [float(x) for x in err], [float(x) for x in rel]


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if a.shape != b.shape:
        return float("inf"), float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return err, err / scale if scale > 0 else err


@dataclass
class PairResult:
    source: RNN
    destination: RNN | None
    verdict: str
    tolerance: float
    cases: list[CaseErrors] = field(default_factory=list)
    first_step_abs: float | None = None  # one step from zeros: what an approximate GRU must still match
    approximate: str | None = None  # the mapping's stated reason, when it declares the pair approximate
    approximated_by: str | None = None  # the mapping and rule that declare it ("tf1-to-torch rule 'gru'")
    message: str | None = None
    notes: list[str] = field(default_factory=list)  # how a side was restored, when not the usual way
    gates: list[GateError] = field(default_factory=list)  # each gate's pre-activation error (gates.py)

    def wrong_gates(self) -> list[GateError]:
        """The gates whose pre-activations differ beyond the tolerance, largest first."""
        return sorted((g for g in self.gates if g.max_abs > self.tolerance), key=lambda g: -g.max_abs)

    def blamed_gates(self) -> list[GateError]:
        """The wrong gates, when only some are: those are worth naming (every gate wrong is a
        wrong RNN, a transposed input or a lost layer, not a slicing slip)."""
        wrong = self.wrong_gates()
        return wrong if len(wrong) < len(self.gates) else []

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((max(c.output_rel, c.state_rel) for c in self.cases), default=0.0)

    def passes(self, strict: bool = False) -> bool:
        return self.verdict == EQUAL or (self.verdict == APPROXIMATE and not strict)

    def to_dict(self) -> dict[str, Any]:
        destination = self.destination.to_dict() if self.destination else None
        return {
            "source": self.source.to_dict(),
            "destination": destination,
            "verdict": self.verdict,
            "tolerance": self.tolerance,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "first_step_abs": self.first_step_abs,
            "approximate": self.approximate,
            "approximated_by": self.approximated_by,
            "message": self.message,
            "notes": self.notes,
            "cases": [vars(c) for c in self.cases],
            "gates": [g.to_dict() for g in self.gates],
        }


class _Exit:
    ok: bool

    @property
    def exit_code(self) -> int:
        """0 when everything verified, 1 otherwise (bad input raises instead: exit 2)."""
        return 0 if self.ok else 1


@dataclass
class VerifyReport(_Exit):
    source: Path
    destination: Path
    mappings: list[str]
    params: dict[str, Any]
    pairs: list[PairResult]
    unpaired: list[RNN] = field(default_factory=list)  # destination RNNs no source RNN maps to
    strict: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and all(p.passes(self.strict) for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "mappings": self.mappings,
            "params": self.params,
            "ok": self.ok,
            "strict": self.strict,
            "pairs": [p.to_dict() for p in self.pairs],
            "unpaired": [r.to_dict() for r in self.unpaired],
        }


@dataclass
class Missing:
    name: str
    shape: tuple[int, ...]
    suggestion: str | None = None  # the closest checkpoint name of the same shape


@dataclass
class RestoreResult:
    rnn: RNN
    missing: list[Missing] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    error: str | None = None
    ran: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ran and not (self.missing or self.mismatched or self.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rnn": self.rnn.to_dict(),
            "ok": self.ok,
            "ran": self.ran,
            "error": self.error,
            "notes": self.notes,
            "missing": [vars(m) for m in self.missing],
            "shape_mismatches": [
                {"name": n, "model": list(a), "checkpoint": list(b)} for n, a, b in self.mismatched
            ],
        }


@dataclass
class IntoReport(_Exit):
    source: Path
    framework: str
    mappings: list[str]
    results: list[RestoreResult]
    unused: list[Missing] = field(default_factory=list)  # checkpoint weights no model reads
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "framework": self.framework,
            "mappings": self.mappings,
            "ok": self.ok,
            "results": [r.to_dict() for r in self.results],
            "unused": [vars(u) for u in self.unused],
            "hints": self.hints,
        }
