"""The parent's side of a batch: a pool of worker processes, progress, and a clean stop.

Workers are spawned, not forked: each starts a fresh interpreter, so TensorFlow or torch state in
one (or in the caller) never leaks into another, and this process imports neither framework
(`worker` runs the jobs). Results arrive as jobs finish; a worker that dies (out of memory, a
crash in native code) costs only the job it ran. On Ctrl-C, queued jobs are cancelled and
running ones interrupted in their workers, where ckptmap.atomic removes their temporaries, so
an interrupted batch leaves only finished outputs behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from .. import parallel
from .manifest import Job
from .worker import (
    CANCELLED,
    DEFAULT_CHECKS,
    FAILED,
    INTERRUPTED,
    JobResult,
    VerifyOptions,
    init_worker,
    one_line,
    work,
)

STOP_GRACE = 30.0  # seconds running jobs get to clean up after Ctrl-C before their worker is killed


@dataclass(frozen=True)
class BatchProgress:
    """A snapshot for progress displays; `finished` is the job that just ended, if one did."""

    done: int
    total: int
    running: int
    bytes_written: int
    finished: JobResult | None = None


Progress = Callable[[BatchProgress], None]


def run_jobs(
    jobs: Sequence[Job],
    *,
    workers: int,
    verify: bool,
    checks: VerifyOptions = DEFAULT_CHECKS,
    on_result: Callable[[JobResult], None],
    progress: Progress | None = None,
    done: int = 0,
    total: int | None = None,
) -> None:
    """Run `jobs` on `workers` processes; `on_result` sees each result as it arrives, in the caller's
    process. Ctrl-C stops the workers' jobs, reports each as interrupted or cancelled, and re-raises."""
    runner = _Runner(verify, on_result, progress, done, len(jobs) + done if total is None else total)
    runner.checks = checks
    pending = list(jobs)
    while pending:
        # A pool breaks when one of its workers dies (killed, out of memory, a crash in native
        # code) and takes every job it was running with it. Jobs it had not started get a new
        # pool; those it was running run once more, each alone, so a job that kills its worker
        # fails by itself instead of taking others down again.
        not_started, suspects = runner.run_pool(pending, workers)
        for job in suspects:
            again, dead = runner.run_pool([job], 1)
            for j in again + dead:
                runner.finish(_failed(j, "its worker process died while running it, twice (out of memory?)."))
        if len(not_started) == len(pending):  # no progress: do not try forever
            why = "its worker process died (out of memory? killed?)."
            if not runner.finished:
                why = "the worker processes could not start (a script that calls run_batch needs "
                why += "`if __name__ == '__main__':`, as multiprocessing's spawn requires)."
            for j in not_started:
                runner.finish(_failed(j, why))
            return
        pending = not_started


