"""The expression language of mapping rules: a few ops joined by `|`, in Python syntax.

    kernel | split(0, [input, units], 1) | gates(tf1.lstm, torch.lstm) | T
    cat(gates_kernel | split(0, [input, units], 0) | T, candidate_kernel | split(0, [input, units], 0) | T)
    bias_ih | add(bias_hh) | gates(torch.lstm, tf1.lstm) | add(-forget_bias, gate=f, layout=tf1.lstm)

`a | f(x)` means `f(a, x)`. Names are tensors (a cell's roles, a rule's inputs), sizes (`input`,
`units`, ...), mapping parameters, gate names (`gate=f`) and layouts (`tf1.lstm`). Text is parsed
with `ast` and walked by a whitelist: nothing is ever passed to `eval`, so a mapping file cannot
run code. Parsing checks syntax and op names once, when the mapping loads; evaluation against a
matched cell gives a tree of `Node`s whose shapes are known before any data is read.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes
from ..cells.layouts import LAYOUTS, GateLayout, layout
from ..entry import TensorEntry, rows_per_block
from . import ops
from .ops import Op, OpError

_FRAMEWORKS = frozenset(row.framework for row in LAYOUTS)  # `tf1.lstm` names a layout


class ExprError(Exception):
    """A problem with an expression; the schema or engine adds the rule and line."""


# Bounds on an expression's text, so parsing and the recursive walks over its tree stay short:
# real expressions have tens of nodes and a nesting of a few levels.
MAX_EXPR_CHARS = 10_000
MAX_EXPR_NODES = 2_000
MAX_EXPR_DEPTH = 50
# Numbers an expression computes stay within int64 (sizes) or a float: no huge-int arithmetic.
MAX_NUMBER = 1 << 63


def nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return ops.elements(shape) * dtypes.by_name(dtype).itemsize


class Node:
    """A tensor-valued result: shape and dtype known now, data computed on demand."""

    shape: tuple[int, ...]
    dtype: str
    # The elements of each distinct source below this node (by id of its entry): what it may grow
    # from. Elements, not bytes: a cast (float16 to float32, int8 to float32) changes each element's
    # size, not how many there are, and is never growth; `zeros` and `cat(x, x)` add elements.
    sourced: dict[int, int]

    @property
    def growth(self) -> int:
        """Bytes this tensor holds beyond the sources it is computed from (0 if none): its
        elements past theirs, at its own itemsize."""
        extra = ops.elements(self.shape) - sum(self.sourced.values())
        return max(0, extra) * dtypes.by_name(self.dtype).itemsize

    def compute(self, read: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """The whole result. `read` holds the sources already read for this target, so a source
        it names twice (`cat(x | split(...), x | split(...))`) is read once."""
        raise NotImplementedError

    def sources(self) -> list[SourceNode]:
        raise NotImplementedError


class SourceNode(Node):
    def __init__(self, entry: TensorEntry, reader: Callable[[TensorEntry], np.ndarray]) -> None:
        self.entry, self.shape, self.dtype, self._reader = entry, entry.shape, entry.dtype, reader
        self.sourced = {id(entry): ops.elements(entry.shape)}

    def compute(self, read: dict[int, np.ndarray] | None = None) -> np.ndarray:
        if read is None:
            return self._reader(self.entry)
        if id(self.entry) not in read:
            read[id(self.entry)] = self._reader(self.entry)
        return read[id(self.entry)]

    def sources(self) -> list[SourceNode]:
        return [self]


class OpNode(Node):
    def __init__(self, op: Op, inputs: list[Node]) -> None:
        self.op, self.inputs = op, inputs
        try:
            self.shape, self.dtype = op.infer([i.shape for i in inputs], [i.dtype for i in inputs])
        except OpError as e:
            raise ExprError(str(e)) from None
        self.sourced = {k: v for i in inputs for k, v in i.sourced.items()}
        if self.growth > ops.GROWTH_BYTES:  # checked at every op: `zeros(...) | reshape` is computed whole
            raise ExprError(
                f"{type(op).__name__.lower()} makes a tensor of shape {list(self.shape)} "
                f"({nbytes(self.shape, self.dtype):,} bytes) from {sum(self.sourced.values()):,} "
                f"source elements: {self.growth:,} bytes of new elements; a mapping may add at most "
                f"{ops.GROWTH_BYTES:,} bytes"
            )

    def compute(self, read: dict[int, np.ndarray] | None = None) -> np.ndarray:
        read = {} if read is None else read
        return self.op.apply([i.compute(read) for i in self.inputs])

    def sources(self) -> list[SourceNode]:
        return [s for i in self.inputs for s in i.sources()]


def row_blocks(node: Node, max_bytes: int) -> Iterator[np.ndarray]:
    """`node.compute()` in C order, as new arrays of whole leading-axis rows, about `max_bytes`
    each: a writer streams a target a block at a time, each block filled straight from the source
    tensors (memory maps, for most formats) by the ops that can (see `Op.fill`). Each source is
    read once; an op that cannot fill has its whole output computed once and sliced."""
    memo: dict[int, np.ndarray] = {}
    root = _Bound(node, memo)
    dtype = dtypes.by_name(node.dtype).numpy
    if not node.shape:
        out = np.empty((), dtype)
        root.fill(out, ())
        yield out
        return
    step = rows_per_block(node.shape, dtype.itemsize, max_bytes)
    rest = tuple((0, n) for n in node.shape[1:])
    for start in range(0, node.shape[0], step):
        stop = min(start + step, node.shape[0])
        out = np.empty((stop - start, *node.shape[1:]), dtype)
        root.fill(out, ((start, stop), *rest))
        yield out


class _Bound:
    """A node within one `row_blocks` evaluation: what an op's `fill` sees as an input."""

    def __init__(self, node: Node, memo: dict[int, np.ndarray]) -> None:
        self.node, self.memo, self.shape, self.dtype = node, memo, node.shape, node.dtype

    def fill(self, out: np.ndarray, box: ops.Box) -> None:
        node = self.node
        if isinstance(node, OpNode) and node.op.fill(out, box, [_Bound(i, self.memo) for i in node.inputs]):
            return
        whole = self.memo.get(id(node))
        if whole is None:  # a source, or an op that cannot fill: computed whole once
            whole = self.memo[id(node)] = node.compute(self.memo)
        ops.copy_box(out, whole, box)


