"""Composing a conversion: mappings in order, final renames, and the names a writer gives.

Each step is lazy (nothing is read) and yields a `Plan` step; `Plan.then` chains them, so the
plan of a whole conversion still says which source tensor every target came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import Any

from .errors import MappingError, UsageError
from .formats import registry
from .rules.mapping import Mapping
from .rules.mapping import load as load_mapping
from .rules.plan import Plan, PlannedTensor
from .tree import Checkpoint, TensorEntry

MappingLike = str | os.PathLike[str] | Mapping


def resolve_mappings(
    mapping: MappingLike | Sequence[MappingLike] | None, params: MappingABC[str, Any]
) -> list[Mapping]:
    """Mappings by name, path or object; each `params` entry goes to the mappings that declare it."""
    if mapping is None:
        items: list[MappingLike] = []
    elif isinstance(mapping, (str, os.PathLike, Mapping)):
        items = [mapping]
    else:
        items = list(mapping)
    loaded = [m if isinstance(m, Mapping) else load_mapping(m) for m in items]
    unclaimed = set(params)
    result = []
    for m in loaded:
        mine = {k: v for k, v in params.items() if k in m.spec.params}
        unclaimed -= set(mine)
        result.append(Mapping(m.spec, {**m.params, **mine}) if mine else m)
    if unclaimed:
        names = ", ".join(m.name for m in loaded) or "no mapping"
        raise UsageError(f"--set {', '.join(sorted(unclaimed))}: not a parameter of {names}.")
    return result


def apply(
    ckpt: Checkpoint,
    mappings: Sequence[Mapping],
    rename: MappingABC[str, str] | None = None,
) -> tuple[Checkpoint, Plan]:
    """Apply mappings in order, then the final renames; lazy, nothing is read."""
    plan = Plan(
        [], {}, [PlannedTensor(e.name, e.shape, e.dtype, (e.name,), "kept") for e in ckpt.entries.values()]
    )
    for m in mappings:
        ckpt, step = m.run(ckpt)
        plan = plan.then(step)
    if rename:
        ckpt, step = rename_all(ckpt, rename)
        plan = plan.then(step)
    return ckpt, plan


def rename_all(ckpt: Checkpoint, rename: MappingABC[str, str]) -> tuple[Checkpoint, Plan]:
    """Apply `regex -> replacement` renames (the CLI's --rename) to every name, in order."""
    from .rules import regexes

    compiled = []
    for pattern, replacement in rename.items():
        try:
            compiled.append((regexes.compile(pattern, search=True), replacement))
        except regexes.UnsafeRegex as e:
            raise UsageError(f"--rename '{pattern}={replacement}': {e}.") from None
    budget = regexes.Budget()
    entries: list[TensorEntry] = []
    targets: list[PlannedTensor] = []
    seen: dict[str, str] = {}
    for entry in ckpt.entries.values():
        new = entry.name
        for regex, replacement in compiled:
            try:
                new = regex.sub(replacement, new, budget)
            except re.error as e:
                raise UsageError(f"--rename '{regex.pattern}={replacement}': {e}.") from None
            except regexes.NameTooLong as e:
                raise MappingError(
                    f"--rename '{regex.pattern}={replacement}' on '{entry.name[:100]}': {e}."
                ) from None
        if new in seen:
            raise MappingError(f"--rename gives both '{seen[new]}' and '{entry.name}' the name '{new}'.")
        seen[new] = entry.name
        entries.append(entry.renamed(new, slot_of=entry.slot_of))
        targets.append(
            PlannedTensor(
                new,
                entry.shape,
                entry.dtype,
                (entry.name,),
                "kept" if new == entry.name else "renamed",
                "--rename" if new != entry.name else None,
            )
        )
    out = Checkpoint(
        entries,
        format=ckpt.format,
        path=ckpt.path,
        files=ckpt.files,
        notes=ckpt.notes,
        metadata=ckpt.metadata,
        classify=False,
    )
    return out, Plan(["--rename"], {}, targets)


def as_written(ckpt: Checkpoint, plan: Plan, fmt: registry.FormatSpec) -> Plan:
    """`plan` followed by the renames format `fmt`'s writer makes on the way out (if any)."""
    written = getattr(fmt.load(), "written_names", None)
    renamed = written(ckpt) if written else {}
    if all(old == new for old, new in renamed.items()):
        return plan
    step = []
    for e in ckpt.entries.values():
        new = renamed.get(e.name, e.name)
        how = "kept" if new == e.name else "renamed"
        step.append(PlannedTensor(new, e.shape, e.dtype, (e.name,), how, f"the {fmt.name} writer"))
    return plan.then(Plan([], {}, step))
