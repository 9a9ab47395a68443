"""`ckptmap diff A B`: names only in one side, and shape or dtype changes. Exit 1 when they differ."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .. import api


def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint.")],
    b: Annotated[str, typer.Argument(help="Second checkpoint.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Compare two checkpoints by name, shape and dtype (exit 0 same, 1 different, 2 error)."""
    report = api.diff(a, b)
    if json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for title, names in ((f"Only in {a}", report.only_in_a), (f"Only in {b}", report.only_in_b)):
            if names:
                print(f"{title} ({len(names)}):")
                for name in names:
                    print(f"  {name}")
        if report.changed:
            print(f"Changed ({len(report.changed)}):")
            for name, in_a, in_b in report.changed:
                print(f"  {name}: {in_a} -> {in_b}")
        if report.same:
            print("Same names, shapes and dtypes.")
    if not report.same:
        raise typer.Exit(1)