@dataclass(frozen=True)
class Gate:
    """A bare gate name in `gate=f`."""

    name: str


# Op builders: the user-facing signatures. The piped value, if any, is the first argument.
def _split(x: Node, axis: int, parts: int | tuple[int, ...], index: int) -> Node:
    return OpNode(ops.Split(_int(axis), _parts(parts), _int(index)), [x])


def _cat(*xs: Node, axis: int = 0) -> Node:
    if not xs:
        raise ExprError("cat: needs at least one tensor")
    return OpNode(ops.Concat(_int(axis)), [_tensor(x, "cat") for x in xs])


def _transpose(x: Node, perm: tuple[int, ...] | None = None) -> Node:
    return OpNode(ops.Transpose(None if perm is None else tuple(_int(p) for p in perm)), [x])


def _gates(x: Node, source: GateLayout, target: GateLayout, axis: int = -1) -> Node:
    return OpNode(ops.Gates(_layout(source), _layout(target), _int(axis)), [x])


def _add(
    x: Node, *values: Any, gate: Gate | None = None, layout: GateLayout | None = None, axis: int = -1
) -> Node:
    if values and all(isinstance(v, Node) for v in values):
        if gate is not None:
            raise ExprError("add: gate= works with a constant, not with tensors")
        return OpNode(ops.AddTensors(), [x, *values])
    if len(values) != 1:
        raise ExprError("add: give one constant, or one or more tensors")
    return OpNode(ops.Arith("add", _number(values[0]), _gate(gate), layout, _int(axis)), [x])


