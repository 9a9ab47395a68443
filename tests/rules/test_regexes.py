"""The bound on users' regexes: patterns people write (`.*` chains that slashes separate) load and
match real names of hundreds of characters; names that would make them backtrack for long do not.
The hostile patterns themselves are in tests/robustness/test_hostile_rules.py."""

from __future__ import annotations

import re
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptmap.errors import MappingError
from ckptmap.pipeline import rename_all
from ckptmap.rules import regex_bound, regexes
from ckptmap.rules.mapping import Mapping
from ckptmap.rules.schema import parse
from ckptmap.tree import Checkpoint, TensorEntry

# A name as deep models have them: 12 slashes, underscores in most parts.
PREFIX = "model_v3/encoder_stack/bidirectional_rnn_layer_2/forward_direction/rnn"
DEEP = f"{PREFIX}/multi_rnn_cell/cell_1/dropout_wrapper/attention_wrapper/lstm_cell/kernel"

# The reviewer's patterns, each refused when it loaded before: (pattern, search).
REVIEWED = [
    ("(.*)/rnn/(.*)/(.*)_cell/(.*)", False),
    ("(.*)/(.*)/(.*)/(.*)", False),
    ("(.*)/(.*)/(.*)", True),
]


def names(total: int) -> list[str]:
    """Real-looking names of about `total` characters (slashes and underscores as real ones have)."""
    filler = "_".join(["adam_moment"] * (total // 12))
    return [
        DEEP[:total],
        f"{PREFIX}/{filler}/lstm_cell/bias"[:total],
        f"{filler}/rnn/gru_{total}/gates_cell/weights"[-total:],
    ]


@pytest.mark.parametrize(("pattern", "search"), REVIEWED)
def test_the_patterns_users_write_are_accepted(pattern: str, search: bool) -> None:
    regexes.compile(pattern, search=search)


@pytest.mark.parametrize(("pattern", "search"), REVIEWED)
@pytest.mark.parametrize("total", [100, 180, 300])
def test_they_match_real_names_of_hundreds_of_characters_as_re_does(
    pattern: str, search: bool, total: int
) -> None:
    bounded = regexes.compile(pattern, search=search)
    for name in names(total):
        assert 100 <= len(name) <= 300
        found = bounded.search(name) if search else bounded.fullmatch(name)
        expected = re.search(pattern, name) if search else re.fullmatch(pattern, name)
        assert (found and found.groups()) == (expected and expected.groups()), name
        if search:
            assert bounded.sub(r"\3.\2.\1", name) == re.sub(pattern, r"\3.\2.\1", name)


def test_the_groups_of_a_deep_name() -> None:
    found = regexes.compile(REVIEWED[0][0]).fullmatch(DEEP)
    assert found is not None
    assert found.groups() == (
        "model_v3/encoder_stack/bidirectional_rnn_layer_2/forward_direction",
        "multi_rnn_cell/cell_1/dropout_wrapper/attention_wrapper",
        "lstm",
        "kernel",
    )


def _ckpt(*names: str) -> Checkpoint:
    def load() -> np.ndarray:
        return np.zeros(2, np.float32)

    return Checkpoint([TensorEntry(n, (2,), "float32", n, load) for n in names], format="test")


def test_a_mapping_and_a_rename_with_them_convert_long_names() -> None:
    long = f"{PREFIX}/{'_'.join(['layer_norm'] * 12)}/rnn/stack/lstm_cell/kernel"  # 220 characters
    mapping = Mapping(
        parse(
            textwrap.dedent(r"""
                rules:
                  - rename: {'(.*)/rnn/(.*)/(.*)_cell/(.*)': '\1/\2/\3/\4'}
                  - match: '(?P<a>.*)/(?P<b>.*)/(?P<c>.*)/(?P<d>.*)'
                    to: '{d}/{c}/{b}/{a}'
            """),
            "m.yaml",
        ),
        {},
    )
    out, _ = mapping.run(_ckpt(long, DEEP))
    renamed = [re.sub(r"(.*)/rnn/(.*)/(.*)_cell/(.*)", r"\1/\2/\3/\4", n) for n in (long, DEEP)]
    assert sorted(out) == sorted(_swap(n) for n in renamed)
    assert f"kernel/lstm/stack/{PREFIX}/" + "_".join(["layer_norm"] * 12) in out
    renamed, _ = rename_all(_ckpt(long, DEEP), {"(.*)/(.*)/(.*)": r"\3/\2/\1"})
    assert list(renamed) == [re.sub("(.*)/(.*)/(.*)", r"\3/\2/\1", n) for n in (long, DEEP)]


def _swap(name: str) -> str:
    a, b, c, d = re.fullmatch("(.*)/(.*)/(.*)/(.*)", name).groups()  # type: ignore[union-attr]
    return f"{d}/{c}/{b}/{a}"


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "(.*)*x", "(.*a){20}", "(a|a)*b", "(a?){30}a{30}", "(.*)/(?:(.*)/)*k"]
)
def test_patterns_that_backtrack_exponentially_are_still_refused(pattern: str) -> None:
    with pytest.raises(regexes.UnsafeRegex, match="backtrack"):
        regexes.compile(pattern)


def test_a_name_of_many_slashes_is_refused_where_one_of_few_passes() -> None:
    # On 2000 slashes, `(.*)/(.*)/(.*)/k` takes ~2000^3 steps (minutes): the slashes in this name
    # are what decides, not its length.
    bounded = regexes.compile("(.*)/(.*)/(.*)/k")
    with pytest.raises(regexes.NameTooLong, match="2000 characters is too long"):
        bounded.fullmatch("/" * 2000)
    few = "a" * 500 + "/b" * 10 + "c" * 1480
    assert bounded.fullmatch(few) is None
    assert bounded.fullmatch(few + "/k") is not None


def test_the_worst_name_the_bound_lets_through_is_matched_quickly() -> None:
    # The longest run of slashes the bound accepts: `re` tries about n^3 ways on it and fails.
    bounded = regexes.compile("(.*)/(.*)/(.*)/k")
    lo, hi = 1, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            bounded._check("/" * mid)
            lo = mid
        except regexes.NameTooLong:
            hi = mid
    assert 100 < lo < 1000
    started = time.monotonic()
    assert bounded.fullmatch("/" * lo) is None
    assert time.monotonic() - started < 1.0  # ~0.05 s; minutes if the bound were unsound


def test_a_rename_on_a_name_too_long_for_it_is_one_error() -> None:
    with pytest.raises(MappingError, match="too long for regex"):
        rename_all(_ckpt("/" * 3000), {"(.*)/(.*)/(.*)": "x"})


PIECES = [
    "a",
    "/",
    "_",
    ".*",
    ".*?",
    "(.*)",
    r"\w*",
    "[^/]*",
    "a+",
    "(a|b)",
    "x?",
    "(?:ab)*",
    "k",
    "$",
    "(?i)",
]


@given(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
    st.text(alphabet="a/_bk", min_size=0, max_size=400),
    st.booleans(),
)
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
def test_a_names_own_bound_is_never_above_the_bound_for_any_name(
    pattern: str, name: str, search: bool
) -> None:
    # The counts of a name's literals can only cut the ways, so a name within max_chars (checked by
    # length alone) is within its own bound too.
    try:
        bounded = regexes.compile(pattern, search=search)
    except regexes.UnsafeRegex:
        return
    counts = {t: regex_bound.occurrences(name, t) for t in bounded._literals}
    assert bounded.steps(len(name), counts) <= bounded.steps(len(name)) * (1 + 1e-9)
