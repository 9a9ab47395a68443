"""All-or-nothing output: write to temporary files beside the destination, then rename.

A checkpoint may be several files (a TF bundle is an index, data shards and a state file). They
are written under hidden temporary names in the destination's own directory (so the final
`os.replace` is a rename on one file system, atomic on POSIX) and moved into place only when every
one of them is complete. Any exception, Ctrl-C included, removes the temporaries and any directory
this run created, so a failed run leaves nothing behind and a finished name is never half-written;
an OSError from the writing itself (a full disk) comes out as a `WriteError` naming the output.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from . import parallel
from .errors import CkptmapError, WriteError


class AtomicFiles:
    """Context manager: `with AtomicFiles([a, b]) as out: write(out.temp(a)); write(out.temp(b))`.

    Files are renamed in the order given, so put the file that marks a checkpoint complete (a TF
    `.index`) last: a reader never sees an index whose data is not yet there.
    """

    def __init__(self, finals: Sequence[Path]) -> None:
        self.finals = [Path(p) for p in finals]
        self._temps: dict[Path, Path] = {}
        self._created_dirs: list[Path] = []

    def __enter__(self) -> AtomicFiles:
        for final in self.finals:
            self._make_parents(final.parent)
            self._temps[final] = final.parent / f".{final.name}.ckptmap-{secrets.token_hex(4)}.tmp"
        # Last: a start that failed above must not leave checks deferred with no exit to settle them.
        self._checks = parallel.checks_deferred()  # sources may be verified while being copied
        self._checks.__enter__()
        return self

    def temp(self, final: Path) -> Path:
        return self._temps[Path(final)]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                parallel.settle_checks()  # a source that failed its check makes no output
        except BaseException:
            self._cleanup()
            raise
        finally:
            self._checks.__exit__(None, None, None)
        if exc_type is None:
            try:
                self._commit()
                return
            except OSError as e:
                self._cleanup()
                raise WriteError(
                    f"{self.finals[0]}: could not move the finished output into place ({e})."
                ) from e
        self._cleanup()
        if isinstance(exc, OSError) and not isinstance(exc, CkptmapError):
            # A write that failed (a full disk, EFBIG, EIO) is the user's trouble, not a crash.
            raise WriteError(f"{self.finals[0]}: could not write ({exc.strerror or exc}).") from exc

    def _commit(self) -> None:
        for final in self.finals:
            temp = self._temps[final]
            if not temp.exists():
                raise OSError(f"{temp} was never written")
            _fsync(temp)
        for final in self.finals:
            os.replace(self._temps[final], final)
        for directory in {f.parent for f in self.finals}:
            _fsync_dir(directory)

    def _cleanup(self) -> None:
        for temp in self._temps.values():
            with contextlib.suppress(OSError):  # already gone, or a failing disk: best effort
                temp.unlink()
        for directory in reversed(self._created_dirs):
            with contextlib.suppress(OSError):  # not empty: something else put a file there
                directory.rmdir()

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
                self._created_dirs.append(m)
        except OSError as e:
            self._cleanup()
            raise WriteError(f"{directory}: cannot create the output directory ({e.strerror or e}).") from e
        if not directory.is_dir():
            self._cleanup()
            raise WriteError(f"{directory}: cannot create the output directory; a file has that name.")
        if not os.access(directory, os.W_OK):
            self._cleanup()
            raise WriteError(f"{directory}: the output directory is not writable.")


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
