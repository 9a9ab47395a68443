"""Users' regexes (`match:`, `rename:`, `--rename`) matched with a bound on their work.

Python's `re` backtracks: `(a+)+$`, `(.*)*x` or `(.*a){20}` take exponential time, and `.*.*.*x`
takes n^3 steps on an n-character name, whose length a crafted checkpoint chooses. A regex cannot
be stopped once `re` runs it (it holds the GIL and ignores signals), so ckptmap bounds the work
before it starts: `regex_bound.steps` is an upper bound on the steps a backtracking match can take
on a name, from its length and how often the pattern's literals occur in it (`(.*)/(.*)/(.*)`
takes about n * s^2 steps on a name with s slashes, not n^3).

A pattern is refused when it loads if it takes over `MATCH_STEPS` on a name of `MIN_NAME_CHARS`
characters as real ones are (`_typical`): exponential patterns and long chains of `.*` fail
there whatever the name. A name is refused when it is matched if the bound
for that very name is over `MATCH_STEPS`, naming both; names up to `Regex.max_chars` (the bound
for any name that long fits) skip that check. The matches of one run share a time budget
(`Budget`), so many names each just under the bound stop too.

Why not the `regex` package and its `timeout=`: it costs 70-120 ms to import (a third of a
conversion's start) and 3-5x more per match than `re`, and it would be a new dependency with its
own dialect. The bound is conservative, but real names (a few hundred characters, a few tens of
slashes) pass every pattern of a few `.*` that literals separate, and the built-in mappings'
patterns are linear.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from functools import cached_property
from re import _parser  # type: ignore[attr-defined]
from typing import Any

from .regex_bound import literals, occurrences, steps

# Upper bound on the backtracking steps of one match: the bound overestimates; the worst patterns
# at this bound (`(.*)/(.*)/(.*)/k` on 291 slashes, `(\w*)_(\w*)_(\w*)_k` on 291 underscores,
# `.*.*.*x` on 320 a's) take 0.01-0.1 s of `re` on a 2020s x86 core.
MATCH_STEPS = 70_000_000
# Every pattern must stay within MATCH_STEPS on names this long, in which each character that
# follows a `.*` occurs TYPICAL_COUNT times (a text of k characters, TYPICAL_COUNT // k times), or
# it is refused when it loads: it would refuse real names. Names are checked one by one anyway.
MIN_NAME_CHARS = 128
TYPICAL_COUNT = 12
# No name longer than this is matched against a user's regex (nor made by a rename), whatever the
# pattern: real tensor names have tens of characters.
MAX_NAME_CHARS = 1 << 16
# The longest pattern text accepted: `re` compiles by recursion, and mappings' patterns are short.
MAX_PATTERN_CHARS = 10_000
# Seconds one run (a mapping over a checkpoint, the --rename pass) may spend matching names: real
# runs spend milliseconds (a microsecond a name and pattern).
RUN_SECONDS = 5.0
# Bounds worked out for names longer than max_chars, by length and literal counts (names of one
# checkpoint share them); cleared when this full.
_CACHED_BOUNDS = 4096


class UnsafeRegex(ValueError):
    """A pattern that is not a regex, or could backtrack for too long; the caller adds where."""


class NameTooLong(ValueError):
    """A name too long for a pattern's bound, or regex work past the run's deadline."""


class Budget:
    """The regex time of one run: what its matches spent together, against RUN_SECONDS (only
    matching counts, so a run that is slow elsewhere is not cut short)."""

    def __init__(self, seconds: float = RUN_SECONDS) -> None:
        self.seconds, self.spent = seconds, 0.0

    def charge(self, started: float) -> None:
        self.spent += time.monotonic() - started
        if self.spent > self.seconds:
            raise NameTooLong(f"matching names took over {self.seconds:g} s; simplify the regexes")


class Regex:
    """A compiled `re` pattern that checks each name against its bound: `.fullmatch`, `.search`
    and `.sub` as `re.Pattern`'s, raising `NameTooLong` instead of running past the bound."""

    def __init__(self, pattern: re.Pattern[str], tree: Any, *, search: bool) -> None:
        self.compiled, self._tree, self._search = pattern, tree, search
        self._caseless = _caseless(pattern)
        self.pattern, self.flags, self.groupindex = pattern.pattern, pattern.flags, pattern.groupindex
        self._literals = sorted(literals(tree, self._caseless))
        self._bounds: dict[tuple[int, ...], float] = {}

    def steps(self, n: int, counts: dict[str, int] | None = None) -> float:
        """The bound on a name of `n` characters: any such name, or one in which the texts that
        follow a `.*` occur `counts` times."""
        if counts is None:
            return steps(self._tree, n, self._search, self._caseless)
        return steps(self._tree, n, self._search, self._caseless, lambda text: counts.get(text, n))

    @cached_property
    def _short_fits(self) -> bool:
        """Whether every name of MIN_NAME_CHARS fits: most names are shorter, and skip the rest."""
        return self.steps(MIN_NAME_CHARS) <= MATCH_STEPS

    @cached_property
    def max_chars(self) -> int:
        """The longest name this pattern may run on, whatever the name holds (computed on first
        use: start-up stays cheap); longer ones are checked one by one."""
        lo, hi = 0, MAX_NAME_CHARS
        if self.steps(hi) <= MATCH_STEPS:
            return hi
        while hi - lo > 1:  # steps() grows with n
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.steps(mid) <= MATCH_STEPS else (lo, mid)
        return lo

    def _check(self, name: str) -> None:
        n = len(name)
        if (n <= MIN_NAME_CHARS and self._short_fits) or n <= self.max_chars:
            return
        if n > MAX_NAME_CHARS:
            raise NameTooLong(f"a name of {n} characters is too long (at most {MAX_NAME_CHARS})")
        counts = {text: occurrences(name, text) for text in self._literals}
        key = (n, *counts.values())
        worst = self._bounds.get(key)
        if worst is None:
            if len(self._bounds) >= _CACHED_BOUNDS:
                self._bounds.clear()
            worst = self._bounds[key] = self.steps(n, counts)
        if worst > MATCH_STEPS:
            raise NameTooLong(
                f"a name of {n} characters is too long for regex '{_short(self.pattern)}' "
                f"(it can backtrack: {_steps(worst)} steps on this name, at most {MATCH_STEPS:.0e})"
            )

    def fullmatch(self, name: str, budget: Budget | None = None) -> re.Match[str] | None:
        return self._timed(self.compiled.fullmatch, name, budget)

    def search(self, name: str, budget: Budget | None = None) -> re.Match[str] | None:
        return self._timed(self.compiled.search, name, budget)

    def _timed(
        self, match: Callable[[str], re.Match[str] | None], name: str, budget: Budget | None
    ) -> re.Match[str] | None:
        self._check(name)
        if budget is None:
            return match(name)
        started = time.monotonic()
        found = match(name)
        budget.charge(started)
        return found

    def sub(self, replacement: str, name: str, budget: Budget | None = None) -> str:
        """`re.sub`, refusing a result over MAX_NAME_CHARS (an empty match at every position
        replaced by a long text) before it is built whole."""
        self._check(name)
        started = time.monotonic()
        new = self._sub(replacement, name)
        if budget is not None:
            budget.charge(started)
        return new

    def _sub(self, replacement: str, name: str) -> str:
        if (len(name) + 1) * (len(replacement) + 1) * (1 + replacement.count("\\")) <= MAX_NAME_CHARS:
            return self.compiled.sub(replacement, name)  # cannot outgrow the limit: the fast path
        made = [len(name)]

        def expand(m: re.Match[str]) -> str:
            text = m.expand(replacement)
            made[0] += len(text)
            if made[0] > MAX_NAME_CHARS:
                raise NameTooLong(f"renaming makes a name over {MAX_NAME_CHARS} characters")
            return text

        return self.compiled.sub(expand, name)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def compile(text: str, *, search: bool = False) -> Regex:
    """`text` as a bounded regex for `fullmatch` (`search=True`: for `search` and `sub`).
    Raises UnsafeRegex with the reason."""
    if len(text) > MAX_PATTERN_CHARS:
        raise UnsafeRegex(f"a regex of {len(text)} characters (at most {MAX_PATTERN_CHARS})")
    try:
        pattern = re.compile(text)
        tree = _parser.parse(text, pattern.flags & ~re.UNICODE)
    except re.error as e:
        raise UnsafeRegex(f"bad regex '{_short(text)}': {e}") from None
    except (OverflowError, RecursionError, MemoryError) as e:  # a{99999999999}, ((((...))))
        raise UnsafeRegex(f"bad regex '{_short(text)}': {type(e).__name__}") from None
    worst = steps(tree, MIN_NAME_CHARS, search, _caseless(pattern), _typical)
    if worst > MATCH_STEPS:
        raise UnsafeRegex(
            f"regex '{_short(text)}' can backtrack catastrophically ({_steps(worst)} steps on a name "
            f"of {MIN_NAME_CHARS} characters): avoid a repeat inside a repeat like (a+)+, repeated "
            "alternatives that overlap like (a|ab)*, and many .* in a row"
        )
    return Regex(pattern, tree, search=search)


def _caseless(pattern: re.Pattern[str]) -> bool:
    return bool(pattern.flags & re.IGNORECASE) or re.search(r"\(\?[a-zA-Z-]*i", pattern.pattern) is not None


def _typical(text: str) -> float:
    """How often a real name of MIN_NAME_CHARS holds `text`, at most: a slash every ten
    characters, "/rnn/" twice."""
    return max(1, TYPICAL_COUNT // len(text))


def _steps(worst: float) -> str:
    return "more than 1e300" if math.isinf(worst) else f"{worst:.1e}"


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
