"""What the restore hooks (ckptmap.torch, ckptmap.tf1, ckptmap.keras) share: mapping a source for
a target framework, and the report they return.

A hook reads any checkpoint ckptmap reads, applies the mapping (the given one, or the built-in
mapping from the checkpoint's framework to the hook's), and loads the result into the user's model
with the framework's own API. The report says what was loaded, what the model has that the
checkpoint did not provide, what the checkpoint has that the model did not take, what was computed
rather than copied, and what was frozen; `str(report)` is a readable table and
`report.to_dict()` plain data.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api
from .errors import MappingError, UsageError
from .formats import registry
from .pipeline import apply, resolve_mappings
from .rules.mapping import builtin_chain
from .rules.plan import Plan
from .suggest import pair
from .tree import Checkpoint

Source = str | os.PathLike[str] | Checkpoint
Shape = tuple[int, ...]


@dataclass
class Named:
    name: str
    shape: Shape
    suggestion: str | None = None  # the closest name of the same shape on the other side


@dataclass
class LoadReport:
    """The outcome of loading a checkpoint into a model. Prints as a table."""

    target: str
    source: str
    mappings: list[str]
    loaded: list[str] = field(default_factory=list)
    missing: list[Named] = field(default_factory=list)  # the model has them; the checkpoint did not provide
    unexpected: list[Named] = field(default_factory=list)  # the checkpoint has them; the model did not take
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # name, model, checkpoint
    converted: list[str] = field(default_factory=list)  # computed by a mapping rule, not copied
    frozen: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)  # TF1: left to their initializers (init_missing)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source": self.source,
            "mappings": self.mappings,
            "loaded": self.loaded,
            "missing": [vars(m) for m in self.missing],
            "unexpected": [vars(u) for u in self.unexpected],
            "mismatched": [
                {"name": n, "model": list(a), "checkpoint": list(b)} for n, a, b in self.mismatched
            ],
            "converted": self.converted,
            "frozen": self.frozen,
            "initialized": self.initialized,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        via = f" with {', '.join(self.mappings)}" if self.mappings else ""
        lines = [f"{self.source} -> {self.target}{via}"]
        computed_note = f"{len(self.converted)} computed by the mapping" if self.converted else ""
        mismatches = ", ".join(f"{n} {list(a)} vs {list(b)}" for n, a, b in self.mismatched[:3])
        frozen = ", ".join(self.frozen[:4]) + (" ..." if len(self.frozen) > 4 else "")
        rows = [
            ("loaded", len(self.loaded), computed_note),
            ("missing", len(self.missing), _names(self.missing)),
            ("unexpected", len(self.unexpected), _names(self.unexpected)),
            ("shape mismatch", len(self.mismatched), mismatches),
            ("frozen", len(self.frozen), frozen),
            ("initialized", len(self.initialized), ", ".join(self.initialized[:4])),
        ]
        width = max(len(r[0]) for r in rows)
        lines += [
            f"  {label.ljust(width)}  {count:>5}  {detail}".rstrip() for label, count, detail in rows if count
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _names(items: list[Named]) -> str:
    shown = [f"{m.name}" + (f" (did you mean {m.suggestion}?)" if m.suggestion else "") for m in items[:3]]
    return ", ".join(shown) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def prepare(
    source: Source,
    framework: str,
    mapping: Any,
    params: MappingABC[str, Any] | None,
    rename: MappingABC[str, str] | None,
) -> tuple[Checkpoint, Checkpoint, Plan]:
    """(source checkpoint, mapped checkpoint, plan). Without a mapping, the built-in one from the
    checkpoint's framework to `framework` is used; none when they are the same."""
    ckpt = source if isinstance(source, Checkpoint) else api.load(source)
    if mapping is None:
        own = registry.framework_of(ckpt.format)
        mapping = list(builtin_chain(own, framework)) if own != framework else []
    mapped, plan = apply(ckpt, resolve_mappings(mapping, params or {}), rename)
    return ckpt, mapped, plan


def notes_of(source: Checkpoint, plan: Plan) -> list[str]:
    """What the reader and the mapping say about this load, as `convert` prints it: above all a
    conversion that is not exact (a TF1 GRUCell in an nn.GRU computes something else after step 1)."""
    scopes: dict[str, list[str]] = {}  # one note per reason: a `match` rule declares it per tensor
    for a in plan.approximations:
        scopes.setdefault(a.reason.strip(), []).append(a.scope)
    approximate = [f"NOT EXACT ({', '.join(dict.fromkeys(s))}): {why}" for why, s in scopes.items()]
    return [*source.notes, *plan.notes, *approximate]


def computed(plan: Plan) -> set[str]:
    return {t.name for t in plan.converted}


def check(report: LoadReport, *, model: dict[str, Shape], provided: dict[str, Shape]) -> None:
    """Fill missing / unexpected / mismatched with suggestions, comparing names and shapes."""
    for name, shape in model.items():
        if name not in provided:
            report.missing.append(Named(name, shape))
        elif provided[name] != shape:
            report.mismatched.append((name, shape, provided[name]))
    report.unexpected = [Named(n, s) for n, s in provided.items() if n not in model]
    pair(report.missing, report.unexpected)


def refuse_incomplete(report: LoadReport, *, what: str, hint: str) -> None:
    """Under strict loading, any gap is an error naming the first few names, nothing loaded."""
    if report.complete:
        return
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} {what} missing from the checkpoint ({_names(report.missing)})")
    if report.unexpected:
        parts.append(
            f"{len(report.unexpected)} checkpoint tensors the model does not have "
            f"({_names(report.unexpected)})"
        )
    if report.mismatched:
        name, model, ckpt = report.mismatched[0]
        parts.append(
            f"{len(report.mismatched)} shape mismatches ({name}: model {list(model)}, checkpoint "
            f"{list(ckpt)})"
        )
    raise MappingError(
        f"{report.source} -> {report.target}: " + "; ".join(parts) + ". Nothing was loaded.", hint=hint
    )


def matching(names: Iterable[str], patterns: Sequence[str], what: str) -> list[str]:
    """Names matching any glob pattern (`encoder.*`); a pattern that matches nothing is an error."""
    names = list(names)
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise UsageError(f"freeze pattern '{pattern}' matches no {what}.")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def describe(source: Source) -> str:
    return str(source.path) if isinstance(source, Checkpoint) else str(Path(source))
