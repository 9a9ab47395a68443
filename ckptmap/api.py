"""The public functions: load, mapping, save, convert, diff. The CLI is a thin layer over these.

Library code never prints or exits: it returns reports and raises `CkptmapError`s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import CkptmapError, NothingDoneError, UsageError, WriteError
from .formats import registry
from .tree import Checkpoint, TensorEntry

if TYPE_CHECKING:
    # The rule engine (and YAML) loads when a mapping is first used: `inspect` needs neither.
    from .alignment import Alignment
    from .cells.model import RNN
    from .rules.mapping import BuiltinInfo, Mapping
    from .rules.plan import Plan
    from .tensor_stats import TensorStats
    from .value_diff import ValueDiff

PathLike = str | os.PathLike[str]
MappingLike: TypeAlias = "str | os.PathLike[str] | Mapping"
Progress = Callable[[int], None]


def load(path: PathLike, *, format: str | None = None) -> Checkpoint:
    """Open a checkpoint lazily: only its index or header is read.

    >>> ckpt = ckptmap.load("sample_checkpoints/tf1_lstm2")   # doctest: +SKIP
    >>> ckpt.rnns[0].describe()                                # doctest: +SKIP
    'LSTMCell at (root): input 3, units 8, 2 layers, unidirectional'
    """
    return registry.read(path, format=format)


def mapping(name_or_path: PathLike, **params: Any) -> Mapping:
    """A built-in mapping by name (see `ckptmap mappings`) or a YAML file, with parameters set."""
    from .rules.mapping import load as load_mapping

    return load_mapping(name_or_path, params)


def save(
    ckpt: Checkpoint,
    path: PathLike,
    *,
    format: str | None = None,
    progress: Progress | None = None,
    sources: Iterable[Path] = (),
) -> list[Path]:
    """Write `ckpt` atomically; the format comes from `format` or the file name. Returns the files written."""
    dst = Path(path)
    fmt = registry.output_format(dst, format)
    writer = fmt.load()
    _refuse_overwriting_source(writer.files(dst, ckpt), [*ckpt.files, *sources])
    return writer.write(ckpt, dst, progress=progress)


@dataclass
class ConversionReport:
    source: Path
    source_format: str
    destination: Path
    destination_format: str
    plan: Plan
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def exact(self) -> bool:
        return self.plan.exact

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "source_format": self.source_format,
            "destination": str(self.destination),
            "destination_format": self.destination_format,
            "files": [str(f) for f in self.files],
            "notes": self.notes,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "plan": self.plan.to_dict(),
        }

    def __str__(self) -> str:
        """What `ckptmap convert` prints: counts, what was dropped, what is not exact, the files."""
        from . import display

        return "\n".join(display.conversion(self))

    def __repr__(self) -> str:
        plan = self.plan
        return (
            f"<ConversionReport {self.source} -> {self.destination} ({self.destination_format}): "
            f"{len(plan.targets)} tensors, {len(plan.converted)} converted, {len(plan.dropped)} dropped"
            f"{', dry run' if self.dry_run else ''}>"
        )


def convert(
    src: PathLike,
    dst: PathLike,
    mapping: MappingLike | Sequence[MappingLike] | None = None,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    to: str | None = None,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    shard_size: int | None = None,
    drop: Sequence[str] = (),
    keep_only: Sequence[str] = (),
    overwrite: bool = True,
    allow_noop: bool = False,
    into: PathLike | None = None,
) -> ConversionReport:
    """Read `src`, apply the mapping(s), drop what `drop` matches (regexes) or no `keep_only`
    matches, rename targets last, and write `dst` atomically.

    Everything is validated before anything is written; `dry_run` stops there and returns the plan.
    `shard_size` (bytes) splits a TF checkpoint into data shards of at most that size
    (`model.ckpt.data-00000-of-00004`, ...); a tensor larger than that gets a shard of its own.
    `into` names an existing file a format's writer fills rather than makes (an ONNX model: the
    graph stays, its initializers are replaced). `overwrite=False` refuses a destination that
    exists. A mapping written for another framework
    than the source's, or one that converts none of the source's RNNs, raises `NothingDoneError`
    unless `allow_noop`.

    >>> ckptmap.convert("sample_checkpoints/tf1_lstm2", "lstm.pt", mapping="tf1-to-torch")  # doctest: +SKIP
    """
    from .atomic import refuse_special
    from .pipeline import apply, as_written, resolve_mappings

    started = time.perf_counter()
    source = load(src)
    mappings = resolve_mappings(mapping, params or {})
    if not allow_noop:
        _refuse_other_framework(source, mappings)
    out, plan = apply(source, mappings, rename, drop=drop, keep_only=keep_only)
    dst_path = Path(dst)
    fmt = output_format(dst_path, to, mappings)
    options = _writer_options(fmt, shard_size, into)
    out, plan = _drop_unplaced(out, plan, fmt, mappings, options)
    if not allow_noop:
        _refuse_no_rnn_converted(source, mappings, plan)
    report = ConversionReport(
        Path(src), source.format, dst_path, fmt.name, plan, notes=list(source.notes), dry_run=dry_run
    )
    report.plan = plan = as_written(out, plan, fmt, options)
    writer = fmt.load()
    outputs = writer.files(dst_path, out, **options)
    _refuse_overwriting_source(outputs, source.files)
    refuse_special(outputs)  # before "pass --overwrite": that would not help
    if not (overwrite or dry_run) and (existing := [f for f in outputs if os.path.lexists(f)]):
        raise UsageError(
            f"{existing[0]} exists; pass --overwrite to replace it (the old files stay until the new "
            "ones are complete)."
        )
    if not dry_run:
        report.files = writer.write(out, dst_path, progress=progress, **options)
        report.bytes_written = sum(f.stat().st_size for f in report.files if f.exists())
    report.seconds = time.perf_counter() - started
    return report


def write_report(report: Any, path: PathLike) -> Path:
    """`report` (what `verify` returns for SRC and DST) as a self-contained HTML page at `path`:
    the verdicts, the numbers, the error per time step drawn. Needs the `report` extra."""
    from .reports import verify_page
    from .verification.report import VerifyReport

    if not isinstance(report, VerifyReport):
        raise UsageError("An HTML report is made of a verification of SRC against DST, not of --into.")
    _refuse_overwriting_source([Path(path)], [report.source, report.destination])
    return verify_page.write(report, path)


def write_diff_report(report: DiffReport, path: PathLike) -> Path:
    """`report` (of `diff(..., values=True)`) as a self-contained HTML page: per tensor max abs,
    max rel and SQNR, drawn. Needs the `report` extra."""
    from .reports import diff_page

    if report.values is None:
        raise UsageError("An HTML diff report shows values: compare them (values=True, --values).")
    _refuse_overwriting_source([Path(path)], [report.a, report.b])
    return diff_page.write(report, path)


def write_inspect_report(ckpt: Checkpoint, path: PathLike, *, progress: Progress | None = None) -> Path:
    """A self-contained HTML page of `ckpt`: a treemap of its scopes by bytes, its RNNs, every
    weight's statistics and the largest weights' histograms, read block by block. Needs the
    `report` extra."""
    from .reports import inspect_page

    _refuse_overwriting_source([Path(path)], ckpt.files)
    return inspect_page.write(ckpt, path, progress)


def formats() -> tuple[registry.FormatSpec, ...]:
    """The table of formats: each one's name, framework, label, an example name, and whether (and
    how) ckptmap writes it. Reading it imports no format's code."""
    return registry.FORMATS


