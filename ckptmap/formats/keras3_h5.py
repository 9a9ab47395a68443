"""Placeholder until this format lands (issue 4): recognizes nothing."""

from __future__ import annotations

from pathlib import Path

from ..errors import UnsupportedError
from ..tree import Checkpoint


def sniff(path: Path) -> bool:
    return False


def read(path: Path) -> Checkpoint:
    raise UnsupportedError(f"{path}: this format is not implemented yet.")


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def write(ckpt: Checkpoint, path: Path, *, progress=None) -> list[Path]:
    raise UnsupportedError(f"{path}: this format is not implemented yet.")
