"""Batch manifests: YAML in, validated `Job`s out, each problem one line naming `file:line`.

A manifest lists conversions (`jobs:`) with shared options (`defaults:`). A job's `src` may be a
glob: each match becomes a job of its own, its `dst` told apart by placeholders. Everything that
can be checked without reading a checkpoint is checked here, before anything runs, so a typo on
line 40 never leaves a migration half done.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import api, pipeline, yamldoc
from ..errors import CkptmapError, UsageError
from ..formats import registry, tf_paths
from ..rules.mapping import Mapping
from . import paths

JOB_KEYS = ("src", "dst", "mapping", "set", "rename", "to", "verify")
DEFAULT_KEYS = JOB_KEYS[2:]
_UNSET = {"mapping": (), "set": {}, "rename": {}, "to": None, "verify": False}  # neither job nor defaults


class ManifestError(UsageError):
    """A batch manifest is invalid; the message names the manifest and the line."""


@dataclass(frozen=True)
class Job:
    """One conversion: a source (one glob match) and its destination, with every option resolved."""

    id: str  # "3" for the third entry of `jobs:`, "3.2" for the second match of its glob
    line: int  # the entry's line in the manifest
    source: Path  # absolute
    destination: Path  # absolute
    mapping: tuple[str, ...]  # built-in names, or absolute paths of mapping files
    params: dict[str, Any]
    rename: dict[str, str]
    to: str | None
    verify: bool
    source_text: str  # as shown to the user: relative to the manifest's directory when inside it
    destination_text: str
    outputs: tuple[Path, ...]  # the files the writer creates for this job alone
    shared: tuple[Path, ...] = ()  # files other jobs may write too (TF's per-directory `checkpoint`)


@dataclass(frozen=True)
class Manifest:
    path: Path
    jobs: tuple[Job, ...]

    @property
    def root(self) -> Path:
        """Relative paths in the manifest are relative to this directory."""
        return self.path.parent


def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; raises `ManifestError` (`file:line: problem`) on the first problem."""
    label, manifest = str(path), Path(os.path.abspath(path))
    doc = _read(manifest, label)
    if not isinstance(doc, dict):
        raise ManifestError(f"{label}: a manifest is a YAML mapping with a 'jobs' list (and 'defaults').")
    _no_unknown(doc, ("defaults", "jobs"), label, "the manifest")
    checker = _Checker(label, manifest.parent)
    defaults = doc.get("defaults") or yamldoc.LineDict()
    if not isinstance(defaults, dict):
        raise ManifestError(f"{label}:{doc.key_lines['defaults']}: 'defaults' must be a mapping of options.")
    _no_unknown(defaults, DEFAULT_KEYS, label, "defaults")
    base = {k: checker.option(k, v, defaults.key_lines[k]) for k, v in defaults.items()}
    entries = doc.get("jobs")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{label}:{doc.key_lines.get('jobs', 1)}: 'jobs' must be a non-empty list.")
    jobs: list[Job] = []
    for number, raw in enumerate(entries, 1):
        if not isinstance(raw, dict):
            where = f"{label}:{doc.key_lines['jobs']}"
            raise ManifestError(f"{where}: job {number} must be a mapping with 'src' and 'dst', not {raw!r}.")
        jobs += checker.expand(number, raw, base)
    checker.check_overlaps(jobs)
    return Manifest(manifest, tuple(jobs))


@dataclass(frozen=True)
class _Option:
    value: Any
    line: int


