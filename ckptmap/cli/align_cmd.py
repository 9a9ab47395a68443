"""`ckptmap align SRC TARGET`: draft the mapping from SRC to TARGET's names and shapes, check it by
running it, and with --apply convert and verify. Exit 0 sure, 1 unsure or incomplete, 2 error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from .. import api
from ..errors import UsageError
from .verify_cmd import render_verify


def align(
    src: Annotated[str, typer.Argument(help="The checkpoint to convert.")],
    target: Annotated[
        str,
        typer.Argument(help="A checkpoint of the model to load into (random weights will do)."),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the drafted mapping (YAML) here.")
    ] = None,
    apply: Annotated[
        Path | None,
        typer.Option("--apply", help="Convert SRC with the draft into this file, then verify its RNNs."),
    ] = None,
    accept_order: Annotated[
        bool,
        typer.Option("--accept-order", help="Take pairs of look-alikes that only their order told apart."),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Draft the mapping that turns SRC into TARGET's names and shapes: RNNs paired by structure
    and converted by the built-in cell rules, other weights by shape, name and order. Pairs that
    only order decided are flagged (exit 1) unless --accept-order.

    Examples:

      ckptmap align tf1_run/model.ckpt fresh_model.pt -o tf1-to-mine.yaml

      ckptmap align tf1_run/model.ckpt fresh_model.pt --accept-order --apply model.pt
    """
    if output is not None and os.path.lexists(output) and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it.")  # before the work
    alignment = api.align(src, target, accept_order=accept_order)
    if output is not None:
        alignment.save(output, overwrite=overwrite)
    lines = [str(alignment)]
    if output is not None:
        lines.append(f"  wrote {output}")
    report: dict = alignment.to_dict()
    code = 0 if alignment.ok else 1
    if apply is not None and alignment.ok:
        converted = api.convert(src, apply, mapping=alignment.mapping(), overwrite=overwrite)
        lines.append(str(converted))
        if alignment.rnns:  # verify proves RNNs; the other weights were placed by name and shape
            verified = api.verify(src, apply, mapping=alignment.mapping())
            lines += render_verify(verified)
            report["verify"] = verified.to_dict()
            code = max(code, verified.exit_code)
        else:
            lines.append(
                "No RNN paired: nothing for verify to run (the weights went where names and shapes say)."
            )
    elif apply is not None:
        where = f" in {output}" if output else ""
        lines.append(f"  not applied: the draft is not sure; check it{where}, or pass --accept-order.")
    if output is None and not json_output:
        lines.insert(1, alignment.mapping_text.rstrip())
    print(json.dumps(report, indent=2) if json_output else "\n".join(lines))
    if code:
        raise typer.Exit(code)
