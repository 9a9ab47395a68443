"""'Did you mean ...?': the closest name of the same shape, for missing and unexpected tensors,
and the closest option names, for a mistyped mapping or parameter."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

# Where in an RNN a tensor sits: its direction (TF1 `fw`/`bw`, Keras `forward_layer`/`backward_layer`,
# PyTorch `_reverse`) and its layer (TF1 `multi_rnn_cell/cell_<k>`, `stack_bidirectional_rnn/cell_<k>`,
# PyTorch `_l<k>`). A user's cell may be named `cell_1` itself, so only the component after those
# wrappers counts as a layer.
_DIRECTION = re.compile(r"(?:^|/)(fw|bw|forward_layer|backward_layer)(?:/|$)|_l\d+(_reverse)?(?:/|$)")
_LAYER = re.compile(
    r"(?:multi_rnn_cell|stack_bidirectional_rnn)/cell_(\d+)(?:/|$)|_l(\d+)(?:_reverse)?(?:/|$)"
)


def _place(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    direction = tuple(
        "bw" if m[1] in ("bw", "backward_layer") or m[2] else "fw" for m in _DIRECTION.finditer(name)
    )
    return direction, tuple(m[1] or m[2] for m in _LAYER.finditer(name))


def closest(name: str, shape: tuple[int, ...], pool: Iterable[tuple[str, tuple[int, ...]]]) -> str | None:
    """The most similar name in `pool` among those with exactly `shape`, or None. Names of the
    same direction and layer come first: a fw kernel and a bw kernel differ by one letter."""
    same = [other for other, other_shape in pool if other_shape == shape and other != name]
    if not same:
        return None
    place = _place(name)
    return max(
        same,
        key=lambda other: (_place(other) == place, difflib.SequenceMatcher(None, name, other).ratio()),
    )


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


def similar(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `choices` that look like a mistyped `word`, best first (difflib's ratio)."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'tf1-to-torch'?` for a mistyped name, or "" when nothing is close: a
    fragment to put in the middle of an error message, which stays one line."""
    close = [repr(c) for c in similar(word, choices)]
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"; did you mean {listed}?"