class _Checker:
    """Validation that needs the manifest's place and remembers what it checked (mappings, outputs)."""

    def __init__(self, label: str, root: Path) -> None:
        self.label, self.root = label, root
        self.resolved: dict[str, list[Mapping]] = {}  # mapping + params -> loaded, checked once
        self.dst_lines: dict[str, int] = {}  # job id -> line of its `dst`

    def fail(self, line: int, message: str) -> ManifestError:
        return ManifestError(f"{self.label}:{line}: {message}")

    def option(self, key: str, value: Any, line: int) -> _Option:
        """`value` of `key` checked for its type (and regexes, formats): mistakes stop here."""
        if key == "mapping":
            items = [] if value is None else [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(m, str) and m for m in items):
                raise self.fail(line, "'mapping' is a mapping name or file, or a list of them.")
            return _Option(tuple(self._mapping_path(m) for m in items), line)
        if key == "set":
            value = value or {}
            if not isinstance(value, dict) or not all(_scalar(v) for v in value.values()):
                raise self.fail(line, "'set' maps parameter names to values: {forget_bias: 1.0}.")
            return _Option({str(k): v for k, v in value.items()}, line)
        if key == "rename":
            value = value or {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise self.fail(line, "'rename' maps regexes to replacements: {'^model_1/': 'model/'}.")
            for pattern in value:
                try:
                    re.compile(str(pattern))
                except re.error as e:
                    raise self.fail(line, f"rename '{pattern}': bad regex ({e}).") from None
            return _Option({str(k): v for k, v in value.items()}, line)
        if key == "to":
            if value is not None and value not in registry.writable_formats():
                known = ", ".join(registry.writable_formats())
                raise self.fail(line, f"'to' is one of {known}, not {value!r}.")
            return _Option(value, line)
        if key == "verify":
            if not isinstance(value, bool):
                raise self.fail(line, f"'verify' is true or false, not {value!r}.")
            return _Option(value, line)
        if not isinstance(value, str) or not value.strip():  # src, dst
            raise self.fail(line, f"'{key}' must be a path (text), not {value!r}.")
        return _Option(value, line)

    def expand(self, number: int, raw: dict, base: dict[str, _Option]) -> list[Job]:
        """One manifest entry -> one job per source match."""
        _no_unknown(raw, JOB_KEYS, self.label, f"job {number}")
        for key in ("src", "dst"):
            if key not in raw:
                raise self.fail(raw.line, f"job {number} has no '{key}'.")
        unset = {k: _Option(v, 0) for k, v in _UNSET.items()}
        opts = {**unset, **base, **{k: self.option(k, v, raw.key_lines[k]) for k, v in raw.items()}}
        src, dst = opts["src"], opts["dst"]
        try:
            paths.check_template(dst.value)
        except ValueError as e:
            raise self.fail(dst.line, str(e)) from None
        try:
            matches = paths.matches(src.value, self.root)
        except ValueError as e:
            raise self.fail(src.line, str(e)) from None
        inherited = f" (job {number}, line {raw.line}, takes it from defaults)"
        mappings = self._mappings(opts, src.line, "" if "set" in raw else inherited)
        jobs = []
        for k, (match, base_dir) in enumerate(matches, 1):
            target = paths.destination(dst.value, match, base_dir, self.root)
            files = self._outputs(target, opts, mappings)
            job = Job(
                id=str(number) if len(matches) == 1 else f"{number}.{k}",
                line=raw.line,
                source=match,
                destination=target,
                mapping=opts["mapping"].value,
                params=dict(opts["set"].value),
                rename=dict(opts["rename"].value),
                to=opts["to"].value,
                verify=opts["verify"].value,
                source_text=self.shown(match),
                destination_text=self.shown(target),
                outputs=tuple(f for f in files if f.name != tf_paths.STATE_FILE),
                shared=tuple(f for f in files if f.name == tf_paths.STATE_FILE),
            )
            self.dst_lines[job.id] = dst.line
            jobs.append(job)
        return jobs

    def shown(self, path: Path) -> str:
        return os.path.relpath(path, self.root) if path.is_relative_to(self.root) else str(path)

    def _mapping_path(self, text: str) -> str:
        """Mapping files are found relative to the manifest; built-in names stay names."""
        candidate = self.root / os.path.expanduser(text)
        looks_like_file = text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text
        return str(candidate) if looks_like_file or candidate.exists() else text

    def _mappings(self, opts: dict[str, _Option], src_line: int, context: str) -> list[Mapping]:
        """Load the entry's mappings once and check its `set` against them; `context` names the
        job when a value came from defaults."""
        names, params = opts["mapping"].value, opts["set"].value
        key = repr((names, sorted(params.items(), key=str)))
        if key not in self.resolved:
            line = opts["mapping"].line or src_line
            try:
                loaded = [api.mapping(name) for name in names]
            except CkptmapError as e:
                raise self.fail(line, str(e)) from None
            declared = {p for m in loaded for p in m.spec.params}
            for name in params:
                if name not in declared:
                    known = ", ".join(sorted(declared)) or "none"
                    using = ", ".join(m.name for m in loaded) or "no mapping"
                    message = f"set: '{name}' is not a parameter of {using} (parameters: {known}){context}."
                    raise self.fail(opts["set"].line or src_line, message)
            try:
                self.resolved[key] = pipeline.resolve_mappings(loaded, params)
            except CkptmapError as e:
                raise self.fail(opts["set"].line or src_line, str(e)) from None
        return self.resolved[key]

    def _outputs(self, dst: Path, opts: dict[str, _Option], mappings: list[Mapping]) -> list[Path]:
        try:
            fmt = api.output_format(dst, opts["to"].value, mappings)  # the rule convert itself applies
        except CkptmapError as e:
            raise self.fail(opts["dst"].line, str(e)) from None
        if fmt.template:  # convert --into: no job key names the model to fill yet
            line = opts["to"].line or opts["dst"].line
            raise self.fail(
                line,
                f"{fmt.name} output is written into an existing model (convert --into); a batch job cannot.",
            )
        files = [Path(f) for f in fmt.load().files(dst)]
        for f in files:
            if (problem := paths.not_replaceable(f)) is not None:
                message = f"dst {self.shown(f)} {problem}; remove it or choose another."
                raise self.fail(opts["dst"].line, message)
        return files

    def check_overlaps(self, jobs: list[Job]) -> None:
        """No two jobs write one file; no job writes a file (or into a directory) that a job reads:
        jobs run in parallel, in no set order."""
        writers: dict[Path, Job] = {}
        for job in jobs:
            for out in job.outputs:
                other = writers.setdefault(paths.real(out), job)  # a link loop does not raise
                if other is not job:
                    hint = ""
                    if other.line == job.line:  # two matches of one glob
                        hint = "; put {dir}, {parent} or {stem} in dst so each match gets its own"
                    raise self.fail(
                        self.dst_lines[job.id],
                        f"job {job.id} ({job.source_text}) writes {self.shown(out)}, as job {other.id} "
                        f"({other.source_text}, line {other.line}) does{hint}.",
                    )
        readers: dict[Path, Job] = {}
        for job in jobs:
            for f in paths.source_files(job.source):
                readers.setdefault(f, job)
        for out, writer in writers.items():
            # A file that is a source, or a new file in a source directory (which would then hold two).
            reader = next((readers[p] for p in (out, *out.parents) if p in readers), None)
            if reader is not None:
                whose = "its own source" if writer is reader else f"the source of job {reader.id}"
                raise self.fail(
                    self.dst_lines[writer.id],
                    f"job {writer.id} would write {self.shown(out)}, inside {whose} "
                    f"({reader.source_text}); choose another destination.",
                )


def _read(path: Path, label: str) -> Any:
    text = yamldoc.read_file(Path(label), "manifest", ManifestError, limit=yamldoc.MAX_MANIFEST_BYTES)
    try:
        return yamldoc.load(text)
    except yamldoc.YAMLProblem as e:
        raise ManifestError(f"{e.where(label)}: {e}.") from None


def _no_unknown(doc: dict, allowed: tuple[str, ...], label: str, what: str) -> None:
    for key in doc:
        if key not in allowed:
            line = doc.key_lines.get(key, doc.line)
            raise ManifestError(
                f"{label}:{line}: unknown key '{key}' in {what}; allowed: {', '.join(allowed)}."
            )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
