"""'Did you mean ...?': the closest name of the same shape, for missing and unexpected tensors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Protocol


def closest(name: str, shape: tuple[int, ...], pool: Iterable[tuple[str, tuple[int, ...]]]) -> str | None:
    """The most similar name in `pool` among those with exactly `shape`, or None."""
    same = [other for other, other_shape in pool if other_shape == shape and other != name]
    if not same:
        return None
    return max(same, key=lambda other: difflib.SequenceMatcher(None, name, other).ratio())


class Suggestible(Protocol):
    name: str
    shape: tuple[int, ...]
    suggestion: str | None


def pair(missing: Sequence[Suggestible], unused: Sequence[Suggestible]) -> None:
    """Give each missing name the closest unused one of the same shape as its suggestion, and
    each unused name the closest missing one."""
    for m in missing:
        m.suggestion = closest(m.name, m.shape, [(u.name, u.shape) for u in unused])
    for u in unused:
        u.suggestion = closest(u.name, u.shape, [(m.name, m.shape) for m in missing])