def framework_of(format: str) -> str | None:
    """The framework whose own restore reads checkpoints of `format` (tf1, torch, keras), from the
    table of formats; None for a format ckptmap does not know."""
    try:
        return registry.framework_of(format)
    except CkptmapError:
        return None


def builtin_chain(source: str, target: str) -> tuple[str, ...]:
    """The built-in mappings that take one framework to another, in order: the one between them, or
    two through PyTorch or Keras (`onnx-to-torch`, `torch-to-tf1`); () if none do."""
    from .rules.mapping import builtin_chain as chain

    return chain(source, target)


def builtin_mapping(source: str, target: str) -> str | None:
    """The built-in mapping from one framework to another (`tf1-to-torch`), if there is one."""
    from .rules.mapping import builtin_for

    return builtin_for(source, target)


def builtin_mappings() -> tuple[BuiltinInfo, ...]:
    """The built-in mappings: name, description and the frameworks they go between."""
    from .rules.mapping import builtins

    return builtins()


def legacy_rnns(ckpt: Checkpoint) -> list[RNN]:
    """RNNs whose variables still carry TF <= 1.1 names (`ckpt.rnns` holds those under today's
    names); `tf1-legacy-names` renames them."""
    from .recognition import legacy_rnns as find

    return find(ckpt)


