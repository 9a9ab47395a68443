"""The evaluation corpus of `ckptmap align` (tests/alignment/corpus.py) and its goals: no tensor
placed wrongly without a flag, every RNN paired right, at least 95 % of all target tensors placed
correctly without help. README.md shows the table `python -m tests.alignment.corpus OUT` prints."""

from __future__ import annotations

import pytest

from tests.alignment import corpus


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> list[corpus.Score]:
    out = tmp_path_factory.mktemp("align-corpus")
    cases = [c for build in corpus.BUILDERS if (c := build(out)) is not None]
    return [corpus.score(c) for c in cases]


def test_no_pair_is_wrong_without_a_flag_and_every_rnn_is_paired_right(scores):
    for s in scores:
        assert (s.wrong, s.unplaced, s.rnns_right) == (0, 0, True), s


def test_at_least_95_percent_are_placed_without_help(scores):
    total = sum(s.tensors for s in scores)
    assert sum(s.correct for s in scores) >= 0.95 * total, corpus.table(scores)


def test_the_look_alike_projections_are_flagged_not_guessed(scores):
    (seq2seq,) = [s for s in scores if s.case.startswith("TF1 seq2seq")]
    assert seq2seq.flagged == 4  # two Linear layers of equal shapes, weight and bias each
