"""`ckptmap inspect PATH...`: the scope tree with shapes, dtypes and sizes, and the RNNs found."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from .. import api, display
from ..errors import CkptmapError, UsageError
from .progress import ProgressBar

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from .. import RNN, Checkpoint, TensorEntry

    Filter = Callable[[Checkpoint], list[TensorEntry]]


def inspect(
    paths: Annotated[
        list[str], typer.Argument(help="Checkpoints: TF prefix, .index, directory, .pt/.pth/.bin, ...")
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    filter: Annotated[
        str | None,
        typer.Option("--filter", help="Only tensors whose name, or key in the file, matches this regex."),
    ] = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", help="Also show optimizer slots and bookkeeping in the tree (--json always lists them)."
        ),
    ] = False,
    report_html: Annotated[
        str | None,
        typer.Option(
            "--report",
            help="Also write a self-contained HTML page: bytes by scope (treemap), RNNs, statistics and "
            "histograms of the weights. One PATH only.",
        ),
    ] = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Also read every tensor shown and give min, max, mean, std, zeros, NaN and Inf "
            "(block by block, in bounded memory).",
        ),
    ] = False,
) -> None:
    """Show what checkpoints hold and which RNNs are in them. Reads only the index or header
    (with --stats, every tensor shown).

    Several paths are shown in turn; if one cannot be read, the others still are (exit 2).

    Examples:

      ckptmap inspect sample_checkpoints/tf1_lstm2

      ckptmap inspect model.pt --filter 'rnn\\.weight_ih'
    """
    if report_html and len(paths) != 1:
        raise UsageError("--report draws one checkpoint; give one PATH.")
    pick = api.name_filter(filter, option="--filter") if filter else None  # a bad one: wrong for every path
    results, failed = [], 0
    for k, path in enumerate(paths):
        try:
            result = _inspect(path, pick, show_all, json_output, stats)
        except CkptmapError as e:
            if len(paths) == 1:
                raise
            failed += 1
            sys.stdout.flush()  # the error lands after what was printed before it
            print(f"Error: {e}", file=sys.stderr)
            if e.hint:
                print(f"Hint: {e.hint}", file=sys.stderr)
            continue
        if json_output:
            results.append(result)
        else:
            print(("\n" if k else "") + result)
    if json_output:
        print(json.dumps(results[0] if len(paths) == 1 else results, indent=2))
    if report_html:
        bar = ProgressBar("Reading")
        try:
            api.write_inspect_report(api.load(paths[0]), report_html, progress=bar.update)
        finally:
            bar.close()
    if failed:
        print(f"Error: {failed} of {len(paths)} checkpoints could not be read.", file=sys.stderr)
        raise typer.Exit(2)


def _inspect(path: str, pick: Filter | None, show_all: bool, json_output: bool, stats: bool) -> str | dict:
    """One checkpoint: its text view, or its JSON data."""
    ckpt = api.load(path)
    entries = pick(ckpt) if pick else list(ckpt.entries.values())
    names = {e.name for e in entries}
    rnns = [r for r in ckpt.rnns if names.intersection(r.tensor_names)]
    legacy = [] if pick else api.legacy_rnns(ckpt)
    shown = entries if show_all or json_output else [e for e in entries if e.kind == "weight"]
    numbers = _stats(shown) if stats else None
    if json_output:
        return _json(ckpt, entries, rnns, legacy, numbers)
    lines = display.checkpoint(ckpt, label=path, entries=entries, rnns=rnns, legacy=legacy, show_all=show_all)
    if numbers is not None:
        lines += ["", *display.stats(numbers)]
    return "\n".join(lines)


def _stats(entries: list[TensorEntry]) -> list:
    bar = ProgressBar("Reading")
    try:
        return api.stats(entries, progress=bar.update)
    finally:
        bar.close()


def _json(
    ckpt: Checkpoint, entries: list[TensorEntry], rnns: list[RNN], legacy: list[RNN], numbers: list | None
) -> dict:
    by_name = {s.name: s.to_dict() for s in numbers or ()}
    return {
        "format": ckpt.format,
        "path": str(ckpt.path),
        "tensors": [
            {
                "name": e.name,
                "shape": list(e.shape),
                "dtype": e.dtype,
                "kind": e.kind,
                "key": e.key,
                "bytes": e.nbytes,
                **({"stats": by_name[e.name]} if e.name in by_name else {}),
            }
            for e in entries
        ],
        "rnns": [r.to_dict() for r in rnns],
        "legacy_name_rnns": [r.to_dict() for r in legacy],
        "notes": ckpt.notes,
        "total_bytes": sum(e.nbytes for e in entries),
    }
