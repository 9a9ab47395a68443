"""All-or-nothing output: write to temporary files beside the destination, then rename.

A checkpoint may be several files (a TF bundle is data shards, an index and a state file). They
are written under hidden temporary names in the destination's own directory (so the final
`os.replace` is a rename on one file system, atomic on POSIX) and moved into place only when every
one of them is complete. The commit is all-or-nothing too: each file it replaces is first
hard-linked to a hidden backup beside it, and if any rename fails the backups go back and the new
files go away, so an older checkpoint under the same names is never left half-replaced. Any
exception, Ctrl-C included, removes the temporaries and any directory this run created; an OSError
from the writing itself (a full disk) comes out as a `WriteError` naming the output.

A process that dies outright (SIGBUS from a source truncated under its memory map, SIGKILL)
cannot clean up after itself: with `journal_to`, every temporary, directory, backup and commit is
also noted in a file that the `ckptmap` command's supervisor (`cli.supervise`) reads to `recover`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from . import parallel
from .errors import CkptmapError, WriteError
from .formats import rawio  # its `kind`: one wording for file kinds in every message

_journal: int | None = None  # the supervisor's journal file descriptor, in a supervised child
_commits = 0  # outputs moved into place by this process, and the first file of the last one
_last_commit: Path | None = None


class AtomicFiles:
    """Context manager: `with AtomicFiles([a, b]) as out: write(out.temp(a)); write(out.temp(b))`.

    Files are renamed in the order given, so put the file that marks a checkpoint complete (a TF
    `.index`) last: a reader never sees an index whose data is not yet there.

    An existing destination must be a regular file: a FIFO, a device, a socket or a directory
    (or a symlink to one) is refused before anything is written, as replacing /dev/null is not
    what anyone meant. A symlink to a regular file is replaced by the new file, as `os.replace`
    does, and the file it pointed to is left as it was.
    """

    def __init__(self, finals: Sequence[Path]) -> None:
        self.finals = [Path(p) for p in finals]
        self._temps: dict[Path, Path] = {}
        self._created_dirs: list[Path] = []
        self._backups: dict[Path, Path | None] = {}  # final -> its backup, None if it is new

    def __enter__(self) -> AtomicFiles:
        refuse_special(self.finals)  # before any directory or file is made
        _note("S")
        for final in self.finals:
            self._make_parents(final.parent)
            temp = final.parent / f".{final.name}.ckptmap-{_tag()}.tmp"
            _note("T", temp)
            self._temps[final] = temp
        # Last: a start that failed above must not leave checks deferred with no exit to settle them.
        self._checks = parallel.checks_deferred()  # sources may be verified while being copied
        self._checks.__enter__()
        return self

    def temp(self, final: Path) -> Path:
        return self._temps[Path(final)]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            try:
                self._checks.__exit__(None, None, None)
            finally:
                self._undo()
            if isinstance(exc, OSError) and not isinstance(exc, CkptmapError):
                # A write that failed (a full disk, EFBIG, EIO) is the user's trouble, not a crash.
                raise WriteError(f"{self.finals[0]}: could not write ({exc.strerror or exc}).") from exc
            return
        try:
            try:
                parallel.settle_checks()  # a source that failed its check makes no output
            finally:
                self._checks.__exit__(None, None, None)
        except BaseException:
            self._undo()
            raise
        try:
            self._commit()
        except BaseException as e:  # Ctrl-C in an fsync or a rename included: undo, then re-raise
            self._undo()
            if isinstance(e, OSError) and not isinstance(e, CkptmapError):
                raise WriteError(
                    f"{self.finals[0]}: could not move the finished output into place ({e}); "
                    "any file it was to replace is as it was."
                ) from e
            raise

    def _commit(self) -> None:
        global _commits, _last_commit
        for final in self.finals:
            temp = self._temps[final]
            if not temp.exists():
                raise OSError(f"{temp} was never written")
            _fsync(temp)
        refuse_special(self.finals)  # again: a FIFO may have appeared while the data was written
        for final in self.finals:
            self._back_up(final)
        for final in self.finals:
            os.replace(self._temps[final], final)
        for directory in {f.parent for f in self.finals}:
            _fsync_dir(directory)
        _note("C")  # from here on the new checkpoint stands; the backups are only litter
        _commits, _last_commit = _commits + 1, self.finals[0]
        backups, self._backups, self._temps, self._created_dirs = self._backups, {}, {}, []
        for backup in backups.values():
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()

    def _back_up(self, final: Path) -> None:
        """Keep what `final` holds now under a hidden name, to put back if the commit fails."""
        if not os.path.lexists(final):
            _note("N", final)
            self._backups[final] = None
            return
        backup = final.parent / f".{final.name}.ckptmap-{_tag()}.bak"
        _note("B", backup)
        _note("F", final)
        self._backups[final] = backup
        try:
            # A second name for the same file: `final` stays readable throughout the commit.
            os.link(final, backup, follow_symlinks=False)
        except OSError:  # a file system without hard links: move it aside instead
            os.rename(final, backup)

    def _undo(self) -> None:
        """Put back every file the commit replaced, remove every new one, every temporary and
        every directory this run made. Best effort: a failing disk must not hide the first error."""
        _put_back(self._backups, list(self._temps.values()), self._created_dirs)
        self._backups, self._temps, self._created_dirs = {}, {}, []
        _note("X")

    def _make_parents(self, directory: Path) -> None:
        missing: list[Path] = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        try:
            for m in reversed(missing):
                try:
                    m.mkdir()
                except FileExistsError:
                    if m.is_dir():  # made meanwhile by another writer (a batch worker): not ours
                        continue
                    raise
                _note("D", m)
                self._created_dirs.append(m)
        except OSError as e:
            self._undo()
            raise WriteError(f"{directory}: cannot create the output directory ({e.strerror or e}).") from e
        if not directory.is_dir():
            self._undo()
            raise WriteError(f"{directory}: cannot create the output directory; a file has that name.")
        if not os.access(directory, os.W_OK):
            self._undo()
            raise WriteError(f"{directory}: the output directory is not writable.")


def refuse_special(finals: Sequence[Path]) -> None:
    """Refuse a destination that exists and is not a regular file once links are followed: a FIFO
    would block, a directory cannot be replaced, and `--overwrite` would not change either."""
    for final in finals:
        try:
            mode = final.stat().st_mode  # follows a symlink: what it points to counts
        except OSError:  # a new name, a dangling symlink the rename replaces, or a parent that is a
            continue  # file (ENOTDIR): making the parents or the temporary says what is wrong
        if not stat.S_ISREG(mode):
            raise WriteError(
                f"{final}: the destination exists and is {rawio.kind(mode)}, not a regular file; refusing "
                "to replace it. Remove it or choose another destination."
            )


def _put_back(backups: dict[Path, Path | None], temps: Sequence[Path], created_dirs: Sequence[Path]) -> None:
    for final, backup in backups.items():
        with contextlib.suppress(OSError):  # a backup not yet made: the final was never touched
            if backup is None:
                if final.is_file():  # renamed into place before the failure
                    final.unlink()
            elif _same_file(backup, final):  # never replaced: rename(2) would do nothing
                backup.unlink()
            elif os.path.lexists(backup):
                os.replace(backup, final)
    for temp in temps:
        with contextlib.suppress(OSError):  # already gone, or a failing disk: best effort
            temp.unlink()
    for directory in reversed(created_dirs):
        with contextlib.suppress(OSError):  # not empty: something else put a file there
            directory.rmdir()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


# --- the journal a supervisor reads when the process died before it could clean up ----------------


def journal_to(fd: int | None) -> None:
    """Note every temporary, created directory, backup and commit in the file open at `fd`."""
    global _journal
    _journal = fd


def commits() -> tuple[int, Path | None]:
    """How many outputs this process has moved into place, and the first file of the last one."""
    return _commits, _last_commit


def _note(kind: str, path: Path | None = None) -> None:
    # One record per write(2): kind, path, NUL (the one byte no path can hold).
    if _journal is not None:
        os.write(_journal, kind.encode() + (os.fsencode(path) if path is not None else b"") + b"\0")


def recover(journal: bytes) -> list[Path]:
    """Undo every AtomicFiles the journal shows begun and never finished (the process died in
    it): old files back, new ones, temporaries and created directories gone. Returns the first
    file of each output that was committed."""
    committed: list[Path] = []
    backups: dict[Path, Path | None] = {}
    temps: list[Path] = []
    dirs: list[Path] = []
    backup: Path | None = None
    finals: list[Path] = []
    for record in journal.split(b"\0")[:-1]:  # the last one may be cut short: ignore it
        kind, path = record[:1], Path(os.fsdecode(record[1:]))
        if kind == b"S":
            backups, temps, dirs, backup, finals = {}, [], [], None, []
        elif kind == b"T":
            temps.append(path)
        elif kind == b"D":
            dirs.append(path)
        elif kind == b"N":
            backups[path] = None
            finals.append(path)
        elif kind == b"B":
            backup = path
        elif kind == b"F":
            backups[path] = backup
            finals.append(path)
        elif kind == b"C":
            _put_back({}, [b for b in backups.values() if b is not None], [])  # leftover backups
            committed.extend(finals[:1])
            backups, temps, dirs, finals = {}, [], [], []
        elif kind == b"X":
            backups, temps, dirs, finals = {}, [], [], []
    _put_back(backups, temps, dirs)
    return committed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _tag() -> str:
    # os.urandom rather than `secrets`, whose import (hmac, hashlib) costs every command ~8 ms.
    return os.urandom(4).hex()
