"""Conversions hold about one tensor at a time: peak memory is bounded by the largest tensor, not
by the checkpoint. (How fast, and against what, is bench/'s job; this only guards the bound.)

A ~650 MB TF1 LSTM language model (Adam slots included) is written by ckptmap itself (no
framework needed), then converted in fresh processes that report their own peak RSS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckptmap

MB = 2**20
UNITS, EMBED, VOCAB = 1024, 1024, 32768  # kernels (2048, 4096): 32 MB; embedding 128 MB
HEADROOM = 200 * MB  # the bound: largest tensor + 200 MB (the interpreter and numpy included)

# Peak RSS from VmHWM, this process's own: ru_maxrss would include the parent's peak (Linux keeps
# it across fork and exec), and pytest's process holds TensorFlow by now.
CONVERT = """
import re, sys
import ckptmap
ckptmap.convert(sys.argv[1], sys.argv[2], mapping=sys.argv[3] or None)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""


def _lm() -> ckptmap.Checkpoint:
    shapes = {"embedding": (VOCAB, EMBED), "softmax/kernel": (UNITS, VOCAB), "softmax/bias": (VOCAB,)}
    for k in range(2):
        scope = f"rnn/multi_rnn_cell/cell_{k}/lstm_cell"
        shapes[f"{scope}/kernel"] = (EMBED + UNITS, 4 * UNITS)
        shapes[f"{scope}/bias"] = (4 * UNITS,)
    for name in list(shapes):
        shapes[f"{name}/Adam"] = shapes[f"{name}/Adam_1"] = shapes[name]

    def fill(shape: tuple[int, ...], seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    return ckptmap.Checkpoint(
        [
            ckptmap.TensorEntry(n, s, "float32", n, lambda s=s, i=i: fill(s, i))
            for i, (n, s) in enumerate(shapes.items())
        ],
        format="test",
    )


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> tuple[Path, int]:
    lm = _lm()
    prefix = tmp_path_factory.mktemp("lm") / "model.ckpt"
    ckptmap.save(lm, prefix, format="tf")
    return prefix, max(e.nbytes for e in lm.entries.values())


def _peak(src: Path, dst: Path, mapping: str = "") -> int:
    done = subprocess.run(
        [sys.executable, "-c", CONVERT, str(src), str(dst), mapping],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_converting_holds_about_one_tensor(language_model, tmp_path: Path) -> None:
    prefix, largest = language_model
    total = sum(f.stat().st_size for f in prefix.parent.iterdir())
    assert total > 600 * MB  # the bound below means something only if the checkpoint dwarfs it
    torch_file = tmp_path / "lm.pt"
    runs = {
        "TF1 -> PyTorch (gates reordered, transposed)": (prefix, torch_file, "tf1-to-torch"),
        "PyTorch -> safetensors": (torch_file, tmp_path / "lm.safetensors", ""),
        "PyTorch -> TF1": (torch_file, tmp_path / "back" / "model.ckpt", "torch-to-tf1"),
    }
    peaks = {what: _peak(*run) for what, run in runs.items()}
    assert all(peak <= largest + HEADROOM for peak in peaks.values()), (
        f"largest tensor {largest // MB} MB; peaks: "
        + ", ".join(f"{w} {p // MB} MB" for w, p in peaks.items())
    )