def _scale(
    x: Node, value: float, gate: Gate | None = None, layout: GateLayout | None = None, axis: int = -1
) -> Node:
    return OpNode(ops.Arith("scale", _number(value), _gate(gate), layout, _int(axis)), [x])


def _cast(x: Node, dtype: str) -> Node:
    return OpNode(ops.Cast(str(dtype)), [x])


def _reshape(x: Node, shape: tuple[int, ...] | int) -> Node:
    return OpNode(ops.Reshape(_shape(shape)), [x])


def _zeros(
    shape: tuple[int, ...] | int, dtype: str | None = None, *, _default_dtype: str = "float32"
) -> Node:
    return OpNode(ops.Zeros(_shape(shape), str(dtype or _default_dtype)), [])


OPS: dict[str, Callable[..., Node]] = {
    "split": _split,
    "cat": _cat,
    "T": _transpose,
    "transpose": _transpose,
    "gates": _gates,
    "add": _add,
    "scale": _scale,
    "cast": _cast,
    "reshape": _reshape,
    "zeros": _zeros,
}
_TAKES_INPUT = {name for name in OPS if name != "zeros"}


@dataclass(frozen=True)
class Expr:
    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str) -> Expr:
        text = str(text)
        if len(text) > MAX_EXPR_CHARS:
            raise ExprError(f"an expression of {len(text)} characters (at most {MAX_EXPR_CHARS})")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as e:
            raise ExprError(f"cannot parse '{_short(text)}': {e.msg}") from None
        except (RecursionError, MemoryError, ValueError) as e:  # nesting the parser cannot hold
            raise ExprError(f"cannot parse '{_short(text)}': {type(e).__name__}") from None
        _check_size(tree, text)
        _check(tree)
        return cls(text, tree)

    def names(self) -> set[str]:
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)} - set(OPS) - set(_FRAMEWORKS)

    def evaluate(self, env: Mapping[str, Any], *, default_dtype: str) -> Node:
        value = _Evaluator(env, default_dtype).eval(self.tree)
        if not isinstance(value, Node):
            raise ExprError(f"'{self.text}' gives {value!r}, not a tensor")
        return value


_ALLOWED = (
    ast.BinOp,
    ast.UnaryOp,
    ast.Call,
    ast.Name,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Attribute,
    ast.Subscript,
    ast.keyword,
    ast.Load,
    ast.BitOr,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.FloorDiv,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.Mod,
)


def _short(text: str) -> str:
    return text if len(text) <= 100 else text[:97] + "..."


