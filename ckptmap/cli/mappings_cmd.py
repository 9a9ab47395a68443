"""`ckptmap mappings [NAME]`: the built-in mappings, or one mapping's parameters and rules."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import api
from . import render


def mappings(
    name: Annotated[str | None, typer.Argument(help="A built-in name or a YAML file to describe.")] = None,
) -> None:
    """List the built-in mappings, or describe one (parameters, policies, rules)."""
    from ..rules.mapping import builtins

    if name is None:
        rows = [(b.name, b.description) for b in builtins()]
        for line in render.table(rows, indent=""):
            print(line)
        print("\nDescribe one: ckptmap mappings NAME.  Use one: ckptmap convert SRC DST --mapping NAME")
        return
    m = api.mapping(name)
    spec = m.spec
    print(f"{spec.name}: {spec.description}")
    for p in spec.params.values():
        print(f"  param {p.name} = {p.default!r}" + (f"  {p.help}" if p.help else ""))
    policies = f"unmatched weights: {spec.unmatched}; optimizer slots: {spec.slots}"
    print(f"  {policies}; bookkeeping: {spec.bookkeeping}")
    for rule in spec.rules:
        print(f"  {rule.where()}: {_summary(rule)}")


def _summary(rule: object) -> str:
    from ..rules.schema import CellRule, MatchRule, RenameRule

    if isinstance(rule, RenameRule):
        return f"rename {len(rule.subs)} pattern(s)"
    if isinstance(rule, CellRule):
        assert rule.cell is not None
        when = " when " + ", ".join(f"{k}={v}" for k, v in rule.when.items()) if rule.when else ""
        action = (
            f"refuse ({rule.refuse})"
            if rule.refuse
            else f"drop ({rule.drop})"
            if rule.drop
            else f"-> {rule.target.key if rule.target else '?'} ({', '.join(rule.make)})"
        )
        approx = "  [approximate]" if rule.approximate else ""
        return f"cell {rule.cell.key}{when} {action}{approx}"
    if isinstance(rule, MatchRule):
        patterns = " | ".join(p.pattern for p in rule.patterns)
        action = "refuse" if rule.refuse else "drop" if rule.drop else "rename" if rule.rename_to else "make"
        return f"match {patterns} -> {action}"
    return "?"
