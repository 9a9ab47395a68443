"""Users' regexes (`match:`, `rename:`, `--rename`) matched with a bound on their work.

Python's `re` backtracks: `(a+)+$`, `(.*)*x` or `(.*a){20}` take exponential time, and `.*.*.*x`
takes n^3 steps on an n-character name, whose length a crafted checkpoint chooses. A regex cannot
be stopped once `re` runs it (it holds the GIL and ignores signals), so ckptmap bounds the work
before it starts: `compile` walks the parsed pattern (`re._parser`, what `re.compile` itself
parses) and computes an upper bound on the steps a backtracking match can take on a name of
n characters, counting the ways each part can match (a sequence multiplies them, an alternation
adds them, `x*` of one character has n + 1, a repeat of a part with several ways is exponential).
A pattern over `MATCH_STEPS` on names of `MIN_NAME_CHARS` is refused when it loads; a longer name
that would take a pattern over `MATCH_STEPS` is refused when it is matched, naming both. The
matches of one run share a time budget (`Budget`), so many names each just under the bound stop too.

Why not the `regex` package and its `timeout=`: it costs 70-120 ms to import (a third of a
conversion's start) and 3-5x more per match than `re`, and it would be a new dependency with its
own dialect. The bound is conservative: names of real checkpoints (under a few hundred characters)
pass every pattern of a few `.*`, and the built-in mappings' patterns are linear.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from functools import cached_property
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

# Upper bound on the backtracking steps of one match: the bound overestimates; the worst patterns
# at this bound (`.*.*x` on "aaa...", `(.*)/(.*)/(.*)/k` on "///...") take 0.1-0.2 s of `re`.
MATCH_STEPS = 100_000_000
# Every pattern must stay within MATCH_STEPS on names this long, or it is refused when it loads.
MIN_NAME_CHARS = 128
# No name longer than this is matched against a user's regex (nor made by a rename), whatever the
# pattern: real tensor names have tens of characters.
MAX_NAME_CHARS = 1 << 16
# The longest pattern text accepted: `re` compiles by recursion, and mappings' patterns are short.
MAX_PATTERN_CHARS = 10_000
# Seconds one run (a mapping over a checkpoint, the --rename pass) may spend matching names: real
# runs spend milliseconds (a microsecond a name and pattern).
RUN_SECONDS = 5.0


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
    """A compiled `re` pattern with the longest names it may see: `.fullmatch`, `.search` and
    `.sub` as `re.Pattern`'s, raising `NameTooLong` instead of running past the bound."""

    def __init__(self, pattern: re.Pattern[str], tree: Any, *, search: bool) -> None:
        self.compiled, self._tree, self._search = pattern, tree, search
        self._caseless = _caseless(pattern)
        self.pattern, self.flags, self.groupindex = pattern.pattern, pattern.flags, pattern.groupindex

    @cached_property
    def max_chars(self) -> int:
        """The longest name this pattern may run on (computed on first use: start-up stays cheap)."""
        lo, hi = MIN_NAME_CHARS, MAX_NAME_CHARS
        if steps(self._tree, hi, self._search, self._caseless) <= MATCH_STEPS:
            return hi
        while hi - lo > 1:  # steps() grows with n
            mid = (lo + hi) // 2
            fits = steps(self._tree, mid, self._search, self._caseless) <= MATCH_STEPS
            lo, hi = (mid, hi) if fits else (lo, mid)
        return lo

    def _check(self, name: str) -> None:
        if len(name) > MIN_NAME_CHARS and len(name) > self.max_chars:
            raise NameTooLong(
                f"a name of {len(name)} characters is too long for regex '{_short(self.pattern)}' "
                f"(at most {self.max_chars} for it: it can backtrack)"
            )

    def fullmatch(self, name: str, budget: Budget | None = None) -> re.Match[str] | None:
        self._check(name)
        if budget is None:
            return self.compiled.fullmatch(name)
        started = time.monotonic()
        found = self.compiled.fullmatch(name)
        budget.charge(started)
        return found

    def search(self, name: str, budget: Budget | None = None) -> re.Match[str] | None:
        self._check(name)
        if budget is None:
            return self.compiled.search(name)
        started = time.monotonic()
        found = self.compiled.search(name)
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
    worst = steps(tree, MIN_NAME_CHARS, search, _caseless(pattern))
    if worst > MATCH_STEPS:
        shown = "more than 1e300" if math.isinf(worst) else f"{worst:.1e}"
        raise UnsafeRegex(
            f"regex '{_short(text)}' can backtrack catastrophically ({shown} steps on a name of "
            f"{MIN_NAME_CHARS} characters): avoid a repeat inside a repeat like (a+)+, repeated "
            "alternatives that overlap like (a|ab)*, and many .* in a row"
        )
    return Regex(pattern, tree, search=search)


def _caseless(pattern: re.Pattern[str]) -> bool:
    return bool(pattern.flags & re.IGNORECASE) or re.search(r"\(\?[a-zA-Z-]*i", pattern.pattern) is not None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


# --- the bound ---------------------------------------------------------------------------------
# (ways, cost) of a part starting at one position: how many ends it can reach, each a backtracking
# branch for what follows, and the steps to try them all. Floats: an exponential bound is inf.
Bound = tuple[float, float]
_ATOMS = {c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN, c.CATEGORY, c.AT}
_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT}


