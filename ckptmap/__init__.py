"""ckptmap: inspect and remap checkpoints of recurrent neural networks."""

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
from .tree import Checkpoint, TensorEntry

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CkptmapError",
    "FormatError",
    "MappingError",
    "RuleError",
    "SourceNotFoundError",
    "TensorEntry",
    "UnsupportedError",
    "UsageError",
    "WriteError",
]
