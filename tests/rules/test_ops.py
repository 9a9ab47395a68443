"""The ops on small arrays with distinct values, and their shape checks."""

from __future__ import annotations

import numpy as np
import pytest

from ckptmap.cells.layouts import layout
from ckptmap.rules import ops
from ckptmap.rules.ops import OpError

A = np.arange(24, dtype=np.float32).reshape(4, 6)


def _run(op, *arrays):
    shape, dtype = op.infer([a.shape for a in arrays], ["float32"] * len(arrays))
    out = op.apply(list(arrays))
    assert out.shape == shape and dtype == "float32"
    return out


def test_split_takes_one_part_by_sizes_or_equal_parts():
    np.testing.assert_array_equal(_run(ops.Split(0, (1, -1), 1), A), A[1:])
    np.testing.assert_array_equal(_run(ops.Split(1, 3, 2), A), A[:, 4:])


def test_split_rejects_indivisible_axis():
    with pytest.raises(OpError, match="6 elements do not split into 4 equal parts"):
        ops.Split(1, 4, 0).infer([A.shape], ["float32"])
    with pytest.raises(OpError, match=r"sizes \[2, 3\] do not add up to the 4"):
        ops.Split(0, (2, 3), 0).infer([A.shape], ["float32"])


def test_gates_reorders_blocks_by_name():
    bias = np.repeat(np.arange(4, dtype=np.float32), 2)  # tf1 blocks i, j, f, o hold 0, 1, 2, 3
    out = _run(ops.Gates(layout("tf1.lstm"), layout("torch.lstm")), bias)
    np.testing.assert_array_equal(out, [0, 0, 2, 2, 1, 1, 3, 3])  # torch: i, f, g, o


def test_add_to_one_gate_only():
    out = _run(ops.Arith("add", 1.0, "f", layout("torch.lstm")), np.zeros(8, np.float32))
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 0, 0, 0, 0])


def test_add_leaves_its_input_untouched():
    x = np.zeros(4, np.float32)
    _run(ops.Arith("scale", 2.0), x + 1)
    _run(ops.Arith("add", 1.0), x)
    assert not x.any()


def test_concat_transpose_reshape_cast_zeros():
    np.testing.assert_array_equal(_run(ops.Concat(1), A, A), np.concatenate([A, A], 1))
    np.testing.assert_array_equal(_run(ops.Transpose(), A), A.T)
    np.testing.assert_array_equal(_run(ops.Reshape((3, -1)), A), A.reshape(3, 8))
    assert ops.Cast("float16").apply([A]).dtype == np.float16
    assert ops.Zeros((2, 3), "float32").apply([]).shape == (2, 3)


def test_shape_errors_are_messages_for_people():
    with pytest.raises(OpError, match=r"cannot become \[5, -1\]"):
        ops.Reshape((5, -1)).infer([A.shape], ["float32"])
    with pytest.raises(OpError, match="do not fit together"):
        ops.Concat(0).infer([(4, 6), (4, 5)], ["float32", "float32"])
    with pytest.raises(OpError, match="axis 2 does not exist"):
        ops.Split(2, 2, 0).infer([A.shape], ["float32"])
    with pytest.raises(OpError, match="int32 tensor cannot take a float constant"):
        ops.Arith("add", 1.0).infer([(3,)], ["int32"])


@pytest.mark.parametrize("runs", ops._Tiling.CANDIDATES, ids=str)
def test_every_transpose_tiling_copies_exactly(runs: tuple[int, int]) -> None:
    # A process uses whichever candidate timed fastest on its CPU, so each must be exact; odd
    # sizes leave partial tiles at both edges.
    source = np.arange(1031 * 517, dtype=np.float32).reshape(1031, 517)
    out = np.empty((517, 1031), np.float32)
    ops._Tiling._tiles(out, source.T, 0, runs)
    np.testing.assert_array_equal(out, source.T)