def steps(tree: Any, n: int, search: bool, caseless: bool = False) -> float:
    """Upper bound on the steps of matching `tree` on a name of `n` characters: from its start
    (fullmatch), or from each position in turn (search, sub). `caseless`: the pattern ignores case
    somewhere, so which characters a class holds is not worked out."""
    items = list(tree)
    try:
        _, cost = _sequence(items, n, not caseless)
    except RecursionError:
        return math.inf
    if not search:
        return cost
    if items and items[0][0] is c.AT and items[0][1] is c.AT_BEGINNING_STRING:
        return cost + n  # `\A...`: every later start fails at once
    if items and items[0] == (c.AT, c.AT_BEGINNING) and not tree.state.flags & re.MULTILINE:
        return cost + n  # `^...`, the same
    return cost * (n + 1)


def _sequence(items: list[tuple[Any, Any]], n: int, sets: bool) -> Bound:
    ways, cost = 1.0, 0.0
    for i, item in enumerate(items):
        w, c_ = _part(item, n, sets)
        if w > 1 and sets and _stops_before(item, items[i + 1] if i + 1 < len(items) else None):
            w = 1.0  # `[^/]*/`: only the longest run can be followed by the `/`
        cost += ways * c_
        ways *= w
    return ways, cost


def _part(item: tuple[Any, Any], n: int, sets: bool) -> Bound:
    op, av = item
    if op in _ATOMS:
        return 1.0, 1.0
    if op is c.SUBPATTERN:
        return _sequence(list(av[-1]), n, sets)
    if op is c.BRANCH:
        bounds = [_sequence(list(b), n, sets) for b in av[1]]
        return sum(b[0] for b in bounds), sum(b[1] for b in bounds) + 1
    if op in (c.ASSERT, c.ASSERT_NOT):  # atomic: tried once, one way on
        return 1.0, _sequence(list(av[1]), n, sets)[1] + 1
    if op is c.ATOMIC_GROUP:
        return 1.0, _sequence(list(av), n, sets)[1] + 1
    if op is c.GROUPREF:
        return 1.0, n + 1.0
    if op is c.GROUPREF_EXISTS:
        yes = _sequence(list(av[1]), n, sets)
        no = _sequence(list(av[2]), n, sets) if av[2] is not None else (1.0, 1.0)
        return yes[0] + no[0], yes[1] + no[1] + 1
    if op in _REPEATS:
        lo, hi, body = av
        w, c_ = _sequence(list(body), n, sets)
        top = min(hi, lo + n)  # past n iterations, each matches nothing (and `re` stops them)
        if w <= 1:
            ways, cost = top - lo + 1.0, (top + 1.0) * c_
        elif top * math.log(w) > 690:  # w ** top overflows a float
            return math.inf, math.inf
        else:
            ways = (w ** (top + 1) - w**lo) / (w - 1)
            cost = (w ** (top + 1) - 1) / (w - 1) * c_
        return (1.0 if op is c.POSSESSIVE_REPEAT else ways), cost + 1
    return math.inf, math.inf  # an opcode this bound does not know: assume the worst


def _stops_before(item: tuple[Any, Any], following: tuple[Any, Any] | None) -> bool:
    """A greedy or lazy repeat of one character class followed by a literal outside the class:
    whichever length it tries, only one can be followed by that literal."""
    op, av = _unwrap(item)
    following = _first(following)
    if op not in (c.MAX_REPEAT, c.MIN_REPEAT) or following is None or following[0] is not c.LITERAL:
        return False
    body = list(av[2])
    char = following[1]
    if len(body) != 1 or not 0x20 <= char < 0x7F:  # printable ASCII: where str methods and re agree
        return False
    member = _member(body[0])
    return member is not None and not member(chr(char))


def _unwrap(item: tuple[Any, Any]) -> tuple[Any, Any]:
    """A group of one part, `(?P<p>[^/]*)`, as that part."""
    while item[0] is c.SUBPATTERN and len(item[1][-1]) == 1:
        item = item[1][-1][0]
    return item


def _first(item: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """The first part of `item` when it is a literal that must match first (maybe in a group)."""
    while item is not None and item[0] is c.SUBPATTERN:
        item = item[1][-1][0] if len(item[1][-1]) else None
    return item


_CATEGORIES: dict[Any, Callable[[str], bool]] = {
    c.CATEGORY_DIGIT: lambda ch: ch.isdigit(),
    c.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdigit(),
    c.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
    c.CATEGORY_NOT_WORD: lambda ch: not (ch.isalnum() or ch == "_"),
    c.CATEGORY_SPACE: lambda ch: ch.isspace(),
    c.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
}


def _member(atom: tuple[Any, Any]) -> Callable[[str], bool] | None:
    """Membership of an ASCII character in a one-character part, or None if not one (or unsure)."""
    op, av = atom
    if op is c.LITERAL:
        return lambda ch: ord(ch) == av
    if op is c.NOT_LITERAL:
        return lambda ch: ord(ch) != av
    if op is c.ANY:
        return lambda ch: True
    if op is not c.IN:
        return None
    tests: list[Callable[[str], bool]] = []
    negate = False
    for sub_op, sub_av in av:
        if sub_op is c.NEGATE:
            negate = True
        elif sub_op is c.LITERAL:
            tests.append(lambda ch, v=sub_av: ord(ch) == v)
        elif sub_op is c.RANGE:
            tests.append(lambda ch, r=sub_av: r[0] <= ord(ch) <= r[1])
        elif sub_op is c.CATEGORY and sub_av in _CATEGORIES:
            tests.append(_CATEGORIES[sub_av])
        else:
            return None  # case-folded ranges and the like: not worth the risk
    return lambda ch: any(t(ch) for t in tests) != negate