class _Runner:
    def __init__(
        self,
        verify: bool,
        on_result: Callable[[JobResult], None],
        progress: Progress | None,
        done: int,
        total: int,
    ) -> None:
        self.verify, self.on_result, self.progress = verify, on_result, progress
        self.checks = DEFAULT_CHECKS
        self.done, self.total = done, total
        self.bytes: dict[str, int] = {}  # job id -> bytes so far
        self.pids: dict[str, int] = {}  # job id -> the worker running it
        self.workers: set[int] = set()  # every worker process of the current pool
        self.size = 0  # how many workers the current pool has
        self.finished: set[str] = set()

    def run_pool(self, jobs: list[Job], workers: int) -> tuple[list[Job], list[Job]]:
        """Run `jobs` on a fresh pool; returns the jobs a dead worker kept from starting, and
        those that were running when it died."""
        ctx = multiprocessing.get_context("spawn")
        events, stop = ctx.Queue(), ctx.Event()
        self.workers, self.size = set(), min(workers, len(jobs))
        pool = ProcessPoolExecutor(
            self.size,
            mp_context=ctx,
            initializer=init_worker,
            # The cores are shared among the workers: each one's threads (ckptmap.parallel) get a part.
            initargs=(events, stop, max(1, parallel.workers() // self.size)),
        )
        # Workers start with Ctrl-C ignored (inherited through exec) until init_worker installs their
        # handler: a SIGINT during a worker's start-up imports would otherwise print its traceback.
        with _sigint_ignored():
            futures = {pool.submit(work, job, self.verify or job.verify, self.checks): job for job in jobs}
        not_started: list[Job] = []
        suspects: list[Job] = []
        try:
            waiting = set(futures)
            while waiting:
                ended, waiting = wait(waiting, timeout=0.1, return_when=FIRST_COMPLETED)
                self._drain(events)
                for f in ended:
                    job = futures[f]
                    result = self._result(f, job)
                    if result is not None:
                        self.finish(result)
                        continue
                    if self.pids.pop(job.id, None) is None:
                        not_started.append(job)
                    else:
                        suspects.append(job)
                self._tell()
        except KeyboardInterrupt:
            self._stop(futures, events, stop)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            events.close()
        for job in suspects:  # only now: a broken pool fails its futures before it ends its workers
            _remove_temporaries(job)
        return not_started, suspects

    def _result(self, f: Future[JobResult], job: Job) -> JobResult | None:
        """The job's result; None when its worker process died."""
        error = f.exception()
        if error is None:
            return f.result()
        if isinstance(error, BrokenProcessPool):
            return None
        if isinstance(error, KeyboardInterrupt):
            return JobResult(job, INTERRUPTED, error="interrupted; nothing of it was left behind.")
        return _failed(job, one_line(error))

    def finish(self, result: JobResult) -> None:
        if result.job.id in self.finished:
            return
        self.finished.add(result.job.id)
        self.bytes[result.job.id] = result.bytes_written
        self.done += 1
        self.on_result(result)
        self._tell(result)

    def _tell(self, finished: JobResult | None = None) -> None:
        if self.progress is not None:
            # A job's start can arrive before the result of the one its worker just finished.
            running = min(len(set(self.pids) - self.finished), self.size)
            self.progress(BatchProgress(self.done, self.total, running, sum(self.bytes.values()), finished))

    def _drain(self, events: Any) -> None:
        while True:
            try:
                kind, job_id, value = events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "worker":
                self.workers.add(value)
            elif kind == "start":
                self.pids[job_id] = value
            elif kind == "bytes" and job_id not in self.finished:
                self.bytes[job_id] = self.bytes.get(job_id, 0) + value

    def _stop(self, futures: dict[Future[JobResult], Job], events: Any, stop: Any) -> None:
        """Ctrl-C: cancel what has not started, interrupt what runs, wait for it to clean up."""
        stop.set()  # jobs already queued to a worker return "cancelled" without starting
        for f in futures:
            f.cancel()
        signalled: set[str] = set()
        with _sigint_ignored():  # a second Ctrl-C must not cut the cleanup short
            deadline = time.monotonic() + STOP_GRACE
            waiting = {f for f in futures if not f.cancelled()}
            while waiting and time.monotonic() < deadline:
                self._drain(events)
                # The terminal sent SIGINT to the workers too, but not when only this process got
                # it, nor to a job that began just as it came; workers act on the first per job.
                for job_id, pid in self.pids.items():
                    if job_id not in self.finished and job_id not in signalled:
                        signalled.add(job_id)
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGINT)
                ended, waiting = wait(waiting, timeout=0.1)
                for f in ended:
                    job = futures[f]
                    result = self._result(f, job)
                    if result is None and job.id in self.pids:  # its worker died while stopping
                        _remove_temporaries(job)
                        result = JobResult(job, INTERRUPTED, error="interrupted; its worker died.")
                    self.finish(result or JobResult(job, CANCELLED))
            if waiting:  # stuck in native code: kill the workers, remove what they were writing
                for pid in self.workers:
                    with contextlib.suppress(OSError):
                        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # no SIGKILL on Windows
            for f in waiting:
                _remove_temporaries(futures[f])
                self.finish(JobResult(futures[f], INTERRUPTED, error="interrupted; its worker was killed."))
            for f, job in futures.items():
                if f.cancelled():
                    self.finish(JobResult(job, CANCELLED))


# --- helpers ---------------------------------------------------------------------------------


def _failed(job: Job, message: str) -> JobResult:
    return JobResult(job, FAILED, error=message)


def _remove_temporaries(job: Job) -> None:
    """What ckptmap.atomic leaves when its process is killed: `.<name>.ckptmap-<hex>.tmp` beside
    each output."""
    for out in (*job.outputs, *job.shared):
        with contextlib.suppress(OSError):
            for p in out.parent.iterdir():
                if p.name.startswith(f".{out.name}.ckptmap-") and p.name.endswith(".tmp"):
                    p.unlink()


@contextlib.contextmanager
def _sigint_ignored() -> Any:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
