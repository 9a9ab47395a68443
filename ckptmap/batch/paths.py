"""Where a batch job's files are: what a `src` glob matches, what a `dst` template becomes.

A glob match is a checkpoint: a file, a TF `.index` (a data shard matched by the same glob
stands for its index, TF's `checkpoint` state file for nothing), or a directory ckptmap.load
accepts. Placeholders in `dst`, for `src: runs/**/*.pt` matching `runs/a/b/lstm.pt`:

    {name}    lstm.pt     the match's name; a TF checkpoint's prefix (model.ckpt), a directory's name
    {stem}    lstm        {name} without its checkpoint extension (one of EXTENSIONS)
    {parent}  b           the name of the directory holding the match
    {dir}     a/b         that directory relative to the glob's fixed leading part (runs); "." at it

A match that is neither a regular file nor a directory (a FIFO, a device, a socket, a broken link
or a link loop) is refused: reading it would block, never end or fail in a worker, and a manifest
is checked whole before any job runs. `**` follows links to directories once each (a link to an
enclosing directory is a loop, not 40 levels of the same tree).

Problems raise ValueError with a message the manifest prefixes with its file and line.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
import string
from collections.abc import Iterator
from pathlib import Path

from ..formats import tf_paths
from ..formats.rawio import kind

PLACEHOLDERS = ("name", "stem", "parent", "dir")
# Longest first, so `model.weights.h5` loses `.weights.h5`, not just `.h5`.
EXTENSIONS = (".weights.h5", ".safetensors", ".keras", ".hdf5", ".ckpt", ".pth", ".bin", ".pt", ".h5")
_MAGIC = re.compile(r"[*?[]")


def matches(text: str, root: Path) -> list[tuple[Path, Path]]:
    """Each checkpoint `text` names (relative to `root`), with the glob's fixed leading directory."""
    pattern = os.path.expanduser(text)
    parts = Path(pattern).parts
    fixed = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), None)
    if fixed is None:  # a plain path: a file, a directory, or a TF prefix
        path = Path(os.path.normpath(root / pattern))
        if not (os.path.lexists(path) or os.path.lexists(tf_paths.index_path(path))):
            raise ValueError(f"src '{text}': no such file, directory or checkpoint prefix.")
        _refuse_special(text, path if os.path.lexists(path) else tf_paths.index_path(path))
        return [(path, path.parent)]
    base = Path(os.path.normpath(root.joinpath(*parts[:fixed])))
    # Joined to the fixed part as it is, so glob characters in the manifest's own directory name
    # are not read as a glob.
    found = [str(p) for p in _glob(root.joinpath(*parts[:fixed]), parts[fixed:])]
    if fixed == 0:  # as glob does, a leading `**` does not match the manifest's directory itself
        found = [f for f in found if Path(f) != root]
    checkpoints: dict[Path, None] = {}  # ordered and deduplicated
    for hit in sorted(found):
        checkpoint = _checkpoint_of(Path(os.path.normpath(hit)))
        if checkpoint is not None:
            _refuse_special(text, checkpoint)
            checkpoints[checkpoint] = None
    if not checkpoints:
        raise ValueError(f"src '{text}' matches nothing (looked in {base}).")
    return [(c, base) for c in checkpoints]


