"""`verify`: does DST compute what SRC does? `verify_into`: does SRC restore into fresh models?

Both work on the RNNs ckptmap recognizes and leave the judging to the frameworks: each side is
restored into a freshly built model by that framework's own restore and run on the same seeded
inputs. SRC's RNNs find their DST counterparts through the mapping's name correspondence (the
plan says which targets each source tensor became).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MappingError, UnsupportedError
from ..formats import registry
from ..pipeline import apply, as_written, resolve_mappings
from ..recognition import Recognized, recognize
from ..rules.mapping import Mapping, builtin_chain
from ..rules.plan import Plan
from ..suggest import pair
from .backends import backend
from .cases import CASES, FIRST_STEP, Case, batches, nudged
from .gates import gate_errors
from .report import (
    APPROXIMATE,
    DIFFERS,
    DRIFT_FACTOR,
    EQUAL,
    MISSING,
    NO_RESTORE,
    IntoReport,
    Missing,
    PairResult,
    RestoreResult,
    VerifyReport,
    compare,
    tolerance_for,
)

PathLike = str | os.PathLike[str]


def verify(
    src: PathLike,
    dst: PathLike,
    mapping: Any = None,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    *,
    tolerance: float | None = None,
    strict: bool = False,
    cases: tuple[Case, ...] = CASES,
) -> VerifyReport:
    """Restore SRC and DST into fresh RNNs, run both on the same inputs, compare per RNN.

    Without a mapping, the built-in one between the two frameworks is used (tf1-to-torch, ...).
    """
    source, target = registry.read(src), registry.read(dst)
    src_fw, dst_fw = registry.framework_of(source.format), registry.framework_of(target.format)
    mappings = _choose(mapping, params, src_fw, dst_fw)
    mapped, plan = apply(source, mappings, rename)
    written = registry.spec(target.format)
    # A format written into a model names what it wrote by that model, which DST now is.
    plan = as_written(mapped, plan, written, {"template": Path(dst)} if written.template else None)
    options = _cell_options(mappings)
    candidates = recognize(target)
    pairs: list[PairResult] = []
    paired: set[str] = set()  # tensors of the destination's RNNs that a source RNN paired with
    for found in recognize(source):
        match = _counterpart(found, candidates, plan)
        if match is None:
            pairs.append(
                PairResult(
                    found.rnn,
                    None,
                    MISSING,
                    tolerance_for(found.rnn.dtype, tolerance),
                    message=_no_counterpart(dst, plan, chosen=mapping is None),
                )
            )
            continue
        paired.update(match.original.values())  # a stack of Keras layers pairs with each of them
        pairs.append(_compare_pair(found, match, plan, options, tolerance, cases))
    unpaired = [c.rnn for c in candidates if paired.isdisjoint(c.original.values())]
    return VerifyReport(Path(src), Path(dst), plan.mappings, plan.params, pairs, unpaired, strict)


def verify_into(
    src: PathLike,
    framework: str,
    mapping: Any = None,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
) -> IntoReport:
    """Build the fresh models SRC's RNNs describe in `framework` and restore SRC into them as it is
    (after the mapping, if one is given or the frameworks differ). Reports what the models need
    that the checkpoint lacks, shape mismatches and what no model reads, with suggestions."""
    be = backend(framework)
    source = registry.read(src)
    src_fw = registry.framework_of(source.format)
    mappings = _choose(mapping, params, src_fw, framework) if (mapping or src_fw != framework) else []
    mapped, plan = apply(source, mappings, rename)
    options = _cell_options(mappings)
    with tempfile.TemporaryDirectory(prefix="ckptmap-verify-") as tmp:
        ckpt = source
        if mappings or rename or source.format not in be.formats:
            fmt = registry.spec(be.write_as)
            if fmt.template:
                raise UnsupportedError(
                    f"verify --into {framework}: {fmt.label}s are written into an existing model; write "
                    f"one with convert --into {fmt.example}, then verify {src} against it."
                )
            path = Path(tmp) / fmt.example
            fmt.load().write(mapped, path)
            ckpt = registry.read(path)
        found = [r for r in recognize(ckpt, partial=True) if r.rnn.framework == framework]
        if not found:
            after = f" after {', '.join(plan.mappings)}" if plan.mappings else ""
            raise MappingError(f"{src}: no RNN{after} for {framework} to restore into.")
        results, expected = [], set()
        for r in found:
            outcome = be.load().restore_and_run(
                r.rnn, ckpt, batches(r.rnn, (FIRST_STEP,)), by="model", options=options
            )
            expected.update(outcome.expected)
            results.append(
                RestoreResult(
                    r.rnn,
                    [Missing(n, s) for n, s in outcome.missing],
                    outcome.mismatched,
                    outcome.error,
                    ran=bool(outcome.runs),
                    notes=outcome.notes,
                )
            )
        unused = [Missing(e.name, e.shape) for e in ckpt.weights() if e.name not in expected]
        pair([m for r in results for m in r.missing], unused)
        hints = []
        if any(r.legacy for r in found) and any(res.missing for res in results):
            hints.append("The checkpoint uses TF <= 1.1 names; convert with --mapping tf1-legacy-names.")
    return IntoReport(Path(src), framework, plan.mappings, results, unused, hints)


def _choose(mapping: Any, params: MappingABC[str, Any] | None, src_fw: str, dst_fw: str) -> list[Mapping]:
    if mapping is None:
        mapping = list(builtin_chain(src_fw, dst_fw))
    return resolve_mappings(mapping, params or {})


def _no_counterpart(dst: PathLike, plan: Plan, *, chosen: bool) -> str:
    used = ", ".join(plan.mappings) or "no mapping"
    why = " (chosen for these formats; pass the mapping the conversion used)" if chosen else ""
    return f"{dst} has no RNN made from this one by {used}{why}"


def _param(mappings: Sequence[Mapping], name: str, default: float) -> float:
    for m in reversed(mappings):
        if name in m.params:
            return float(m.params[name])
    return default


def _counterpart(found: Recognized, candidates: list[Recognized], plan: Plan) -> Recognized | None:
    """The destination RNN holding most of what the plan made from `found`'s tensors. A multi-layer
    RNN that became one Keras layer per layer pairs with those layers, stacked in its layer order."""
    made = _made_from(found, plan)
    hits = []
    for c in candidates:
        overlap = made.keys() & {c.original[n] for n in c.rnn.tensor_names}
        if overlap:
            hits.append((min(made[n] for n in overlap), len(overlap), c))
    if not hits:
        return None
    if len(hits) > 1 and all(c.rnn.framework == "keras" and c.rnn.layers == 1 for _, _, c in hits):
        stack = [c for _, _, c in sorted(hits, key=lambda h: h[0])]
        cells = tuple(replace(cell, layer=k) for k, c in enumerate(stack) for cell in c.rnn.cells)
        merged = replace(stack[0].rnn, layers=len(stack), cells=cells)
        originals = {n: o for c in stack for n, o in c.original.items()}
        return Recognized(merged, stack[0].view, originals)
    return max(hits, key=lambda h: h[1])[2]


def _made_from(found: Recognized, plan: Plan) -> dict[str, int]:
    """Each target the plan made from `found`, with the source layer it came from."""
    layer_of = {found.original[n]: cell.layer for cell in found.rnn.cells for n in cell.members.values()}
    made: dict[str, int] = {}
    for t in plan.targets:
        layers = [layer_of[s] for s in t.sources if s in layer_of]
        if layers:
            made[t.name] = min(layers)
    return made


def _compare_pair(
    found: Recognized,
    match: Recognized,
    plan: Plan,
    options: dict[str, Any],
    tolerance: float | None,
    cases: tuple[Case, ...],
) -> PairResult:
    src_rnn, dst_rnn = found.rnn, match.rnn
    tol = tolerance_for(src_rnn.dtype, tolerance)
    # The rule saw the RNN under its scope after the mapping's renames (align's drafts move a
    # scope to the target's): the source's scope or the destination's.
    scopes = {src_rnn.scope or "(root)", dst_rnn.scope or "(root)"}
    declared = next((a for a in plan.approximations if a.scope in scopes), None)
    approximate = declared.reason if declared else None
    result = PairResult(src_rnn, dst_rnn, DIFFERS, tol, approximate=approximate)
    result.approximated_by = _rule_label(declared.rule) if declared else None
    shape = ("kind", "input_size", "units", "layers", "bidirectional", "proj")
    if any(getattr(src_rnn, a) != getattr(dst_rnn, a) for a in shape):
        result.message = f"different RNNs: {src_rnn.describe()} vs {dst_rnn.describe()}"
        return result
    data = batches(src_rnn, cases)
    sides = (("source", found, data + nudged(data)), ("destination", match, data))
    outcomes = []
    for side, rec, runs in sides:
        fw = rec.rnn.framework
        if rec.view.format not in backend(fw).formats:
            result.verdict = NO_RESTORE
            result.message = (f"the {side} holds a {fw} RNN in a {rec.view.format} file, which {fw} does not "
                              "restore; convert it with the mapping to its framework")  # fmt: skip
            return result
        outcome = (
            backend(fw).load().restore_and_run(rec.rnn, rec.view, runs, by="checkpoint", options=options)
        )
        result.notes += [f"the {side}: {n}" for n in outcome.notes]
        if not outcome.restored:
            result.verdict = NO_RESTORE
            result.message = f"the {side} does not restore into a fresh {fw} model: {_why(outcome)}"
            return result
        outcomes.append(outcome)
    # Float rounding differs between frameworks, and a network can amplify it along a sequence (large
    # weights make the recurrence chaotic). The source run on nudged inputs measures that drift; a
    # conversion error (a swapped gate, a lost bias) is far above it from the first step on.
    source_runs, drift_runs = outcomes[0].runs[: len(data)], outcomes[0].runs[len(data) :]
    for b, a, c, n in zip(data, source_runs, outcomes[1].runs, drift_runs, strict=True):
        errors = compare(b.case.describe(), a, c)
        errors.allowed = max(tol, DRIFT_FACTOR * compare("drift", a, n).max_abs)
        result.cases.append(errors)
    first = result.cases[cases.index(FIRST_STEP)] if FIRST_STEP in cases else None
    result.first_step_abs = first.max_abs if first else None
    result.gates = gate_errors(found, match, plan.params)
    if all(c.within for c in result.cases):
        result.verdict = EQUAL
    elif approximate and first is not None and first.within:
        result.verdict = APPROXIMATE
    return result


# Approximation.rule is a rule's `where()`: "rule 3 'gru' (/.../mappings/tf1-to-torch.yaml:48)".
_WHERE = re.compile(r"rule (?P<index>\d+)(?: '(?P<name>[^']*)')? \((?P<file>.*):\d+\)")


def _cell_options(mappings: Sequence[Mapping]) -> dict[str, float]:
    """What TF keeps in code, not in checkpoints: the forget_bias TF1's LSTM cells add at run time
    (CudnnCompatibleLSTMCell's is 0 in TF), as the mapping's parameters say."""
    return {
        "forget_bias": _param(mappings, "forget_bias", 1.0),
        "cudnn_forget_bias": _param(mappings, "cudnn_forget_bias", 0.0),
    }


def _rule_label(where: str) -> str:
    """`tf1-to-torch rule 'gru'`: which mapping and rule declare a pair approximate, short enough
    for a summary line."""
    m = _WHERE.fullmatch(where)
    if m is None:
        return where
    rule = f"'{m['name']}'" if m["name"] else m["index"]
    return f"{Path(m['file']).stem} rule {rule}"


def _why(outcome: Any) -> str:
    if outcome.missing:
        return f"it lacks {', '.join(n for n, _ in outcome.missing[:3])}"
    if outcome.mismatched:
        name, wants, has = outcome.mismatched[0]
        return f"'{name}' has shape {list(has)}, the model needs {list(wants)}"
    return outcome.error or "unknown"
