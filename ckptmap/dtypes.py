"""The dtype table: one row per element type, with its name in every format ckptmap speaks.

Readers translate a format's own code (a TF `DataType` enum, a torch storage class, a
safetensors string) to the canonical name here, and writers translate back, so no format module
keeps a private table. bfloat16 comes from ml_dtypes, which gives numpy a real bfloat16 without
TensorFlow.

Sources: TF `DataType` enum values are from tensorflow/core/framework/types.proto; torch storage
class names from torch/storage.py (`_LegacyStorage` subclasses; uint16/32/64 have none: torch saves
them as an UntypedStorage plus the dtype, see formats/torch_pickle.py); safetensors codes from the
safetensors format spec (README "Format").
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import UnsupportedError


@dataclass(frozen=True)
class DType:
    name: str
    numpy: np.dtype
    tf_enum: int | None
    torch_storage: str | None
    safetensors: str | None

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self.name in ("float16", "bfloat16", "float32", "float64")


def _row(name: str, np_dtype: object, tf_enum: int | None, storage: str | None, st: str | None) -> DType:
    return DType(name, np.dtype(np_dtype), tf_enum, storage, st)


DTYPES: tuple[DType, ...] = (
    _row("float32", np.float32, 1, "FloatStorage", "F32"),
    _row("float64", np.float64, 2, "DoubleStorage", "F64"),
    _row("float16", np.float16, 19, "HalfStorage", "F16"),
    _row("bfloat16", ml_dtypes.bfloat16, 14, "BFloat16Storage", "BF16"),
    _row("int8", np.int8, 6, "CharStorage", "I8"),
    _row("int16", np.int16, 5, "ShortStorage", "I16"),
    _row("int32", np.int32, 3, "IntStorage", "I32"),
    _row("int64", np.int64, 9, "LongStorage", "I64"),
    _row("uint8", np.uint8, 4, "ByteStorage", "U8"),
    _row("uint16", np.uint16, 17, None, "U16"),
    _row("uint32", np.uint32, 22, None, "U32"),
    _row("uint64", np.uint64, 23, None, "U64"),
    _row("bool", np.bool_, 10, "BoolStorage", "BOOL"),
    _row("complex64", np.complex64, 8, "ComplexFloatStorage", "C64"),
    _row("complex128", np.complex128, 18, "ComplexDoubleStorage", None),
    # Strings exist only in TF checkpoints; arrays of them hold Python bytes objects.
    _row("string", object, 7, None, None),
)

_BY_NAME = {d.name: d for d in DTYPES}
_BY_TF = {d.tf_enum: d for d in DTYPES if d.tf_enum is not None}
_BY_STORAGE = {d.torch_storage: d for d in DTYPES if d.torch_storage}
_BY_SAFETENSORS = {d.safetensors: d for d in DTYPES if d.safetensors}
_BY_NUMPY = {d.numpy: d for d in DTYPES if d.name != "string"}


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


def from_numpy(dtype: np.dtype) -> DType:
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S"):
        return _BY_NAME["string"]
    try:
        return _BY_NUMPY[dtype]
    except KeyError:
        raise UnsupportedError(f"numpy dtype '{dtype}' is not supported.") from None
