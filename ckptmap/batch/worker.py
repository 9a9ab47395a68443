"""What runs inside a batch worker process: one job, from source to verified output.

Each worker is a spawned interpreter; only here are TensorFlow and torch imported (by
`ckptmap.verify`). A job reports the bytes it writes through the queue the parent gave the
worker, and returns a `JobResult`: any exception becomes its one-line error, so one bad
checkpoint never stops the others. Ctrl-C interrupts the running job once; ckptmap.atomic then
removes its temporaries on the way out.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from .. import api, errors
from ..errors import CkptmapError
from .manifest import Job
from .state import Fingerprint, fingerprint

DONE, SKIPPED, FAILED, INTERRUPTED, CANCELLED = "done", "skipped", "failed", "interrupted", "cancelled"


@dataclass
class JobResult:
    job: Job
    status: str
    seconds: float = 0.0
    bytes_written: int = 0
    size: int = 0  # of the outputs on disk (also for skipped jobs)
    files: list[str] = field(default_factory=list)
    exact: bool | None = None
    approximations: list[str] = field(default_factory=list)
    verify: dict[str, Any] | None = None  # ok, verdicts, errors, and the VerifyReport as a dict
    error: str | None = None
    sources: Fingerprint = field(default_factory=dict)  # as read, for the state file
    outputs: Fingerprint = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (DONE, SKIPPED)


# The parent's queue: ("worker", "", pid), ("start", job id, pid), ("bytes", job id, n).
_events: Any = None
_stop_event: Any = None  # set by the parent on Ctrl-C: queued jobs return "cancelled"
_running = False
_interrupted = False


def init_worker(events: Any, stop: Any, threads: int) -> None:
    """The pool's initializer: keep the parent's queue and stop event, take over Ctrl-C, use
    `threads` threads for the byte-heavy steps (the parent's share of its own CKPTMAP_THREADS)."""
    global _events, _stop_event
    _events, _stop_event = events, stop
    os.environ["CKPTMAP_THREADS"] = str(threads)  # the inherited value is the whole machine's
    signal.signal(signal.SIGINT, _on_sigint)
    send("worker", "", os.getpid())


def _on_sigint(signum: int, frame: Any) -> None:
    """Interrupt the running job once; an idle worker, or one already cleaning up, ignores Ctrl-C."""
    global _interrupted
    if _running and not _interrupted:
        _interrupted = True
        raise KeyboardInterrupt


@dataclass(frozen=True)
class VerifyOptions:
    """How `--verify` judges a job: `tolerance` (None: verify's default per dtype) and `strict`."""

    tolerance: float | None = None
    strict: bool = False


DEFAULT_CHECKS = VerifyOptions()


def work(job: Job, verify: bool, checks: VerifyOptions = DEFAULT_CHECKS) -> JobResult:
    """Convert (and verify) one job; never raises, so the pool only ever sees results."""
    global _running, _interrupted
    _running, _interrupted = True, False
    started = time.perf_counter()
    result = JobResult(job, FAILED)
    try:
        if _stop_event is not None and _stop_event.is_set():
            result.status = CANCELLED
            return result
        send("start", job.id, os.getpid())
        result.sources = fingerprint(api.load(job.source).files)  # before reading: a later edit reruns
        report = api.convert(
            job.source,
            job.destination,
            list(job.mapping),
            job.params,
            job.rename,
            job.to,
            progress=lambda n: send("bytes", job.id, n),
        )
        outputs = [f for f in report.files if f not in job.shared]
        result.files = [str(f) for f in report.files]
        result.bytes_written = report.bytes_written
        result.exact = report.plan.exact
        result.approximations = [f"{a.scope}: {a.reason}" for a in report.plan.approximations]
        result.status = DONE
        if verify:
            checked = api.verify(
                job.source,
                job.destination,
                list(job.mapping),
                job.params,
                job.rename,
                tolerance=checks.tolerance,
                strict=checks.strict,
            )
            result.verify = verdicts(checked)
            if not checked.ok:
                result.status = FAILED
                why = "; ".join(result.verify["errors"])
                result.error = f"{job.destination_text} was written but did NOT verify: {why}"
        result.outputs = fingerprint(outputs)
        result.size = sum(size for size, _ in result.outputs.values())
    except KeyboardInterrupt:
        result.status = INTERRUPTED
        result.error = "interrupted; nothing of it was left behind."
        if result.files:
            result.error = "interrupted while verifying; the output stays but is not counted as done."
    except Exception as e:  # CkptmapErrors, and bugs or damage no reader foresaw: the batch goes on
        result.status, result.error = FAILED, one_line(e)
    finally:
        _running = False
        result.seconds = time.perf_counter() - started
    return result


def verdicts(checked: Any) -> dict[str, Any]:
    """A VerifyReport as the batch report shows it: the verdict per RNN and what failed."""
    errors = [
        f"{p.source.describe()}: {p.verdict}" + (f" ({p.message})" if p.message else "")
        for p in checked.pairs
        if not p.passes(checked.strict)
    ]
    if not checked.pairs:
        errors.append("no RNN found in the source to verify")
    return {
        "ok": checked.ok,
        "verdicts": [p.verdict for p in checked.pairs],
        "errors": errors,
        "report": checked.to_dict(),
    }


def send(kind: str, job_id: str, value: int) -> None:
    if _events is not None:
        _events.put((kind, job_id, value))


def one_line(error: BaseException) -> str:
    """An exception as the one line the reports show: ckptmap's message, or `Type: message`."""
    text = errors.one_line(error)
    if not isinstance(error, CkptmapError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    hint = getattr(error, "hint", None)
    return f"{text} Hint: {errors.one_line(hint)}" if hint else text
