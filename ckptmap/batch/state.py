"""The state file that lets a rerun skip finished jobs, and nothing else.

A job is skipped only when its output is provably what this job would write now. After each job
that succeeds, `<manifest>.state.json` (beside the manifest, replaced atomically) records under
its destination: the job's signature (source, destination, mappings with a content hash for
mapping files and the files they include, parameters, renames, output format, ckptmap version),
the size and mtime of each file the source is made of, and of each file written. Any difference
(a touched source, a new shard, an edited job or mapping, a deleted or rewritten output) runs the
job again; so does a state file that is missing or unreadable. Paths are stored relative to the
manifest's directory, so a migration tree copied with its timestamps (`cp -a`, rsync -a) keeps
its progress.

A damaged state file (cut short, edited into other types, nested past the parser, larger than
`size_bound` allows for the manifest's jobs) counts as none, entry by entry where the rest is
sound: running a job again is always safe, and the next save writes a sound file. One that is
not a regular file (a FIFO would block the read, a directory cannot be replaced) stops the batch
before any job, with one line saying to delete it; so does a lock file that is not a regular
file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__, api, yamldoc
from ..atomic import AtomicFiles
from ..errors import CkptmapError, RuleError, SourceNotFoundError, UsageError
from ..formats.rawio import kind, read_small, regular_file
from ..rules.mapping import builtin_name, load_spec
from .manifest import Job

VERSION = 1
Fingerprint = dict[str, list[int]]  # path -> [size, mtime in ns]
# A state file holds one entry per job of its manifest (stale ones are dropped at every run), about
# 1 KB each with a few source files, so its bound grows with the jobs: a big batch never reads its
# own file as damaged and runs everything again. The floor keeps small batches of many-shard
# checkpoints as they were. A damaged file's JSON is bounded by it too (16 MiB of `[],` parse
# into ~440 MB): memory in proportion to the manifest the user wrote.
MAX_BYTES = 16 << 20
BYTES_PER_JOB = 4 << 10


def size_bound(jobs: int) -> int:
    """The most bytes a state file for `jobs` jobs is read from."""
    return max(MAX_BYTES, (1 << 20) + BYTES_PER_JOB * jobs)


def state_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".state.json")


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """Size and mtime of each file, keyed by absolute path (a missing file has none)."""
    found = {}
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            found[str(Path(p).absolute())] = [st.st_size, st.st_mtime_ns]
    return found


def lock_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".lock")


@contextlib.contextmanager
def exclusive(manifest: Path) -> Iterator[None]:
    """Hold `manifest` for one run. A second run of it at the same time would redo the same jobs
    and overwrite this one's record of them; it is refused instead. The lock is an flock on
    `<manifest>.lock` (kept: deleting it would let a third run lock a new file while the second
    still holds the old), released however the run ends. Where no lock can be had (no flock on
    Windows, none over some NFS or FUSE mounts, a read-only folder) the run goes on unguarded; a
    lock file that is not a regular file (a FIFO would block the open) stops it instead."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = lock_path(manifest)
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(_open_lock(path))
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{manifest}: another `ckptmap batch` is running this manifest ({path.name} is "
                "locked); let it finish first."
            ) from None
        except OSError:  # ENOLCK, EOPNOTSUPP, EROFS, ...: no lock to be had here
            pass
        yield


def _open_lock(path: Path) -> BinaryIO:
    """The lock file, created if need be, refused unless it is a regular file: opening a FIFO to
    write blocks until a reader comes, so it is opened without blocking and checked again once
    open (a file swapped in between). Writable: NFS makes flock a write lock."""
    with contextlib.suppress(FileNotFoundError):
        _refuse_special(path, "lock file", os.stat(path).st_mode)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC  # POSIX, as flock
    held = os.fdopen(os.open(path, flags, 0o666), "ab")
    try:
        _refuse_special(path, "lock file", os.fstat(held.fileno()).st_mode)
    except UsageError:
        held.close()
        raise
    return held


def _refuse_special(path: Path, what: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{path}: not a regular file ({kind(mode)}), but batch's {what} goes there; "
            "delete it and run again."
        )


