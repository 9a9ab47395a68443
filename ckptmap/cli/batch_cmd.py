"""`ckptmap batch MANIFEST`: run many conversions from one manifest, in parallel; a rerun resumes."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from . import render

if TYPE_CHECKING:  # ckptmap.batch is imported when a batch runs, not on every command's start
    from ..batch import BatchProgress, BatchReport


def batch(
    manifest: Annotated[str, typer.Argument(help="The manifest (YAML): 'defaults:' and 'jobs:'.")],
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Worker processes (default: one per CPU, at most one per job)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Verify every job (each job can also say 'verify: true').")
    ] = False,
    report: Annotated[
        str | None, typer.Option("--report", help="Also write a JSON report (one entry per job) here.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo jobs whose outputs are already up to date.")
    ] = False,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Verifying: largest difference taken as equal.")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Verifying: approximate conversions fail too.")
    ] = False,
) -> None:
    """Convert many checkpoints from one manifest, in parallel; a rerun resumes.

    Finished jobs are skipped on a rerun (their state is kept in MANIFEST.state.json) as long as
    their sources, options and outputs are unchanged. Exit codes: 0 every job succeeded (or was
    already done), 1 a job failed, 2 a bad manifest, 130 Ctrl-C.

    Example migrate.yaml (relative paths are relative to the manifest):

      defaults:
        mapping: tf1-to-torch
        set: {forget_bias: 1.0}
      jobs:
        - src: runs/*/model.ckpt.index     # a glob: one job per match
          dst: torch/{parent}.pt
        - src: keras/**/*.weights.h5
          dst: torch/{dir}/{stem}.pt
          mapping: keras-to-torch
          verify: true

    ckptmap batch migrate.yaml --jobs 4 --report migrate.json

    Placeholders in dst: {name} (file name; a TF checkpoint's prefix), {stem} ({name} without
    its extension), {parent} (its directory's name), {dir} (its directory below the glob's
    fixed leading part).
    """
    from ..batch import BatchInterrupted, run_batch

    line = _ProgressLine()
    try:
        result = run_batch(
            manifest,
            jobs=jobs,
            verify=verify,
            force=force,
            report=report,
            progress=line.update,
            tolerance=tolerance,
            strict=strict,
        )
    except BatchInterrupted as stopped:
        line.close()
        print("\n".join(render_summary(stopped.report)))
        finished, total = sum(r.ok for r in stopped.report.results), len(stopped.report.results)
        print(
            f"Interrupted: {finished} of {total} jobs finished; the others were stopped or never "
            "started and left no partial output. Run the same command again to resume.",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    finally:
        line.close()
    print("\n".join(render_summary(result)))
    if result.failed:
        failed, total = len(result.failed), len(result.results)
        retry = "a rerun retries them and skips the finished ones"
        print(f"Error: {failed} of {total} jobs failed; {retry}.", file=sys.stderr)
    raise typer.Exit(result.exit_code)


def render_summary(report: BatchReport) -> list[str]:
    """The table (job, source, destination, status, seconds, size, verify), then failures' messages."""
    from ..batch import CANCELLED, SKIPPED

    rows = [("job", "source", "destination", "status", "seconds", "size", "verify")]
    for r in report.results:
        verdicts = sorted({v.upper() for v in r.verify["verdicts"]}) if r.verify else []
        checked = "-" if r.verify is None else ", ".join(verdicts) or "FAILED"
        rows.append(
            (
                r.job.id,
                r.job.source_text,
                r.job.destination_text,
                r.status,
                f"{r.seconds:.1f}" if r.status not in (SKIPPED, CANCELLED) else "-",
                render.size(r.size) if r.size else "-",
                checked,
            )
        )
    lines = render.table(rows, indent="")
    lines += [f"job {r.job.id} ({r.job.source_text}, line {r.job.line}): {r.error}" for r in report.failed]
    summary = ", ".join(f"{n} {status}" for status, n in report.counts.items())
    took = "nothing to run" if not report.workers else f"in {report.seconds:.1f} s"
    if report.workers:
        took += f" with {report.workers} worker" + ("s" if report.workers > 1 else "")
    lines.append(f"{len(report.results)} jobs: {summary}, {took}.")
    return lines


class _ProgressLine:
    """`7/12 jobs, 1.2 GB written, 2 running` on stderr, redrawn at most 10 times a second; quiet
    when stderr is not a terminal."""

    def __init__(self) -> None:
        self.enabled, self.shown, self.last = sys.stderr.isatty(), False, 0.0

    def update(self, p: BatchProgress) -> None:
        now = time.monotonic()
        if not self.enabled or (p.finished is None and now - self.last < 0.1):
            return
        self.last, self.shown = now, True
        sys.stderr.write(
            f"\r{p.done}/{p.total} jobs, {render.size(p.bytes_written)} written, {p.running} running "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False