def _check_size(tree: ast.expr, text: str) -> None:
    """Few enough nodes and levels for the recursive walks (evaluation, `sources`, `fill`)."""
    count, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_EXPR_NODES or depth > MAX_EXPR_DEPTH:
            raise ExprError(
                f"'{_short(text)}' is too large (at most {MAX_EXPR_NODES} terms, nested "
                f"{MAX_EXPR_DEPTH} deep)"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check(tree: ast.expr) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExprError(f"'{ast.unparse(node)}' is not allowed in a mapping expression")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in OPS):
            name = ast.unparse(node.func)
            raise ExprError(f"unknown operation '{name}'; operations: {', '.join(sorted(OPS))}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            rhs = node.right
            target = rhs.func if isinstance(rhs, ast.Call) else rhs
            if not isinstance(target, ast.Name):
                raise ExprError(
                    f"'| {ast.unparse(rhs)}': the right of '|' must be an operation like T or split(...)"
                )
            if target.id not in OPS:
                raise ExprError(f"unknown operation '{target.id}'; operations: {', '.join(sorted(OPS))}")
            if target.id not in _TAKES_INPUT:
                raise ExprError(f"'| {ast.unparse(rhs)}': {target.id} takes no input tensor")


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], default_dtype: str) -> None:
        self.env, self.default_dtype = env, default_dtype

    def eval(self, node: ast.expr) -> Any:
        method = getattr(self, f"_{type(node).__name__}")
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        return _bounded(node.value)

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.env:
            return self.env[node.id]
        if node.id in OPS:
            raise ExprError(f"'{node.id}' is an operation; call it, or use it after '|'")
        if len(node.id) == 1:
            return Gate(node.id)
        known = ", ".join(sorted(k for k in self.env if not k.startswith("_")))
        raise ExprError(f"unknown name '{node.id}' (known here: {known})")

    def _Attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id in _FRAMEWORKS:
            return layout(f"{node.value.id}.{node.attr}")
        base = self.eval(node.value)
        if isinstance(base, Node) and node.attr in ("shape", "ndim"):
            return base.shape if node.attr == "shape" else len(base.shape)
        raise ExprError(f"'{ast.unparse(node)}': only layouts (tf1.lstm) and .shape are attributes")

    def _Subscript(self, node: ast.Subscript) -> Any:
        base, index = self.eval(node.value), self.eval(node.slice)
        try:
            return base[index]
        except (TypeError, IndexError):
            raise ExprError(f"'{ast.unparse(node)}': cannot index {base!r} with {index!r}") from None

    def _List(self, node: ast.List) -> tuple[Any, ...]:
        return tuple(self.eval(e) for e in node.elts)

    _Tuple = _List

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = _number(self.eval(node.operand))
        return -value if isinstance(node.op, ast.USub) else value

    def _BinOp(self, node: ast.BinOp) -> Any:
        if isinstance(node.op, ast.BitOr):
            piped = self.eval(node.left)
            rhs = node.right
            if isinstance(rhs, ast.Call):
                return self._call(rhs, [piped])
            return self._apply(rhs.id, [piped], {})  # type: ignore[attr-defined]
        left, right = _number(self.eval(node.left)), _number(self.eval(node.right))
        if isinstance(node.op, ast.Add):
            return _bounded(left + right)
        if isinstance(node.op, ast.Sub):
            return _bounded(left - right)
        if isinstance(node.op, ast.Mult):
            return _bounded(left * right)
        if right == 0:
            raise ExprError(f"'{_short(ast.unparse(node))}': division by zero")
        if isinstance(node.op, ast.Mod):
            return left % right
        return left // right if isinstance(node.op, ast.FloorDiv) else left / right

    def _Call(self, node: ast.Call) -> Any:
        return self._call(node, [])

    def _call(self, node: ast.Call, piped: list[Any]) -> Any:
        args = piped + [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords if k.arg}
        return self._apply(node.func.id, args, kwargs)  # type: ignore[attr-defined]

    def _apply(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        builder = OPS[name]
        if name == "zeros":
            kwargs["_default_dtype"] = self.default_dtype
        try:
            inspect.signature(builder).bind(*args, **kwargs)
        except TypeError as e:
            raise ExprError(f"{name}(): {e}") from None
        if name in _TAKES_INPUT and args:
            _tensor(args[0], name)
        return builder(*args, **kwargs)


def _tensor(value: Any, op: str) -> Node:
    if not isinstance(value, Node):
        raise ExprError(f"{op}: expected a tensor, got {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            return _bounded(int(value))  # 1e21 is a whole number, and too large
        raise ExprError(f"expected a whole number, got {_short(repr(value))}")
    return _bounded(int(value))


def _bounded(value: Any) -> Any:
    """`value`, if not an integer past int64: every size is one, and no number needs more."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_NUMBER:
        raise ExprError(f"the number {_short(str(value))} is too large (at most 2**63-1)")
    return value


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ExprError(f"expected a number, got {value!r}")
    return value


def _parts(value: Any) -> int | tuple[int, ...]:
    return tuple(_int(v) for v in value) if isinstance(value, tuple) else _int(value)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(_int(v) for v in value) if isinstance(value, tuple) else (_int(value),)


def _layout(value: Any) -> GateLayout:
    if not isinstance(value, GateLayout):
        raise ExprError(f"expected a layout like tf1.lstm, got {value!r}")
    return value


def _gate(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Gate):
        raise ExprError(f"gate= takes a gate name like f, got {value!r}")
    return value.name
