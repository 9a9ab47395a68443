"""ckptmap: inspect and remap checkpoints of recurrent neural networks.

>>> import ckptmap
>>> ckpt = ckptmap.load("sample_checkpoints/tf1_lstm2")                  # doctest: +SKIP
>>> ckptmap.convert("sample_checkpoints/tf1_lstm2", "lstm.pt", mapping="tf1-to-torch")  # doctest: +SKIP
"""

from .api import ConversionReport, DiffReport, convert, diff, load, mapping, save, verify
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
from .rules.mapping import Mapping
from .tree import Checkpoint, TensorEntry

__version__ = "0.1.0"

__all__ = [
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
    "convert",
    "diff",
    "load",
    "mapping",
    "save",
    "verify",
]
