"""Text rendering shared by the commands: sizes, aligned tables, the scope tree."""

from __future__ import annotations

from collections.abc import Sequence

from ..tree import ScopeNode


def size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def shape(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    ]


def tree(root: ScopeNode) -> list[str]:
    """The scope tree with single-child scope chains folded (`rnn/multi_rnn_cell/`)."""
    rows: list[tuple[str, str, str, str]] = []
    _walk(root, 0, rows)
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)
    swidth = max(len(r[1]) for r in rows)
    return [f"{n.ljust(width)}  {s.ljust(swidth)}  {d:<9} {b:>9}".rstrip() if s else n for n, s, d, b in rows]


def _walk(node: ScopeNode, depth: int, rows: list[tuple[str, str, str, str]]) -> None:
    for child in node.children.values():
        label, current = child.name, child
        while current.entry is None and len(current.children) == 1:
            (current,) = current.children.values()
            label += "/" + current.name
        pad = "  " * depth
        if current.entry is not None:
            e = current.entry
            tag = "" if e.kind == "weight" else f" ({e.kind})"
            rows.append((pad + label + tag, shape(e.shape), e.dtype, size(e.nbytes)))
            if current.children:  # a name that is also a scope (TF slots: kernel and kernel/Adam)
                _walk(current, depth + 1, rows)
        else:
            rows.append((pad + label + "/", "", "", ""))
            _walk(current, depth + 1, rows)
