"""The tensor operations a mapping can use, one small frozen dataclass each.

Every op answers two questions: `infer(shapes, dtypes)` — what comes out, checked before anything
is read, raising `OpError` with a message fit for a user — and `apply(arrays)` — the numpy work,
done lazily when the target tensor is written. Ops that only move blocks of elements (split, cat,
transpose, gates) and the element-wise ones also `fill` a box of their output from boxes of their
inputs: a writer then computes a target a megabyte of rows at a time, straight from the source's
memory map into a small buffer, instead of building whole intermediate tensors. Ops never see
names or files; the engine adds that context to their messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from .. import dtypes, parallel
from ..cells.layouts import GateLayout, permutation

Shape = tuple[int, ...]
Box = tuple[tuple[int, int], ...]  # [start, stop) on every axis

# How many bytes more than its sources a tensor a mapping computes may hold, and all the tensors of
# one run together (`zeros` for PyTorch's second bias, a `cat` of a source with itself): a mapping
# file cannot make ckptmap fill a disk or memory. Growth is counted in elements (at the result's
# itemsize): ops that only move elements never grow a tensor, and neither does a cast, which makes
# as many elements as it reads (`cast(float32)` of a 2 GiB float16 checkpoint is no growth).
GROWTH_BYTES = 1 << 30
# The largest size of an axis: numpy's (and every format's) sizes are int64.
MAX_DIM = (1 << 63) - 1


def elements(shape: Shape) -> int:
    """The number of elements of `shape`, exact (Python ints: int64 products overflow)."""
    n = 1
    for s in shape:
        n *= s
    return n


def check_dims(shape: Sequence[int], op: str, *, wildcard: bool = False) -> None:
    """Sizes a mapping wrote: whole numbers from 0 to MAX_DIM (-1 too where `wildcard`), whose
    product fits int64."""
    for s in shape:
        if not (-1 if wildcard else 0) <= s <= MAX_DIM:
            raise OpError(f"{op}: size {s} in {list(shape)} is not between 0 and 2**63-1")
    if elements([abs(s) for s in shape]) > MAX_DIM:
        raise OpError(f"{op}: {list(shape)} has more than 2**63-1 elements")


class Part(Protocol):
    """An op's input as `fill` sees it: its shape, and a way to write any box of it into `out`."""

    shape: Shape
    dtype: str

    def fill(self, out: np.ndarray, box: Box) -> None: ...


class OpError(Exception):
    """An op cannot apply to these inputs; the engine turns it into a MappingError with context."""


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < ndim:
        raise OpError(f"{op}: axis {axis} does not exist in a {ndim}-d tensor")
    return axis % ndim


def _span(total: int, parts: int | tuple[int, ...], index: int, op: str) -> tuple[int, int]:
    """[start, stop) of part `index` of an axis of `total` elements cut into `parts`; equal parts
    are not listed (`split(0, 1000000000, 0)` would make a list of a billion)."""
    if isinstance(parts, int):
        if parts <= 0 or total % parts:
            raise OpError(f"{op}: {total} elements do not split into {parts} equal parts")
        count, size = parts, total // parts
        if not 0 <= index < count:
            raise OpError(f"{op}: part {index} does not exist, there are {count} parts")
        return index * size, (index + 1) * size
    sizes = _sizes(total, parts, op)
    if not 0 <= index < len(sizes):
        raise OpError(f"{op}: part {index} does not exist, there are {len(sizes)} parts")
    start = sum(sizes[:index])
    return start, start + sizes[index]


def _sizes(total: int, parts: tuple[int, ...], op: str) -> list[int]:
    sizes = list(parts)
    if sizes.count(-1) > 1:
        raise OpError(f"{op}: at most one size may be -1")
    if -1 in sizes:
        rest = total - sum(s for s in sizes if s != -1)
        if rest < 0:
            raise OpError(f"{op}: sizes {parts} exceed the {total} elements of the axis")
        sizes[sizes.index(-1)] = rest
    if sum(sizes) != total or any(s < 0 for s in sizes):
        raise OpError(f"{op}: sizes {list(parts)} do not add up to the {total} elements of the axis")
    return sizes


@dataclass(frozen=True)
class Op:
    arity: ClassVar[int | None] = 1  # number of tensor inputs; None = one or more

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        raise NotImplementedError

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        """Write `box` of the output into `out` (an array of the box's shape) from boxes of the
        inputs; False if this op can only compute its whole output (the caller then slices that)."""
        return False


def _with(box: Box, axis: int, start: int, stop: int) -> Box:
    return (*box[:axis], (start, stop), *box[axis + 1 :])


