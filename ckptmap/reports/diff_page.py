"""The page `diff --values --report FILE.html` writes: the names only one side has, the shape and
dtype changes, and per tensor in both its largest absolute and relative difference and its SQNR,
the differing ones drawn (how a cast to float16 or a quantization came out, tensor by tensor)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import plots, render

if TYPE_CHECKING:  # pragma: no cover
    from ..api import DiffReport

MAX_BARS = 60  # of the differing tensors, lowest SQNR first


def write(report: DiffReport, path: str | Path) -> Path:
    return render.save(page(report), path)


def page(report: DiffReport) -> str:
    values = report.values or []
    differing = sorted((v for v in values if not v.identical), key=lambda v: _order(v.sqnr_db))
    shown = differing[:MAX_BARS]
    chart = plots.sqnr_bars([(v.name, v.sqnr_db) for v in shown], gid="sqnr") if shown else None
    return render.page(
        "diff.html.j2",
        title=f"ckptmap diff: {Path(report.a).name} vs {Path(report.b).name}",
        a=str(report.a),
        b=str(report.b),
        same=report.same,
        tolerance=report.tolerance,
        only_in_a=report.only_in_a,
        only_in_b=report.only_in_b,
        changed=report.changed,
        values=[_row(v) for v in values],
        identical=sum(v.identical for v in values),
        chart=chart,
        charted=len(shown),
        differing=len(differing),
    )


def _row(v: Any) -> dict[str, Any]:
    return {"name": v.name, "max_abs": v.max_abs, "max_rel": v.max_rel, "sqnr": _db(v.sqnr_db),
            "identical": v.identical, "equal": v.equal}  # fmt: skip


def _order(db: float | None) -> float:
    return -math.inf if db is None else db


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"
