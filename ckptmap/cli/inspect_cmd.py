"""`ckptmap inspect PATH`: the scope tree with shapes, dtypes and sizes, and the RNNs found."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .. import api
from ..cells.model import RNN
from ..errors import UsageError
from ..recognition import legacy_rnns
from ..tree import Checkpoint, TensorEntry, build_tree
from . import render

FORMAT_NAMES = {
    "tf": "TensorFlow checkpoint",
    "tf-v1": "TensorFlow V1 checkpoint",
    "torch": "PyTorch file",
    "torch-legacy": "PyTorch legacy file",
    "safetensors": "safetensors file",
}


def inspect(
    path: Annotated[str, typer.Argument(help="Checkpoint: TF prefix, .index, directory, .pt/.pth/.bin, ...")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    filter: Annotated[str | None, typer.Option("--filter", help="Only names matching this regex.")] = None,
) -> None:
    """Show what a checkpoint holds and which RNNs are in it. Reads only the index or header.

    Example: ckptmap inspect sample_checkpoints/tf1_lstm2
    """
    ckpt = api.load(path)
    entries = _filtered(ckpt, filter)
    names = {e.name for e in entries}
    rnns = [r for r in ckpt.rnns if names.intersection(r.tensor_names)]
    legacy = [] if filter else legacy_rnns(ckpt)
    if json_output:
        print(json.dumps(_json(ckpt, entries, rnns, legacy), indent=2))
        return
    total = sum(e.nbytes for e in entries)
    weights = sum(e.kind == "weight" for e in entries)
    kind = FORMAT_NAMES.get(ckpt.format, ckpt.format)
    print(f"{path}: {kind}, {len(entries)} tensors ({weights} weights), {render.size(total)}")
    for note in ckpt.notes:
        print(f"Note: {note}")
    print()
    for line in render.tree(build_tree(entries)):
        print(line)
    print()
    _print_rnns(rnns, legacy)
    _print_not_weights(entries)


def _filtered(ckpt: Checkpoint, pattern: str | None) -> list[TensorEntry]:
    if not pattern:
        return list(ckpt.entries.values())
    from ..rules import regexes  # bounded: names come from the file, the pattern from the user

    try:
        regex = regexes.compile(pattern, search=True)
        budget = regexes.Budget()
        return [e for e in ckpt.entries.values() if regex.search(e.name, budget)]
    except (regexes.UnsafeRegex, regexes.NameTooLong) as e:
        raise UsageError(f"--filter '{pattern}': {e}.") from None


def _print_rnns(rnns: list[RNN], legacy: list[RNN]) -> None:
    if rnns:
        print(f"RNNs ({len(rnns)}):")
        for rnn in rnns:
            print(f"  {rnn.describe()}")
            if rnn.framework == "tf1":
                scopes = sorted({c.scope for c in rnn.cells})
                more = f" ... ({len(scopes)} cells)" if len(scopes) > 1 else ""
                print(f"      {scopes[0]}{more}")
    elif not legacy:
        print("RNNs: none recognized")
    if legacy:
        print(
            f"RNNs under TF <= 1.1 names ({len(legacy)}): tf1-to-torch renames these itself; for a TF output"
        )
        print("use --mapping tf1-legacy-names")
        for rnn in legacy:
            print(f"  {rnn.describe()}")


def _print_not_weights(entries: list[TensorEntry]) -> None:
    slots = sum(e.kind == "slot" for e in entries)
    bookkeeping = [e.name for e in entries if e.kind == "bookkeeping"]
    parts = []
    if slots:
        parts.append(f"{slots} optimizer slot{'s' if slots != 1 else ''}")
    if bookkeeping:
        shown = ", ".join(bookkeeping[:3]) + (", ..." if len(bookkeeping) > 3 else "")
        parts.append(f"{len(bookkeeping)} bookkeeping ({shown})")
    if parts:
        print(f"Not weights: {'; '.join(parts)}")


def _json(ckpt: Checkpoint, entries: list[TensorEntry], rnns: list[RNN], legacy: list[RNN]) -> dict:
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
            }
            for e in entries
        ],
        "rnns": [r.to_dict() for r in rnns],
        "legacy_name_rnns": [r.to_dict() for r in legacy],
        "notes": ckpt.notes,
        "total_bytes": sum(e.nbytes for e in entries),
    }