def stats(entries: Iterable[TensorEntry], *, progress: Progress | None = None) -> list[TensorStats]:
    """Min, max, mean, std, zeros, NaN and Inf of each tensor (`ckptmap.tensor_stats`), read block
    by block in bounded memory; `progress(n)` gets each tensor's bytes when it is done.

    >>> ckptmap.stats(ckptmap.load("lstm.pt").weights())[0].std   # doctest: +SKIP
    """
    from .tensor_stats import tensor_stats

    out = []
    for entry in entries:
        out.append(tensor_stats(entry))
        if progress is not None:
            progress(entry.nbytes)
    return out


def name_filter(pattern: str, *, option: str = "pattern") -> Callable[[Checkpoint], list[TensorEntry]]:
    """The tensors whose canonical name, or key in the file (`rnn.weight_ih_l0`, a Keras HDF5
    path), `pattern` finds: users search by the names they know. The pattern is checked now, so a
    bad one fails before any file is read; messages name it as `option` (`--filter`). Matching is
    bounded: names come from the file, the pattern from the user.

    >>> pick = ckptmap.api.name_filter(r"weight_ih")                   # doctest: +SKIP
    >>> [e.name for e in pick(ckptmap.load("lstm.pt"))]                # doctest: +SKIP
    """
    from .rules import regexes

    try:
        regex = regexes.compile(pattern, search=True)
    except regexes.UnsafeRegex as e:
        raise UsageError(f"{option} '{pattern}': {e}.") from None

    def pick(ckpt: Checkpoint) -> list[TensorEntry]:
        budget = regexes.Budget()
        try:
            return [
                e
                for e in ckpt.entries.values()
                if regex.search(e.name, budget) or (e.key != e.name and regex.search(e.key, budget))
            ]
        except regexes.NameTooLong as e:
            raise UsageError(f"{option} '{pattern}': {e}.") from None

    return pick


def _refuse_other_framework(source: Checkpoint, mappings: Sequence[Mapping]) -> None:
    """A mapping's `from:` must be the framework of what it is applied to (`torch-to-tf1` on a TF
    checkpoint matches nothing and would copy it unchanged under another format's name)."""
    current = framework_of(source.format)
    for m in mappings:
        wanted = m.spec.source_framework
        if wanted and current and wanted != current:
            raise NothingDoneError(
                f"mapping {m.name} converts {wanted} checkpoints, but {source.path} is a {current} "
                f"checkpoint ({source.format}); nothing would be converted. "
                "Pass --allow-noop to run it anyway.",
                hint=_suggested_mapping(current, m.spec.target_framework, wanted),
            )
        current = m.spec.target_framework or current


def _suggested_mapping(source: str, target: str | None, wanted: str) -> str | None:
    """The built-in mapping from `source` to the mapping's target, or else the other way round
    (`torch-to-tf1` given a TF checkpoint: `tf1-to-torch`)."""
    from .rules.mapping import builtin_chain

    goal = target if target and target != source else wanted
    chain = builtin_chain(source, goal)
    return f"for {source} -> {goal}, use {' '.join(f'--mapping {n}' for n in chain)}." if chain else None


