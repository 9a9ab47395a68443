"""The dtype table: one row per element type, with its name in every format ckptmap speaks.

Readers translate a format's own code (a TF `DataType` enum, a torch storage class, a
safetensors string) to the canonical name here, and writers translate back, so no format module
keeps a private table. bfloat16 comes from ml_dtypes, which gives numpy a real bfloat16 without
TensorFlow. Rows name their numpy type instead of holding it: numpy and ml_dtypes (0.9 s to import
in 0.7) load when a command first needs a tensor's bytes, so reading an index needs neither.

Sources: TF `DataType` enum values are from tensorflow/core/framework/types.proto; torch storage
class names from torch/storage.py (`_LegacyStorage` subclasses; uint16/32/64 have none: torch saves
them as an UntypedStorage plus the dtype, see formats/torch_pickle.py); safetensors codes from the
safetensors format spec (README "Format"); ONNX codes from onnx/onnx.proto (TensorProto.DataType).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from . import lazy
from .errors import UnsupportedError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    tf_enum: int | None
    torch_storage: str | None
    safetensors: str | None
    onnx: int | None  # TensorProto.DataType
    # "module:attribute" of the numpy scalar type; ml_dtypes' types are imported only when used.
    numpy_type: str

    @cached_property
    def numpy(self) -> np.dtype:
        module, _, attr = self.numpy_type.partition(":")
        return np.dtype(getattr(importlib.import_module(module), attr))

    @property
    def is_float(self) -> bool:
        return self.name in ("float16", "bfloat16", "float32", "float64")


def _row(
    name: str,
    size: int,
    tf_enum: int | None,
    storage: str | None,
    st: str | None,
    onnx: int | None,
    np_type: str,
) -> DType:
    return DType(name, size, tf_enum, storage, st, onnx, np_type if ":" in np_type else f"numpy:{np_type}")


DTYPES: tuple[DType, ...] = (
    _row("float32", 4, 1, "FloatStorage", "F32", 1, "float32"),
    _row("float64", 8, 2, "DoubleStorage", "F64", 11, "float64"),
    _row("float16", 2, 19, "HalfStorage", "F16", 10, "float16"),
    _row("bfloat16", 2, 14, "BFloat16Storage", "BF16", 16, "ml_dtypes:bfloat16"),
    _row("int8", 1, 6, "CharStorage", "I8", 3, "int8"),
    _row("int16", 2, 5, "ShortStorage", "I16", 5, "int16"),
    _row("int32", 4, 3, "IntStorage", "I32", 6, "int32"),
    _row("int64", 8, 9, "LongStorage", "I64", 7, "int64"),
    _row("uint8", 1, 4, "ByteStorage", "U8", 2, "uint8"),
    _row("uint16", 2, 17, None, "U16", 4, "uint16"),
    _row("uint32", 4, 22, None, "U32", 12, "uint32"),
    _row("uint64", 8, 23, None, "U64", 13, "uint64"),
    _row("bool", 1, 10, "BoolStorage", "BOOL", 9, "bool_"),
    _row("complex64", 8, 8, "ComplexFloatStorage", "C64", 14, "complex64"),
    _row("complex128", 16, 18, "ComplexDoubleStorage", None, 15, "complex128"),
    # Strings exist only in TF checkpoints; arrays of them hold Python bytes objects (itemsize:
    # numpy's object pointer, which is what `nbytes` of such an array counts).
    _row("string", 8, 7, None, None, 8, "builtins:object"),
)

_BY_NAME = {d.name: d for d in DTYPES}
_BY_TF = {d.tf_enum: d for d in DTYPES if d.tf_enum is not None}
_BY_STORAGE = {d.torch_storage: d for d in DTYPES if d.torch_storage}
_BY_SAFETENSORS = {d.safetensors: d for d in DTYPES if d.safetensors}
_BY_ONNX = {d.onnx: d for d in DTYPES if d.onnx is not None}


def by_name(name: str) -> DType:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise UnsupportedError(f"Unknown dtype '{name}'; known dtypes: {known}.") from None


def from_tf_enum(code: int) -> DType:
    try:
        return _BY_TF[code]
    except KeyError:
        raise UnsupportedError(f"TensorFlow dtype code {code} is not supported by ckptmap.") from None


def from_torch_storage(storage_class: str) -> DType:
    try:
        return _BY_STORAGE[storage_class]
    except KeyError:
        raise UnsupportedError(f"PyTorch storage type '{storage_class}' is not supported.") from None


def from_safetensors(code: str) -> DType:
    try:
        return _BY_SAFETENSORS[code]
    except KeyError:
        raise UnsupportedError(f"safetensors dtype '{code}' is not supported.") from None


def from_onnx(code: int) -> DType:
    try:
        return _BY_ONNX[code]
    except KeyError:
        raise UnsupportedError(f"ONNX data type {code} is not supported by ckptmap.") from None


def from_numpy(dtype: np.dtype) -> DType:
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S"):
        return _BY_NAME["string"]
    # By name first, so that meeting float32 does not import ml_dtypes for bfloat16's row.
    row = _BY_NAME.get(dtype.name)
    if row is None or row.name == "string" or row.numpy != dtype:  # '>f4' is named float32 too
        raise UnsupportedError(f"numpy dtype '{dtype}' is not supported.")
    return row
