"""Apply a mapping to a checkpoint: a lazy target checkpoint plus the plan that explains it.

The engine walks the rules in order over the weights no earlier rule took. It accounts for every
tensor: each source ends up in a target, dropped with a reason, or in an error. All shapes are
computed and every conflict (two rules writing one name, a refusal, leftovers under
`unmatched: error`) is raised before a single tensor is read, so a failing mapping writes nothing.
Target data is computed only when a writer asks for it; a source feeding several targets (a fused
kernel split into `weight_ih` and `weight_hh`) is read once and released after its last use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import cell_kinds, kinds
from ..cells import shapes
from ..cells.model import RNN, CellRef
from ..cells.recognize import family, find_in_entries
from ..entry import TensorEntry
from ..errors import MappingError
from .expr import ExprError, Node, OpNode, SourceNode, row_blocks
from .ops import GROWTH_BYTES, Flat, Zeros, c_order
from .plan import Approximation, Plan, PlannedTensor
from .regexes import Budget, NameTooLong
from .schema import CellRule, MappingSpec, MatchRule, RenameRule, Rule
from .template import TemplateError

if TYPE_CHECKING:  # pragma: no cover
    from ..tree import Checkpoint  # made with `derived`: tree imports what shows it, and that imports this


@dataclass
class _Target:
    name: str
    node: Node
    how: str
    rule: Rule | None
    anchor: int  # position of the source it came from, to keep the checkpoint's order
    kind: str = kinds.WEIGHT
    slot_of: str | None = None
    # Of a cell's weight: the cell it was made for (kind, reset_after), so a writer that fills an
    # existing graph (formats/onnx_model.py) can refuse a node that computes something else.
    settings: Mapping[str, Any] | None = None


class _ReadOnce:
    """Reads a source the first time a target needs it and keeps it until its last user is done."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}
        self.cache: dict[int, np.ndarray] = {}

    def node(self, entry: TensorEntry) -> SourceNode:
        return SourceNode(entry, self.read)

    def claim(self, target: Node) -> None:
        """Count the targets that use each source (a target reads it once, see `Node.compute`),
        so the last of them releases it."""
        for key in {id(source.entry) for source in target.sources()}:
            self.pending[key] = self.pending.get(key, 0) + 1

    def read(self, entry: TensorEntry) -> np.ndarray:
        key = id(entry)
        array = self.cache.pop(key) if key in self.cache else entry.read()
        self.pending[key] = self.pending.get(key, 1) - 1
        if self.pending[key] > 0:
            self.cache[key] = array
        return array


def run(spec: MappingSpec, params: Mapping[str, Any], ckpt: Checkpoint) -> tuple[Checkpoint, Plan]:
    return _Run(spec, params, ckpt).execute()


def renames_nothing(spec: MappingSpec, names: Iterable[str]) -> bool:
    """Whether `spec` is rename rules only, none of which matches a name in `names`. Rules apply in
    turn, but while none matches, each sees the names unchanged."""
    rules = spec.rules
    if not all(isinstance(r, RenameRule) and r.names is not None for r in rules):
        return False
    names = list(names)
    budget = Budget()
    try:
        return not any(r.names.may_match_any(names, budget) for r in rules)  # type: ignore[union-attr]
    except NameTooLong as e:
        where = next((r.where() for r in rules), spec.name)  # the first: renames are tested together
        raise MappingError(f"mapping {spec.name}, {where}: {e}.") from None


