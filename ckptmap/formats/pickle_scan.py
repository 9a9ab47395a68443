"""Walk a pickle's opcodes, running nothing, to bound what CPython's C unpickler would spend on it.

The C unpickler trusts the file: `LONG_BINPUT 2**28` makes it allocate and zero a 4 GB memo
from 13 bytes, a `BINBYTES8` length is allocated before the bytes are read, and a dict key
built as `t = (t, t)` thirty times over is hashed in 2**30 steps. `scan` simulates the stack
with one small int per value (how costly it is to hash: 0 for cheap or randomized hashes, else
weight << 8 | nesting depth), checks every length against the bytes left, every memo index
against the memo's size, tuple weight and depth against fixed bounds, and the keys whose
hashes a file can make collide against a count and a weight budget. It returns where the
pickle ends (legacy torch files put data after it). Its cost is one pass over the opcodes.
"""

from __future__ import annotations

import struct

from ..errors import FormatError

MAX_TUPLE_WEIGHT = 1 << 20  # values a tuple holds, counted through shared sub-tuples
MAX_TUPLE_DEPTH = 100  # hashing a tuple recurses in C, with no recursion check
MAX_HASHED = 1024  # dict keys / set elements whose hashes a file can choose (tuples, floats, big ints)
MAX_HASHED_WEIGHT = 1 << 16  # their summed weight: equal hashes make each insertion compare them all
_MEMO_SLACK = 1024  # picklers number memo entries 0, 1, 2...; tolerate a few gaps, never 2**32
_SMALL_INT = 1 << 61  # ints below this hash to themselves (mod 2**61 - 1), so they cannot collide
_CRAFTED = 256  # a float, a big int, a complex: weight 1, depth 0, but its hash can be chosen
_OPAQUE_CALL = -1  # a callable whose results may hash in ways the file chooses (STACK_GLOBAL)
# GLOBALs whose calls return nothing hashable a file can make collide or deepen: everything else
# ckptmap's unpickler maps to stand-ins returning str, bytes, containers or inert objects.
_CRAFTED_RESULTS = {
    f"{module}\n{name}".encode()
    for module in ("builtins", "__builtin__")
    for name in ("complex", "frozenset", "slice")
} | {b"torch\nSize"}


def _weight(item: int) -> int:
    return item >> 8 if item > 0 else 1


def _tuple(items: list[int], pos: int) -> int:
    if not items:
        return 0  # () is one value: as a key it cannot collide with anything
    weight = 1 + sum(_weight(i) for i in items)
    depth = 1 + max(i & 255 if i > 0 else 0 for i in items)
    if weight > MAX_TUPLE_WEIGHT or depth > MAX_TUPLE_DEPTH:
        raise FormatError(
            f"the pickle builds a tuple of {weight} values nested {depth} deep at byte {pos}; "
            "hashing it could run for hours, so it is refused."
        )
    return weight << 8 | depth


def _damaged(what: str, pos: int) -> FormatError:
    return FormatError(f"the pickle is damaged ({what} at byte {pos}).")


def _line(data: bytes | memoryview, pos: int, end: int) -> int:
    """Where the newline ending a text argument (protocol 0, GLOBAL names) is."""
    if isinstance(data, bytes):
        nl = data.find(b"\n", pos)
    else:  # a memoryview over a mapped file: look in windows, never copy the rest of the file
        nl = -1
        for at in range(pos, end, 1 << 16):
            found = bytes(data[at : at + (1 << 16)]).find(b"\n")
            if found >= 0:
                nl = at + found
                break
    if nl < 0:
        raise _damaged("a text argument has no end of line", pos)
    return nl


def _memo_put(memo: dict[int, int], index: int, stack: list[int], pos: int) -> None:
    if index > len(memo) + _MEMO_SLACK:
        raise FormatError(
            f"the pickle stores memo index {index} with {len(memo)} entries in use (at byte {pos}); "
            f"unpickling would allocate a memo for {index} entries."
        )
    if not stack:
        raise _damaged("the stack runs out", pos)
    memo[index] = stack[-1]


class _Keys:
    """Dict keys and set elements whose hash the file can choose: counted, their weights summed."""

    def __init__(self) -> None:
        self.count = self.weight = 0

    def add(self, keys: list[int], pos: int) -> None:
        for key in keys:
            if key > 0:
                self.count += 1
                self.weight += key >> 8
        if self.count > MAX_HASHED or self.weight > MAX_HASHED_WEIGHT:
            raise FormatError(
                f"the pickle uses over {MAX_HASHED} tuples, floats or huge ints as dict keys or set "
                f"elements (at byte {pos}); colliding hashes would make reading it quadratic."
            )


