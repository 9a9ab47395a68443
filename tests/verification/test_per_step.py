"""verify's error per time step: where a converted RNN starts to differ, not only by how much."""

from __future__ import annotations

from pathlib import Path

import torch

import ckptmap
from ckptmap.verification.run import verify

SAMPLES = Path(__file__).parents[2] / "sample_checkpoints"


def _steps(report, case_steps: int) -> list[float]:
    [pair] = report.pairs
    return next(c for c in pair.cases if len(c.step_abs) == case_steps).step_abs


def test_an_approximate_gru_is_exact_at_the_first_step_from_zeros_and_drifts_after(tmp_path):
    ckptmap.convert(SAMPLES / "tf1_gru", tmp_path / "g.pt", mapping="tf1-to-torch")
    report = verify(SAMPLES / "tf1_gru", tmp_path / "g.pt")
    steps = _steps(report, 9)  # batch 1 x 9 steps from a zero state
    assert report.pairs[0].verdict == "approximate"
    assert steps[0] < 1e-6 and max(steps[1:]) > 1e-3
    assert all(len(c.step_rel) == len(c.step_abs) for c in report.pairs[0].cases)


def test_an_exact_conversion_is_within_tolerance_at_every_step_and_a_wrong_one_from_the_first(tmp_path):
    ckptmap.convert(SAMPLES / "tf1_lstm2", tmp_path / "m.pt", mapping="tf1-to-torch")
    good = _steps(verify(SAMPLES / "tf1_lstm2", tmp_path / "m.pt"), 9)
    assert max(good) < 1e-5
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    key = next(k for k in state if k.endswith("bias_ih_l0"))
    state[key] = state[key] + 0.5  # a mis-biased conversion
    torch.save(state, tmp_path / "bad.pt")
    bad = _steps(verify(SAMPLES / "tf1_lstm2", tmp_path / "bad.pt", "tf1-to-torch"), 9)
    assert bad[0] > 1e-2