def _along(out: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * out.ndim
    index[axis] = slice(start, stop)
    return out[tuple(index)]


def _fill_segments(out: np.ndarray, box: Box, axis: int, segments: list[tuple[Part, int, int]]) -> None:
    """`out` along `axis` is the segments laid end to end: (input, start, stop) on that axis each."""
    lo, hi = box[axis]
    at = 0  # where the segment starts in the output
    for part, start, stop in segments:
        a, b = max(lo, at), min(hi, at + stop - start)
        if a < b:
            part.fill(_along(out, axis, a - lo, b - lo), _with(box, axis, start + a - at, start + b - at))
        at += stop - start


@dataclass(frozen=True)
class Split(Op):
    """Part `index` of the tensor cut along `axis` into `parts` equal parts or into the given sizes."""

    axis: int
    parts: int | tuple[int, ...]
    index: int

    def _bounds(self, shape: Shape) -> tuple[int, int, int]:
        axis = _axis(self.axis, len(shape), "split")
        start, stop = _span(shape[axis], self.parts, self.index, "split")
        return axis, start, stop

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        axis, start, stop = self._bounds(shapes[0])
        out = list(shapes[0])
        out[axis] = stop - start
        return tuple(out), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        axis, start, stop = self._bounds(arrays[0].shape)
        return _along(arrays[0], axis, start, stop)

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        axis, start, _ = self._bounds(inputs[0].shape)
        lo, hi = box[axis]
        inputs[0].fill(out, _with(box, axis, start + lo, start + hi))
        return True


@dataclass(frozen=True)
class Concat(Op):
    arity: ClassVar[int | None] = None
    axis: int = 0

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        first = shapes[0]
        axis = _axis(self.axis, len(first), "cat")
        for s in shapes[1:]:
            if len(s) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(s, first, strict=True)) if i != axis
            ):
                raise OpError(
                    f"cat: shapes {[tuple(x) for x in shapes]} do not fit together along axis {self.axis}"
                )
        if len(set(types)) != 1:
            raise OpError(f"cat: inputs have different dtypes {types}")
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return _filled(self, arrays)  # [w_ih, w_hh] -> TF's kernel: copied once, transposes tiled

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        axis = _axis(self.axis, out.ndim, "cat")
        _fill_segments(out, box, axis, [(p, 0, p.shape[axis]) for p in inputs])
        return True


@dataclass(frozen=True)
class Transpose(Op):
    perm: tuple[int, ...] | None = None

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        shape = shapes[0]
        perm = self.perm if self.perm is not None else tuple(reversed(range(len(shape))))
        if sorted(perm) != list(range(len(shape))):
            raise OpError(f"transpose: {list(perm)} is not a permutation of the {len(shape)} axes")
        return tuple(shape[p] for p in perm), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        # A view: the op that consumes it, or `c_order` on the finished tensor, copies it once
        # (`x | T | gates(...)` reorders and transposes in one pass).
        return np.transpose(arrays[0], self.perm)

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        # Output axis i is input axis perm[i]: the input fills the same memory seen with its axes.
        perm = self.perm if self.perm is not None else tuple(reversed(range(out.ndim)))
        inverse = tuple(sorted(range(len(perm)), key=perm.__getitem__))  # np.argsort: 30x slower here
        inputs[0].fill(out.transpose(inverse), tuple(box[i] for i in inverse))
        return True