class _Run:
    def __init__(self, spec: MappingSpec, params: Mapping[str, Any], ckpt: Checkpoint) -> None:
        self.spec, self.params, self.ckpt = spec, dict(params), ckpt
        self.order = {name: i for i, name in enumerate(ckpt.entries)}
        # Weights and bookkeeping still in play: current name -> original entry.
        self.live: dict[str, TensorEntry] = {
            e.name: e for e in ckpt.entries.values() if e.kind in (kinds.WEIGHT, kinds.BOOKKEEPING)
        }
        self.targets: list[_Target] = []
        self.dropped: list[tuple[str, str]] = []
        self.approximations: list[Approximation] = []
        self.rnns_taken = 0  # RNNs a cell rule converted or dropped: none, and a mapping did nothing
        self.whole_model: bool | None = None  # weights besides the RNNs' (an embedding, a head)?
        self.reads = _ReadOnce()
        self.budget = Budget()  # one deadline for all the regex matching of this run

    def execute(self) -> tuple[Checkpoint, Plan]:
        for rule in self.spec.rules:
            if isinstance(rule, RenameRule):
                self._rename(rule)
            elif isinstance(rule, CellRule):
                self._cells(rule)
            elif isinstance(rule, MatchRule):
                self._matches(rule)
        self._refuse_without_counterpart()
        self._leftovers()
        self._slots()
        return self._result()

    # --- rules -----------------------------------------------------------------------------
    def _rename(self, rule: RenameRule) -> None:
        renamed: dict[str, TensorEntry] = {}
        for name, entry in self.live.items():
            new, replacement = name, ""
            try:
                untouched = rule.names is not None and not rule.names.may_match(name, self.budget)
                for pattern, replacement in () if untouched else rule.subs:
                    new = pattern.sub(replacement, new, self.budget)
            except re.error as e:  # a bad group reference in the replacement
                raise MappingError(
                    f"{rule.where()}: replacement '{replacement}' fails on '{_short(name)}': {e}."
                ) from None
            except NameTooLong as e:
                raise MappingError(f"{rule.where()} on '{_short(name)}': {e}.") from None
            if new in renamed:
                raise MappingError(
                    f"{rule.where()}: renames both '{renamed[new].name}' and '{entry.name}' to '{new}'."
                )
            renamed[new] = entry
        self.live = renamed

    def _cells(self, rule: CellRule) -> None:
        assert rule.cell is not None
        weights = {n: e.renamed(n) for n, e in self.live.items() if e.kind == kinds.WEIGHT}
        found = find_in_entries(weights)
        if self.whole_model is None:  # decided on the checkpoint as the first cell rule sees it
            in_rnns = {n for rnn in found for n in rnn.tensor_names}
            self.whole_model = any(n not in in_rnns for n in weights)
        for rnn in found:
            if (rnn.framework, rnn.kind) != (rule.cell.framework, rule.cell.cell) or not _when(
                rule, rnn, self.params
            ):
                continue
            where = f"{rule.where()} on {rnn.describe()}"
            if rule.refuse:
                raise MappingError(f"{where}: refused: {rule.refuse}")
            if rnn.unsupported and not rule.drop:
                raise MappingError(f"{where}: not converted: {rnn.unsupported}")
            if rule.approximate:
                self.approximations.append(
                    Approximation(rule.where(), rnn.scope or "(root)", rule.approximate)
                )
            self.rnns_taken += 1
            for cell in rnn.cells:
                self._cell(rule, rnn, cell, where)

    def _cell(self, rule: CellRule, rnn: RNN, cell: CellRef, where: str) -> None:
        sources = {role: self.live[name] for role, name in cell.members.items()}
        anchor = min(self.order[e.name] for e in sources.values())
        for name in cell.members.values():
            del self.live[name]
        if rule.drop:
            self.dropped.extend((e.name, f"{rule.where()}: {rule.drop}") for e in sources.values())
            return
        assert rule.target is not None
        used = set().union(*(expr.names() for expr in rule.make.values()))
        unused = sorted(set(sources) - used)
        if unused:
            raise MappingError(
                f"{where}: the rule does not use the cell's {', '.join(unused)}; "
                "ckptmap will not drop weights silently."
            )
        target_rnn = _target_rnn(rnn, rule, whole_model=bool(self.whole_model))
        env: dict[str, Any] = {
            **self.params,
            "input": cell.input_size,
            "units": rnn.units,
            "proj": rnn.proj or 0,
            "recurrent": rnn.proj or rnn.units,
            "layer": cell.layer,
        }
        env.update({role: self.reads.node(entry) for role, entry in sources.items()})
        for role, shape in family(rnn.framework).implicit(rnn).items():
            try:  # a crafted file's sizes can make these too large, which Zeros refuses
                env[role] = OpNode(Zeros(shape, rnn.dtype), [])
            except ExprError as e:
                raise MappingError(f"{where}, {role} of layer {cell.layer} {cell.direction}: {e}.") from None
        naming = family(rule.target.framework)
        for role, expr in rule.make.items():
            try:
                name = naming.member_name(target_rnn, cell.layer, cell.reverse, role)
                node = expr.evaluate(env, default_dtype=rnn.dtype)
            except ExprError as e:
                raise MappingError(f"{where}, {role} of layer {cell.layer} {cell.direction}: {e}.") from None
            _check_shape(rule, rnn, cell, role, node, where)
            made_for = {"kind": target_rnn.kind, "reset_after": target_rnn.reset_after}
            self.targets.append(_Target(name, node, expr.text, rule, anchor, settings=made_for))

    def _matches(self, rule: MatchRule) -> None:
        literals = _literal_names(rule)
        # A rule of whole names (`ckptmap align` drafts thousands) looks them up, not every name up.
        names = [n for n in literals if n in self.live] if literals is not None else list(self.live)
        for name in names:
            entry = self.live.get(name)
            if entry is None or entry.kind != kinds.WEIGHT:
                continue
            try:
                m = next((m for p in rule.patterns if (m := p.fullmatch(name, self.budget))), None)
            except NameTooLong as e:
                raise MappingError(f"{rule.where()} on '{_short(name)}': {e}.") from None
            if m is None or not _match_when(rule, entry):
                continue
            groups = {"0": name, **m.groupdict()}
            where = f"{rule.where()} on '{name}'"
            if rule.refuse:
                raise MappingError(f"{where}: refused: {rule.refuse}")
            try:
                self._match(rule, name, entry, groups, where)
            except TemplateError as e:
                raise MappingError(f"{where}: {e}.") from None

    def _match(
        self, rule: MatchRule, name: str, entry: TensorEntry, groups: dict[str, str | None], where: str
    ) -> None:
        anchor = self.order[entry.name]
        del self.live[name]
        if rule.drop:
            self.dropped.append((entry.name, f"{rule.where()}: {rule.drop}"))
            return
        if rule.unpack is not None:
            self._unpack(rule, entry, groups, where, anchor)
            return
        if rule.rename_to is not None:
            self.targets.append(
                _Target(rule.rename_to.render(groups), self.reads.node(entry), "renamed", rule, anchor)
            )
            return
        env: dict[str, Any] = {**self.params, "src": self.reads.node(entry)}
        for alias, template in rule.inputs.items():
            input_name = template.render(groups)
            if input_name not in self.live:
                raise MappingError(
                    f"{where}: its input {alias} = '{input_name}' is not in the checkpoint"
                    " (or another rule took it)."
                )
            env[alias] = self.reads.node(self.live.pop(input_name))
        if rule.approximate:
            self.approximations.append(Approximation(rule.where(), name, rule.approximate))
        for template, expr in rule.make.items():
            try:
                node = expr.evaluate(env, default_dtype=entry.dtype)
            except ExprError as e:
                raise MappingError(f"{where}: {e}.") from None
            self.targets.append(_Target(template.render(groups), node, expr.text, rule, anchor))

    def _unpack(
        self, rule: MatchRule, entry: TensorEntry, groups: dict[str, str | None], where: str, anchor: int
    ) -> None:
        from .unpack import UNPACKERS

        assert rule.unpack is not None and rule.rename_to is not None
        source = self.reads.node(entry)
        for part, offset, shape in UNPACKERS[rule.unpack](entry.shape, self.params, where):
            try:
                node = OpNode(Flat(offset, shape), [source])
            except ExprError as e:
                raise MappingError(f"{where}: {e}.") from None
            name = rule.rename_to.render({**groups, "part": part})
            self.targets.append(_Target(name, node, f"unpack: {rule.unpack} {part}", rule, anchor))

    # --- what no rule took -------------------------------------------------------------------
    def _refuse_without_counterpart(self) -> None:
        """A cell no rule took, of a kind the target framework has no counterpart for (NASCell to
        PyTorch), stops the run with the reason the table of cell kinds gives."""
        target = self.spec.target_framework
        if target is None:
            return
        weights = {n: e.renamed(n) for n, e in self.live.items() if e.kind == kinds.WEIGHT}
        for rnn in find_in_entries(weights):
            row = cell_kinds.kind(rnn.kind)
            if rnn.framework != target and target in row.frameworks and not row.counterpart(target):
                raise MappingError(
                    f"mapping {self.spec.name}: {rnn.describe()} has no counterpart in {target}: "
                    f"{row.of(target).missing}."
                )

    def _leftovers(self) -> None:
        leftovers = [(n, e) for n, e in self.live.items() if e.kind == kinds.WEIGHT]
        if self.spec.unmatched == "error" and leftovers:
            shown = ", ".join(f"'{e.name}'" for _, e in leftovers[:5])
            more = f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""
            raise MappingError(f"mapping {self.spec.name}: no rule takes {shown}{more} (unmatched: error).")
        for name, entry in self.live.items():
            policy = self.spec.unmatched if entry.kind == kinds.WEIGHT else self.spec.bookkeeping
            if policy == "drop":
                why = "no rule takes it" if entry.kind == kinds.WEIGHT else "training bookkeeping"
                self.dropped.append((entry.name, why))
            else:
                how = "kept" if name == entry.name else "renamed"
                self.targets.append(
                    _Target(name, self.reads.node(entry), how, None, self.order[entry.name], entry.kind)
                )

    def _slots(self) -> None:
        moved = {
            t.node.entry.name: t.name
            for t in self.targets
            if isinstance(t.node, SourceNode) and t.kind == kinds.WEIGHT
        }
        for slot in (e for e in self.ckpt.entries.values() if e.kind == kinds.SLOT):
            owner = slot.slot_of or ""
            if self.spec.slots == "drop":
                self.dropped.append((slot.name, "optimizer slot"))
            elif owner not in moved:
                self.dropped.append(
                    (slot.name, f"optimizer slot of '{owner}', which was converted or dropped")
                )
            else:
                cut = slot.name.rfind(owner + "/") if owner else -1
                new = slot.name if cut < 0 else slot.name[:cut] + moved[owner] + slot.name[cut + len(owner) :]
                how = "kept" if new == slot.name else "renamed"
                self.targets.append(
                    _Target(
                        new, self.reads.node(slot), how, None, self.order[slot.name], kinds.SLOT, moved[owner]
                    )
                )

    # --- result ------------------------------------------------------------------------------
    def _result(self) -> tuple[Checkpoint, Plan]:
        seen: dict[str, _Target] = {}
        for t in self.targets:
            if t.name in seen:
                a, b = seen[t.name], t
                raise MappingError(
                    f"Two tensors would both be named '{t.name}': from {_origin(a)} and {_origin(b)}."
                )
            seen[t.name] = t
        _check_growth(self.targets)
        # Stable: keeps rule order within a cell. A rule's `position` puts its targets first or last.
        rank = {"first": 0, None: 1, "last": 2}
        ordered = sorted(self.targets, key=lambda t: (rank[t.rule.position if t.rule else None], t.anchor))
        for t in ordered:
            self.reads.claim(t.node)
        # A kept or renamed tensor keeps the key it has in the file, so restores can still find it.
        entries = [
            TensorEntry(
                t.name,
                t.node.shape,
                t.node.dtype,
                _key(t),
                _loader(t.node),
                t.kind,
                t.slot_of,
                _pieces(t.node),
                t.settings,
            )
            for t in ordered
        ]
        # Names are now the target framework's (`names_of`): a writer that lays names out per
        # framework (TF2 checkpoints number Keras layers) goes by it, not by the source's format.
        names_of = self.spec.target_framework or self.ckpt.metadata.get("names_of")
        out = self.ckpt.derived(
            entries, metadata={**self.ckpt.metadata, **({"names_of": names_of} if names_of else {})}
        )
        plan = Plan(
            [self.spec.name],
            dict(self.params),
            [
                PlannedTensor(
                    t.name,
                    t.node.shape,
                    t.node.dtype,
                    tuple(s.entry.name for s in t.node.sources()),
                    t.how,
                    t.rule.where() if t.rule else None,
                )
                for t in ordered
            ],
            self.dropped,
            self.approximations,
            rnns_converted=self.rnns_taken,
        )
        return out, plan