def _refuse_no_rnn_converted(source: Checkpoint, mappings: Sequence[Mapping], plan: Plan) -> None:
    """Mappings with cell rules that took none of the source's RNNs did nothing they are for."""
    from .rules.schema import CellRule

    converts_cells = any(isinstance(r, CellRule) for m in mappings for r in m.spec.rules)
    if not plan.targets and plan.dropped:  # e.g. a cuDNN buffer alone, which tf1-to-torch drops
        names = ", ".join(m.name for m in mappings)
        name, why = plan.dropped[0]
        raise NothingDoneError(
            f"{names} left nothing of {source.path} to write: it dropped all {len(plan.dropped)} "
            f"tensor(s) ('{name}': {why}). Pass --allow-noop to write an empty file anyway."
        )
    rnns = source.rnns
    if converts_cells and rnns and plan.rnns_converted == 0:
        names = ", ".join(m.name for m in mappings)
        raise NothingDoneError(
            f"{names} converted none of the {len(rnns)} RNN(s) in {source.path} "
            f"({rnns[0].describe()}{', ...' if len(rnns) > 1 else ''}): no rule of it is for "
            f"{rnns[0].cell_type or rnns[0].kind} cells. Pass --allow-noop to write it anyway."
        )


def _drop_unplaced(
    ckpt: Checkpoint,
    plan: Plan,
    fmt: registry.FormatSpec,
    mappings: Sequence[Mapping],
    options: MappingABC[str, Any],
) -> tuple[Checkpoint, Plan]:
    """Under a mapping with `unplaced: drop`, leave out what the output format has no place for
    (the writer says why); otherwise the writer refuses it with the same reason."""
    if not any(m.spec.unplaced == "drop" for m in mappings):
        return ckpt, plan
    find = getattr(fmt.load(), "unplaced", None)
    problems = find(ckpt, **options) if find else {}
    if not problems:
        return ckpt, plan
    from .pipeline import without

    reasons = {name: f"with no place in a {fmt.name} file: {why}" for name, why in problems.items()}
    ckpt, step = without(ckpt, reasons)
    return ckpt, plan.then(step)


