"""The plots of the reports, drawn by matplotlib into inline SVG.

Each plotted series carries an SVG id (`Line2D.set_gid`), so a page (and its tests) can find a
curve and the points on it. matplotlib runs on its Agg backend and is imported only here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
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


def error_per_step(series: Sequence[tuple[str, Sequence[float]]], tolerance: float, gid: str) -> str:
    """Absolute output error against the time step, one line per case, log scale, the tolerance
    drawn across: an SVG document as text."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(_WIDTH, _HEIGHT))
    try:
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
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg")
    finally:
        plt.close(figure)
    text = out.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or DOCTYPE