def check_template(template: str) -> None:
    """Refuse placeholders that do not exist, and unbalanced braces, before any glob runs."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"dst '{template}': {e} (write {{{{ and }}}} for literal braces).") from None
    for name in names:
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            raise ValueError(f"dst '{template}': unknown placeholder {{{name}}}; placeholders are {known}.")


def destination(template: str, match: Path, base: Path, root: Path) -> Path:
    """`template` (checked) filled in for `match`, as an absolute, normalized path."""
    name = match.name if match.is_dir() else tf_paths.strip_suffix(match).name
    ext = next((e for e in EXTENSIONS if name.lower().endswith(e) and len(name) > len(e)), "")
    fields = {
        "name": name,
        "stem": name[: len(name) - len(ext)],
        "parent": match.parent.name,
        "dir": os.path.relpath(match.parent, base),
    }
    return Path(os.path.normpath(root / os.path.expanduser(template.format(**fields))))


def source_files(source: Path) -> set[Path]:
    """The files a source is made of, by name alone (sources are read only when jobs run)."""
    prefix = tf_paths.strip_suffix(source)
    files = {real(source)}
    if tf_paths.index_path(prefix).exists():
        files.add(real(tf_paths.index_path(prefix)))
        files.update(real(Path(p)) for p in glob.glob(glob.escape(str(prefix)) + ".data-*"))
    return files


def not_replaceable(path: Path) -> str | None:
    """Why an output cannot go to `path` (it exists and is not a regular file once links are
    followed: a directory, a FIFO, a link loop), or None. Checked for every job before any runs."""
    if not os.path.lexists(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None  # a broken link: the output replaces it
    except OSError as e:
        return f"cannot be replaced ({e.strerror})"
    return None if stat.S_ISREG(mode) else f"is {kind(mode)}"


def real(path: Path) -> Path:
    """`path` with its links resolved as far as they go; unlike Path.resolve (3.11), a link loop
    does not raise RuntimeError: a loop at a destination is for the writer to refuse."""
    return Path(os.path.realpath(path))


def _glob(start: Path, parts: tuple[str, ...]) -> Iterator[Path]:
    """What glob.glob(recursive=True) finds for `parts` below `start`, with hidden names skipped
    the same way, except that `**` enters each directory once (by device and inode)."""
    if not parts:
        yield start
        return
    part, rest = parts[0], parts[1:]
    while part == "**" and rest[:1] == ("**",):  # `**/**` is `**`, without walking each tree twice
        rest = rest[1:]
    last = not rest
    if part == "**":  # zero or more directories; last, also every file below
        folders = _walk(start)
        for folder in folders:
            yield from _glob(folder, rest)
        if last:
            yield from (p for folder in folders for p in _files(folder))
    elif _MAGIC.search(part):
        for entry in _entries(start):
            shown = part.startswith(".") or not _hidden(entry.name)
            if shown and fnmatch.fnmatch(entry.name, part) and (last or _is_dir(entry)):
                yield from _glob(Path(entry.path), rest)
    else:
        child = start / part
        if os.path.lexists(child) if last else child.is_dir():
            yield from _glob(child, rest)


def _walk(start: Path) -> list[Path]:
    """`start` and every directory below it that is not hidden, each directory once.

    Real directories come first, links to directories after, so a tree's own paths win over a
    link's (`runs/exp3`, not `runs/latest`), and a link to a directory already seen (a loop, or an
    alias) is not entered again. No recursion: a tree may be deeper than Python's stack.
    """
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    real, links = [start], []
    while real or links:
        folder = real.pop() if real else links.pop(0)
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        found.append(folder)
        for entry in _entries(folder):
            if not _hidden(entry.name) and _is_dir(entry):
                (links if entry.is_symlink() else real).append(Path(entry.path))
    return found


def _files(folder: Path) -> Iterator[Path]:
    """The names in `folder` that are not directories and not hidden (what a last `**` adds)."""
    return (Path(e.path) for e in _entries(folder) if not _hidden(e.name) and not _is_dir(e))


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:  # not a directory, or unreadable: glob finds nothing there either
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # links followed, as glob does
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _refuse_special(text: str, path: Path) -> None:
    """A match must be a regular file or a directory once links are followed."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        what = "a broken symbolic link" if isinstance(e, FileNotFoundError) else f"unreadable ({e.strerror})"
        raise ValueError(f"src '{text}': {path} is {what}; remove it or narrow the glob.") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(
            f"src '{text}': {path} is {kind(mode)}, not a checkpoint; remove it or narrow the glob."
        )


def _checkpoint_of(hit: Path) -> Path | None:
    if hit.name == tf_paths.STATE_FILE and hit.is_file():
        return None
    prefix = tf_paths.strip_suffix(hit)
    if prefix != hit and tf_paths.index_path(prefix).exists():
        return tf_paths.index_path(prefix)
    return hit