def _check_shape(rule: CellRule, rnn: RNN, cell: CellRef, role: str, node: Node, where: str) -> None:
    """A target cell's tensor must have the shape its framework gives that role (see cells.shapes):
    a slip in an expression (a missing `| T`) is caught here, before anything is written."""
    assert rule.target is not None
    want = shapes.allowed(
        rule.target.framework,
        rule.target.cell,
        role,
        inputs=cell.input_size,
        units=rnn.units,
        proj=rnn.proj if rule.target.cell == "lstm" else None,
    )
    if want is not None and tuple(node.shape) not in want:
        shown = " or ".join(str(list(w)) for w in want)
        raise MappingError(
            f"{where}: {role} of layer {cell.layer} {cell.direction} comes out {list(node.shape)}, but a "
            f"{rule.target.key} cell with input {cell.input_size} and {rnn.units} units holds it as {shown}; "
            "check the rule's expression (a missing or extra '| T'?)."
        )


def _check_growth(targets: list[_Target]) -> None:
    """Each computed tensor is held to GROWTH_BYTES over its sources when it is built (`OpNode`);
    here all of them together are, so a thousand targets of 1 GiB of zeros are refused too."""
    total = 0
    for t in targets:
        if isinstance(t.node, OpNode):
            total += t.node.growth
            if total > GROWTH_BYTES:
                raise MappingError(
                    f"{_origin(t)}: the tensors this mapping computes hold over {GROWTH_BYTES:,} bytes "
                    f"more than their sources (at '{_short(t.name)}', shape {list(t.node.shape)}); "
                    "a mapping may only move, reorder and combine what the checkpoint holds."
                )


