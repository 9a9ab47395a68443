"""`ckptmap mappings [NAME]`: the built-in mappings, or one mapping in full: its file, parameters,
policies and every rule with its patterns, expressions and reasons."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import api
from . import render

if TYPE_CHECKING:  # pragma: no cover
    from ..rules.schema import CellRule, MappingSpec, MatchRule, RenameRule, Rule


def mappings(
    name: Annotated[str | None, typer.Argument(help="A built-in name or a YAML file to describe.")] = None,
) -> None:
    """List the built-in mappings, or describe one (file, parameters, policies, rules).

    Examples:

      ckptmap mappings

      ckptmap mappings tf1-to-torch
    """
    if name is None:
        rows = [(b.name, b.description) for b in api.builtin_mappings()]
        for line in render.table(rows, indent=""):
            print(line)
        print("\nDescribe one: ckptmap mappings NAME.  Use one: ckptmap convert SRC DST --mapping NAME")
        return
    print("\n".join(describe(api.mapping(name).spec)))


def describe(spec: MappingSpec) -> list[str]:
    """The mapping as a reader needs it: where it is, what it takes, and what each rule does."""
    lines = [f"{spec.name}: {spec.description}"]
    if spec.path is not None:
        lines.append(f"  file: {spec.path}")
    lines += [f"  includes: {f}" for f in spec.files if f != spec.path]
    if spec.source_framework or spec.target_framework:
        lines.append(f"  from {spec.source_framework or 'any'} to {spec.target_framework or 'any'}")
    for p in spec.params.values():
        lines += _wrapped(f"  param {p.name} = {p.default!r}" + (f"  {p.help}" if p.help else ""), "      ")
    lines.append(
        f"  unmatched weights: {spec.unmatched}; optimizer slots: {spec.slots}; "
        f"bookkeeping: {spec.bookkeeping}; unplaced: {spec.unplaced}"
    )
    lines += ["", f"Rules ({len(spec.rules)}, applied in order):"]
    for rule in spec.rules:
        lines += _rule(rule)
    return lines


def _rule(rule: Rule) -> list[str]:
    from ..rules.schema import CellRule, MatchRule, RenameRule

    approx = "  [approximate]" if rule.approximate else ""
    lines = [f"  {rule.where()}{approx}"]
    if isinstance(rule, RenameRule):
        lines += _rename(rule)
    elif isinstance(rule, CellRule):
        lines += _cell(rule)
    elif isinstance(rule, MatchRule):
        lines += _match(rule)
    for label, reason in (("refuse", rule.refuse), ("drop", rule.drop), ("approximate", rule.approximate)):
        if reason:
            lines += _wrapped(f"    {label}: {' '.join(reason.split())}", "      ")
    if rule.position:
        lines.append(f"    placed {rule.position} in the output")
    return lines


def _rename(rule: RenameRule) -> list[str]:
    rows = [("rename", regex.pattern, "->", replacement) for regex, replacement in rule.subs]
    return render.table(rows, indent="    ")


def _cell(rule: CellRule) -> list[str]:
    assert rule.cell is not None
    head = f"    cell {rule.cell.key}{_when(rule.when)}"
    if rule.target is not None:
        head += f" -> {rule.target.key}"
    rows = [(target, "=", expr.text) for target, expr in rule.make.items()]
    return [head, *render.table(rows, indent="      ")]


def _match(rule: MatchRule) -> list[str]:
    lines = [f"    match {regex.pattern}{_when(rule.when)}" for regex in rule.patterns]
    lines += [f"      with {alias} = {template.text}" for alias, template in rule.inputs.items()]
    if rule.rename_to is not None:
        lines.append(f"      -> {rule.rename_to.text}")
    rows = [(target.text, "=", expr.text) for target, expr in rule.make.items()]
    return lines + render.table(rows, indent="      ")


def _when(when: Mapping[str, Any]) -> str:
    # Spelled as in the YAML: `peepholes=true`, not Python's True.
    spelled = (f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in when.items())
    return " when " + ", ".join(spelled) if when else ""


def _wrapped(text: str, indent: str) -> list[str]:
    """Long help texts and reasons, wrapped to a terminal's width under their line."""
    wrapped = textwrap.wrap(
        text, width=100, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )
    return wrapped or [text]
