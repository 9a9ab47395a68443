"""'Did you mean ...?': the closest name of the same shape, for missing and unexpected tensors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, shape: tuple[int, ...], pool: Iterable[tuple[str, tuple[int, ...]]]) -> str | None:
    """The most similar name in `pool` among those with exactly `shape`, or None."""
    same = [other for other, other_shape in pool if other_shape == shape and other != name]
    if not same:
        return None
    return max(same, key=lambda other: difflib.SequenceMatcher(None, name, other).ratio())
