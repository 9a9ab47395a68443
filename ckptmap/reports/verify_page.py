"""The page `verify --report FILE.html` writes: per RNN pair the verdict, the numbers of the text
table, the output error per time step drawn, and the mapping, its parameters, the notes and the
versions of the frameworks that ran both sides."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import plots, render

if TYPE_CHECKING:  # pragma: no cover
    from ..verification.report import PairResult, VerifyReport

# The distributions whose versions decide what a verification ran (when installed).
_DISTRIBUTIONS = ("ckptmap", "numpy", "torch", "tensorflow", "tf-keras", "keras", "onnx", "onnxruntime",
                  "flax", "jax", "matplotlib")  # fmt: skip


def write(report: VerifyReport, path: str | Path) -> Path:
    return render.save(page(report), path)


def page(report: VerifyReport) -> str:
    pairs = []
    for k, pair in enumerate(report.pairs):
        series = [(c.case, c.step_abs) for c in pair.cases if c.step_abs]
        svg = plots.error_per_step(series, pair.tolerance, gid=f"pair-{k}") if series else None
        pairs.append({**_pair(pair), "index": k, "plot": svg})
    return render.page(
        "verify.html.j2",
        title=f"ckptmap verify: {Path(report.source).name} vs {Path(report.destination).name}",
        source=str(report.source),
        destination=str(report.destination),
        mappings=report.mappings,
        params=report.params,
        strict=report.strict,
        ok=report.ok,
        pairs=pairs,
        unpaired=[r.describe() for r in report.unpaired],
        versions=_versions(),
    )


def _pair(pair: PairResult) -> dict[str, Any]:
    return {
        "source": pair.source.describe(),
        "destination": pair.destination.describe() if pair.destination else None,
        "verdict": pair.verdict,
        "tolerance": pair.tolerance,
        "max_abs": pair.max_abs,
        "max_rel": pair.max_rel,
        "approximate": pair.approximate,
        "approximated_by": pair.approximated_by,
        "message": pair.message,
        "notes": pair.notes,
        "cases": [_case(c) for c in pair.cases],
        "gates": [{**g.to_dict(), "label": g.label, "wrong": g.max_abs > pair.tolerance} for g in pair.gates],
        "wrong_gates": [g.label for g in pair.blamed_gates()],
    }


def _case(c: Any) -> dict[str, Any]:
    names = ("case", "output_abs", "output_rel", "state_abs", "state_rel", "allowed", "within")
    return {name: getattr(c, name) for name in names}


def _versions() -> list[tuple[str, str]]:
    found = []
    for name in _DISTRIBUTIONS:
        try:
            found.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
