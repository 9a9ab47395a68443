"""An upper bound on the steps `re` can take to match a pattern on a name (see `regexes`).

The bound walks the parsed pattern (`re._parser`, what `re.compile` itself parses) and counts the
ways each part can match from one position: a sequence multiplies them, an alternation adds them,
`x*` of one character has n + 1, a repeat of a part with several ways is exponential. Each way is
a backtracking branch that what follows is tried on, so the steps are the ways into each part
times what that part costs.

Two things cut the ways, both sound for every name:
- `[^/]*/`: a repeat of one character class followed by a literal outside the class can only be
  followed by it at the end of its longest run: one way on, not n + 1.
- `.*/rnn/`: a repeat of single characters followed by literal text ends at a different position
  each way, and only the ways that end where the name holds that text get past it: at most as
  many as the places the text starts in the name. So `(.*)/(.*)/(.*)` takes about n * s^2 steps
  on a name with s slashes, not n^3. How often a text occurs is known only for a given name
  (`count`): without one it is taken as n, which bounds every name of n characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from re import _constants as c  # type: ignore[attr-defined]
from typing import Any, NamedTuple

# (ways, cost) of a part starting at one position: how many ends it can reach, each a backtracking
# branch for what follows, and the steps to try them all. Floats: an exponential bound is inf.
Bound = tuple[float, float]
Count = Callable[[str], float]  # how many places of the name start a text, at most
_ATOMS = {c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN, c.CATEGORY, c.AT}
_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT}


class _Env(NamedTuple):
    n: int  # the name's length
    sets: bool  # which characters a class holds may be worked out (the pattern is case-sensitive)
    count: Count


def steps(tree: Any, n: int, search: bool, caseless: bool = False, count: Count | None = None) -> float:
    """Upper bound on the steps of matching `tree` on a name of `n` characters: from its start
    (fullmatch), or from each position in turn (search, sub). `caseless`: the pattern ignores case
    somewhere, so which characters a class holds is not worked out. `count`: at how many places
    the name holds a text (None: at any of its n places)."""
    items = list(tree)
    env = _Env(n, not caseless, count or (lambda _: float(n)))
    try:
        _, cost = _sequence(items, env)
    except RecursionError:
        return math.inf
    if not search:
        return cost
    if items and items[0][0] is c.AT and items[0][1] is c.AT_BEGINNING_STRING:
        return cost + n  # `\A...`: every later start fails at once
    if items and items[0] == (c.AT, c.AT_BEGINNING) and not tree.state.flags & re.MULTILINE:
        return cost + n  # `^...`, the same
    return cost * (n + 1)


def literals(tree: Any, caseless: bool = False) -> set[str]:
    """The texts whose counts in a name `steps` may ask for: those right after a `.*`."""
    env = _Env(0, not caseless, lambda _: 0.0)
    found: set[str] = set()
    todo = [list(tree)]
    while todo:
        items = todo.pop()
        for i, (op, av) in enumerate(items):
            if _distinct_ends((op, av)):
                found.add(_prefix(items, i + 1, env)[0])
            if op is c.SUBPATTERN or op in _REPEATS or op in (c.ASSERT, c.ASSERT_NOT):
                todo.append(list(av[-1]))
            elif op is c.BRANCH:
                todo.extend(list(b) for b in av[1])
            elif op is c.ATOMIC_GROUP:
                todo.append(list(av))
            elif op is c.GROUPREF_EXISTS:
                todo.extend(list(b) for b in av[1:] if b is not None)
    found.discard("")
    return found


def occurrences(name: str, text: str) -> int:
    """How many positions of `name` start `text` (overlapping ones too: each is a way past it)."""
    if len(text) == 1:
        return name.count(text)
    found, at = 0, name.find(text)
    while at >= 0:
        found, at = found + 1, name.find(text, at + 1)
    return found


def _sequence(items: list[tuple[Any, Any]], env: _Env) -> Bound:
    ways, cost = 1.0, 0.0
    # The ways past the text a `.*` must be followed by: after item `cap_at` (literals that follow
    # it), or into item `gate_at` (a group that starts with `gate_len` literals).
    cap_at = gate_at = gate_len = -1
    cap = gate = math.inf
    for i, item in enumerate(items):
        w, c_ = _part(item, env)
        if i == gate_at and gate < ways:
            # Every way tries the group's literals; only `gate` of them get past them, into the rest.
            cost += ways * gate_len + gate * c_
            ways = gate
        else:
            cost += ways * c_
        following = items[i + 1] if i + 1 < len(items) else None
        if w > 1 and env.sets and _stops_before(item, following):
            w = 1.0  # `[^/]*/`: only the longest run can be followed by the `/`
        elif w > 1 and _distinct_ends(item):
            text, top = _prefix(items, i + 1, env)
            if text:  # `.*/rnn/`: a way on for each place the name holds "/rnn/", at most
                limit = ways * min(w, env.count(text))
                if top:
                    cap_at, cap = i + len(text), limit
                else:
                    gate_at, gate, gate_len = i + 1, limit, len(text)
        ways *= w
        if i == cap_at:
            ways = min(ways, cap)
    return ways, cost


def _part(item: tuple[Any, Any], env: _Env) -> Bound:
    op, av = item
    if op in _ATOMS:
        return 1.0, 1.0
    if op is c.SUBPATTERN:
        return _sequence(list(av[-1]), env)
    if op is c.BRANCH:
        bounds = [_sequence(list(b), env) for b in av[1]]
        return sum(b[0] for b in bounds), sum(b[1] for b in bounds) + 1
    if op in (c.ASSERT, c.ASSERT_NOT):  # atomic: tried once, one way on
        return 1.0, _sequence(list(av[1]), env)[1] + 1
    if op is c.ATOMIC_GROUP:
        return 1.0, _sequence(list(av), env)[1] + 1
    if op is c.GROUPREF:
        return 1.0, env.n + 1.0
    if op is c.GROUPREF_EXISTS:
        yes = _sequence(list(av[1]), env)
        no = _sequence(list(av[2]), env) if av[2] is not None else (1.0, 1.0)
        return yes[0] + no[0], yes[1] + no[1] + 1
    if op in _REPEATS:
        lo, hi, body = av
        w, c_ = _sequence(list(body), env)
        top = min(hi, lo + env.n)  # past n iterations, each matches nothing (and `re` stops them)
        if w <= 1:
            ways, cost = top - lo + 1.0, (top + 1.0) * c_
        elif top * math.log(w) > 690:  # w ** top overflows a float
            return math.inf, math.inf
        else:
            ways = (w ** (top + 1) - w**lo) / (w - 1)
            cost = (w ** (top + 1) - 1) / (w - 1) * c_
        return (1.0 if op is c.POSSESSIVE_REPEAT else ways), cost + 1
    return math.inf, math.inf  # an opcode this bound does not know: assume the worst


def _distinct_ends(item: tuple[Any, Any]) -> bool:
    """A greedy or lazy repeat of a body that matches one way and a fixed number of characters
    (`.*`, `\\w+`, `(?:ab)*`, maybe in a group): each of its ways ends at a different position."""
    op, av = _unwrap(item)
    if op not in (c.MAX_REPEAT, c.MIN_REPEAT):
        return False
    body = list(av[2])  # one path through it, of single characters (an AT matches none)
    return bool(body) and all(sub_op in _ATOMS and sub_op is not c.AT for sub_op, _ in body)


def _prefix(items: list[tuple[Any, Any]], start: int, env: _Env) -> tuple[str, bool]:
    """The literal text `items[start:]` must begin with, and whether it is items of their own
    (True) or the start of the group `items[start]` (False). Under ignored case only printable
    ASCII that is not a letter counts: it matches itself alone."""
    seq, top = items[start:], True
    while seq and seq[0][0] is c.SUBPATTERN:
        seq, top = list(seq[0][1][-1]), False
    text = []
    for op, av in seq:
        if op is not c.LITERAL or not (env.sets or (0x20 <= av < 0x7F and not chr(av).isalpha())):
            break
        text.append(chr(av))
    return "".join(text), top


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
