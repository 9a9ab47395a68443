"""Targets computed a block at a time (`Op.fill`, `row_blocks`, `TensorEntry.blocks`) hold exactly
the bytes of the same target computed whole, for every op, for chains of them, and for every
built-in mapping over the sample checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap
from ckptmap import dtypes, pipeline
from ckptmap.cells.layouts import layout
from ckptmap.rules import ops
from ckptmap.rules.expr import Node, OpNode, SourceNode, _Bound, row_blocks
from ckptmap.rules.mapping import builtins
from ckptmap.tree import TensorEntry

REPO = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(7)


def src(*shape: int, dtype: type = np.float32) -> SourceNode:
    array = np.asarray(rng.standard_normal(shape)).astype(dtype)
    entry = TensorEntry("x", shape, dtypes.from_numpy(array.dtype).name, "x", lambda: array)
    return SourceNode(entry, TensorEntry.read)


def op(o: ops.Op, *inputs: Node) -> OpNode:
    return OpNode(o, list(inputs))


LSTM_T, LSTM_TF = layout("torch.lstm"), layout("tf1.lstm")
CASES = {
    "split equal": lambda: op(ops.Split(0, 3, 1), src(6, 4)),
    "split sizes": lambda: op(ops.Split(1, (1, -1), 1), src(3, 5)),
    "cat rows": lambda: op(ops.Concat(0), src(2, 3), src(4, 3)),
    "cat columns": lambda: op(ops.Concat(1), src(3, 2), src(3, 5)),
    "cat last of 3-d": lambda: op(ops.Concat(-1), src(2, 3, 4), src(2, 3, 1)),
    "transpose": lambda: op(ops.Transpose(), src(5, 7)),
    "transpose 3-d": lambda: op(ops.Transpose((1, 0, 2)), src(2, 3, 4)),
    "rotate 3-d": lambda: op(ops.Transpose((2, 0, 1)), src(2, 3, 4)),
    "gates rows": lambda: op(ops.Gates(LSTM_T, LSTM_TF, 0), src(8, 3)),
    "gates columns": lambda: op(ops.Gates(LSTM_T, LSTM_TF, -1), src(3, 8)),
    "gates middle of 3-d": lambda: op(ops.Gates(LSTM_TF, LSTM_T, 1), src(2, 8, 3)),
    "add to a gate": lambda: op(ops.Arith("add", 1.5, "f", LSTM_TF), src(8)),
    "add to a gate's columns": lambda: op(ops.Arith("add", -1.0, "f", LSTM_TF, -1), src(3, 8)),
    "scale a gate's rows": lambda: op(ops.Arith("scale", 3.0, "o", LSTM_T, 0), src(8, 3)),
    "scale all": lambda: op(ops.Arith("scale", 0.5), src(4, 3)),
    "add scalar tensor": lambda: op(ops.Arith("add", 2.0), src()),
    "sum of three": lambda: op(ops.AddTensors(), src(4, 3), src(4, 3), src(4, 3)),
    "cast down": lambda: op(ops.Cast("float16"), src(4, 3)),
    "cast to int": lambda: op(ops.Cast("int32"), src(5, 2, dtype=np.float64)),
    "zeros": lambda: op(ops.Zeros((4, 3), "float32")),
    "reshape (computed whole)": lambda: op(ops.Reshape((3, 4)), src(12)),
    "torch lstm -> tf kernel": lambda: op(
        ops.Gates(LSTM_T, LSTM_TF), op(ops.Transpose(), op(ops.Concat(1), src(8, 3), src(8, 2)))
    ),
    "tf kernel -> torch weight_ih": lambda: op(
        ops.Transpose(), op(ops.Gates(LSTM_TF, LSTM_T), op(ops.Split(0, (3, 2), 0), src(5, 8)))
    ),
    "reshape inside a chain": lambda: op(ops.Transpose(), op(ops.Reshape((4, 3)), src(12))),
}


@pytest.mark.parametrize("name", CASES)
def test_blocks_and_boxes_are_slices_of_the_whole(name: str) -> None:
    node = CASES[name]()
    whole = np.array(node.compute(), order="C")  # ascontiguousarray would make a 0-d array 1-d
    for max_bytes in (1, 7, 40, 1 << 20):
        blocks = list(row_blocks(node, max_bytes))
        assert all(b.flags.c_contiguous and b.dtype == whole.dtype for b in blocks)
        assert b"".join(b.tobytes() for b in blocks) == whole.tobytes()
    for _ in range(20):
        box = tuple(sorted(rng.integers(0, n + 1, 2)) for n in whole.shape)
        out = np.empty([b - a for a, b in box], whole.dtype)
        _Bound(node, {}).fill(out, tuple((int(a), int(b)) for a, b in box))
        assert np.array_equal(out, whole[tuple(slice(a, b) for a, b in box)])


def test_large_transposed_blocks_are_copied_in_tiles() -> None:
    node = op(ops.Gates(LSTM_T, LSTM_TF), op(ops.Transpose(), src(1024, 600)))  # 2.4 MB, tiled copies
    whole = np.ascontiguousarray(node.compute())
    assert np.array_equal(np.concatenate(list(row_blocks(node, 1 << 20))), whole)


def _mapped_samples() -> list[tuple[str, Path]]:
    samples = [p for p in sorted((REPO / "sample_checkpoints").iterdir()) if p.suffix not in (".py", ".npz")]
    return [(b.name, p) for b in builtins() for p in samples]


def test_every_built_in_mapping_streams_what_it_computes() -> None:
    streamed = 0
    for mapping, sample in _mapped_samples():
        try:
            target, _ = pipeline.apply(ckptmap.load(sample), pipeline.resolve_mappings(mapping, {}))
        except ckptmap.CkptmapError:
            continue  # this mapping is not for this checkpoint
        for entry in target.entries.values():
            whole = np.ascontiguousarray(entry.read()).tobytes()
            for max_bytes in (1, 100, 1 << 20):
                assert b"".join(b.tobytes() for b in entry.blocks(max_bytes)) == whole, (mapping, entry.name)
            streamed += entry.pieces is not None
    assert streamed > 50  # targets computed block by block, not only tensors passed through


def test_block_ops_take_big_endian_arrays_as_native_ones() -> None:
    # An array handed in through the API may be big-endian; np.concatenate took it before fill did.
    a = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
    lstm = (layout("torch.lstm"), layout("tf1.lstm"))
    for op, args in ((ops.Concat(axis=1), [a, a]), (ops.Gates(*lstm, axis=1), [a])):
        native = op.apply(args)
        np.testing.assert_array_equal(op.apply([x.astype(">f4") for x in args]), native)
