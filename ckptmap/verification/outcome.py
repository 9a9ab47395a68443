"""What a backend reports after restoring a checkpoint into a fresh model and running it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cases import Run

# Terminal escape sequences (CSI `ESC [ ... m` colours, OSC titles, two-byte escapes) and other
# control characters: torch, for one, puts bold text in its messages, which a report or a log must
# not carry.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LONGEST = 400  # characters of a framework's message kept in a report line


def framework_message(error: BaseException | str) -> str:
    """A framework's error as one clean line: escapes and control characters removed, lines
    joined, the exception's class in front; a very long message is shortened at a word."""
    text = error if isinstance(error, str) else str(error)
    text = _CONTROL.sub(" ", _ESCAPES.sub("", text))
    text = " ".join(text.split())
    if len(text) > _LONGEST:
        text = text[:_LONGEST].rsplit(" ", 1)[0] + " ..."
    return text if isinstance(error, str) else f"{type(error).__name__}: {text}"


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
    notes: list[str] = field(default_factory=list)  # how the restore went where it is not the usual way

    @property
    def restored(self) -> bool:
        return not (self.missing or self.mismatched or self.error)
