"""`ckptmap diff A B`: names only in one side, shape or dtype changes and, with `--values`, how far
apart the values are. Exit 1 when they differ."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .. import api
from ..errors import UsageError


def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint.")],
    b: Annotated[str, typer.Argument(help="Second checkpoint.")],
    values: Annotated[
        bool,
        typer.Option("--values", help="Also compare the values of each tensor in both (max abs, max rel)."),
    ] = False,
    tolerance: Annotated[
        float | None,
        typer.Option("--tolerance", help="With --values: largest |a - b| taken as equal (default 0: exact)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    report_html: Annotated[
        str | None,
        typer.Option("--report", help="With --values: also write a self-contained HTML page (errors, SQNR)."),
    ] = None,
) -> None:
    """Compare two checkpoints by name, shape and dtype, and with --values by value
    (exit 0 same, 1 different, 2 error).

    Examples:

      ckptmap diff run1/model.ckpt run2/model.ckpt

      ckptmap diff lstm.pt lstm.safetensors --values --tolerance 1e-6

      ckptmap diff model.pt model_fp16.pt --values --report diff.html
    """
    for given, option in ((tolerance is not None, "--tolerance"), (report_html, "--report")):
        if given and not values:
            raise UsageError(f"{option} goes with --values.")
    report = api.diff(a, b, values=values, tolerance=tolerance)
    print(json.dumps(report.to_dict(), indent=2) if json_output else str(report))
    if report_html:
        api.write_diff_report(report, report_html)
    if not report.same:
        raise typer.Exit(1)
