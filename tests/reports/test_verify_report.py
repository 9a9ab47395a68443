"""`verify --report` and `convert --verify --report`: a self-contained page, opened in a real
headless Chromium with no network, showing each RNN pair's verdict and error per time step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.browser import open_page
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"


def _points(page, gid: str) -> list[tuple[float, float]]:
    """The vertices of the curve matplotlib drew for series `gid` (SVG y grows downwards)."""
    d = page.locator(f'g[id="{gid}"] > path').first.get_attribute("d")
    return [(float(x), float(y)) for x, y in re.findall(r"[ML] ([-\d.]+) ([-\d.]+)", d)]


def test_an_approximate_gru_report_opens_offline_and_shows_its_error_growing_from_zero(tmp_path, capsys):
    report = tmp_path / "v.html"
    code, _, err = run(
        capsys,
        "convert",
        SAMPLES / "tf1_gru",
        tmp_path / "g.pt",
        "-m",
        "tf1-to-torch",
        "--verify",
        "--report",
        report,
    )
    assert code == 0 and report.is_file(), err
    seen = {}

    def check(page) -> None:
        seen["summary"] = page.locator("#summary").inner_text()
        seen["verdict"] = page.locator("#pair-0 .verdict").first.inner_text()
        seen["svg"] = page.locator("#pair-0 figure svg").count()
        seen["nine"] = _points(page, "pair-0-case-1")  # batch 1 x 9 steps from a zero state
        seen["tolerance"] = page.locator('g[id="pair-0-tolerance"]').count()

    opened = open_page(report, check, tmp_path / "verify-report.png")
    assert opened.errors == [] and opened.requests == []
    assert "OK" in seen["summary"] and seen["verdict"] == "APPROXIMATE" and seen["svg"] == 1
    assert seen["tolerance"] == 1 and len(seen["nine"]) == 9
    first, *later = [y for _, y in seen["nine"]]
    assert all(first > y for y in later)  # the lowest error at step 1 (0, drawn at the floor), then higher
    assert (tmp_path / "verify-report.png").stat().st_size > 10_000


def test_a_tampered_lstm_report_names_the_wrong_gate_and_names_stay_text(tmp_path, capsys):
    code, _, _ = run(capsys, "convert", SAMPLES / "tf1_lstm2", tmp_path / "m.pt", "-m", "tf1-to-torch")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    key = next(k for k in state if k.endswith("bias_ih_l0"))
    units = state[key].shape[0] // 4
    state[key][3 * units :] += 0.5  # the output gate's bias (PyTorch: i, f, g, o) of layer 0
    bad = tmp_path / "bad <b>.pt"  # a name is text on the page, never markup
    torch.save(state, bad)
    report = tmp_path / "report.html"
    code, _, _ = run(capsys, "verify", SAMPLES / "tf1_lstm2", bad, "-m", "tf1-to-torch", "--report", report)
    assert code == 1 and report.is_file()
    html = report.read_text()
    assert "bad &lt;b&gt;.pt" in html and "bad <b>.pt" not in html
    seen = {}

    def check(page) -> None:
        seen["summary"] = page.locator("#summary").inner_text()
        seen["wrong"] = page.locator("#pair-0 .wrong-gates").inner_text()
        seen["rows"] = page.locator("#pair-0 tr.wrong").count()
        [y0, *_] = [y for _, y in _points(page, "pair-0-case-1")]
        seen["above"] = y0 < _points(page, "pair-0-tolerance")[0][1]  # above the tolerance line at step 1

    opened = open_page(report, check, tmp_path / "tampered.png")
    assert opened.errors == [] and opened.requests == []
    assert "FAILED" in seen["summary"] and seen["above"]
    assert seen["wrong"] == "Gates that differ: output gate (o) of layer 0 fw" and seen["rows"] == 1


@pytest.mark.parametrize("args", [["--report", "x.html"]], ids=["report-without-verify"])
def test_report_needs_a_verification(tmp_path, capsys, args):
    code, _, err = run(capsys, "convert", SAMPLES / "tf1_gru", tmp_path / "g.pt", "-m", "tf1-to-torch", *args)
    assert code == 2 and "go with --verify" in err
    code, _, err = run(
        capsys, "verify", SAMPLES / "tf1_gru", "--into", "torch", "--report", tmp_path / "x.html"
    )
    assert code == 2 and "not --into" in err


def test_a_report_never_replaces_a_checkpoint_it_was_made_from(tmp_path, capsys):
    code, _, _ = run(capsys, "convert", SAMPLES / "tf1_gru", tmp_path / "g.pt", "-m", "tf1-to-torch")
    before = (tmp_path / "g.pt").read_bytes()
    code, _, err = run(
        capsys, "verify", SAMPLES / "tf1_gru", tmp_path / "g.pt", "--report", tmp_path / "g.pt"
    )
    assert code == 2 and "refusing to write over the source" in err
    code, _, err = run(capsys, "inspect", tmp_path / "g.pt", "--report", tmp_path / "g.pt")
    assert code == 2 and "refusing to write over the source" in err
    code, _, err = run(
        capsys, "diff", tmp_path / "g.pt", tmp_path / "g.pt", "--values", "--report", tmp_path / "g.pt"
    )
    assert code == 2 and "refusing to write over the source" in err
    assert (tmp_path / "g.pt").read_bytes() == before