class _Tiling:
    """The tile shape for copying a matrix into its transpose, picked by timing on this CPU.

    numpy's own copy of a large transposed matrix strides through memory; copying it in tiles that
    read runs of `read` bytes of the source and write runs of `written` bytes keeps both sides in
    cache. Which tile is fastest depends on the caches: on the Intel Xeon of bench run D, 1 KiB x
    256 B (2.6 GB/s); on an AMD EPYC (Zen 2) 4 KiB x 64 B, about 4x faster there than 1 KiB x
    256 B, which conflict-misses on the power-of-two strides of RNN kernels. So a process's first
    transposes take turns with each candidate, on real work, and the rest use the fastest.
    """

    CANDIDATES = ((1024, 256), (4096, 64), (2048, 64), (4096, 32))
    TRIES = 2  # copies of at least _MIN_TIMED bytes per candidate before choosing
    _MIN_TIMED = 1 << 20

    def __init__(self) -> None:
        self._spent = [[0.0, 0] for _ in self.CANDIDATES]  # seconds, timed copies
        self._turn = 0
        self.chosen: tuple[int, int] | None = None

    def copy(self, out: np.ndarray, source: np.ndarray, fast: int) -> None:
        if self.chosen is not None or out.nbytes < self._MIN_TIMED:
            self._tiles(out, source, fast, self.chosen or self.CANDIDATES[0])
            return
        k = self._turn % len(self.CANDIDATES)  # threads may share a turn: the timings stay per byte
        self._turn += 1
        started = time.perf_counter()
        self._tiles(out, source, fast, self.CANDIDATES[k])
        self._spent[k][0] += (time.perf_counter() - started) / out.nbytes
        self._spent[k][1] += 1
        if all(n >= self.TRIES for _, n in self._spent):
            best = min(range(len(self.CANDIDATES)), key=lambda i: self._spent[i][0] / self._spent[i][1])
            self.chosen = self.CANDIDATES[best]

    @staticmethod
    def _tiles(out: np.ndarray, source: np.ndarray, fast: int, runs: tuple[int, int]) -> None:
        read, written = runs
        step = [written // out.itemsize or 1] * 2
        step[fast] = read // out.itemsize or 1
        for i in range(0, out.shape[0], step[0]):
            for j in range(0, out.shape[1], step[1]):
                out[i : i + step[0], j : j + step[1]] = source[i : i + step[0], j : j + step[1]]


_tiling = _Tiling()


def c_order(array: np.ndarray) -> np.ndarray:
    """`array` in C order (a finished target tensor), copied only if it is not; a large matrix laid
    out column-major (a transpose) is copied block by block, its rows shared among threads."""
    if array.flags.c_contiguous:
        return array
    out = np.empty(array.shape, array.dtype)
    _by_rows(out, lambda a, b: copy_into(out[a:b], array[a:b]))
    return out


def _by_rows(out: np.ndarray, work: Callable[[int, int], None]) -> None:
    """`work(start, stop)` over the rows of `out`, shared among threads when it is large."""
    parallel.each(parallel.ranges(out.shape[0], out.nbytes), work)


class _Whole:
    """An input array as a `Part`: what `fill` sees when an op is applied to whole arrays."""

    def __init__(self, array: np.ndarray) -> None:
        # Native order for the name: an API-built big-endian array is the same dtype to `infer`.
        self.array, self.shape = array, array.shape
        self.dtype = dtypes.from_numpy(array.dtype.newbyteorder("=")).name

    def fill(self, out: np.ndarray, box: Box) -> None:
        copy_box(out, self.array, box)


def _filled(op: Op, arrays: list[np.ndarray]) -> np.ndarray:
    """`op.apply` for an op that moves blocks: its `fill` over the whole output, by rows."""
    parts = [_Whole(a) for a in arrays]
    shape, _ = op.infer([p.shape for p in parts], [p.dtype for p in parts])
    out = np.empty(shape, np.result_type(*arrays))
    rest = tuple((0, n) for n in shape[1:])
    _by_rows(out, lambda a, b: op.fill(out[a:b], ((a, b), *rest), parts))
    return out


def copy_box(out: np.ndarray, whole: np.ndarray, box: Box) -> None:
    """`out[...] = whole[box]`."""
    copy_into(out, whole[tuple(slice(a, b) for a, b in box)])


def copy_into(out: np.ndarray, source: np.ndarray) -> None:
    """`out[...] = source`, in cache-sized blocks when one is the other's transpose in memory."""
    if out.ndim != 2 or min(out.shape) < 2 or out.nbytes < 1 << 16:
        out[...] = source
        return
    fast = _fast_axis(source)
    if fast == _fast_axis(out):
        out[...] = source
        return
    _tiling.copy(out, source, fast)


def _fast_axis(array: np.ndarray) -> int:
    """The axis along which a 2-D array's elements are next to each other."""
    return 0 if abs(array.strides[0]) < abs(array.strides[1]) else 1


@dataclass(frozen=True)
class Gates(Op):
    """Reorder the gate blocks along `axis` from one framework's order to another's."""

    source: GateLayout
    target: GateLayout
    axis: int = -1

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        axis = _axis(self.axis, len(shapes[0]), "gates")
        n = len(self.source.gates)
        if shapes[0][axis] % n:
            raise OpError(
                f"gates: axis {self.axis} has {shapes[0][axis]} elements, not {n} equal gate blocks"
            )
        permutation(self.source, self.target)
        return shapes[0], types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return _filled(self, arrays)

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        axis = _axis(self.axis, out.ndim, "gates")
        block = inputs[0].shape[axis] // len(self.source.gates)
        order = permutation(self.source, self.target)
        _fill_segments(out, box, axis, [(inputs[0], i * block, (i + 1) * block) for i in order])
        return True


@dataclass(frozen=True)
class Arith(Op):
    """Add a constant (or `scale` by one) — to the whole tensor or to one gate's block."""

    operation: str  # "add" | "scale"
    value: float
    gate: str | None = None
    layout: GateLayout | None = None
    axis: int = -1

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        if not dtypes.by_name(types[0]).is_float:
            raise OpError(f"{self.operation}: a {types[0]} tensor cannot take a float constant")
        if self.gate is not None:
            if self.layout is None:
                raise OpError(f"{self.operation}: gate= needs layout= to know where the gate's block is")
            self.layout.block(self.gate)
            axis = _axis(self.axis, len(shapes[0]), self.operation)
            if shapes[0][axis] % len(self.layout.gates):
                raise OpError(
                    f"{self.operation}: axis has {shapes[0][axis]} elements, not {len(self.layout.gates)} "
                    "gate blocks"
                )
        return shapes[0], types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        x = np.array(arrays[0], copy=True)
        self._in_place(x, tuple((0, n) for n in x.shape), x.shape)
        return x

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        inputs[0].fill(out, box)
        self._in_place(out, box, inputs[0].shape)
        return True

    def _in_place(self, x: np.ndarray, box: Box, shape: Shape) -> None:
        """Apply to `x`, which holds `box` of a tensor of `shape`: all of it, or the gate's block."""
        view = x
        if self.gate is not None:
            assert self.layout is not None
            axis = self.axis % len(shape)
            n = shape[axis] // len(self.layout.gates)
            start = self.layout.block(self.gate) * n
            lo, hi = box[axis]
            view = _along(x, axis, max(start, lo) - lo, max(min(start + n, hi) - lo, 0))
        value = np.asarray(self.value, dtype=np.float64).astype(x.dtype)
        if self.operation == "add":
            view += value
        else:
            view *= value


@dataclass(frozen=True)
class AddTensors(Op):
    """Element-wise sum of tensors of one shape (PyTorch's two biases folded into TF's one)."""

    arity: ClassVar[int | None] = None

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        if len(set(shapes)) != 1:
            raise OpError(f"add: shapes {[tuple(s) for s in shapes]} differ")
        if len(set(types)) != 1:
            raise OpError(f"add: dtypes {types} differ")
        return shapes[0], types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        out = np.array(arrays[0], copy=True)
        for a in arrays[1:]:
            out += a
        return out

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        inputs[0].fill(out, box)
        other = np.empty_like(out)
        for part in inputs[1:]:
            part.fill(other, box)
            out += other
        return True


@dataclass(frozen=True)
class Cast(Op):
    dtype: str

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        dtypes.by_name(self.dtype)
        return shapes[0], self.dtype

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0].astype(dtypes.by_name(self.dtype).numpy)

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        source = np.empty(out.shape, dtypes.by_name(inputs[0].dtype).numpy)
        inputs[0].fill(source, box)
        out[...] = source  # the unsafe casting astype does
        return True


