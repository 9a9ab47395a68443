"""The plots of the reports, drawn by matplotlib into inline SVG.

Each plotted series carries an SVG id (`Line2D.set_gid`), so a page (and its tests) can find a
curve and the points on it. matplotlib runs on its Agg backend and is imported only here.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

_WIDTH, _HEIGHT = 6.4, 2.8  # inches


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        from ..errors import UnsupportedError

        raise UnsupportedError("HTML reports need matplotlib: pip install 'ckptmap[report]'.") from None

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: no glyph outlines, no font files
    plt.rcParams["svg.hashsalt"] = "ckptmap"  # the same report draws the same ids
    return plt


@contextlib.contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Any, Any]]:
    """A figure and its axes, closed (matplotlib keeps them otherwise) however drawing ends."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(width, height))
    try:
        yield figure, axes
    finally:
        plt.close(figure)


def _svg(figure: Any) -> str:
    """The figure as inline SVG (no XML declaration or DOCTYPE), marked safe for the templates'
    autoescaping: it is markup matplotlib drew here, not text from a file."""
    from markupsafe import Markup  # Jinja2's own

    figure.tight_layout()
    out = io.StringIO()
    figure.savefig(out, format="svg")
    text = out.getvalue()
    return Markup(text[text.index("<svg") :])


# Colours of the kinds of tensor (kinds.py): weights, optimizer slots, bookkeeping.
KIND_COLOURS = {"weight": "#4c78a8", "slot": "#f58518", "bookkeeping": "#9d9da1"}


def treemap(items: Sequence[tuple[str, int, str]], gid: str) -> str:
    """Rectangles with areas by bytes (squarify's layout), one per (label, bytes, kind), coloured
    by kind; each rectangle has the SVG id `<gid>-<k>`."""
    with _figure(_WIDTH, 3.6) as (figure, axes):
        return _treemap(figure, axes, items, gid)


def _treemap(figure: Any, axes: Any, items: Sequence[tuple[str, int, str]], gid: str) -> str:
    import squarify
    from matplotlib.patches import Rectangle

    shown = [(label, size, kind) for label, size, kind in items if size > 0]
    sizes = [size for _, size, _ in shown]
    rects = squarify.squarify(squarify.normalize_sizes(sizes, 100, 60), 0, 0, 100, 60) if sizes else []
    for k, ((label, _, kind), r) in enumerate(zip(shown, rects, strict=True)):
        patch = Rectangle((r["x"], r["y"]), r["dx"], r["dy"], facecolor=KIND_COLOURS.get(kind, "#bbb"),
                              edgecolor="white", linewidth=1.5)  # fmt: skip
        patch.set_gid(f"{gid}-{k}")
        axes.add_patch(patch)
        if r["dx"] * r["dy"] > 60:  # room for a label
            axes.text(r["x"] + r["dx"] / 2, r["y"] + r["dy"] / 2, label, ha="center", va="center",
                      fontsize=8, color="white", clip_on=True)  # fmt: skip
    axes.set_xlim(0, 100)
    axes.set_ylim(60, 0)
    axes.set_axis_off()
    return _svg(figure)


def histogram(counts: Sequence[int], edges: Sequence[float], gid: str) -> str:
    """A tensor's value histogram, small."""
    with _figure(3.2, 1.6) as (figure, axes):
        bars = axes.stairs(counts, edges, fill=True, color=KIND_COLOURS["weight"])
        bars.set_gid(gid)
        axes.set_yticks([])
        axes.tick_params(labelsize=6)
        for side in ("top", "right", "left"):
            axes.spines[side].set_visible(False)
        return _svg(figure)


def sqnr_bars(items: Sequence[tuple[str, float | None]], gid: str) -> str:
    """Horizontal bars of SQNR in dB, one per tensor (identical ones, infinite, drawn to the right
    edge and labelled so); bar k has the SVG id `<gid>-<k>`."""
    finite = [v for _, v in items if v is not None and math.isfinite(v)]
    edge = max([*finite, 0.0]) + 10
    with _figure(_WIDTH, 0.6 + 0.28 * max(1, len(items))) as (figure, axes):
        for k, (_, value) in enumerate(items):
            width = edge if value is None or not math.isfinite(value) else value
            (bar,) = axes.barh([k], [width], color=KIND_COLOURS["weight"] if value is not None else "#bbb")
            bar.set_gid(f"{gid}-{k}")
        axes.set_yticks(range(len(items)), [label for label, _ in items], fontsize=7)
        axes.invert_yaxis()
        axes.set_xlabel("SQNR (dB): higher is closer")
        axes.grid(True, axis="x", alpha=0.3)
        return _svg(figure)


def error_per_step(series: Sequence[tuple[str, Sequence[float]]], tolerance: float, gid: str) -> str:
    """Absolute output error against the time step, one line per case, log scale, the tolerance
    drawn across: an SVG document as text."""
    with _figure(_WIDTH, _HEIGHT) as (figure, axes):
        floor = tolerance / 1e4  # zero on a log scale: drawn at the floor
        for k, (label, values) in enumerate(series):
            steps = list(range(1, len(values) + 1))
            (line,) = axes.plot(steps, [max(v, floor) for v in values], marker="o", markersize=3, label=label)
            line.set_gid(f"{gid}-case-{k}")
        tol = axes.axhline(
            tolerance, color="0.4", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}"
        )
        tol.set_gid(f"{gid}-tolerance")
        axes.set_yscale("log")
        axes.set_xlabel("time step")
        axes.set_ylabel("max |error| of outputs")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize="small", loc="best")
        return _svg(figure)
