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
        from .suggest import did_you_mean

        names = ", ".join(m.name for m in loaded) or "no mapping"
        valid = sorted({p for m in loaded for p in m.spec.params})
        hints = "".join(did_you_mean(k, valid) for k in sorted(unclaimed)) or "."
        raise UsageError(
            f"--set {', '.join(sorted(unclaimed))}: not a parameter of {names}{hints} "
            f"Parameters: {', '.join(valid) or 'none'}."
        )
    return result


def apply(
    ckpt: Checkpoint,
    mappings: Sequence[Mapping],
    rename: MappingABC[str, str] | None = None,
    *,
    drop: Sequence[str] = (),
    keep_only: Sequence[str] = (),
) -> tuple[Checkpoint, Plan]:
    """Apply mappings in order, then `--drop`/`--keep-only` and the final renames; lazy, nothing is read."""
    plan = Plan(
        [], {}, [PlannedTensor(e.name, e.shape, e.dtype, (e.name,), "kept") for e in ckpt.entries.values()]
    )
    for m in mappings:
        ckpt, step = m.run(ckpt)
        plan = plan.then(step)
    if drop or keep_only:
        ckpt, step = without(ckpt, _selected_out(ckpt, drop, keep_only), "--drop/--keep-only")
        plan = plan.then(step)
    if rename:
        ckpt, step = rename_all(ckpt, rename)
        plan = plan.then(step)
    return ckpt, plan


def _selected_out(ckpt: Checkpoint, drop: Sequence[str], keep_only: Sequence[str]) -> dict[str, str]:
    """Names `--drop REGEX` matches or no `--keep-only REGEX` matches (searched, as --rename), with
    why; a pattern that matches no name is an error: surgery that did nothing is not a success."""
    from .rules import regexes

    def compiled(option: str, patterns: Sequence[str]) -> list[regexes.Regex]:
        out = []
        for pattern in patterns:
            try:
                out.append(regexes.compile(pattern, search=True))
            except (regexes.UnsafeRegex, re.error) as e:
                raise UsageError(f"{option} '{pattern}': {e}.") from None
        return out

    budget = regexes.Budget()
    names = list(ckpt.entries)

    def matches(regex: regexes.Regex) -> set[str]:
        try:
            return {n for n in names if regex.search(n, budget)}
        except regexes.NameTooLong as e:
            raise MappingError(f"'{regex.pattern}': {e}.") from None

    out: dict[str, str] = {}
    for option, patterns in (("--drop", drop), ("--keep-only", keep_only)):
        hits = []
        for regex in compiled(option, patterns):
            found = matches(regex)
            if not found:
                raise UsageError(
                    f"{option} '{regex.pattern}' matches no tensor name; the names here are "
                    "those after the mapping (see --dry-run)."
                )
            hits.append(found)
        if option == "--drop":
            out.update((n, f"--drop '{p}'") for p, found in zip(drop, hits, strict=True) for n in found)
        elif hits:
            kept = set().union(*hits)
            out.update((n, "--keep-only") for n in names if n not in kept and n not in out)
    return out


def without(
    ckpt: Checkpoint, dropped: MappingABC[str, str], label: str | None = None
) -> tuple[Checkpoint, Plan]:
    """`ckpt` less the tensors in `dropped` (name -> why), and the plan step that says so."""
    entries = [e for e in ckpt.entries.values() if e.name not in dropped]
    out = _with_entries(ckpt, entries)
    targets = [PlannedTensor(e.name, e.shape, e.dtype, (e.name,), "kept") for e in entries]
    return out, Plan([label] if label else [], {}, targets, [(n, why) for n, why in dropped.items()])


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
    matched: set[int] = set()  # patterns that matched some name
    for entry in ckpt.entries.values():
        new = entry.name
        for k, (regex, replacement) in enumerate(compiled):
            try:
                before, new = new, regex.sub(replacement, new, budget)
                if k not in matched and (new != before or regex.search(before, budget)):
                    matched.add(k)
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
    unmatched = [f"'{r.pattern}={repl}'" for k, (r, repl) in enumerate(compiled) if k not in matched]
    if unmatched:
        raise UsageError(
            f"--rename {', '.join(unmatched)} matches no tensor name; --rename applies to the names "
            "after the mapping (see --dry-run)."
        )
    out = _with_entries(ckpt, entries)
    return out, Plan(["--rename"], {}, targets)


def _with_entries(ckpt: Checkpoint, entries: list[TensorEntry]) -> Checkpoint:
    """`ckpt`'s files and metadata with other entries, classified as they already are."""
    return Checkpoint(
        entries,
        format=ckpt.format,
        path=ckpt.path,
        files=ckpt.files,
        notes=ckpt.notes,
        metadata=ckpt.metadata,
        classify=False,
    )


def as_written(
    ckpt: Checkpoint, plan: Plan, fmt: registry.FormatSpec, options: MappingABC[str, Any] | None = None
) -> Plan:
    """`plan` followed by the renames format `fmt`'s writer (given `options`) makes on the way out."""
    written = getattr(fmt.load(), "written_names", None)
    renamed = written(ckpt, **(options or {})) if written else {}
    if all(old == new for old, new in renamed.items()):
        return plan
    step = []
    for e in ckpt.entries.values():
        new = renamed.get(e.name, e.name)
        how = "kept" if new == e.name else "renamed"
        step.append(PlannedTensor(new, e.shape, e.dtype, (e.name,), how, f"the {fmt.name} writer"))
    return plan.then(Plan([], {}, step))