@dataclass(frozen=True)
class Reshape(Op):
    shape: tuple[int, ...]

    def _resolve(self, shape: Shape) -> Shape:
        total = elements(shape)
        target = list(self.shape)
        if target.count(-1) > 1 or any(s < -1 for s in target):
            raise OpError(f"reshape: {target} is not a shape (one -1 at most, no other negative size)")
        check_dims(target, "reshape", wildcard=True)
        known = elements([s for s in target if s != -1])
        if -1 in target and known and total % known == 0:
            target[target.index(-1)] = total // known
        if elements(target) != total or -1 in target:
            raise OpError(f"reshape: {tuple(shape)} ({total} elements) cannot become {list(self.shape)}")
        return tuple(target)

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        return self._resolve(shapes[0]), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0].reshape(self._resolve(arrays[0].shape))


@dataclass(frozen=True)
class Flat(Op):
    """`shape` elements of the flattened input from `offset` on: one part of a buffer that holds
    many (rules/unpack.py)."""

    offset: int
    shape: tuple[int, ...]

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        if self.offset < 0 or self.offset + elements(self.shape) > elements(shapes[0]):
            raise OpError(
                f"unpack: elements {self.offset} to {self.offset + elements(self.shape)} are outside "
                f"the {elements(shapes[0])} of the source"
            )
        return self.shape, types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        flat = arrays[0].reshape(-1)
        return flat[self.offset : self.offset + elements(self.shape)].reshape(self.shape)


@dataclass(frozen=True)
class Zeros(Op):
    arity: ClassVar[int | None] = 0
    shape: tuple[int, ...]
    dtype: str

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        if any(s < 0 for s in self.shape):
            raise OpError(f"zeros: negative size in {list(self.shape)}")
        check_dims(self.shape, "zeros")
        dtypes.by_name(self.dtype)
        return self.shape, self.dtype

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.zeros(self.shape, dtype=dtypes.by_name(self.dtype).numpy)

    def fill(self, out: np.ndarray, box: Box, inputs: Sequence[Part]) -> bool:
        out[...] = 0
        return True
