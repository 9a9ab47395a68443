"""The bytes of ONNX initializers: raw_data, the typed repeated fields, and external data files.

onnx/onnx.proto, TensorProto: `raw_data` is little-endian, row-major; otherwise the values sit in
`float_data` / `double_data` (packed fixed width, a complex number two of them) or `int32_data` /
`int64_data` / `uint64_data` (packed varints; float16 and bfloat16 as their bit patterns in
int32_data). External data (`data_location` EXTERNAL) names a file relative to the model's
directory with an offset and length; onnx and onnxruntime refuse absolute locations, `..` and
symbolic links, and so does this module, before anything is opened.
"""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .. import dtypes, lazy
from ..errors import FormatError
from .onnx_graph import Graph, Initializer
from .protowire import packed_varints
from .rawio import MappedFile

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

_TYPED_FIELD = {4: "<f4", 10: "<f8"}  # float_data, double_data: fixed width; others are varints


class ModelFiles:
    """The model file and its external data files, each mapped once, on first read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._maps: dict[Path, MappedFile] = {path: MappedFile(path)}

    def mapped(self, file: Path) -> MappedFile:
        return self._maps.setdefault(file, MappedFile(file))

    def array(self, init: Initializer, dt: dtypes.DType) -> np.ndarray:
        """The initializer's values, flat, as `dt`; its byte count checked against its dims."""
        where = f"{self.path}: initializer '{init.name}'"
        nbytes = math.prod(init.dims) * dt.itemsize
        if init.location is not None:
            length = nbytes if init.external_length is None else init.external_length
            if length != nbytes:
                raise FormatError(
                    f"{where}: external data of {length} bytes; {list(init.dims)} needs {nbytes}."
                )
            target = external_path(self.path, init.location)
            data = self.mapped(target).read(init.external_offset, length)
        elif init.raw is not None:
            offset, length = init.raw
            if length != nbytes:
                raise FormatError(
                    f"{where} has {length} bytes of data; {list(init.dims)} {dt.name} needs {nbytes}."
                )
            data = self.mapped(self.path).read(offset, length)
        elif init.typed is not None:
            return self._typed(where, init, dt, nbytes // dt.itemsize)
        elif nbytes == 0:
            data = memoryview(b"")
        else:
            raise FormatError(f"{where} has no data.")
        return np.frombuffer(data, dtype=dt.numpy.newbyteorder("<"))

    def _typed(self, where: str, init: Initializer, dt: dtypes.DType, count: int) -> np.ndarray:
        assert init.typed is not None
        number, offset, length = init.typed
        raw = self.mapped(self.path).read(offset, length)
        if number in _TYPED_FIELD:
            values = np.frombuffer(raw, dtype=_TYPED_FIELD[number])
            wanted = count * (2 if dt.name.startswith("complex") else 1)
        else:
            wanted, varints = count, packed_varints(raw)
            if dt.name in ("float16", "bfloat16"):
                values = varints.astype(np.uint16).view(dt.numpy)
            else:  # negative int32 and int64 values are 64-bit two's complement on the wire
                values = varints.view(np.int64) if dt.name.startswith("int") else varints
        if len(values) != wanted:
            raise FormatError(f"{where} has {len(values)} values; {list(init.dims)} needs {wanted}.")
        return values.view(dt.numpy) if dt.name.startswith("complex") else values.astype(dt.numpy, copy=False)


def external_path(path: Path, location: str) -> Path:
    """The external data file `location` names, inside the model's directory and no link."""
    base = path.parent
    parts = Path(location).parts
    if not location or Path(location).is_absolute() or ".." in parts or "\0" in location:
        raise FormatError(
            f"{path}: external data location '{location}' is not a file beside the model; refusing it."
        )
    target = base / location
    for depth in range(1, len(parts) + 1):
        try:
            mode = base.joinpath(*parts[:depth]).lstat().st_mode
        except OSError:
            raise FormatError(f"{path}: its external data file {target} is missing.") from None
        if stat.S_ISLNK(mode):
            raise FormatError(f"{path}: external data location '{location}' is a symbolic link; refusing it.")
    return target


def external_files(path: Path, graph: Graph) -> list[Path]:
    """The external data files the model's initializers name (those it may name), once each."""
    out = []
    for location in dict.fromkeys(i.location for i in graph.initializers if i.location):
        try:
            out.append(external_path(path, location or ""))
        except FormatError:
            continue  # said when the tensor is read
    return out
