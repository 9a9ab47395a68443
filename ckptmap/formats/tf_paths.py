"""From what the user typed to the files of a TF checkpoint, and the `checkpoint` state file.

People name a TF checkpoint in many ways: its prefix (`run/model.ckpt-1600`, not itself a
file), its `.index` or a `.data-00000-of-00001` file, or the directory that training wrote, where
a `checkpoint` state file names the latest save (often by an absolute path from the machine that
trained it). A V1 checkpoint is one file, usually without an extension. `resolve` turns all of
these into one file or prefix, or a one-line error naming the path.

File names follow tensorflow/core/util/tensor_bundle/naming.cc; the state file is the text form
of CheckpointState (tensorflow/python/training/checkpoint_state.proto), as
`checkpoint_management.update_checkpoint_state` writes it.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, SourceNotFoundError

STATE_FILE = "checkpoint"
DEFAULT_BASENAME = "model.ckpt"  # what a TF1 Saver tutorial names it; used when given a directory
_DATA_SUFFIX = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_STATE_LINE = re.compile(r'^\s*(\w+)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


def index_path(prefix: Path) -> Path:
    """`MetaFilename`: prefix + ".index"."""
    return Path(f"{prefix}.index")


def data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """`DataFilename`: prefix + ".data-%05d-of-%05d"."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def strip_suffix(path: Path) -> Path:
    """The prefix a `.index` or `.data-NNNNN-of-NNNNN` path belongs to (else the path itself)."""
    text = str(path)
    if text.endswith(".index"):
        return Path(text[: -len(".index")])
    match = _DATA_SUFFIX.search(text)
    return Path(text[: match.start()]) if match else path


def output_prefix(path: str | os.PathLike[str]) -> Path:
    """The prefix to write to: `x.index`/`x.data-...` mean `x`; a directory means `dir/model.ckpt`."""
    p = Path(path)
    if p.is_dir():
        return p / DEFAULT_BASENAME
    return strip_suffix(p)


@dataclass(frozen=True)
class Resolved:
    """A TF checkpoint on disk: `kind` "v2" with `path` = its prefix, or "v1" with `path` = the file."""

    kind: str
    path: Path


@dataclass(frozen=True)
class CheckpointState:
    model_checkpoint_path: str
    all_model_checkpoint_paths: tuple[str, ...] = ()


def resolve(path: str | os.PathLike[str]) -> Resolved:
    """Find the checkpoint `path` names; raises SourceNotFoundError or FormatError.

    >>> resolve("runs/exp1")                        # doctest: +SKIP
    Resolved(kind='v2', path=PosixPath('runs/exp1/model.ckpt-1600'))
    """
    p = Path(path)
    if p.is_dir():
        return _resolve_directory(p)
    return _resolve_file_or_prefix(p)


def _resolve_file_or_prefix(p: Path) -> Resolved:
    prefix = strip_suffix(p)
    if prefix != p:  # the user named one of a bundle's files
        if not index_path(prefix).is_file():
            raise SourceNotFoundError(f"{p}: its index file {index_path(prefix).name} is missing.")
        return Resolved("v2", prefix)
    if index_path(p).is_file():
        return Resolved("v2", p)
    if p.is_file():
        return Resolved("v1", p)
    raise SourceNotFoundError(f"{p}: no such file, directory or checkpoint prefix.")


def _resolve_directory(directory: Path) -> Resolved:
    state_file = directory / STATE_FILE
    if state_file.is_file():
        named = read_state(state_file).model_checkpoint_path
        # An absolute path from another machine, or a path relative to the directory.
        candidates = [Path(named) if Path(named).is_absolute() else directory / named]
        candidates.append(directory / Path(named.replace("\\", "/")).name)
        for candidate in candidates:
            if index_path(candidate).is_file() or candidate.is_file():
                return _resolve_file_or_prefix(candidate)
        raise SourceNotFoundError(
            f"{state_file}: names checkpoint '{named}', which is not in {directory}.",
            hint="Pass the checkpoint's prefix (the .index file name without .index) instead.",
        )
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) == 1:
        return Resolved("v2", strip_suffix(indexes[0]))
    if not indexes:
        raise SourceNotFoundError(
            f"{directory}: no TensorFlow checkpoint here (no 'checkpoint' or .index file)."
        )
    names = ", ".join(strip_suffix(i).name for i in indexes)
    raise FormatError(
        f"{directory}: holds {len(indexes)} checkpoints ({names}) and no 'checkpoint' file to pick one.",
        hint=f"Name one, e.g. {directory / strip_suffix(indexes[-1]).name}",
    )


def read_state(state_file: Path) -> CheckpointState:
    """Parse a `checkpoint` state file (text-format CheckpointState)."""
    from .rawio import read_small  # a FIFO or a huge file named `checkpoint` must not hang or fill memory

    try:
        text = read_small(state_file, 1 << 20, "checkpoint state file").decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{state_file}: cannot read the checkpoint state file ({e}).") from e
    latest, every = None, []
    for line in text.splitlines():
        match = _STATE_LINE.match(line)
        if not match:
            continue  # timestamps and other fields carry nothing ckptmap needs
        value = codecs.escape_decode(match.group(2).encode("utf-8"))[0].decode("utf-8", "replace")
        if match.group(1) == "model_checkpoint_path":
            latest = value
        elif match.group(1) == "all_model_checkpoint_paths":
            every.append(value)
    if not latest:
        raise FormatError(f"{state_file}: no model_checkpoint_path in this checkpoint state file.")
    return CheckpointState(latest, tuple(every))


def state_text(latest: str, every: list[str]) -> str:
    """The state file a TF Saver writes after saving `latest` (last in `every`)."""
    lines = [f"model_checkpoint_path: {_quote(latest)}"]
    lines += [f"all_model_checkpoint_paths: {_quote(p)}" for p in every]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    # Text-format strings are C-escaped (protobuf's CEscape).
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
