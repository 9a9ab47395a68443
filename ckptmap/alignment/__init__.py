"""`ckptmap align`: draft the mapping from one checkpoint to the names and shapes of another, and
check the draft by running it.

The target is what the user wants to load into: a checkpoint of that model, even with random
weights (what a freshly built model saves), or a live model (ckptmap.torch.align). RNNs and the
other weights are paired (pairing.py), a mapping in ckptmap's own rule language is written
(draft.py), and then run on the source: every target name must come out, with its shape. What
only order decided is flagged, and is not success unless the caller accepts order.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..cells.model import RNN
from ..errors import CkptmapError, UsageError, one_line
from ..formats import registry
from ..rules import mapping as mapping_lib
from ..tree import Checkpoint, TensorEntry
from .draft import mapping_yaml
from .pairing import Pair, pair_rnns, pair_tensors

__all__ = ["Alignment", "Pair", "align", "model_checkpoint"]


@dataclass
class Alignment:
    """What `align` found and drafted. `ok`: every target tensor is made with its shape, and no
    pair was a guess between look-alikes (unless order was accepted)."""

    source: str
    target: str
    mapping_text: str
    rnns: list[Pair] = field(default_factory=list)
    tensors: list[Pair] = field(default_factory=list)
    unplaced_source: list[str] = field(default_factory=list)
    unplaced_target: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what running the draft showed
    accept_order: bool = False

    @property
    def ambiguous(self) -> list[Pair]:
        return [p for p in (*self.rnns, *self.tensors) if p.ambiguous]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unplaced_target and (self.accept_order or not self.ambiguous)

    def mapping(self) -> mapping_lib.Mapping:
        """The drafted mapping, ready for convert, load_into or verify."""
        return mapping_lib.from_text(self.mapping_text, "aligned mapping")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the drafted mapping, whole or not at all (atomic.AtomicFiles)."""
        from ..atomic import AtomicFiles

        path = Path(path)
        if os.path.lexists(path) and not overwrite:
            raise UsageError(f"{path} exists; pass --overwrite to replace it.")
        with AtomicFiles([path]) as out:
            out.temp(path).write_text(self.mapping_text, encoding="utf-8")
        return path

    def renames(self) -> dict[str, str]:
        """Source name -> target name of every paired weight outside the RNNs."""
        return {p.source: p.target for p in self.tensors}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "rnns": [dataclasses.asdict(p) for p in self.rnns],
            "tensors": [dataclasses.asdict(p) for p in self.tensors],
            "unplaced_source": self.unplaced_source,
            "unplaced_target": self.unplaced_target,
            "problems": self.problems,
            "mapping": self.mapping_text,
        }

    def __str__(self) -> str:
        lines = [f"Align {self.source} -> {self.target}"]
        lines.append(f"  RNNs paired: {len(self.rnns)}; other weights paired: {len(self.tensors)}")
        for p in self.ambiguous:
            lines.append(f"  GUESSED {p.source} -> {p.target}: {p.how}")
        for name in self.unplaced_target:
            lines.append(f"  not filled: {name}")
        for name in self.unplaced_source:
            lines.append(f"  not placed (dropped): {name}")
        lines += [f"  problem: {p}" for p in self.problems]
        if self.ok:
            lines.append("OK: every target tensor is made, with its shape" + (
                " (order accepted for look-alikes)" if self.ambiguous else "") + ".")  # fmt: skip
        elif self.ambiguous and not self.problems and not self.unplaced_target:
            lines.append(
                f"UNSURE: {len(self.ambiguous)} pair(s) only order decided; check them, or accept order."
            )
        else:
            lines.append("INCOMPLETE: the draft does not make every target tensor; see above.")
        return "\n".join(lines)