class State:
    """What finished before, by destination; `save` writes it back atomically."""

    def __init__(
        self, path: Path, root: Path, entries: dict[str, dict[str, Any]], limit: int = MAX_BYTES
    ) -> None:
        self.path, self.root, self.entries, self.limit = path, root, entries, limit
        self._mapping_ids: dict[str, str] = {}  # hashed once a run: see `pin`

    def pin(self, jobs: Iterable[Job]) -> None:
        """Hash the jobs' mapping files now, before any job runs (also under --force): a job is
        then recorded with the mappings it started from, even if one is edited while the batch
        runs (the next run sees the edit), and a file many jobs share is hashed once a run."""
        for job in jobs:
            self.signature(job)

    @classmethod
    def load(cls, manifest: Path, jobs: int = 0) -> State:
        """The state of `manifest`, whose jobs number `jobs` (they bound the file's size)."""
        path, limit = state_path(manifest), size_bound(jobs)
        try:
            os.stat(path)
        except FileNotFoundError:  # the first run, or a broken link, which `save` replaces
            return cls(path, manifest.parent, {}, limit)
        except OSError:
            pass  # a link loop: said below
        try:
            regular_file(path, UsageError)
        except SourceNotFoundError:
            return cls(path, manifest.parent, {}, limit)  # gone since
        except UsageError as e:  # a FIFO, a directory, a link loop: neither readable nor replaceable
            raise UsageError(f"{e} It is batch's state file: delete it and run again.") from None
        try:
            doc = json.loads(read_small(path, limit, "batch state file", UsageError))
            entries = doc["outputs"] if doc.get("version") == VERSION else {}
        except (CkptmapError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            entries = {}  # damaged: every job runs, which is always safe (see the module's docstring)
        if not isinstance(entries, dict):
            return cls(path, manifest.parent, {}, limit)
        return cls(path, manifest.parent, {k: v for k, v in entries.items() if _sound(v)}, limit)

    def is_current(self, job: Job, *, verified: bool) -> bool:
        """Whether `job`'s output is complete and up to date (and verified, when that is asked)."""
        entry = self.entries.get(self._key(job.destination))
        if not isinstance(entry, dict) or entry.get("signature") != self.signature(job):
            return False
        if verified and not entry.get("verified"):
            return False
        if self._relative(fingerprint(self._absolute(entry.get("outputs", {})))) != entry.get("outputs"):
            return False
        try:
            files = api.load(job.source).files
        except Exception:  # unreadable now: run it, and let the job report why
            return False
        return self._relative(fingerprint(files)) == entry.get("sources")

    def size(self, job: Job) -> int:
        entry = self.entries.get(self._key(job.destination), {})
        return sum(size for size, _ in entry.get("outputs", {}).values())

    def files(self, job: Job) -> list[str]:
        entry = self.entries.get(self._key(job.destination), {})
        return [str(p) for p in self._absolute(entry.get("outputs", {}))]

    def record(self, job: Job, sources: Fingerprint, outputs: Fingerprint, *, verified: bool) -> None:
        self.entries[self._key(job.destination)] = {
            "signature": self.signature(job),
            "sources": self._relative(sources),
            "outputs": self._relative(outputs),
            "verified": verified,
        }

    def forget(self, job: Job) -> None:
        self.entries.pop(self._key(job.destination), None)

    def keep_only(self, jobs: Iterable[Job]) -> None:
        """Drop entries of jobs no longer in the manifest, so the file does not grow stale."""
        wanted = {self._key(j.destination) for j in jobs}
        self.entries = {k: v for k, v in self.entries.items() if k in wanted}

    def save(self) -> None:
        """Write the entries; indented to be read by people, unless only the compact form fits
        the bound that `load` reads within (many files a job: each indented [size, mtime] takes
        four lines)."""
        doc = {"version": VERSION, "outputs": self.entries}
        text = json.dumps(doc, indent=1, sort_keys=True)
        if len(text) >= self.limit:
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        with AtomicFiles([self.path]) as out:
            out.temp(self.path).write_text(text + "\n", encoding="utf-8")

    def signature(self, job: Job) -> dict[str, Any]:
        """Everything about a job that decides its output; JSON-shaped, as it is stored."""
        sig = {
            "source": self._key(job.source),
            "destination": self._key(job.destination),
            "mapping": [self._mapping_id(m) for m in job.mapping],
            "params": job.params,
            "rename": list(job.rename.items()),
            "to": job.to,
            "ckptmap": __version__,
        }
        return json.loads(json.dumps(sig, default=str))

    def _mapping_id(self, mapping: str) -> str:
        """A built-in name (its content is pinned by the ckptmap version), or a file and the hash
        of it and of every mapping file it includes, so editing an included file reruns the job
        too (included built-ins count by name, wherever ckptmap is installed)."""
        path = Path(mapping)
        if not path.is_absolute():
            return mapping
        if mapping not in self._mapping_ids:
            self._mapping_ids[mapping] = self._hash_mapping(path)
        return self._mapping_ids[mapping]

    def _hash_mapping(self, path: Path) -> str:
        digest = hashlib.sha256()
        try:
            for f in load_spec(str(path)).files:
                if (name := builtin_name(f)) is not None:
                    digest.update(f"builtin:{name}\0".encode())
                    continue
                content = read_small(f, yamldoc.MAX_BYTES, "mapping file", RuleError)
                digest.update(f"{self._key(f)}\0{len(content)}\0".encode() + content)
        except (CkptmapError, OSError):  # the job itself will say what is wrong
            return f"{self._key(path)}@unreadable"
        return f"{self._key(path)}@sha256:{digest.hexdigest()[:16]}"

    def _key(self, path: Path) -> str:
        p = Path(path).absolute()
        return p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(p)

    def _relative(self, found: Fingerprint) -> Fingerprint:
        return {self._key(Path(p)): v for p, v in found.items()}

    def _absolute(self, stored: Fingerprint) -> list[Path]:
        return [self.root / p for p in stored]


def _sound(entry: Any) -> bool:
    """Whether a stored entry has the shape `record` writes, so reading it cannot fail."""

    def fingerprint(value: Any) -> bool:
        return isinstance(value, dict) and all(
            isinstance(v, list) and len(v) == 2 and all(type(n) is int for n in v) for v in value.values()
        )

    return (
        isinstance(entry, dict)
        and isinstance(entry.get("signature"), dict)
        and fingerprint(entry.get("sources"))
        and fingerprint(entry.get("outputs"))
        and isinstance(entry.get("verified"), bool)
    )
