"""Mapping files: YAML in, validated rule dataclasses out, every error with `file:line`.

A mapping has parameters, policies for what no rule takes, and an ordered list of rules of three
kinds (the key that is present says which):

    rename: {regex: replacement, ...}      rewrite names in place (re.sub), in order; consumes nothing
    cell: tf1.lstm   to: torch.lstm        convert every recognized cell of that kind, role by role
    make: {weight_ih: <expr>, ...}         (`as: <class>`: build the target as that class of the kind,
                                           e.g. CudnnCompatibleGRUCell, not the framework's default)
    match: <regex>   to: <template>        rename one tensor, or make targets from it (`to: {name: expr}`)

`cell` and `match` rules may instead `drop: <why>` or `refuse: <why>`, may be limited with
`when:` (cells) and may declare `approximate: <why>`. Everything is checked when the file loads:
unknown keys, bad regexes, unknown ops and names in expressions, templates naming groups the
regex does not have; the message names the rule and its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import cell_kinds, yamldoc
from ..cells import layouts
from ..cells.recognize import family
from ..errors import RuleError, UsageError
from . import regexes
from .expr import Expr, ExprError
from .regexes import Budget, Regex
from .template import Template, TemplateError

POLICIES = {
    "unmatched": ("keep", "drop", "error"),
    "slots": ("follow", "drop"),
    "bookkeeping": ("keep", "drop"),
    # A tensor the output format has no place for (a bare `Variable` in a Keras file, which keeps
    # weights per layer): stop with the writer's reason, or drop it and say so in the report.
    "unplaced": ("error", "drop"),
}
TOP_KEYS = {"name", "description", "from", "to", "params", "include", "rules", *POLICIES}
# Conditions of a match rule on the tensor it matched.
MATCH_WHEN_KEYS = {"ndim": int}
# Conditions of a cell rule on the RNN: the facts its kind has (cell_kinds), all of them for a
# layout that names no kind.
WHEN_KEYS = cell_kinds.when_facts()
CELL_DIMS = ("input", "units", "proj", "recurrent", "layer")
_GATE_LETTERS = {g for layout_ in layouts.LAYOUTS for g in layout_.gates}


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class Rule:
    index: int
    line: int
    source_file: str
    name: str | None
    drop: str | None
    refuse: str | None
    approximate: str | None
    # Where the rule's targets go among the others: "first", "last", or None, where their sources
    # were. For sources whose order means nothing (a TF checkpoint's names are sorted) and targets
    # whose order does (a Keras 2 file loads layer by layer, in order): embeddings first, heads last.
    position: str | None = None

    def where(self) -> str:
        label = f" '{self.name}'" if self.name else ""
        return f"rule {self.index}{label} ({self.source_file}:{self.line})"


@dataclass(frozen=True)
class RenameRule(Rule):
    subs: tuple[tuple[Regex, str], ...] = ()
    # True for every name a pattern of `subs` matches: names it is false for are left as they are.
    names: NameFilter | None = None


@dataclass(frozen=True)
class CellRule(Rule):
    cell: layouts.GateLayout | None = None
    when: Mapping[str, Any] = field(default_factory=dict)
    target: layouts.GateLayout | None = None
    target_class: str = ""  # `as:`: the class of the kind the target is (cell_kinds.py); "" the default
    make: Mapping[str, Expr] = field(default_factory=dict)


@dataclass(frozen=True)
class MatchRule(Rule):
    patterns: tuple[Regex, ...] = ()
    when: Mapping[str, Any] = field(default_factory=dict)
    rename_to: Template | None = None
    make: Mapping[Template, Expr] = field(default_factory=dict)
    inputs: Mapping[str, Template] = field(default_factory=dict)
    unpack: str | None = None  # rules/unpack.py: `to:` then names each part with `{part}`


@dataclass(frozen=True)
class MappingSpec:
    name: str
    description: str
    path: Path | None
    source_framework: str | None
    target_framework: str | None
    params: Mapping[str, Param]
    unmatched: str
    slots: str
    bookkeeping: str
    rules: tuple[Rule, ...]
    unplaced: str = "error"
    # The file itself and every file it includes, in order: what decides the mapping (batch's hash).
    files: tuple[Path, ...] = ()


def load_file(path: Path, label: str | None = None, *, resolve: Resolver | None = None) -> MappingSpec:
    text = yamldoc.read_file(path, "mapping file", RuleError)  # regular files only, size bounded
    return parse(text, label or str(path), path=path, resolve=resolve)


# Finds an included mapping: (name or path, the including file or None) -> its spec.
Resolver = Callable[[str, "Path | None"], "MappingSpec"]


def parse(text: str, label: str, *, path: Path | None = None, resolve: Resolver | None = None) -> MappingSpec:
    try:
        doc = yamldoc.load(text)
    except yamldoc.YAMLProblem as e:
        if e.in_document:
            raise RuleError(f"{label}: line {e.line}: {e}") from None
        raise RuleError(f"{e.where(label)}: {e}.") from None
    if not isinstance(doc, dict):
        raise RuleError(f"{label}: a mapping file must be a YAML mapping with a 'rules' list.")
    _no_unknown(doc, TOP_KEYS, label, "the mapping")
    included = _includes(doc, label, path, resolve)
    params = {name: p for spec in included for name, p in spec.params.items()}
    params.update(_params(doc.get("params") or {}, label))
    raw_rules = doc.get("rules") or []  # none: a mapping of policies, or of what it includes
    if not isinstance(raw_rules, list):
        raise RuleError(f"{label}:{doc.key_lines.get('rules', 1)}: 'rules' must be a list.")
    # `- include: tf1-to-torch` among the rules runs that mapping's rules there (after the renames
    # before it: what `ckptmap align` drafts), and brings its parameters like a top-level include.
    placed = {
        i: _placed_include(raw, label, path, resolve) for i, raw in enumerate(raw_rules) if _is_include(raw)
    }
    for spec in placed.values():
        params.update({name: p for name, p in spec.params.items() if name not in params})
    policies = {}
    for key, allowed in POLICIES.items():
        # Unset, a policy is the last included mapping's, else the default: `include: [tf1-to-torch]`
        # in a user's file drops optimizer slots as tf1-to-torch does.
        inherited = next((getattr(spec, key) for spec in reversed(included)), allowed[0])
        value = doc.get(key, inherited)
        if value not in allowed:
            raise RuleError(
                f"{label}:{doc.key_lines[key]}: {key} must be one of {', '.join(allowed)}, not '{value}'."
            )
        policies[key] = value
    rules = tuple(r for spec in included for r in spec.rules)
    for i, raw in enumerate(raw_rules):
        rules += placed[i].rules if i in placed else (_rule(i + 1, raw, label, params),)
    included = [*included, *placed.values()]
    name = str(doc.get("name") or (path.stem if path else label))
    files = tuple(dict.fromkeys([*([path] if path else []), *(f for spec in included for f in spec.files)]))
    return MappingSpec(
        name,
        str(doc.get("description", "")).strip(),
        path,
        doc.get("from"),
        doc.get("to"),
        params,
        rules=rules,
        files=files,
        **policies,
    )


def _is_include(raw: Any) -> bool:
    return isinstance(raw, dict) and "include" in raw


def _placed_include(raw: dict, label: str, path: Path | None, resolve: Resolver | None) -> MappingSpec:
    """The mapping a `- include: NAME` rule runs at its place."""
    if set(raw) != {"include"} or not isinstance(raw["include"], str):
        raise RuleError(f"{label}:{raw.line}: an 'include' rule names one mapping and nothing else.")
    if resolve is None:
        raise RuleError(f"{label}:{raw.line}: 'include' is not available here.")
    try:
        return resolve(raw["include"], path)
    except UsageError as e:
        raise RuleError(f"{label}:{raw.line}: {e}") from None


def _includes(doc: dict, label: str, path: Path | None, resolve: Resolver | None) -> list[MappingSpec]:
    """Mappings whose parameters and rules come first (`include: [tf1-legacy-names]`)."""
    names = doc.get("include") or []
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RuleError(f"{label}:{doc.key_lines['include']}: 'include' lists mapping names or files.")
    if names and resolve is None:
        raise RuleError(f"{label}:{doc.key_lines['include']}: 'include' is not available here.")
    specs = []
    for name in names:
        try:
            specs.append(resolve(name, path))  # type: ignore[misc]
        except UsageError as e:  # an unknown name: say which file asked for it
            raise RuleError(f"{label}:{doc.key_lines['include']}: {e}") from None
    return specs


def _params(raw: Any, label: str) -> dict[str, Param]:
    if not isinstance(raw, dict):
        raise RuleError(f"{label}: 'params' must map names to defaults.")
    params = {}
    for name, spec in raw.items():
        line = raw.key_lines[name]
        if isinstance(spec, dict):
            _no_unknown(spec, {"default", "help"}, label, f"parameter '{name}'")
            if "default" not in spec:
                raise RuleError(f"{label}:{line}: parameter '{name}' needs a default.")
            params[name] = Param(name, spec["default"], str(spec.get("help", "")))
        else:
            params[name] = Param(name, spec)
        if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
            raise RuleError(f"{label}:{line}: parameter name '{name}' must be an identifier.")
    return params


_RULE_KEYS = {
    "name",
    "rename",
    "cell",
    "when",
    "to",
    "make",
    "match",
    "inputs",
    "drop",
    "refuse",
    "approximate",
    "position",
    "unpack",
    "as",
}
POSITIONS = ("first", "last")


def _rule(index: int, raw: Any, label: str, params: Mapping[str, Param]) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(f"{label}: rule {index} must be a mapping (got {raw!r}).")
    where = f"rule {index} ({label}:{raw.line})"
    _no_unknown(raw, _RULE_KEYS, label, f"rule {index}")
    kinds = [k for k in ("rename", "cell", "match") if k in raw]
    if len(kinds) != 1:
        raise RuleError(f"{where}: a rule has exactly one of 'rename', 'cell' or 'match'.")
    common = dict(
        index=index,
        line=raw.line,
        source_file=label,
        name=raw.get("name"),
        drop=_text(raw, "drop"),
        refuse=_text(raw, "refuse"),
        approximate=_text(raw, "approximate"),
    )
    try:
        common["position"] = _position(raw)
        if kinds[0] == "rename":
            return _rename_rule(raw, common)
        if kinds[0] == "cell":
            return _cell_rule(raw, common, params)
        return _match_rule(raw, common, params)
    except (ExprError, TemplateError, RuleError) as e:
        raise RuleError(f"{where}: {e}") from None


def _position(raw: dict) -> str | None:
    value = raw.get("position")
    if value is not None and value not in POSITIONS:
        raise RuleError(f"'position' is first or last, not {value!r}")
    return value


def _rename_rule(raw: dict, common: dict) -> RenameRule:
    extra = set(raw) - {"rename", "name"}
    if extra:
        raise RuleError(f"a rename rule takes only 'rename' (and 'name'), not {', '.join(sorted(extra))}")
    table = raw["rename"]
    if not isinstance(table, dict) or not table:
        raise RuleError("'rename' maps regexes to replacements")
    subs = tuple((_regex(p, table.key_lines[p], search=True), str(r)) for p, r in table.items())
    return RenameRule(**common, subs=subs, names=NameFilter([p for p, _ in subs]))


class NameFilter:
    """A quick test that is true for every name some pattern of a rename rule matches (and maybe
    others): one substring test per pattern with a literal it cannot match without ("Linear/Matrix"
    in `(^|/)GRUCell/Gates/Linear/Matrix$`), one joined regex for the rest. A checkpoint's names
    mostly match nothing, and a regex search per name and pattern is what inspect spent its time on.
    Every regex here is bounded (`regexes.Regex`): a name too long for one raises NameTooLong.
    """

    def __init__(self, patterns: list[Regex]) -> None:
        self.literals: list[str] = []
        rest: list[Regex] = []
        for p in patterns:
            # Under (?i) a match may differ in case; under (?x) the pattern's spaces are not text.
            literal = _required_literal(p.pattern) if not p.flags & (re.IGNORECASE | re.VERBOSE) else None
            if literal:
                self.literals.append(literal)
            else:
                rest.append(p)
        # Joined, groups are renumbered, which breaks backreferences, and mid-pattern global
        # flags are refused: patterns like that are searched one by one.
        joinable = [p for p in rest if not re.search(r"\\\d|\(\?P=|\(\?[aiLmsux]+\)", p.pattern)]
        self.regexes = [p for p in rest if p not in joinable] + _joined(joinable, "")
        # Searched over all names joined by newlines, with ^ and $ at each line, a pattern finds
        # every name it would find alone (and maybe matches across two, which only costs a full
        # run). Not so for \A, \Z or negative lookarounds, which see the newline; those go name by name.
        lines = [p for p in joinable if not re.search(r"\\[AZz]|\(\?<?!", p.pattern)]
        self._by_name = [p for p in rest if p not in lines]
        self._over_lines = _joined(lines, "(?m)")

    def may_match(self, name: str, budget: Budget | None = None) -> bool:
        return any(lit in name for lit in self.literals) or any(r.search(name, budget) for r in self.regexes)

    def may_match_any(self, names: Sequence[str], budget: Budget | None = None) -> bool:
        """Whether `may_match` holds for some of `names`, tested on all of them at once."""
        text = "\n".join(names)
        over_lines = self._over_lines
        # Names that hold line breaks are not lines; text longer than the joined regex's bound is
        # searched name by name, each within its own.
        if any("\n" in name for name in names) or any(len(text) > r.max_chars for r in over_lines):
            return any(self.may_match(name, budget) for name in names)
        return (
            any(lit in text for lit in self.literals)  # found within one name (or across two: harmless)
            or any(r.search(text, budget) is not None for r in over_lines)
            or any(r.search(name, budget) for r in self._by_name for name in names)
        )


def _joined(patterns: list[Regex], flags: str) -> list[Regex]:
    """`patterns` as one alternation (one search instead of one each), or as they are if joined
    they would exceed the bound on backtracking together."""
    if not patterns:
        return []
    try:
        return [regexes.compile(flags + "|".join(f"(?:{p.pattern})" for p in patterns), search=True)]
    except regexes.UnsafeRegex:
        return [regexes.compile(flags + p.pattern, search=True) for p in patterns]


_SPECIAL = set("\\.^$*+?{}[]|()")


def _required_literal(text: str) -> str | None:
    """Text every match of the regex `text` contains: its longest run of plain characters outside
    any group ("/weights" in `(^|/)(a|b)/weights$`), or None when there is none or a top-level `|`
    makes every part optional."""
    runs, run, depth, i = [], "", 0, 0
    while i < len(text):
        char = text[i]
        if depth == 0 and char not in _SPECIAL:
            run += char
            i += 1
            continue
        if char in "*?{" and depth == 0:
            run = run[:-1]  # the character before a quantifier may be missing
        runs.append(run)
        run = ""
        if char == "\\":
            i += 1  # an escaped character: not plain, and not special
        elif char == "[":  # a class; a `]` first (after any `^`) is a member, not its end
            first = i + 2 if text.startswith("^", i + 1) else i + 1
            i = text.find("]", first + 1)
            if i < 0:
                return None
        elif char == "{" and depth == 0:
            i = max(i, text.find("}", i))  # a repeat count is not text to look for
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            return None
        i += 1
    return max([*runs, run], key=len) or None


def _cell_rule(raw: dict, common: dict, params: Mapping[str, Param]) -> CellRule:
    _only(raw, "a cell rule", {"inputs", "unpack"})  # `match` with `cell` is refused earlier
    source = layouts.layout(str(raw["cell"]))
    of_kind = source.cell in cell_kinds.KIND_NAMES
    facts = cell_kinds.kind(source.cell).when_facts if of_kind else WHEN_KEYS
    # A boolean parameter is a condition too: `when: {cudnn: true}` picks a rule by --set cudnn=true.
    switches = {name: bool for name, p in params.items() if isinstance(p.default, bool) and name not in facts}
    when = _when(raw, {**facts, **switches})
    _one_action(raw, common, "make")
    target, target_class, make = None, "", {}
    if "make" in raw:
        if not isinstance(raw["make"], dict) or not raw["make"]:
            raise RuleError("'make' maps the target cell's tensors to expressions")
        if "to" not in raw:
            raise RuleError("a cell rule with 'make' needs 'to: <framework>.<cell>'")
        target = layouts.layout(str(raw["to"]))
        target_class = _target_class(raw, target)
        allowed_roles = family(target.framework).roles(target.cell)
        known = (
            set(family(source.framework).roles(source.cell)) | set(CELL_DIMS) | set(params) | _GATE_LETTERS
        )
        for role, text in raw["make"].items():
            if role not in allowed_roles:
                raise RuleError(
                    f"line {raw['make'].key_lines[role]}: '{role}' is not a tensor of a {target.key} "
                    f"cell (it has {', '.join(allowed_roles)})"
                )
            make[role] = _expr(text, known, raw["make"].key_lines[role])
    elif "as" in raw:
        raise RuleError("'as' names the class of the target of 'make'; this rule makes nothing")
    return CellRule(**common, cell=source, when=when, target=target, target_class=target_class, make=make)


def _target_class(raw: dict, target: layouts.GateLayout) -> str:
    """`as:`, checked against the classes of the target kind in the table of cell kinds."""
    if "as" not in raw:
        return ""
    name = raw["as"]
    if target.cell not in cell_kinds.KIND_NAMES:
        raise RuleError(f"'as' needs 'to' to name a cell kind, not '{target.key}'")
    classes = cell_kinds.kind(target.cell).of(target.framework).classes
    if name not in classes:
        raise RuleError(
            f"'as: {name}' is not a {target.framework} class of kind {target.cell} "
            f"({', '.join(classes) or 'none'})"
        )
    return str(name)


def _when(raw: dict, allowed: Mapping[str, type]) -> dict[str, Any]:
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        raise RuleError("'when' maps conditions to values")
    for key, value in when.items():
        if key not in allowed:
            raise RuleError(f"'when' takes {', '.join(sorted(allowed))}, not '{key}'")
        # bool is an int to isinstance: `ndim: true` is a mistake, not 1.
        if not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
            raise RuleError(f"'when: {key}' must be a {allowed[key].__name__}")
    return dict(when)


def _match_rule(raw: dict, common: dict, params: Mapping[str, Param]) -> MatchRule:
    _only(raw, "a match rule", {"make"})
    when = _when(raw, MATCH_WHEN_KEYS)
    patterns = raw["match"] if isinstance(raw["match"], list) else [raw["match"]]
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise RuleError("'match' is a regex or a list of regexes")
    if not isinstance(raw.get("inputs") or {}, dict):
        raise RuleError("'inputs' maps names to templates")
    compiled = tuple(_regex(p, raw.key_lines["match"]) for p in patterns)
    groups = set.intersection(*(set(p.groupindex) for p in compiled))
    inputs = {}
    for alias, text in (raw.get("inputs") or {}).items():
        inputs[str(alias)] = _template(text, groups)
    _one_action(raw, common, "to")
    rename_to, make = None, {}
    to = raw.get("to")
    unpack = raw.get("unpack")
    if unpack is not None:
        return _unpack_rule(raw, common, compiled, when, groups)
    if isinstance(to, str):
        if inputs:
            raise RuleError("'inputs' go with 'to: {target: expression}', not with a plain rename")
        rename_to = _template(to, groups)
    elif isinstance(to, dict):
        known = {"src", *inputs, *params, *_GATE_LETTERS}
        for target, text in to.items():
            make[_template(target, groups)] = _expr(text, known, to.key_lines[target])
    elif to is not None:
        raise RuleError("'to' is a target name template, or a mapping of target templates to expressions")
    return MatchRule(**common, patterns=compiled, when=when, rename_to=rename_to, make=make, inputs=inputs)


def _unpack_rule(
    raw: dict, common: dict, patterns: tuple[Regex, ...], when: dict[str, Any], groups: set[str]
) -> MatchRule:
    from .unpack import UNPACKERS

    unpack, to = raw["unpack"], raw.get("to")
    if unpack not in UNPACKERS:
        raise RuleError(f"'unpack' takes {', '.join(UNPACKERS)}, not {unpack!r}")
    if raw.get("inputs") or not isinstance(to, str) or "{part}" not in to:
        raise RuleError("'unpack' goes with 'to: <template>' naming each part with {part}, and no 'inputs'")
    rename_to = _template(to, groups | {"part"})
    return MatchRule(**common, patterns=patterns, when=when, rename_to=rename_to, unpack=unpack)


def _only(raw: dict, what: str, foreign: set[str]) -> None:
    """Keys of the other rule kinds would be ignored silently; say so instead."""
    extra = sorted(foreign & set(raw))
    if extra:
        raise RuleError(f"{what} does not take {', '.join(repr(k) for k in extra)}")


def _one_action(raw: dict, common: dict, produce_key: str) -> None:
    actions = [k for k in (produce_key, "drop", "refuse") if k in raw and raw[k] is not None]
    if len(actions) != 1:
        raise RuleError(
            f"a rule needs exactly one of '{produce_key}', 'drop' or 'refuse'"
            + (f" (has {', '.join(actions)})" if actions else "")
        )


def _expr(text: Any, known: set[str], line: int) -> Expr:
    try:
        expr = Expr.parse(str(text))
    except ExprError as e:
        raise ExprError(f"line {line}: {e}") from None
    unknown = sorted(expr.names() - known)
    if unknown:
        raise ExprError(
            f"line {line}: '{text}' uses unknown name {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known - _GATE_LETTERS))})"
        )
    return expr


def _template(text: Any, groups: set[str]) -> Template:
    template = Template(str(text))
    template.check(groups)
    return template


def _regex(pattern: Any, line: int, *, search: bool = False) -> Regex:
    """A rule's regex, refused here if it could backtrack for long (see `regexes`)."""
    try:
        return regexes.compile(str(pattern), search=search)
    except regexes.UnsafeRegex as e:
        raise RuleError(f"line {line}: {e}") from None


def _text(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    return None if value is None else " ".join(str(value).split())


def _no_unknown(doc: dict, allowed: set[str], label: str, what: str) -> None:
    for key in doc:
        if key not in allowed:
            line = getattr(doc, "key_lines", {}).get(key, "?")
            raise RuleError(
                f"{label}:{line}: unknown key '{key}' in {what}; allowed: {', '.join(sorted(allowed))}."
            )
