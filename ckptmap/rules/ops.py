"""The tensor operations a mapping can use, one small frozen dataclass each.

Every op answers two questions: `infer(shapes, dtypes)` — what comes out, checked before anything
is read, raising `OpError` with a message fit for a user — and `apply(arrays)` — the numpy work,
done lazily when the target tensor is written. Ops never see names or files; the engine adds that
context to their messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import dtypes, parallel
from ..cells.layouts import GateLayout, permutation

Shape = tuple[int, ...]


class OpError(Exception):
    """An op cannot apply to these inputs; the engine turns it into a MappingError with context."""


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < ndim:
        raise OpError(f"{op}: axis {axis} does not exist in a {ndim}-d tensor")
    return axis % ndim


def _sizes(total: int, parts: int | tuple[int, ...], op: str) -> list[int]:
    if isinstance(parts, int):
        if parts <= 0 or total % parts:
            raise OpError(f"{op}: {total} elements do not split into {parts} equal parts")
        return [total // parts] * parts
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


@dataclass(frozen=True)
class Split(Op):
    """Part `index` of the tensor cut along `axis` into `parts` equal parts or into the given sizes."""

    axis: int
    parts: int | tuple[int, ...]
    index: int

    def _bounds(self, shape: Shape) -> tuple[int, int, int]:
        axis = _axis(self.axis, len(shape), "split")
        sizes = _sizes(shape[axis], self.parts, "split")
        if not 0 <= self.index < len(sizes):
            raise OpError(f"split: part {self.index} does not exist, there are {len(sizes)} parts")
        start = sum(sizes[: self.index])
        return axis, start, start + sizes[self.index]

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        axis, start, stop = self._bounds(shapes[0])
        out = list(shapes[0])
        out[axis] = stop - start
        return tuple(out), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        axis, start, stop = self._bounds(arrays[0].shape)
        index = [slice(None)] * arrays[0].ndim
        index[axis] = slice(start, stop)
        return arrays[0][tuple(index)]


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
        if arrays[0].ndim != 2 or _axis(self.axis, 2, "cat") != 1:
            return np.concatenate(arrays, axis=self.axis)
        return _side_by_side(arrays)  # [w_ih, w_hh] -> TF's kernel, and the like


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


# Output blocks that read 1 KiB runs of the source and write 256-byte runs, so both sides stay
# in cache; numpy's own copy of a large transposed matrix strides through memory, 3-4x slower.
_BLOCK_BYTES = (1024, 256)


def c_order(array: np.ndarray) -> np.ndarray:
    """`array` in C order (a finished target tensor), copied only if it is not; a large matrix laid
    out column-major (a transpose) is copied block by block, its rows shared among threads."""
    if array.flags.c_contiguous:
        return array
    if not _column_major(array):
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    parallel.each(parallel.ranges(out.shape[0], out.nbytes), lambda a, b: _copy_rows(out, array, a, b))
    return out


def _column_major(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.nbytes >= 1 << 20 and abs(array.strides[0]) < abs(array.strides[1])


def _copy_rows(out: np.ndarray, source: np.ndarray, start: int, stop: int) -> None:
    """out[start:stop] = source[start:stop], in cache-sized blocks when `source` is column-major."""
    if not _column_major(source):
        out[start:stop] = source[start:stop]
        return
    rows, cols = (max(1, n // source.itemsize) for n in _BLOCK_BYTES)
    for i in range(start, stop, rows):
        end = min(i + rows, stop)
        for j in range(0, source.shape[1], cols):
            out[i:end, j : j + cols] = source[i:end, j : j + cols]


def _side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """The 2-D arrays in `blocks` (equal row counts) concatenated along axis 1, rows shared among
    threads; transposed blocks are transposed on the way."""
    out = np.empty((blocks[0].shape[0], sum(b.shape[1] for b in blocks)), np.result_type(*blocks))
    starts = np.cumsum([0] + [b.shape[1] for b in blocks])

    def copy(start: int, stop: int) -> None:
        for block, column in zip(blocks, starts, strict=False):
            _copy_rows(out[:, column : column + block.shape[1]], block, start, stop)

    parallel.each(parallel.ranges(out.shape[0], out.nbytes), copy)
    return out


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
        blocks = np.split(arrays[0], len(self.source.gates), axis=self.axis)
        ordered = [blocks[i] for i in permutation(self.source, self.target)]
        if arrays[0].ndim == 2 and _axis(self.axis, 2, "gates") == 1:
            return _side_by_side(ordered)
        return np.concatenate(ordered, axis=self.axis)


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
        if self.gate is None:
            view = x
        else:
            assert self.layout is not None
            n = x.shape[self.axis] // len(self.layout.gates)
            start = self.layout.block(self.gate) * n
            index = [slice(None)] * x.ndim
            index[self.axis] = slice(start, start + n)
            view = x[tuple(index)]
        if self.operation == "add":
            view += np.asarray(self.value, dtype=np.float64).astype(x.dtype)
        else:
            view *= np.asarray(self.value, dtype=np.float64).astype(x.dtype)
        return x


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


@dataclass(frozen=True)
class Cast(Op):
    dtype: str

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        dtypes.by_name(self.dtype)
        return shapes[0], self.dtype

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0].astype(dtypes.by_name(self.dtype).numpy)


@dataclass(frozen=True)
class Reshape(Op):
    shape: tuple[int, ...]

    def _resolve(self, shape: Shape) -> Shape:
        total = int(np.prod(shape, dtype=np.int64))
        target = list(self.shape)
        known = int(np.prod([s for s in target if s != -1], dtype=np.int64))
        if target.count(-1) > 1 or any(s < -1 for s in target):
            raise OpError(f"reshape: {target} is not a shape (one -1 at most, no other negative size)")
        if -1 in target and known and total % known == 0:
            target[target.index(-1)] = total // known
        if int(np.prod(target, dtype=np.int64)) != total or -1 in target:
            raise OpError(f"reshape: {tuple(shape)} ({total} elements) cannot become {list(self.shape)}")
        return tuple(target)

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        return self._resolve(shapes[0]), types[0]

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0].reshape(self._resolve(arrays[0].shape))


@dataclass(frozen=True)
class Zeros(Op):
    arity: ClassVar[int | None] = 0
    shape: tuple[int, ...]
    dtype: str

    def infer(self, shapes: list[Shape], types: list[str]) -> tuple[Shape, str]:
        if any(s < 0 for s in self.shape):
            raise OpError(f"zeros: negative size in {list(self.shape)}")
        dtypes.by_name(self.dtype)
        return self.shape, self.dtype

    def apply(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.zeros(self.shape, dtype=dtypes.by_name(self.dtype).numpy)
