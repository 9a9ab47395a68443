"""The `ckptmap` command runs in a forked child, so that a source truncated under it is one line.

Sources are memory-mapped (`rawio.MappedFile`, the TF bundle's shards, the sstable index). If a
file shrinks while it is read (a trainer saving again in place: `torch.save` truncates, then
writes), touching a page past the new end raises SIGBUS. Python cannot handle that in-process: a
handler returns to the faulting instruction, which faults again. So the command runs in a child;
the parent only waits. When the child dies of a signal, the parent undoes what it was writing
(`atomic.recover`, from the journal every AtomicFiles of the child keeps) and, for SIGBUS, says so
on one line with exit code 2. Other deaths (SIGKILL by the OOM killer, SIGTERM) are cleaned up the
same way, and then the parent dies of the same signal, so callers see what they saw before.

Signals: Ctrl-C from the terminal reaches the whole foreground process group, the child included,
so the parent passes on only what was sent to it alone (`kill`, `subprocess.send_signal`); a
SIGINT sent to the group by another process (`killpg`, GNU `timeout`) reaches the child twice,
so the child takes SIGINTs that come within `_SAME_PRESS` as one.

Only where it is sound and cheap: Linux (`sigwaitinfo` tells who sent a signal), no thread started
yet (forking a threaded process is unsafe), and the commands that read sources through maps;
forking costs about a millisecond. `ckptmap.cli.main(argv)` called in-process never forks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from .. import atomic

# The commands that map source files; `batch` runs each job in a worker process of its own
# (batch.runner records a job whose worker died, and removes its temporaries).
MAPPING_COMMANDS = frozenset({"convert", "verify", "diff", "inspect", "align"})

BUS_ERROR = "a source file changed or was truncated while it was being read (SIGBUS); no output was written."

_SI_KERNEL = 0x80  # Linux si_code of a signal the kernel sent, as the terminal's Ctrl-C
# Every signal whose default would end the parent alone is waited for and passed on (SIGKILL cannot
# be: the child then ends through PR_SET_PDEATHSIG).
_WATCHED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGALRM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SAME_PRESS = 0.5  # seconds: two SIGINTs closer than this are one Ctrl-C delivered twice


def run_supervised(args: list[str]) -> None:
    """Fork when `args` is a command that maps sources: returns in the child, which goes on to run
    it; the parent waits and exits as the child did (see the module docstring). Returns at once,
    without forking, where that is not possible."""
    if not _can_fork(args):
        return
    try:  # in memory, so no writable temporary directory is needed; both processes keep it open
        journal = os.fdopen(os.memfd_create("ckptmap-journal", os.MFD_CLOEXEC), "w+b")
    except (OSError, AttributeError):  # no memfd (an old kernel): run unsupervised
        return
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    # Blocked before the fork: a signal or the child's end that comes early waits for sigwaitinfo.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    try:
        pid = os.fork()
    except OSError:  # no memory for the page tables, a process limit: run unsupervised
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        journal.close()
        return
    if pid == 0:
        global _journal_file
        _journal_file = journal  # kept open to the child's end: the file object closes when freed
        _die_with(parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        atomic.journal_to(journal.fileno())
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt_once)
        return
    status = _wait(pid)
    journal.seek(0)
    code = _outcome(status, atomic.recover(journal.read()))
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the child already ran the atexit handlers this process shares


def _die_with(parent: int) -> None:
    """Make the child end when the parent does (a caller's SIGKILL reaches only the parent, and the
    work must not go on, and commit, after the caller has seen the command fail)."""
    import ctypes  # here: only the child pays for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux always has prctl
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(128 + signal.SIGKILL)


def _can_fork(args: list[str]) -> bool:
    command = next((a for a in args if not a.startswith("-")), None)
    return (
        command in MAPPING_COMMANDS
        and sys.platform.startswith("linux")
        and hasattr(signal, "sigwaitinfo")
        and threading.active_count() == 1
    )


def _wait(pid: int) -> int:
    """Wait for the child to end, passing on the signals sent to this process alone."""
    while True:
        info = signal.sigwaitinfo(_WATCHED)
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)  # also sent when the child stops (Ctrl-Z)
            if done:
                return status
        elif info.si_code != _SI_KERNEL:  # from the terminal, the child got it too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)


def _outcome(status: int, committed: list[os.PathLike[str]]) -> int:
    """The exit code for the child's wait status; dies of the child's signal, except SIGBUS."""
    if not os.WIFSIGNALED(status):
        return os.waitstatus_to_exitcode(status)
    number = os.WTERMSIG(status)
    if number == signal.SIGBUS:
        message = BUS_ERROR
        if committed:  # `convert --verify`: the output was complete before the verification read
            message = message.replace("no output was written", f"{committed[0]} was already written")
        print(f"Error: {message}", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
        signal.signal(number, signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):  # the child dumped its core; not a second one
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
    os.kill(os.getpid(), number)
    return 128 + number  # a signal whose default is not to die


_last_sigint = -_SAME_PRESS
_journal_file: Any = None


def _interrupt_once(signum: int, frame: Any) -> None:
    """The child's Ctrl-C: KeyboardInterrupt, as Python's own handler, but once per press."""
    global _last_sigint
    now = time.monotonic()
    if now - _last_sigint < _SAME_PRESS:
        return
    _last_sigint = now
    raise KeyboardInterrupt