def _writer_options(
    fmt: registry.FormatSpec, shard_size: int | None, into: PathLike | None
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt.template and into is None:
        raise UsageError(
            f"Writing {fmt.name} needs an existing {registry.label(fmt.name)} to write into: --into "
            f"{fmt.example} ({fmt.template})."
        )
    if into is not None:
        if not fmt.template:
            fills = " or ".join(f.name for f in registry.FORMATS if f.template)
            raise UsageError(f"--into names a model to fill, for {fills} output; not for {fmt.name}.")
        options["template"] = Path(into)
    if shard_size is None:
        return options
    if shard_size <= 0:
        raise UsageError(f"shard size must be positive, not {shard_size}.")
    if not fmt.shards:
        sharded = " or ".join(f"{registry.label(n)}s (--to {n})" for n in registry.sharding_formats())
        raise UsageError(f"--shard-size applies to {sharded}, not to {fmt.name}.")
    return {**options, "max_shard_bytes": shard_size}


def verify(
    src: PathLike,
    dst: PathLike | None = None,
    mapping: MappingLike | Sequence[MappingLike] | None = None,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    *,
    into: str | None = None,
    tolerance: float | None = None,
    strict: bool = False,
) -> Any:
    """Prove a conversion, or a restore, with the frameworks themselves (imported only here).

    `verify(src, dst)` restores both into fresh RNNs, runs them on the same inputs and compares
    (a `VerifyReport`; `.ok`, `.exit_code`, `.pairs`). `verify(src, into="tf1"|"torch"|"keras")`
    restores `src` into the models its RNNs describe and says what is missing (an `IntoReport`).

    >>> ckptmap.verify("sample_checkpoints/tf1_lstm2", "lstm.pt").ok     # doctest: +SKIP
    True
    """
    from .verification.run import verify as verify_pair
    from .verification.run import verify_into

    if (dst is None) == (into is None):
        raise UsageError("Give either dst (verify a conversion) or into= (verify a restore).")
    if into is not None:
        return verify_into(src, into, mapping, params, rename)
    return verify_pair(src, dst, mapping, params, rename, tolerance=tolerance, strict=strict)


@dataclass
class DiffReport:
    """What `diff` found. `print(report)` shows what `ckptmap diff` prints."""

    a: Path
    b: Path
    only_in_a: list[str]
    only_in_b: list[str]
    changed: list[tuple[str, str, str]]  # (name, in a, in b) for shape or dtype changes
    values: list[ValueDiff] | None = None  # per tensor in both with one shape, when compared
    tolerance: float | None = None  # the largest |a - b| taken as equal, when values were compared

    @property
    def same(self) -> bool:
        names_same = not (self.only_in_a or self.only_in_b or self.changed)
        return names_same and all(v.equal for v in self.values or ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": str(self.a),
            "b": str(self.b),
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "changed": [{"name": n, "a": x, "b": y} for n, x, y in self.changed],
            "tolerance": self.tolerance,
            "values": None if self.values is None else [v.to_dict() for v in self.values],
            "same": self.same,
        }

    def __str__(self) -> str:
        from . import display

        return "\n".join(display.diff(self))

    def __repr__(self) -> str:
        differ = "" if self.values is None else f", {sum(not v.equal for v in self.values)} values differ"
        return (
            f"<DiffReport {self.a} vs {self.b}: {len(self.only_in_a)} only in a, {len(self.only_in_b)} "
            f"only in b, {len(self.changed)} changed{differ}>"
        )


def align(
    source: PathLike | Checkpoint, target: PathLike | Checkpoint, *, accept_order: bool = False
) -> Alignment:
    """Draft the mapping that turns `source` into `target`'s names and shapes (`target`: a
    checkpoint of the model to load into, even with random weights), and run it on the source to
    check that it makes every target tensor. `Alignment.ok` is False while pairs between
    look-alikes were decided by order alone, unless `accept_order`.

    >>> a = ckptmap.align("tf1_run/model.ckpt", "fresh_model.pt")      # doctest: +SKIP
    >>> print(a.mapping_text)                                           # doctest: +SKIP
    """
    from .alignment import align as draft

    return draft(source, target, accept_order=accept_order)


def diff(a: PathLike, b: PathLike, *, values: bool = False, tolerance: float | None = None) -> DiffReport:
    """Names only in one checkpoint, and shape or dtype changes, by canonical name; with `values`,
    also how far apart the values of each tensor in both are (read a block at a time, so neither
    checkpoint is held in memory whole), equal when within `tolerance` (default 0: exact).

    >>> ckptmap.diff("run1/model.ckpt", "run2/model.ckpt", values=True).same   # doctest: +SKIP
    False
    """
    if tolerance is not None and not values:
        raise UsageError("tolerance applies to values; pass values=True.")
    ca, cb = load(a), load(b)
    changed = []
    for name, ea in ca.entries.items():
        eb = cb.entries.get(name)
        if eb is not None and (ea.shape, ea.dtype) != (eb.shape, eb.dtype):
            changed.append((name, f"{list(ea.shape)} {ea.dtype}", f"{list(eb.shape)} {eb.dtype}"))
    report = DiffReport(
        Path(a),
        Path(b),
        [n for n in ca.entries if n not in cb.entries],
        [n for n in cb.entries if n not in ca.entries],
        changed,
    )
    if values:
        from . import value_diff

        report.tolerance = value_diff.check_tolerance(tolerance or 0.0)
        report.values = value_diff.compare(ca, cb, report.tolerance)
    return report


def output_format(dst: Path, to: str | None, mappings: Sequence[Mapping]) -> registry.FormatSpec:
    """The format convert writes `dst` in: `to`, else the name, else the last mapping's target framework."""
    registry.refuse_remote(dst)  # an `s3://` destination is not a local directory named `s3:`
    if to or registry.has_known_suffix(dst):
        return registry.output_format(dst, to)
    framework = mappings[-1].spec.target_framework if mappings else None
    if framework in registry.frameworks():
        return registry.preferred(framework)
    return registry.output_format(dst, None)


def _refuse_overwriting_source(outputs: Iterable[Path], sources: Iterable[Path]) -> None:
    source_files = [Path(s) for s in sources]
    for out in outputs:
        for src in source_files:
            if out.exists() and src.exists() and os.path.samefile(out, src):
                raise WriteError(
                    f"{out}: refusing to write over the source checkpoint; choose another destination."
                )
            if os.path.realpath(out) == os.path.realpath(src):  # resolve() raises on a link loop
                raise WriteError(
                    f"{out}: refusing to write over the source checkpoint; choose another destination."
                )
