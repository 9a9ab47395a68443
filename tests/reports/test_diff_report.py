"""`diff --values --report`: per-tensor differences and SQNR on a page opened in headless Chromium."""

from __future__ import annotations

import math

import numpy as np

import ckptmap
from tests.browser import open_page
from tests.clirun import run


def _save(path, **arrays) -> None:
    entries = [ckptmap.TensorEntry(n, a.shape, a.dtype.name, n, lambda a=a: a) for n, a in arrays.items()]
    ckptmap.save(ckptmap.Checkpoint(entries, format="test"), path)


def test_a_float16_round_trip_shows_its_sqnr_tensor_by_tensor(tmp_path, capsys):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    _save(tmp_path / "a.safetensors", w=w, b=b, same=np.ones(3, np.float32))
    _save(
        tmp_path / "b.safetensors",
        w=w.astype(np.float16).astype(np.float32),
        b=b + 0.5,
        same=np.ones(3, np.float32),
    )
    report = tmp_path / "d.html"
    code, out, err = run(capsys, "diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--values",
                         "--report", report)  # fmt: skip
    assert code == 1 and report.is_file(), err
    expected = 10 * math.log10(float(np.sum(b.astype(np.float64) ** 2)) / (32 * 0.25))
    assert f"{expected:.1f}" in out  # b's SQNR, in the text table too
    seen = {}

    def check(page) -> None:
        seen["summary"] = page.locator("#summary").inner_text()
        seen["bars"] = page.locator('#sqnr g[id^="sqnr-"]').count()
        seen["rows"] = page.locator("#values tr.differs").count()
        seen["labels"] = page.locator("#sqnr svg text").evaluate_all(
            "els => els.map(e => e.textContent.trim())"
        )

    opened = open_page(report, check, tmp_path / "diff-report.png")
    assert opened.errors == [] and opened.requests == []
    assert "DIFFERENT" in seen["summary"] and "1 identical, 2 not" in seen["summary"]
    assert seen["bars"] == 2 and seen["rows"] == 2
    assert {"w", "b"} <= set(seen["labels"])


def test_the_report_needs_values(tmp_path, capsys):
    _save(tmp_path / "a.safetensors", w=np.ones(2, np.float32))
    code, _, err = run(
        capsys,
        "diff",
        tmp_path / "a.safetensors",
        tmp_path / "a.safetensors",
        "--report",
        tmp_path / "x.html",
    )
    assert code == 2 and err == "Error: --report goes with --values.\n"
