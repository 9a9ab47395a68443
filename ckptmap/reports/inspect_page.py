"""The page `inspect --report FILE.html` writes: where a checkpoint's bytes are (a treemap of its
scopes by bytes, optimizer slots and bookkeeping apart), the RNNs recognized in it, and every
weight's statistics, with value histograms of the largest weights. Each tensor is read block by
block (tensor_stats.py), so a checkpoint of any size is drawn in the memory of one block per core
and the pages of the tensor being read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import display, kinds
from ..tensor_stats import histogram, tensor_stats
from . import plots, render

if TYPE_CHECKING:  # pragma: no cover
    from ..entry import TensorEntry
    from ..tree import Checkpoint

MAX_HISTOGRAMS = 40  # of the largest weights: a page of thousands of plots is no one's reading
MAX_BLOCKS = 60  # rectangles of the treemap
_FEW = 3  # scopes of weights the treemap goes down to, at least, where names are deep enough


def write(ckpt: Checkpoint, path: str | Path, progress: Callable[[int], None] | None = None) -> Path:
    return render.save(page(ckpt, progress), path)


def page(ckpt: Checkpoint, progress: Callable[[int], None] | None = None) -> str:
    entries = list(ckpt.entries.values())
    weights = [e for e in entries if e.kind == kinds.WEIGHT]
    stats = []
    for entry in weights:
        stats.append(tensor_stats(entry))
        if progress is not None:
            progress(entry.nbytes)
    largest = {e.name for e in sorted(weights, key=lambda e: -e.nbytes)[:MAX_HISTOGRAMS]}
    rows = []
    for k, (entry, s) in enumerate(zip(weights, stats, strict=True)):
        plot = None
        if entry.name in largest and s.minimum is not None:
            counts, edges = histogram(entry, s.minimum, s.maximum)
            plot = plots.histogram(counts, edges, gid=f"hist-{k}")
        rows.append({"entry": entry, "shape": display.shape(entry.shape), "size": display.size(entry.nbytes),
                     "stats": s, "plot": plot})  # fmt: skip
    blocks = _blocks(entries)
    return render.page(
        "inspect.html.j2",
        title=f"ckptmap inspect: {Path(str(ckpt.path)).name if ckpt.path else ckpt.format}",
        path=str(ckpt.path),
        format=ckpt.format,
        total=display.size(ckpt.nbytes),
        by_kind=[
            (
                kind,
                display.size(sum(e.nbytes for e in entries if e.kind == kind)),
                sum(1 for e in entries if e.kind == kind),
            )
            for kind in plots.KIND_COLOURS
        ],
        colours=plots.KIND_COLOURS,
        treemap=plots.treemap(blocks, gid="scope"),
        blocks=[{"label": label, "size": display.size(n), "kind": kind} for label, n, kind in blocks],
        rnns=[r.describe() for r in ckpt.rnns],
        notes=ckpt.notes,
        rows=rows,
        histograms=sum(1 for r in rows if r["plot"] is not None),
    )


def _blocks(entries: Sequence[TensorEntry]) -> list[tuple[str, int, str]]:
    """(scope, bytes, kind) for the treemap: the first level of names at which the weights split
    into a few scopes (below `rnn/multi_rnn_cell`: its cells), weights, slots and bookkeeping apart,
    largest first; the smallest folded into "other" past MAX_BLOCKS."""
    weights = [e.name for e in entries if e.kind == kinds.WEIGHT] or [e.name for e in entries]
    depth = 1
    while (
        depth < 12
        and len({_prefix(n, depth) for n in weights}) < _FEW
        and any(n.count("/") > depth for n in weights)
    ):
        depth += 1
    sums: dict[tuple[str, str], int] = {}
    for e in entries:
        key = (_prefix(e.name, depth), e.kind)
        sums[key] = sums.get(key, 0) + e.nbytes
    ordered = sorted(((scope, n, kind) for (scope, kind), n in sums.items()), key=lambda b: -b[1])
    if len(ordered) > MAX_BLOCKS:
        rest = ordered[MAX_BLOCKS - 1 :]
        ordered = [*ordered[: MAX_BLOCKS - 1], (f"{len(rest)} more", sum(b[1] for b in rest), "other")]
    return [(scope if kind == kinds.WEIGHT else f"{scope} ({kind})", n, kind) for scope, n, kind in ordered]


def _prefix(name: str, depth: int) -> str:
    return "/".join(name.split("/")[:depth])
