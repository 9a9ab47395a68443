"""`inspect --report`: where the bytes are, the RNNs, statistics and histograms, as a page opened in
headless Chromium with no network; and made in bounded memory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import ckptmap
from tests.browser import open_page
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
MB = 2**20


def test_a_tf1_checkpoint_page_shows_its_scopes_rnn_and_weights(tmp_path, capsys):
    report = tmp_path / "i.html"
    code, out, err = run(capsys, "inspect", SAMPLES / "tf1_lstm2", "--report", report)
    assert code == 0 and report.is_file() and "RNNs (1)" in out, err
    seen = {}

    def check(page) -> None:
        seen["rects"] = page.locator('#treemap g[id^="scope-"]').count()
        seen["rows"] = page.locator("#blocks tr").count() - 1
        seen["labels"] = page.locator("#blocks code").all_inner_texts()
        seen["rnns"] = page.locator("#rnns").inner_text()
        seen["histograms"] = page.locator('#weights td.plot g[id^="hist-"]').count()
        seen["bins"] = page.locator('g[id="hist-0"] path').first.get_attribute("d")

    opened = open_page(report, check, tmp_path / "inspect-report.png")
    assert opened.errors == [] and opened.requests == []
    assert seen["rects"] == seen["rows"] == 7  # 2 cells' weights, their 2 slot groups, 3 bookkeeping
    assert "rnn/multi_rnn_cell/cell_0/lstm_cell" in seen["labels"]
    assert "rnn/multi_rnn_cell/cell_1/lstm_cell (slot)" in seen["labels"]
    assert "LSTMCell at (root): input 3, units 8, 2 layers" in seen["rnns"]
    assert seen["histograms"] == 4 and len(re.findall(r"[ML] ", seen["bins"])) >= 40


def test_nan_and_inf_are_flagged_on_the_page(tmp_path, capsys):
    w = np.ones((4, 4), np.float32)
    w[0, 0], w[1, 1] = np.nan, np.inf
    ckpt = ckptmap.Checkpoint(
        [ckptmap.TensorEntry("dense/kernel", (4, 4), "float32", "k", lambda: w)], format="t"
    )
    ckptmap.save(ckpt, tmp_path / "m.safetensors")
    report = tmp_path / "m.html"
    code, _, err = run(capsys, "inspect", tmp_path / "m.safetensors", "--report", report)
    assert code == 0, err
    assert re.search(r'class="num flag">\s*1 / 1\s*<', report.read_text())


def test_the_report_needs_one_path(tmp_path, capsys):
    code, _, err = run(
        capsys, "inspect", SAMPLES / "tf1_lstm2", SAMPLES / "tf1_gru", "--report", tmp_path / "x.html"
    )
    assert code == 2 and "give one PATH" in err


REPORT = """
import re, sys
from ckptmap.cli import main
try:
    main(["inspect", sys.argv[1], "--report", sys.argv[2]])
except SystemExit as done:
    assert not done.code, done.code
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""


def test_a_large_checkpoint_is_drawn_in_bounded_memory(tmp_path):
    rows, cols = 16384, 8192  # 512 MB of float32; histograms and statistics read it block by block
    big = ckptmap.TensorEntry("w", (rows, cols), "float32", "w", lambda: np.ones((rows, cols), np.float32))
    ckptmap.save(ckptmap.Checkpoint([big], format="test"), tmp_path / "big.safetensors")
    done = subprocess.run(
        [sys.executable, "-c", REPORT, str(tmp_path / "big.safetensors"), str(tmp_path / "big.html")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    peak = int(done.stdout.split()[-1])
    assert (tmp_path / "big.html").is_file()
    assert peak < rows * cols * 4 + 250 * MB, f"peak RSS {peak / MB:.0f} MB"  # the tensor's pages + 250 MB