def _short(name: str) -> str:
    """A name for a message: a crafted one may be megabytes long."""
    return name if len(name) <= 200 else f"{name[:100]}...{name[-50:]} ({len(name)} characters)"


def _key(t: _Target) -> str:
    return t.node.entry.key if isinstance(t.node, SourceNode) else t.name


def _loader(node: Node) -> Callable[[], np.ndarray]:
    if isinstance(node, SourceNode):
        return node.compute
    return lambda: c_order(node.compute())  # ops may hand out views (a transpose); writers want C order


def _pieces(node: Node) -> Callable[[int], Iterator[np.ndarray]] | None:
    if isinstance(node, SourceNode) or node.dtype == "string":
        return None  # a source is streamed from its own array; strings are not computed by blocks
    return functools.partial(row_blocks, node)


def _origin(t: _Target) -> str:
    sources = ", ".join(f"'{s.entry.name}'" for s in t.node.sources()) or "constants"
    return f"{t.rule.where() if t.rule else 'the unchanged tensor'} ({sources})"


_ESCAPED = re.compile(r"\\(.)", re.S)


def _literal_names(rule: MatchRule) -> tuple[str, ...] | None:
    """The names a rule's patterns match when each is a name written out (`re.escape`d), else None."""
    names = []
    for pattern in rule.patterns:
        text = _ESCAPED.sub(r"\1", pattern.pattern)
        if re.escape(text) != pattern.pattern or pattern.flags & re.IGNORECASE:
            return None
        names.append(text)
    return tuple(dict.fromkeys(names))