def scan(data: bytes | memoryview, start: int = 0) -> int:
    """Check the pickle at `start` (see the module docstring); returns the offset just past STOP.

    One loop with everything in locals: it runs once per opcode, ~30 per tensor of a state dict.
    """
    pos, end = start, len(data)
    stack: list[int] = []
    marks: list[list[int]] = []
    memo: dict[int, int] = {}
    keys = _Keys()
    kinds, from_bytes = _KINDS, int.from_bytes
    while pos < end:
        op = data[pos]
        kind = kinds[op]
        pos += 1
        if kind == _FIXED:  # push a value whose argument has a fixed size
            pos += _FIXED_SIZE[op]
            if pos > end:
                break
            stack.append(_CRAFTED if op == 0x47 else 0)  # BINFLOAT
        elif kind == _COUNTED:  # push a value whose argument says its length
            size, length = _COUNTED_SIZE[op]
            if pos + size > end:
                break
            n = length(data, pos)[0]
            pos += size
            if n < 0 or pos + n > end:
                raise _damaged(f"a length of {n} bytes runs past the {max(end - pos, 0)} left", pos)
            if op == 0x8A or op == 0x8B:  # LONG1, LONG4: only small ints hash to themselves
                big = n > 8 or abs(from_bytes(data[pos : pos + n], "little", signed=True)) >= _SMALL_INT
                stack.append(_CRAFTED if big else 0)
            else:
                stack.append(0)
            pos += n
        elif kind == _GET:
            if op == 0x68:
                index = data[pos]
                pos += 1
            else:
                index = from_bytes(data[pos : pos + 4], "little")
                pos += 4
            if index not in memo:
                raise _damaged(f"memo index {index} is read before it is stored", pos)
            stack.append(memo[index])
        elif kind == _PUT:
            if op == 0x94:  # MEMOIZE
                _memo_put(memo, len(memo), stack, pos)
                continue
            if op == 0x71:
                _memo_put(memo, data[pos], stack, pos)
                pos += 1
            else:
                _memo_put(memo, from_bytes(data[pos : pos + 4], "little"), stack, pos)
                pos += 4
        elif kind == _MARK:
            marks.append(stack)
            stack = []
        elif kind == _TO_MARK:
            if not marks:
                raise _damaged("a MARK is missing", pos)
            items, stack = stack, marks.pop()
            if op == 0x74:  # TUPLE
                stack.append(_tuple(items, pos))
                continue
            if op == 0x75 or op == 0x64:  # SETITEMS, DICT: their keys are hashed
                keys.add(items[::2], pos)
            elif op == 0x90 or op == 0x91:  # ADDITEMS, FROZENSET: so are their elements
                keys.add(items, pos)
            elif op == 0x69:  # INST names its class on two lines
                pos = _line(data, _line(data, pos, end) + 1, end) + 1
            if op == 0x75 or op == 0x90 or op == 0x65:  # SETITEMS, ADDITEMS, APPENDS fill the value below
                if not stack:
                    raise _damaged("the stack runs out", pos)
            elif op != 0x31:  # all but POP_MARK leave a new value
                stack.append(0)
        elif kind == _POP:  # pop n, push a cheap value (or, for APPEND, SETITEM, BUILD, change one)
            n = _POPS[op]
            if len(stack) <= n - (op in _MAKES):
                raise _damaged("the stack runs out", pos)
            if op == 0x52:  # REDUCE: an opaque call's result may cost what its arguments cost
                func, args = stack[-2:]
                depth = min((args & 255 if args > 0 else 0) + 1, 255)
                result = 0 if func == 0 else (_weight(args) + 64) << 8 | depth
            elif op == 0x73:  # SETITEM hashes its key
                keys.add([stack[-2]], pos)
            elif op == 0x93:  # STACK_GLOBAL: names from the stack, so what it returns is not known
                result = _OPAQUE_CALL
            else:
                result = 0
            del stack[len(stack) - n :]
            if op in _MAKES:
                stack.append(result)
        elif kind == _TUPLE_N:
            n = op - 0x84
            if len(stack) < n:
                raise _damaged("the stack runs out", pos)
            items = stack[len(stack) - n :]
            del stack[len(stack) - n :]
            stack.append(_tuple(items, pos))
        elif kind == _TEXT:  # protocol 0/1 values, GLOBAL, PERSID, GET, PUT: newline-ended arguments
            nl = _line(data, pos, end)
            text = bytes(data[pos:nl])
            pos = nl + 1
            if op == 0x63:  # GLOBAL: module and name
                nl = _line(data, pos, end)
                text += b"\n" + bytes(data[pos:nl])
                pos = nl + 1
                stack.append(_OPAQUE_CALL if text in _CRAFTED_RESULTS else 0)
            elif op == 0x67 or op == 0x70:  # GET, PUT
                if not text.isdigit() or len(text) > 18:
                    raise _damaged("a memo index is not a number", pos)
                if op == 0x70:
                    _memo_put(memo, int(text), stack, pos)
                elif int(text) not in memo:
                    raise _damaged(f"memo index {int(text)} is read before it is stored", pos)
                else:
                    stack.append(memo[int(text)])
            elif op == 0x46 or ((op == 0x49 or op == 0x4C) and len(text.strip().rstrip(b"L")) > 18):
                stack.append(_CRAFTED)  # FLOAT, or an INT/LONG that may hash to anything
            else:
                stack.append(0)
        elif kind == _OTHER:
            if op == 0x30:  # POP: at a MARK, C's unpickler pops the mark instead
                if not stack and marks:
                    stack = marks.pop()
                elif not stack:
                    raise _damaged("the stack runs out", pos)
                else:
                    stack.pop()
            elif op == 0x32:  # DUP
                if not stack:
                    raise _damaged("the stack runs out", pos)
                stack.append(stack[-1])
            elif op == 0x95:  # FRAME: its opcodes follow inline
                if from_bytes(data[pos : pos + 8], "little") > end - pos - 8:
                    raise _damaged("a FRAME is longer than the bytes left", pos)
                pos += 8
            elif op == 0x80:  # PROTO
                pos += 1
            else:  # STOP
                if not stack:
                    raise _damaged("the stack runs out", pos)
                return pos
        else:
            raise _damaged(f"unknown opcode 0x{op:02x}", pos)
    raise _damaged("the pickle ends without a STOP opcode", min(pos, end))


