"""`ckptmap convert SRC DST`: apply a mapping and write a checkpoint the target framework restores."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Annotated

import typer

from .. import api
from ..errors import CkptmapError, UsageError
from . import render, verify_cmd
from .options import pairs, size
from .progress import ProgressBar


def convert(
    src: Annotated[str, typer.Argument(help="Source checkpoint (any format ckptmap reads).")],
    dst: Annotated[
        str, typer.Argument(help="Destination: .pt/.pth/.bin, .safetensors, or a TF prefix (.ckpt).")
    ],
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
    to: Annotated[str | None, typer.Option("--to", help="Output format: tf, torch or safetensors.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    shard_size: Annotated[
        str | None,
        typer.Option("--shard-size", help="TF output: data shards of at most this size (e.g. 2GB)."),
    ] = None,
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
) -> None:
    """Convert a checkpoint, renaming scopes and reshaping tensors by a mapping.

    Examples:

      ckptmap convert sample_checkpoints/tf1_lstm2 lstm.pt --mapping tf1-to-torch

      ckptmap convert model.ckpt out/model.ckpt --rename '^model_1/=model_3/'

      ckptmap convert model.ckpt model.pt -m tf1-to-torch --drop '^Variable' --overwrite
    """
    params = pairs(set_ or [], "--set", first=True)
    renames = pairs(rename or [], "--rename", first=False)
    if (tolerance is not None or strict) and not verify:
        raise UsageError("--tolerance and --strict go with --verify.")
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
        )
    finally:
        if bar:
            bar.close()
    if not mapping:
        _hint_mapping(report)
    if not json_output:
        _print(report, src, dst, dry_run)  # what was written, before anything verification says
        sys.stdout.flush()
    checked = None
    if verify and not dry_run:
        from ..verification.run import verify as run_verify  # imports a framework: only now

        try:  # exactly what was converted
            checked = run_verify(src, dst, mapping or [], params, renames, tolerance=tolerance, strict=strict)
        except CkptmapError as e:
            e.args = (f"{dst} was written, but could not be verified: {e}",)
            raise
    if json_output:
        print(json.dumps({**report.to_dict(), "verify": checked.to_dict() if checked else None}, indent=2))
    elif checked:
        print("\n".join(verify_cmd.render_verify(checked)))
    if checked and not checked.ok:
        print(f"Error: {dst} was written but did NOT verify against {src}.", file=sys.stderr)
        raise typer.Exit(1)


def _hint_mapping(report: api.ConversionReport) -> None:
    """Between frameworks, no mapping keeps names the target cannot use: say which mapping would help."""
    from ..rules.mapping import builtin_for
    from ..verification.backends import framework_of

    try:
        src_fw, dst_fw = framework_of(report.source_format), framework_of(report.destination_format)
    except CkptmapError:
        return
    name = builtin_for(src_fw, dst_fw) if src_fw != dst_fw else None
    if name:
        hint = f"no --mapping was given, so names are unchanged; for {dst_fw} names use --mapping {name}."
        print(f"Hint: {hint}", file=sys.stderr)


# Reasons common enough that naming the tensors would only be noise.
_ROUTINE = ("optimizer slot", "training bookkeeping")


def _dropped_summary(dropped: list[tuple[str, str]]) -> str:
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


def _print(report: api.ConversionReport, src: str, dst: str, dry_run: bool) -> None:
    plan = report.plan
    used = ", ".join(plan.mappings) or "no mapping (names unchanged)"
    params_text = ", ".join(f"{k}={v}" for k, v in plan.params.items())
    verb = "Plan for" if dry_run else "Converted"
    print(
        f"{verb} {src} ({report.source_format}) -> {dst} ({report.destination_format}) with {used}"
        + (f" ({params_text})" if params_text else "")
    )
    for note in report.notes:
        print(f"Note: {note}")
    if dry_run:
        rows = [
            (t.name, render.shape(t.shape), t.dtype, "<- " + ", ".join(t.sources), t.how)
            for t in plan.targets
        ]
        for line in render.table(rows):
            print(line)
    counts = Counter(
        "kept" if t.how == "kept" else "renamed" if t.how == "renamed" else "converted" for t in plan.targets
    )
    written = f"{len(plan.targets)} tensors" + (
        "" if dry_run else f" written ({render.size(report.bytes_written)}) in {report.seconds:.2f} s"
    )
    print(f"  {written}: {counts['converted']} converted, {counts['renamed']} renamed, {counts['kept']} kept")
    if plan.dropped:
        print(f"  dropped {len(plan.dropped)}: {_dropped_summary(plan.dropped)}")
    kept = [t.name for t in plan.targets if t.how == "kept" and t.sources == (t.name,)]
    if kept and plan.mappings:
        print(
            f"  passed through unchanged: {', '.join(kept[:6])}"
            + (f" and {len(kept) - 6} more" if len(kept) > 6 else "")
        )
    for a in plan.approximations:
        print(f"  NOT EXACT ({a.scope}): {a.reason}")
    for path in report.files:
        print(f"  wrote {path}")
