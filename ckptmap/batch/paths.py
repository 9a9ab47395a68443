"""Where a batch job's files are: what a `src` glob matches, what a `dst` template becomes.

A glob match is a checkpoint: a file, a TF `.index` (a data shard matched by the same glob
stands for its index, TF's `checkpoint` state file for nothing), or a directory ckptmap.load
accepts. Placeholders in `dst`, for `src: runs/**/*.pt` matching `runs/a/b/lstm.pt`:

    {name}    lstm.pt     the match's name; a TF checkpoint's prefix (model.ckpt), a directory's name
    {stem}    lstm        {name} without its checkpoint extension (one of EXTENSIONS)
    {parent}  b           the name of the directory holding the match
    {dir}     a/b         that directory relative to the glob's fixed leading part (runs); "." at it

Problems raise ValueError with a message the manifest prefixes with its file and line.
"""

from __future__ import annotations

import glob
import os
import re
import string
from pathlib import Path

from ..formats import tf_paths

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
        if not (path.exists() or tf_paths.index_path(path).exists()):
            raise ValueError(f"src '{text}': no such file, directory or checkpoint prefix.")
        return [(path, path.parent)]
    base = Path(os.path.normpath(root.joinpath(*parts[:fixed])))
    # root_dir keeps glob characters in the manifest's own directory name from being read as a glob.
    found = glob.glob(pattern, root_dir=None if os.path.isabs(pattern) else root, recursive=True)
    checkpoints: dict[Path, None] = {}  # ordered and deduplicated
    for hit in sorted(found):
        checkpoint = _checkpoint_of(Path(os.path.normpath(root / hit)))
        if checkpoint is not None:
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
    files = {source.resolve()}
    if tf_paths.index_path(prefix).exists():
        files.add(tf_paths.index_path(prefix).resolve())
        files.update(Path(p).resolve() for p in glob.glob(glob.escape(str(prefix)) + ".data-*"))
    return files


def _checkpoint_of(hit: Path) -> Path | None:
    if hit.name == tf_paths.STATE_FILE and hit.is_file():
        return None
    prefix = tf_paths.strip_suffix(hit)
    if prefix != hit and tf_paths.index_path(prefix).exists():
        return tf_paths.index_path(prefix)
    return hit