def align(
    source: Checkpoint | str | os.PathLike[str],
    target: Checkpoint | str | os.PathLike[str],
    *,
    accept_order: bool = False,
) -> Alignment:
    """Draft the mapping from `source` to `target`'s names and shapes, and run it to check it."""
    src = source if isinstance(source, Checkpoint) else registry.read(source)
    dst = target if isinstance(target, Checkpoint) else registry.read(target)
    src_fw, dst_fw = registry.framework_of(src.format), registry.framework_of(dst.format)
    rnn_pairs = pair_rnns(src.rnns, dst.rnns)
    # An RNN left without a partner (one side's names not recognized as a cell: TF 1.1's
    # `weights`) pairs tensor by tensor like any other layer.
    paired_src, paired_dst = {p.source for p in rnn_pairs}, {p.target for p in rnn_pairs}
    in_rnns = {n for r in src.rnns if (r.scope or "(root)") in paired_src for n in r.tensor_names}
    dst_in_rnns = {n for r in dst.rnns if (r.scope or "(root)") in paired_dst for n in r.tensor_names}
    rest = [e for e in src.weights() if e.name not in in_rnns]
    dst_rest = [e for e in dst.weights() if e.name not in dst_in_rnns]
    tensor_pairs = pair_tensors(rest, dst_rest, src_fw, dst_fw)
    by_scope = {r.scope or "(root)": r for r in src.rnns}
    moves = [(p, _scope_move(by_scope[p.source], p.target, src)) for p in rnn_pairs]
    placed = {p.source for p in tensor_pairs} | {
        n for p in rnn_pairs for n in by_scope[p.source].tensor_names
    }
    filled = {p.target for p in tensor_pairs}
    unplaced = [e.name for e in src.weights() if e.name not in placed]
    builtin = mapping_lib.builtin_for(src_fw, dst_fw) if src_fw != dst_fw else None
    name = f"align-{_stem(src)}-to-{_stem(dst)}"
    text = mapping_yaml(
        name=name,
        source_framework=src_fw,
        target_framework=dst_fw,
        builtin=builtin,
        rnn_moves=moves,
        tensors=tensor_pairs,
        unplaced_source=unplaced,
        unplaced_target=[e.name for e in dst_rest if e.name not in filled],
        source_names=list(src.entries),
    )
    result = Alignment(
        str(src.path or "source"),
        str(dst.path or "target"),
        text,
        rnns=rnn_pairs,
        tensors=tensor_pairs,
        unplaced_source=unplaced,
        accept_order=accept_order,
    )
    result.problems, result.unplaced_target = _check(result, src, dst)
    return result


def model_checkpoint(
    tensors: dict[str, tuple[tuple[int, ...], str]], *, format: str, label: str
) -> Checkpoint:
    """A live model's tensors (canonical name -> shape, dtype) as a target to align to. Aligning
    reads no data, so there is none: `label` names the model in reports."""

    def unread() -> None:
        raise AssertionError("aligning read a target tensor's data")  # a bug in ckptmap

    entries = [TensorEntry(name, shape, dtype, name, unread) for name, (shape, dtype) in tensors.items()]
    return Checkpoint(entries, format=format, path=label)


def _scope_move(rnn: RNN, target_scope: str, src: Checkpoint) -> dict[str, str]:
    """Renames that put `rnn`'s tensors under `target_scope` (the built-in mapping keeps a scope:
    a TF scope is the PyTorch module path, a Keras layer name the module's)."""
    scope = "" if rnn.scope is None else rnn.scope
    wanted = "" if target_scope == "(root)" else target_scope
    if scope == wanted:
        return {}
    old = f"{scope}/" if scope else ""
    new = f"{wanted}/" if wanted else ""
    rests = [n[len(old) :] for n in rnn.tensor_names if n.startswith(old)]
    if rnn.framework == "tf1" and rests and rests[0].split("/")[0] not in _TF1_STRUCTURE:
        # A cell called directly (`decoder/gru_cell/...`): put it in dynamic_rnn's scope, or a
        # target scope ending in `rnn` (`decoder/rnn`) would read as that scope and be dropped.
        new += "rnn/"
    own = set(rnn.tensor_names)
    if old and not new.endswith("rnn/") and all(n in own for n in src.entries if n.startswith(old)):
        return {old: new}  # the whole scope is this RNN's: one rename of its prefix
    return {n: new + n[len(old) :] for n in rnn.tensor_names if n.startswith(old)}


# The scopes TF's RNN functions open between a user's scope and the cells (cells/tf1_cells.py).
_TF1_STRUCTURE = {"rnn", "bidirectional_rnn", "stack_bidirectional_rnn", "multi_rnn_cell"}


def _check(result: Alignment, src: Checkpoint, dst: Checkpoint) -> tuple[list[str], list[str]]:
    """Run the draft on the source: which target tensors it does not make, or makes in another shape."""
    try:
        plan = result.mapping().plan(src)
    except CkptmapError as e:  # a draft that does not run is a finding, said in one line
        return [f"the drafted mapping does not run: {one_line(e)}"], []
    made = {t.name: tuple(t.shape) for t in plan.targets}
    problems, missing = [], []
    for entry in dst.weights():
        if entry.name not in made:
            missing.append(entry.name)
        elif made[entry.name] != tuple(entry.shape):
            problems.append(
                f"{entry.name} comes out {list(made[entry.name])}, the target has {list(entry.shape)}"
            )
    extra = sorted(set(made) - {e.name for e in dst.weights()})
    problems += [f"{name} is made but the target has no such tensor" for name in extra]
    return problems, missing


def _stem(ckpt: Checkpoint) -> str:
    stem = Path(str(ckpt.path)).stem if ckpt.path else "model"
    return re.sub(r"[^A-Za-z0-9_]+", "-", stem).strip("-") or "model"
