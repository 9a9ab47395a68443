"""Plain-text views of ckptmap's objects: what the commands print, and what `print(...)` shows.

`ckptmap inspect` and `print(ckpt)`, `ckptmap diff` and `print(ckptmap.diff(a, b))`, `convert`'s
summary and `print(report)` are the same lines from the same functions here, so the CLI and the
API cannot drift apart. Rendering reads no tensor and imports neither numpy nor the rule engine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import kinds

if TYPE_CHECKING:  # pragma: no cover
    from .api import ConversionReport, DiffReport
    from .cells.model import RNN
    from .tensor_stats import TensorStats
    from .tree import Checkpoint, ScopeNode, TensorEntry
    from .value_diff import ValueDiff


def size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def shape(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def number(value: float | None) -> str:
    """A difference as verify prints it (`1.5e-07`); `0` when exact, `-` when not a number."""
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.1e}"


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


def checkpoint(
    ckpt: Checkpoint,
    *,
    label: str | None = None,
    entries: Sequence[TensorEntry] | None = None,
    rnns: Sequence[RNN] | None = None,
    legacy: Sequence[RNN] | None = None,
    show_all: bool = False,
    shows_hidden: str = "--all shows them",
) -> list[str]:
    """What `ckptmap inspect` prints: a summary line, the scope tree (weights only unless
    `show_all`: a training checkpoint holds two Adam slots per weight), the RNNs, what is not a
    weight. `entries` (default: all) are those to show, `rnns` and `legacy` the RNNs among them."""
    from .formats.registry import label as format_label  # the table of formats names each

    entries = list(ckpt.entries.values()) if entries is None else list(entries)
    if rnns is None:
        rnns = ckpt.rnns
    if legacy is None:
        from .recognition import legacy_rnns

        legacy = legacy_rnns(ckpt)
    total = sum(e.nbytes for e in entries)
    weights = sum(e.kind == kinds.WEIGHT for e in entries)
    kind = format_label(ckpt.format)
    where = label or str(ckpt.path or "(in memory)")
    lines = [f"{where}: {kind}, {len(entries)} tensors ({weights} weights), {size(total)}"]
    lines += [f"Note: {note}" for note in ckpt.notes]
    shown = entries if show_all else [e for e in entries if e.kind == kinds.WEIGHT]
    lines += ["", *tree(ckpt.tree(shown))]
    hidden = Counter() if show_all else Counter(e.kind for e in entries if e.kind != kinds.WEIGHT)
    if hidden:
        slots, bookkeeping = hidden[kinds.SLOT], hidden[kinds.BOOKKEEPING]
        parts = [_count(slots, "optimizer slot"), _count(bookkeeping, "bookkeeping")]
        lines.append(f"({', '.join(p for p in parts if p)} hidden; {shows_hidden})")
    return [*lines, "", *_rnns(rnns, legacy), *_not_weights(entries)]


def _count(n: int, noun: str) -> str:
    """`8 optimizer slots`, `1 optimizer slot`, `3 bookkeeping` (a mass noun), or "" for none."""
    if not n:
        return ""
    return f"{n} {noun}{'s' if n != 1 and noun.endswith('slot') else ''}"


def _rnns(rnns: Sequence[RNN], legacy: Sequence[RNN]) -> list[str]:
    lines = []
    if rnns:
        lines.append(f"RNNs ({len(rnns)}):")
        for rnn in rnns:
            lines.append(f"  {rnn.describe()}")
            if rnn.framework == "tf1":
                scopes = sorted({c.scope for c in rnn.cells})
                more = f" ... ({len(scopes)} cells)" if len(scopes) > 1 else ""
                lines.append(f"      {scopes[0]}{more}")
    elif not legacy:
        lines.append("RNNs: none recognized")
    if legacy:
        lines.append(
            f"RNNs under TF <= 1.1 names ({len(legacy)}): tf1-to-torch renames these itself; for a TF output"
        )
        lines.append("use --mapping tf1-legacy-names")
        lines += [f"  {rnn.describe()}" for rnn in legacy]
    return lines


def _not_weights(entries: Sequence[TensorEntry]) -> list[str]:
    slots = sum(e.kind == kinds.SLOT for e in entries)
    bookkeeping = [e.name for e in entries if e.kind == kinds.BOOKKEEPING]
    parts = [_count(slots, "optimizer slot")] if slots else []
    if bookkeeping:
        shown = ", ".join(bookkeeping[:3]) + (", ..." if len(bookkeeping) > 3 else "")
        parts.append(f"{len(bookkeeping)} bookkeeping ({shown})")
    return [f"Not weights: {'; '.join(parts)}"] if parts else []


def diff(report: DiffReport) -> list[str]:
    """What `ckptmap diff` prints: names only in one side, shape or dtype changes, and (when
    values were compared) every tensor whose values are not identical."""
    lines = []
    sides = ((report.a, report.only_in_a), (report.b, report.only_in_b))
    for side, names in sides:
        if names:
            lines.append(f"Only in {side} ({len(names)}):")
            lines += [f"  {name}" for name in names]
    if report.changed:
        lines.append(f"Changed ({len(report.changed)}):")
        lines += [f"  {name}: {in_a} -> {in_b}" for name, in_a, in_b in report.changed]
    if report.values is not None:
        lines += _values(report.values, report.tolerance or 0.0)
    if report.same:
        what = "names, shapes and dtypes" if report.values is None else "names, shapes, dtypes and values"
        within = report.values and not all(v.identical for v in report.values)
        lines.append(f"Same {what}" + (f" (within tolerance {report.tolerance:g})." if within else "."))
    return lines


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _values(values: Sequence[ValueDiff], tolerance: float) -> list[str]:
    identical = sum(v.identical for v in values)
    within = sum(v.equal and not v.identical for v in values)
    differ = len(values) - identical - within
    counts = [f"{identical} identical"]
    if within:
        counts.append(f"{within} within tolerance {tolerance:g}")
    if differ:
        counts.append(f"{differ} DIFFER" + (f" (tolerance {tolerance:g})" if tolerance else ""))
    lines = [f"Values of {len(values)} tensors in both: {', '.join(counts)}"]
    rows = [
        (v.name, number(v.max_abs), number(v.max_rel), _db(v.sqnr_db), "within" if v.equal else "DIFFERS")
        for v in values
        if not v.identical
    ]
    if rows:
        lines += table([("tensor", "max abs", "max rel", "SQNR dB", "verdict"), *rows])
    return lines


def stats(rows: Sequence[TensorStats]) -> list[str]:
    """What `inspect --stats` adds: a line per tensor (finite values only in min, max, mean, std)."""

    def value(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    body = [
        (s.name, value(s.minimum), value(s.maximum), value(s.mean), value(s.std),
         f"{100 * s.zero_fraction:.1f}%", str(s.nans), str(s.infs))
        for s in rows
    ]  # fmt: skip
    flagged = sum(1 for s in rows if s.nans or s.infs)
    head = f"Statistics of {len(rows)} tensors" + (f"; {flagged} hold NaN or Inf" if flagged else "")
    return [head, *table([("tensor", "min", "max", "mean", "std", "zeros", "NaN", "Inf"), *body])]


# Reasons common enough that naming the tensors would only be noise.
_ROUTINE = ("optimizer slot", "training bookkeeping")


def conversion(report: ConversionReport) -> list[str]:
    """What `ckptmap convert` prints: mappings used, counts, what was dropped and passed through,
    what is not exact, the files written (and the whole plan, for a dry run)."""
    plan = report.plan
    used = ", ".join(plan.mappings) or "no mapping (names unchanged)"
    params_text = ", ".join(f"{k}={v}" for k, v in plan.params.items())
    verb = "Plan for" if report.dry_run else "Converted"
    lines = [
        f"{verb} {report.source} ({report.source_format}) -> {report.destination} "
        f"({report.destination_format}) with {used}" + (f" ({params_text})" if params_text else "")
    ]
    lines += [f"Note: {note}" for note in report.notes]
    if report.dry_run:
        lines += table(
            [(t.name, shape(t.shape), t.dtype, "<- " + ", ".join(t.sources), t.how) for t in plan.targets]
        )
    counts = Counter(
        "kept" if t.how == "kept" else "renamed" if t.how == "renamed" else "converted" for t in plan.targets
    )
    written = f"{len(plan.targets)} tensors" + (
        "" if report.dry_run else f" written ({size(report.bytes_written)}) in {report.seconds:.2f} s"
    )
    lines.append(
        f"  {written}: {counts['converted']} converted, {counts['renamed']} renamed, {counts['kept']} kept"
    )
    if plan.dropped:
        lines.append(f"  dropped {len(plan.dropped)}: {dropped_summary(plan.dropped)}")
    kept = [t.name for t in plan.targets if t.how == "kept" and t.sources == (t.name,)]
    if kept and plan.mappings:
        more = f" and {len(kept) - 6} more" if len(kept) > 6 else ""
        lines.append(f"  passed through unchanged: {', '.join(kept[:6])}{more}")
    lines += [f"  NOT EXACT ({a.scope}): {a.reason}" for a in plan.approximations]
    return lines + [f"  wrote {path}" for path in report.files]


def dropped_summary(dropped: Sequence[tuple[str, str]]) -> str:
    """`2 training bookkeeping, 14 optimizer slot, 3 with no place in a keras3 file (Variable, ...)`:
    a count per reason (its text up to the first colon), naming the tensors of unusual reasons."""
    names: dict[str, list[str]] = {}
    for name, why in dropped:
        reason = why.split(": ")[0].split(" of '")[0]
        names.setdefault(reason, []).append(name)
    parts = []
    for reason, members in names.items():
        if reason in _ROUTINE:
            parts.append(f"{len(members)} {reason}")
        else:
            shown = ", ".join(members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
            by = "by " if reason.startswith(("rule", "--")) else ""
            parts.append(f"{len(members)} {by}{reason} ({shown})")
    return ", ".join(parts)
