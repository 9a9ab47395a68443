"""`ckptmap convert SRC DST`: apply a mapping and write a checkpoint the target framework restores."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .. import api, display
from ..errors import CkptmapError, UsageError
from . import verify_cmd
from .options import pairs, size
from .progress import ProgressBar

# From the table of formats, so a new writable format shows here without an edit.
_WRITABLE = [f for f in api.formats() if f.writable]
_TO_HELP = (
    "Output format (default: DST's name, else the mapping's target framework): "
    + ", ".join(
        f"{f.name} ({f.label}, e.g. {f.example}{'; ' + f.fixes_names if f.fixes_names else ''})"
        for f in _WRITABLE
    )
    + "."
)
_NAMED = ", ".join(f.example for f in _WRITABLE if f.suffixes)
_DST_HELP = f"Destination file or TF prefix; its name gives the format ({_NAMED}) unless --to does."
_SHARDED = " or ".join(f.name for f in api.formats() if f.shards)
_SHARD_HELP = f"{_SHARDED} output: data shards of at most this size (e.g. 2GB)."
_INTO_HELP = " ".join(
    f"{f.name} output: the {f.label} to write into, e.g. {f.example} ({f.template})."
    for f in api.formats()
    if f.template
)


def convert(
    src: Annotated[str, typer.Argument(help="Source checkpoint (any format ckptmap reads).")],
    dst: Annotated[str, typer.Argument(help=_DST_HELP)],
    mapping: Annotated[
        list[str] | None,
        typer.Option("--mapping", "-m", help="Built-in mapping name or YAML file; repeat to chain."),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Mapping parameter KEY=VALUE.")] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option(
            "--rename", help="REGEX=REPLACEMENT applied to target names last (split at the last '=')."
        ),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help=_TO_HELP)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    shard_size: Annotated[
        str | None,
        typer.Option("--shard-size", help=_SHARD_HELP),
    ] = None,
    into: Annotated[str | None, typer.Option("--into", help=_INTO_HELP)] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option(
            "--drop", help="Leave out tensors whose name (after the mapping) matches REGEX; repeatable."
        ),
    ] = None,
    keep_only: Annotated[
        list[str] | None,
        typer.Option("--keep-only", help="Write only tensors whose name (after the mapping) matches REGEX."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace DST if it exists (atomically, when the new one is complete)."
        ),
    ] = False,
    allow_noop: Annotated[
        bool,
        typer.Option(
            "--allow-noop",
            help="Write even when the mapping converts no RNN or is for another framework (else exit 1).",
        ),
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Then prove it: restore both sides and compare.")
    ] = False,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="With --verify: largest difference taken as equal.")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="With --verify: approximate conversions fail too.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    report_html: Annotated[
        str | None,
        typer.Option(
            "--report", help="With --verify: also write the verification as a self-contained HTML page."
        ),
    ] = None,
) -> None:
    """Convert a checkpoint, renaming scopes and reshaping tensors by a mapping.

    Examples:

      ckptmap convert sample_checkpoints/tf1_lstm2 lstm.pt --mapping tf1-to-torch

      ckptmap convert model.ckpt out/model.ckpt --rename '^model_1/=model_3/'

      ckptmap convert model.ckpt model.pt -m tf1-to-torch --drop '^Variable' --overwrite

      ckptmap convert retrained.pt new.onnx --into exported.onnx
    """
    params = pairs(set_ or [], "--set", first=True)
    renames = pairs(rename or [], "--rename", first=False)
    if (tolerance is not None or strict or report_html) and not verify:
        raise UsageError("--tolerance, --strict and --report go with --verify.")
    bar = ProgressBar("Writing") if not (dry_run or json_output) else None
    try:
        report = api.convert(
            src,
            dst,
            mapping or None,
            params,
            renames,
            to,
            dry_run=dry_run,
            progress=bar.update if bar else None,
            shard_size=size(shard_size, "--shard-size"),
            drop=drop or (),
            keep_only=keep_only or (),
            overwrite=overwrite,
            allow_noop=allow_noop,
            into=into,
        )
    finally:
        if bar:
            bar.close()
    if not mapping:
        _hint_mapping(report)
    if not json_output:
        print("\n".join(display.conversion(report)))  # what was written, before anything verify says
        sys.stdout.flush()
    checked = None
    if verify and not dry_run:
        try:  # exactly what was converted; imports a framework, only now
            checked = api.verify(src, dst, mapping or [], params, renames, tolerance=tolerance, strict=strict)
        except CkptmapError as e:
            e.args = (f"{dst} was written, but could not be verified: {e}",)
            raise
    if checked and report_html:
        api.write_report(checked, report_html)
    if json_output:
        print(json.dumps({**report.to_dict(), "verify": checked.to_dict() if checked else None}, indent=2))
    elif checked:
        print("\n".join(verify_cmd.render_verify(checked)))
    if checked and not checked.ok:
        print(f"Error: {dst} was written but did NOT verify against {src}.", file=sys.stderr)
        raise typer.Exit(1)


def _hint_mapping(report: api.ConversionReport) -> None:
    """Between frameworks, no mapping keeps names the target cannot use: say which mapping would help."""
    src_fw, dst_fw = api.framework_of(report.source_format), api.framework_of(report.destination_format)
    if src_fw is None or dst_fw is None:
        return
    chain = api.builtin_chain(src_fw, dst_fw) if src_fw != dst_fw else ()
    if chain:
        use = " ".join(f"--mapping {name}" for name in chain)
        hint = f"no --mapping was given, so names are unchanged; for {dst_fw} names use {use}."
        print(f"Hint: {hint}", file=sys.stderr)
