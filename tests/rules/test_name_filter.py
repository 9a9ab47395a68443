"""The quick test rename rules use to skip names: it may let through a name no pattern matches,
but never stops one that some pattern does (that name would silently keep its old name)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ckptmap.rules import regexes
from ckptmap.rules.schema import NameFilter, _required_literal


def bounded(text: str) -> regexes.Regex:
    """A rename rule's pattern as the schema compiles it."""
    return regexes.compile(text, search=True)


FRAGMENTS = ["a", "b", "/", "_", "(^|/)", "^", "$", "(a|b)", "a|b", "b?", "a*", "a+", "a+?", "[ab]",
             "[|]", r"\(", r"\d", "(?=a)", "(?:b|/)", ".", "x{2}", "(a)", r"\1", "(?i)", "(?!a)", "(?<!/)",
             r"\A", r"\Z", r"\b", "[^/]", r"\s", "(?x)", " ", "[^]a]", "[]b]"]  # fmt: skip


@given(
    st.lists(
        st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6).map("".join), min_size=1, max_size=4
    ),
    st.lists(st.text(alphabet="ab/_(|)x1\n", max_size=12), min_size=1, max_size=20),
)
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
def test_a_name_some_pattern_matches_is_never_filtered_out(texts: list[str], names: list[str]) -> None:
    patterns = []
    for text in texts:
        try:
            patterns.append(bounded(text))
        except regexes.UnsafeRegex:  # not a regex, or one refused for its backtracking
            continue
    quick = NameFilter(patterns)
    for name in names:
        if any(p.search(name) for p in patterns):
            assert quick.may_match(name), (texts, name)
            assert quick.may_match_any([*names[:3], name]), (texts, name)  # all names as one text


def test_literals_of_the_patterns_mappings_use() -> None:
    assert _required_literal(r"(^|/)GRUCell/Gates/Linear/Matrix$") == "GRUCell/Gates/Linear/Matrix"
    assert _required_literal(r"(^|/)MultiRNNCell/Cell(\d+)/(?=x)") == "MultiRNNCell/Cell"
    assert _required_literal(r"^rnn/cell_(\d+)/kernel$") == "rnn/cell_"
    assert _required_literal("ab?c") == "a"  # b may be missing
    assert _required_literal("a|bc") is None  # either side alone matches
    assert _required_literal(r"[|]ab") == "ab"  # the class is one character, the rest is required
    assert _required_literal(r"(^|/)(a_wrapper|b_wrapper)/weights$") == "/weights"
    assert _required_literal("x{2}y") == "y"


def test_patterns_whose_text_is_not_what_they_match_still_let_their_names_through() -> None:
    for text, name in [("(?x) lstm _cell / kernel", "rnn/lstm_cell/kernel"), ("[^]abcd]efg", "xefg"),
                       ("(?i)KERNEL", "rnn/kernel"), ("[]a]b", "]b")]:  # fmt: skip
        assert NameFilter([bounded(text)]).may_match(name), text


def test_names_no_pattern_matches_are_filtered_out() -> None:
    quick = NameFilter([bounded(r"(^|/)BasicLSTMCell/Linear/Matrix$"), bounded(r"(^|/)RNN/(?=lstm_cell/)")])
    assert not quick.may_match("block_0/dense_0/kernel")
    assert quick.may_match("RNN/lstm_cell/kernel")
