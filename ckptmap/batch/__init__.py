"""Batch migration: many conversions from one manifest, in parallel, resumable.

`run_batch` validates the whole manifest first (a `ManifestError` names the line), skips jobs
whose outputs are up to date (see `state`), runs the rest in worker processes (`runner`),
records each success as it lands, and returns a `BatchReport`. It prints nothing and exits
nothing: the `ckptmap batch` command renders the report.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import AtomicFiles
from ..errors import UsageError
from .manifest import Job, Manifest, ManifestError
from .manifest import load as load_manifest
from .paths import PLACEHOLDERS
from .runner import BatchProgress, Progress, run_jobs
from .state import State, exclusive, state_path
from .worker import CANCELLED, DONE, FAILED, INTERRUPTED, SKIPPED, JobResult, VerifyOptions

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "INTERRUPTED",
    "PLACEHOLDERS",
    "SKIPPED",
    "BatchInterrupted",
    "BatchProgress",
    "BatchReport",
    "Job",
    "JobResult",
    "Manifest",
    "ManifestError",
    "load_manifest",
    "run_batch",
    "state_path",
]


@dataclass
class BatchReport:
    manifest: Path
    results: list[JobResult]
    workers: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.results)

    @property
    def ok(self) -> bool:
        """Every job done or skipped (a skipped job finished in an earlier run)."""
        return not self.interrupted and all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 all done, 1 some job failed, 130 interrupted (a bad manifest raises instead: exit 2)."""
        return 130 if self.interrupted else 0 if self.ok else 1

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "ok": self.ok,
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "counts": {s: self.counts[s] for s in (DONE, SKIPPED, FAILED, INTERRUPTED, CANCELLED)},
            "jobs": [_job_dict(r, self.manifest.parent) for r in self.results],
        }


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch, after cleanup; `report` says what finished, stopped, never started."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report


def run_batch(
    manifest: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    verify: bool = False,
    force: bool = False,
    report: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    tolerance: float | None = None,
    strict: bool = False,
) -> BatchReport:
    """Run every job of `manifest`; `report` also writes the BatchReport as JSON (atomically).

    `jobs` worker processes (default: one per CPU, at most one per job). `verify` verifies every
    job (a job's own `verify: true` does it for that job), with `tolerance` and `strict` as
    `verify` takes them. `force` redoes up-to-date jobs.

    >>> run_batch("migrate.yaml", jobs=4, report="migrate.json").exit_code   # doctest: +SKIP
    0
    """
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}.")
    loaded = load_manifest(manifest)
    with exclusive(loaded.path):
        checks = VerifyOptions(tolerance, strict)
        return _run(
            loaded, jobs=jobs, verify=verify, force=force, report=report, progress=progress, checks=checks
        )


def _run(
    loaded: Manifest,
    *,
    jobs: int | None,
    verify: bool,
    force: bool,
    report: str | os.PathLike[str] | None,
    progress: Progress | None,
    checks: VerifyOptions,
) -> BatchReport:
    started = time.perf_counter()
    state = State.load(loaded.path, len(loaded.jobs))
    state.keep_only(loaded.jobs)
    state.pin(loaded.jobs)
    results: dict[str, JobResult] = {}
    todo: list[Job] = []
    for job in loaded.jobs:
        if not force and state.is_current(job, verified=verify or job.verify):
            results[job.id] = JobResult(job, SKIPPED, size=state.size(job), files=state.files(job))
        else:
            state.forget(job)
            todo.append(job)
    workers = min(jobs or _cpus(), len(todo))

    def finished(result: JobResult) -> None:
        results[result.job.id] = result
        if result.status == DONE:  # saved at once, so a crash later still keeps this one
            state.record(result.job, result.sources, result.outputs, verified=result.verify is not None)
            state.save()

    interrupted = False
    try:
        if todo:
            run_jobs(
                todo,
                workers=workers,
                verify=verify,
                checks=checks,
                on_result=finished,
                progress=progress,
                done=len(results),
                total=len(loaded.jobs),
            )
    except KeyboardInterrupt:
        interrupted = True
    state.save()
    ordered = [results.get(j.id) or JobResult(j, CANCELLED) for j in loaded.jobs]
    batch = BatchReport(loaded.path, ordered, workers, time.perf_counter() - started, interrupted)
    if report is not None:
        write_report(batch, Path(report))
    if interrupted:
        raise BatchInterrupted(batch)
    return batch


def write_report(batch: BatchReport, path: Path) -> None:
    text = json.dumps(batch.to_dict(), indent=2, default=_jsonable)
    with AtomicFiles([path]) as out:
        out.temp(path).write_text(text + "\n", encoding="utf-8")


def _job_dict(r: JobResult, root: Path) -> dict[str, Any]:
    """Paths as the manifest writes them: relative to its directory when inside it."""
    job = r.job
    return {
        "job": job.id,
        "line": job.line,
        "source": job.source_text,
        "destination": job.destination_text,
        "status": r.status,
        "seconds": round(r.seconds, 3),
        "bytes_written": r.bytes_written,
        "size": r.size,
        "files": [os.path.relpath(f, root) if Path(f).is_relative_to(root) else f for f in r.files],
        "mapping": list(job.mapping),
        "params": job.params,
        "rename": job.rename,
        "to": job.to,
        "exact": r.exact,
        "approximations": r.approximations,
        "verify": r.verify,
        "error": r.error,
    }


def _jsonable(value: Any) -> Any:
    """numpy scalars in verification reports, and anything else, as JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
