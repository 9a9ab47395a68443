"""ckptmap: inspect and remap checkpoints of recurrent neural networks.

>>> import ckptmap
>>> ckpt = ckptmap.load("sample_checkpoints/tf1_lstm2")                  # doctest: +SKIP
>>> ckptmap.convert("sample_checkpoints/tf1_lstm2", "lstm.pt", mapping="tf1-to-torch")  # doctest: +SKIP

Names are imported on first use (PEP 562), so `import ckptmap` and the `ckptmap` command load
only the modules a task needs: `ckptmap inspect` never loads the rule engine or YAML.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CkptmapError,
    FormatError,
    MappingError,
    RuleError,
    SourceNotFoundError,
    UnsupportedError,
    UsageError,
    WriteError,
)

if TYPE_CHECKING:
    from .api import ConversionReport, DiffReport, align, convert, diff, load, mapping, save, stats, verify
    from .cells.model import RNN
    from .rules.mapping import Mapping
    from .tree import Checkpoint, TensorEntry

__version__ = "0.1.0"

_LAZY = {
    **dict.fromkeys(
        [
            "ConversionReport",
            "DiffReport",
            "align",
            "convert",
            "diff",
            "load",
            "mapping",
            "save",
            "stats",
            "verify",
        ],
        "api",
    ),
    "Mapping": "rules.mapping",
    "RNN": "cells.model",  # what `Checkpoint.rnns` holds
    "Checkpoint": "tree",
    "TensorEntry": "tree",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ckptmap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "RNN",
    "Checkpoint",
    "CkptmapError",
    "ConversionReport",
    "DiffReport",
    "FormatError",
    "Mapping",
    "MappingError",
    "RuleError",
    "SourceNotFoundError",
    "TensorEntry",
    "UnsupportedError",
    "UsageError",
    "WriteError",
    "align",
    "convert",
    "diff",
    "load",
    "mapping",
    "save",
    "stats",
    "verify",
]
