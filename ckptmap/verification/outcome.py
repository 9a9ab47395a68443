"""What a backend reports after restoring a checkpoint into a fresh model and running it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cases import Run


@dataclass
class Outcome:
    framework: str
    expected: list[str]  # canonical names the fresh model reads
    missing: list[tuple[str, tuple[int, ...]]] = field(
        default_factory=list
    )  # name the model needs, its shape
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )  # name, wants, has
    error: str | None = None  # the framework's own message when its restore failed
    runs: list[Run] = field(default_factory=list)

    @property
    def restored(self) -> bool:
        return not (self.missing or self.mismatched or self.error)