_FIXED, _COUNTED, _GET, _PUT, _MARK, _TO_MARK, _POP, _TUPLE_N, _TEXT, _OTHER = range(1, 11)
# opcode -> bytes of argument, for opcodes that push one value and take a fixed-size argument
_FIXED_SIZE = {0x4B: 1, 0x4D: 2, 0x4A: 4, 0x4E: 0, 0x88: 0, 0x89: 0, 0x5D: 0, 0x7D: 0, 0x29: 0,
               0x8F: 0, 0x47: 8, 0x82: 1, 0x83: 2, 0x84: 4, 0x97: 0}  # fmt: skip
# opcode -> (bytes of the length, how to read it) for length-prefixed arguments
_U1, _U4, _I4, _U8 = (struct.Struct(f).unpack_from for f in ("<B", "<I", "<i", "<Q"))
_COUNTED_SIZE = {0x8A: (1, _U1), 0x8B: (4, _I4), 0x54: (4, _I4), 0x55: (1, _U1), 0x42: (4, _U4),
                 0x43: (1, _U1), 0x8E: (8, _U8), 0x96: (8, _U8), 0x8C: (1, _U1), 0x58: (4, _U4),
                 0x8D: (8, _U8)}  # fmt: skip
# opcode -> values popped: APPEND, BUILD, SETITEM keep the value below, the rest push one (_MAKES)
_POPS = {0x61: 1, 0x62: 1, 0x73: 2, 0x52: 2, 0x81: 2, 0x92: 3, 0x51: 1, 0x98: 1, 0x93: 2}
_MAKES = {0x52, 0x81, 0x92, 0x51, 0x98, 0x93}
_KINDS = [0] * 256
for _ops, _kind in (
    (_FIXED_SIZE, _FIXED), (_COUNTED_SIZE, _COUNTED), ((0x68, 0x6A), _GET), ((0x71, 0x72, 0x94), _PUT),
    ((0x28,), _MARK), ((0x74, 0x75, 0x64, 0x90, 0x91, 0x69, 0x6F, 0x6C, 0x65, 0x31), _TO_MARK),
    (_POPS, _POP), ((0x85, 0x86, 0x87), _TUPLE_N),
    ((0x49, 0x4C, 0x46, 0x53, 0x56, 0x50, 0x63, 0x67, 0x70), _TEXT),
    ((0x30, 0x32, 0x95, 0x80, 0x2E), _OTHER),
):  # fmt: skip
    for _op in _ops:
        _KINDS[_op] = _kind
