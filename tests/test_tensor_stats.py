"""`inspect --stats`: per-tensor statistics, streamed block by block, against numpy on the whole
array, and the bound on memory that streaming is for."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import ckptmap
from ckptmap.tensor_stats import tensor_stats
from tests.clirun import run

MB = 2**20


def _entry(array: np.ndarray, name: str = "t") -> ckptmap.TensorEntry:
    dtype = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name
    return ckptmap.TensorEntry(name, array.shape, dtype, name, lambda: array)


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).standard_normal((3000, 700)).astype(np.float32),  # 8 MB: many blocks
        np.random.default_rng(1).integers(-5, 5, (50, 7)).astype(np.int64),
        np.array([True, False, False, True]),
        np.random.default_rng(2).standard_normal(33).astype(np.float16),
        np.float32(3.5).reshape(()),
    ],
    ids=["float32-blocks", "int64", "bool", "float16", "scalar"],
)
def test_stats_are_numpys_on_the_whole_array(array):
    s = tensor_stats(_entry(array))
    values = array.astype(np.float64)
    assert s.count == array.size and s.zeros == int((array == 0).sum()) and s.nans == s.infs == 0
    assert s.minimum == values.min() and s.maximum == values.max()
    assert s.mean == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
    assert s.std == pytest.approx(values.std(), rel=1e-9, abs=1e-12)


def test_nan_and_inf_are_counted_apart_from_the_finite_values():
    array = np.array([1.0, np.nan, -np.inf, 3.0, np.inf, 0.0], np.float32)
    s = tensor_stats(_entry(array))
    assert (s.nans, s.infs, s.zeros, s.minimum, s.maximum, s.mean) == (
        1,
        2,
        1,
        0.0,
        3.0,
        pytest.approx(4 / 3),
    )
    only_nan = tensor_stats(_entry(np.full(4, np.nan, np.float32)))
    assert only_nan.mean is None and only_nan.std is None and only_nan.nans == 4
    empty = tensor_stats(_entry(np.zeros((0, 3), np.float32)))
    assert empty.count == 0 and empty.mean is None and empty.zero_fraction == 0.0


def test_inspect_stats_prints_and_lists_them(tmp_path, capsys):
    import torch

    torch.manual_seed(0)
    state = torch.nn.LSTM(3, 4).state_dict()
    state["bias_hh_l0"][0] = float("nan")
    torch.save(state, tmp_path / "m.pt")
    code, out, _ = run(capsys, "inspect", tmp_path / "m.pt", "--stats")
    assert code == 0 and "Statistics of 4 tensors; 1 hold NaN or Inf" in out
    table = out.split("Statistics of")[1]
    line = next(x for x in table.splitlines() if x.strip().startswith("weight_ih_l0 "))
    expected = state["weight_ih_l0"].numpy().astype(np.float64)
    assert f"{expected.min():.4g}" in line and f"{expected.max():.4g}" in line
    code, out, _ = run(capsys, "inspect", tmp_path / "m.pt", "--stats", "--json", "--filter", "bias_hh")
    [tensor] = json.loads(out)["tensors"]
    assert tensor["stats"]["nans"] == 1 and tensor["stats"]["count"] == 16


STATS = """
import re, sys
import ckptmap
ckpt = ckptmap.load(sys.argv[1])
[s] = ckptmap.stats(ckpt.weights())
status = open("/proc/self/status").read()
print(s.count, int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""


def test_a_large_tensor_is_summarized_in_bounded_memory(tmp_path):
    # 512 MB of float32, widened to float64 whole it would take 1.5 GB. The bound is the one every
    # read and conversion keeps (tests/e2e/test_memory.py): the tensor's own mapped pages + 200 MB.
    rows, cols = 16384, 8192
    big = ckptmap.TensorEntry("w", (rows, cols), "float32", "w", lambda: np.ones((rows, cols), np.float32))
    ckptmap.save(ckptmap.Checkpoint([big], format="test"), tmp_path / "big.safetensors")
    done = subprocess.run([sys.executable, "-c", STATS, str(tmp_path / "big.safetensors")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    count, peak = map(int, re.findall(r"\d+", done.stdout))
    assert count == rows * cols
    assert peak < rows * cols * 4 + 200 * MB, f"peak RSS {peak / MB:.0f} MB"
