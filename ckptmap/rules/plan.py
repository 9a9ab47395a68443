"""What a mapping will do (or did) to a checkpoint, as plain data for reports and `--dry-run`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    sources: tuple[str, ...]
    how: str  # "kept", "renamed", or the expression that computes it
    rule: str | None = None


@dataclass(frozen=True)
class Approximation:
    rule: str
    scope: str
    reason: str


@dataclass
class Plan:
    mappings: list[str]
    params: dict[str, Any]
    targets: list[PlannedTensor] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (source name, why)
    approximations: list[Approximation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rnns_converted: int = 0  # RNNs that cell rules converted (or dropped on purpose)

    @property
    def passed_through(self) -> list[str]:
        return [t.name for t in self.targets if t.how == "kept"]

    @property
    def renamed(self) -> list[tuple[str, str]]:
        return [(t.sources[0], t.name) for t in self.targets if t.how == "renamed"]

    @property
    def converted(self) -> list[PlannedTensor]:
        return [t for t in self.targets if t.how not in ("kept", "renamed")]

    @property
    def exact(self) -> bool:
        return not self.approximations

    def then(self, later: Plan) -> Plan:
        """This plan followed by `later` (a second mapping, or the final renames)."""
        by_name = {t.name: t for t in self.targets}
        targets = []
        for t in later.targets:
            origins = tuple(
                s for src in t.sources for s in (by_name[src].sources if src in by_name else (src,))
            )
            prior = by_name.get(t.sources[0]) if len(t.sources) == 1 else None
            how, rule = t.how, t.rule
            if prior is not None and t.how in ("kept", "renamed") and prior.how != "kept":
                # A rename after a conversion is still that conversion; keep what computed it.
                how, rule = (
                    (prior.how, prior.rule) if prior.how != "renamed" or t.how == "kept" else (t.how, t.rule)
                )
            targets.append(PlannedTensor(t.name, t.shape, t.dtype, origins, how, rule))
        return Plan(
            self.mappings + later.mappings,
            {**self.params, **later.params},
            targets,
            self.dropped + later.dropped,
            self.approximations + later.approximations,
            self.notes + later.notes,
            self.rnns_converted + later.rnns_converted,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dropped"] = [{"name": n, "why": w} for n, w in self.dropped]
        data["exact"] = self.exact
        return data