def _match_when(rule: MatchRule, entry: TensorEntry) -> bool:
    facts = {"ndim": len(entry.shape)}
    return all(facts[k] == v for k, v in rule.when.items())


def _when(rule: CellRule, rnn: RNN, params: Mapping[str, Any]) -> bool:
    """Whether `rnn` has the facts the rule asks for. Each `when:` key (cell_kinds) is the RNN's
    attribute of that name, or a boolean parameter of the mapping; `proj: true` asks whether
    there is a projection at all."""
    known = cell_kinds.when_facts()
    facts = {key: getattr(rnn, key) if key in known else params[key] for key in rule.when}
    if "proj" in facts:
        facts["proj"] = rnn.proj is not None
    return all(facts[k] == v for k, v in rule.when.items())


# In a whole model (an embedding and a head beside the RNN), the module PyTorch code holds the RNN
# in, named as the scope tf.compat.v1.nn.dynamic_rnn opens (rnn.py: `vs.variable_scope(scope or
# "rnn")`): TF1 `rnn/multi_rnn_cell/...` at the root is `rnn.weight_ih_l0`, and back. A checkpoint
# of only an RNN keeps it at the root, as a bare nn.LSTM's state dict has it.
_WHOLE_MODEL_RNN_MODULE = "rnn"


def _target_rnn(rnn: RNN, rule: CellRule, *, whole_model: bool = False) -> RNN:
    """The RNN as the target framework will hold it: same sizes and structure; names of the source
    framework (cell classes, TF1 cell scopes, Keras layer names) only when the framework stays."""
    assert rule.target is not None
    if rule.target.framework == rnn.framework:
        return replace(rnn, kind=rule.target.cell, cell_type=rule.target_class or rnn.cell_type)
    scope = rnn.scope
    if whole_model and (rnn.framework, rule.target.framework) == ("tf1", "torch") and not scope:
        scope = _WHOLE_MODEL_RNN_MODULE
    elif whole_model and (rnn.framework, rule.target.framework) == ("torch", "tf1"):
        scope = "" if scope == _WHOLE_MODEL_RNN_MODULE else scope
    return replace(
        rnn,
        framework=rule.target.framework,
        kind=rule.target.cell,
        scope=scope,
        cell_type=rule.target_class,
        cell_name=None,
        cells=(),
    )
