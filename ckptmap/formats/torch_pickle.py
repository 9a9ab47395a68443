"""Read the pickle inside a `torch.save` file without torch and without running any of it.

`torch.save` pickles its object and replaces every storage by a persistent id; tensors are
calls to `torch._utils._rebuild_tensor_v2` on those storages (torch/_tensor.py
`_reduce_ex_internal`). This unpickler maps a short allow-list of globals to local stand-ins
that only *describe* what torch would build (storage key, dtype, offset, shape, stride) and
never imports a module. Every other global becomes an inert class: NEWOBJ may instantiate it,
which is how a pickled `nn.Module` comes back (copyreg `__reduce_ex__(2)`), but calling it, which
is how a pickle runs code (REDUCE, INST, OBJ), raises `FormatError`. `select` then picks what a
file exposes (a state dict, one nested in a training checkpoint, or a pickled module taken apart),
and `MappedFile` + `materialize` turn a description into an array only when it is read.

The C unpickler does the work, but only after `pickle_scan.scan` has bounded what the bytes can
make it spend (memo size, lengths, hashing). Messages never quote a value from the file with
str() or repr(): a value shared through the memo can take exponential time to print, so values
are named by type and size (`describe`).
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import dtypes
from ..errors import CkptmapError, FormatError, UnsupportedError, one_line
from . import pickle_scan

# torch.dtype pickles as the global `torch.<name>` (torch/csrc/Dtype.cpp `THPDtype_reduce`).
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "bool": "bool",
    "int8": "int8", "int16": "int16", "short": "int16", "int32": "int32", "int": "int32",
    "int64": "int64", "long": "int64", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
    "uint64": "uint64", "complex64": "complex64", "cfloat": "complex64",
    "complex128": "complex128", "cdouble": "complex128",
}  # fmt: skip
_MAX_REPEATED = 1 << 26  # bytes an expand()ed (stride 0) view may grow to beyond its storage
_MAX_DIMS = 64  # torch's and numpy's limit on a tensor's dimensions
_OTHER_TORCH_DTYPE = re.compile(r"float8_\w+|float4_\w+|complex32|chalf|q?u?int\d+(x\d+)?|bits\w+")


@dataclass(frozen=True)
class StorageRef:
    """A storage named by a persistent id; `dtype` None means an UntypedStorage (bytes).

    `view_offset` (elements) is set only by pre-1.6 files that saved storage views.
    """

    key: str
    dtype: dtypes.DType | None
    numel: int
    location: str = "cpu"
    view_offset: int = 0

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize if self.dtype else 1

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class TensorRef:
    """What `_rebuild_tensor_v2/v3` would build: a strided view of a storage (offset in elements)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: dtypes.DType
    conj: bool = False
    neg: bool = False

    @property
    def extent(self) -> int:
        """Elements of the storage the view reaches, from its first one (0 for empty tensors)."""
        if any(n == 0 for n in self.shape):
            return 0
        return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1


@dataclass(frozen=True)
class UnsupportedTensor:
    """A tensor torch rebuilds with a function ckptmap does not model (quantized, sparse...)."""

    rebuild: str


class _InertMeta(type):
    # Calling a class is how a pickle runs code; instantiating through NEWOBJ (cls.__new__) is not.
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise FormatError(
            f"the pickle calls {cls._path:.200}, which is not on ckptmap's allow-list; refused without "
            "running it (a trusted file can be re-saved with torch as a state_dict)."
        )


class Inert(metaclass=_InertMeta):
    """An object of a class outside the allow-list: records its class, NEWOBJ args and state."""

    _path = "?"

    def __new__(cls, *args: Any) -> Inert:
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __setstate__(self, state: Any) -> None:  # BUILD
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on dict subclasses
        self.items[key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on list subclasses
        self.elements.append(value)

    @property
    def class_path(self) -> str:
        return type(self)._path

    def __repr__(self) -> str:
        return f"<pickled {self.class_path}>"


def is_module(obj: Any) -> bool:
    """A pickled torch.nn.Module: its state (from `__getstate__`) has `_parameters` and `_modules`."""
    return isinstance(obj, Inert) and isinstance(obj.state, dict) and "_modules" in obj.state


@dataclass(frozen=True)
class _StorageType:
    """`torch.FloatStorage` and friends, as persistent ids name them (torch/storage.py)."""

    name: str
    dtype: dtypes.DType | None
    untyped: bool = False


@dataclass(frozen=True)
class _TorchDType:
    name: str

    def resolve(self) -> dtypes.DType:
        if self.name not in _TORCH_DTYPES:
            raise UnsupportedError(f"tensors of dtype torch.{self.name} are not supported.")
        return dtypes.by_name(_TORCH_DTYPES[self.name])


def describe(value: Any) -> str:
    """A value from a file, for a message: its type and size, never its text (see the docstring)."""
    kind = value.class_path if isinstance(value, Inert) else type(value).__name__
    if isinstance(value, str | bytes | tuple | list | dict | set | frozenset):
        return f"a {kind} of length {len(value)}"
    if type(value) is int and abs(value) < 1 << 64:
        return f"the int {value}"
    return f"a {kind}"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(type(v) is int and v >= 0 for v in value):
        raise FormatError(f"a tensor's {what} is not a tuple of non-negative ints ({describe(value)}).")
    if len(value) > _MAX_DIMS:
        raise FormatError(f"a tensor's {what} has {len(value)} dimensions; at most {_MAX_DIMS} are read.")
    return tuple(value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any, metadata: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise FormatError(f"a tensor is built on {type(storage).__name__}, not on a saved storage.")
    shape, strides = _ints(size, "shape"), _ints(stride, "stride")
    if type(offset) is not int or offset < 0 or len(shape) != len(strides):
        raise FormatError(f"a tensor has offset {describe(offset)}, shape {shape} and stride {strides}.")
    if dtype is None:
        if storage.dtype is None:
            raise FormatError("a tensor on an untyped storage does not name its dtype.")
        dt = storage.dtype
    elif isinstance(dtype, _TorchDType):
        dt = dtype.resolve()
    else:
        raise FormatError(f"a tensor's dtype is {describe(dtype)}, not a torch dtype.")
    meta = metadata if isinstance(metadata, dict) else {}
    ref = TensorRef(storage, offset, shape, strides, dt, bool(meta.get("conj")), bool(meta.get("neg")))
    available = storage.nbytes // dt.itemsize
    if ref.extent > available:
        raise FormatError(
            f"a tensor of shape {shape} at offset {offset} reaches past its storage "
            f"'{storage.key}' ({available} elements)."
        )
    # Strides that revisit elements (an expand()ed view) make a tensor larger than its storage;
    # reading copies it, so the file would decide how much memory that takes.
    size = math.prod(shape) * dt.itemsize
    if size > max(storage.nbytes, _MAX_REPEATED):
        raise FormatError(
            f"a tensor of shape {shape} with stride {strides} repeats its storage '{storage.key}' "
            f"({storage.nbytes} bytes) into {size} bytes; refusing to expand it."
        )
    return ref


# Stand-ins for the allow-listed globals. Names and argument orders follow torch/_utils.py.
def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRef:
    return _tensor(storage, offset, size, stride, None, None)


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False, hooks: Any = None,
    metadata: Any = None,
) -> TensorRef:  # fmt: skip
    return _tensor(storage, offset, size, stride, None, metadata)


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any,
    metadata: Any = None,
) -> TensorRef:  # fmt: skip
    # Used for dtypes without a legacy storage class (uint16/32/64, float8): UntypedStorage + dtype.
    return _tensor(storage, offset, size, stride, dtype, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any = True, hooks: Any = None, state: Any = None) -> Any:
    if not isinstance(data, TensorRef | UnsupportedTensor):
        raise FormatError("a Parameter wraps something that is not a tensor.")
    return data


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
    # Tensors with Python attributes (torch/_tensor.py `_rebuild_from_type_v2`): keep the tensor.
    if func not in _REBUILDERS or not isinstance(args, tuple):
        raise FormatError("a tensor subclass is rebuilt by a function that is not a known tensor rebuild.")
    return func(*args)


def _unsupported(path: str) -> Callable[..., UnsupportedTensor]:
    return lambda *args: UnsupportedTensor(path)


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol 2 spells bytes as `_codecs.encode(str, "latin1")`; other codecs would import modules.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise FormatError("the pickle asks for a text codec other than latin1/utf-8.")
    return text.encode(encoding)


def _bytes(*args: Any) -> bytes:
    if not args:
        return b""
    if isinstance(args[0], int):  # bytes(n) would allocate whatever the file asks for
        raise FormatError("the pickle asks for a zero-filled bytes object.")
    return _encode(*args) if isinstance(args[0], str) else bytes(args[0])


def _new_instance(cls: Any, *args: Any) -> Any:
    # copyreg.__newobj__ / _reconstructor: instantiate without calling, as NEWOBJ does.
    if isinstance(cls, _InertMeta):
        return cls.__new__(cls, *args)
    cls = getattr(cls, "kind", cls) if callable(cls) else cls
    if cls in (OrderedDict, dict, list, set, object):
        return cls()
    raise FormatError(f"the pickle reconstructs {describe(cls)}, which is not on the allow-list.")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg.py runs `base.__init__(obj, state)` unless base is object: that would be a call.
    if base is not object:
        name = base._path if isinstance(base, _InertMeta) else getattr(base, "__name__", type(base).__name__)
        raise FormatError(f"the pickle rebuilds an object by calling {name:.200}.__init__.")
    return _new_instance(cls)


def _device(*args: Any) -> str:
    # torch.device("cuda", 0) or torch.device("cuda:0"); joined as text, so nothing else is taken.
    if len(args) > 2 or not all((type(a) is str and len(a) < 64) or _small_int(a) for a in args):
        raise FormatError(f"a torch.device is built from {describe(args)} that are not a name and an index.")
    return ":".join(map(str, args))


def _layout(name: Any) -> str:
    if type(name) is not str or len(name) > 64:
        raise FormatError(f"a tensor layout is named by {describe(name)}, not by a short string.")
    return name


class _Hashing:
    """`set`, `frozenset`, `Counter`, `OrderedDict` called on a list hash its elements in C. The
    scan cannot see into lists, so each call counts the elements whose hash a file can choose
    (tuples by their size, floats, huge ints) against one budget per pickle."""

    def __init__(self) -> None:
        self.count = self.weight = 0

    def check(self, items: Any, pairs: bool = False) -> Any:
        if isinstance(items, dict | set | frozenset):  # already hashed once, at the same cost
            items = list(items)
        if not isinstance(items, list | tuple):
            return items  # str, bytes, an inert object: the call raises or iterates cheaply
        for item in items:
            if pairs:
                item = item[0] if isinstance(item, tuple | list) and item else None
            self.weight += _hash_weight(item, pickle_scan.MAX_HASHED_WEIGHT - self.weight + 1)
            self.count += type(item) not in _RANDOMIZED and not _small_int(item)
            if self.count > pickle_scan.MAX_HASHED or self.weight > pickle_scan.MAX_HASHED_WEIGHT:
                raise FormatError(
                    f"the pickle builds sets or dicts from over {pickle_scan.MAX_HASHED} tuples, floats "
                    "or huge ints; colliding hashes would make reading it quadratic."
                )
        return items

    def factories(self) -> dict[str, Any]:
        def of(kind: type, pairs: bool = False) -> Callable[..., Any]:
            def make(*args: Any) -> Any:
                return kind(*(self.check(a, pairs) for a in args[:1]))

            make.kind = kind  # type: ignore[attr-defined]  # what copyreg.__newobj__(make) builds
            return make

        return {
            "collections.OrderedDict": of(OrderedDict, pairs=True),
            "collections.Counter": of(Counter),
            "builtins.set": of(set),
            "builtins.frozenset": of(frozenset),
        }


_RANDOMIZED = (str, bytes, bool, type(None))  # str and bytes hashes are salted per process


def _small_int(value: Any) -> bool:
    return type(value) is int and abs(value) < 1 << 61


def _hash_weight(value: Any, budget: int) -> int:
    """Steps hashing `value` takes (nested tuples walked, at most `budget` of them)."""
    if type(value) is not tuple:
        return 0 if type(value) in _RANDOMIZED or _small_int(value) else 1
    steps, todo = 0, [value]
    while todo and steps < budget:
        item = todo.pop()
        steps += 1
        if type(item) is tuple:
            todo.extend(item)
    return steps


_ALLOWED: dict[str, Any] = {
    "collections.defaultdict": lambda *args: {},  # the default factory is never needed for reading
    "builtins.complex": complex,
    "builtins.slice": slice,
    "builtins.object": object,
    "builtins.bytes": _bytes,
    "builtins.bytearray": lambda *args: bytearray(_bytes(*args)),
    "_codecs.encode": _encode,
    "copyreg._reconstructor": _reconstructor,
    "copyreg.__newobj__": _new_instance,
    "torch.Size": lambda sizes=(): _ints(sizes, "size"),
    "torch.device": _device,
    "torch.serialization._get_layout": _layout,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    # torch < 1.9 named the module torch.tensor (torch/serialization.py `load_module_mapping`).
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    "torch._tensor._rebuild_from_type": _rebuild_from_type,
    "torch.tensor._rebuild_from_type_v2": _rebuild_from_type,
    "torch.tensor._rebuild_from_type": _rebuild_from_type,
}
for _name in ("qtensor", "sparse_tensor", "sparse_csr_tensor", "nested_tensor", "wrapper_subclass",
              "meta_tensor_no_storage", "device_tensor_from_numpy", "xla_tensor", "mlc_tensor"):  # fmt: skip
    _ALLOWED[f"torch._utils._rebuild_{_name}"] = _unsupported(f"torch._utils._rebuild_{_name}")
# Data-only calls common in training checkpoints (numpy scalars, paths, dates): recorded, not run.
_RECORDED = {
    f"{m}.{n}"
    for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    for n in ("scalar", "_reconstruct")
} | {"numpy.dtype", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath",
     "pathlib.PureWindowsPath", "datetime.datetime", "datetime.date", "datetime.timedelta"}  # fmt: skip


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], persistent_load: Callable[[Any], Any] | None) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_pid = persistent_load
        self._classes: dict[str, type] = {}
        self._hashing = _Hashing().factories()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (`__builtin__.set`); the base find_class would map them, ours must too.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        path = f"{module}.{name}"
        if path in _ALLOWED:
            return _ALLOWED[path]
        if path in self._hashing:
            return self._hashing[path]
        if module in ("torch", "torch.cuda", "torch.storage") and name.endswith("Storage"):
            if name in ("UntypedStorage", "ByteStorage") and module != "torch.cuda":
                untyped = name == "UntypedStorage"
                return _StorageType(name, None if untyped else dtypes.by_name("uint8"), untyped)
            try:
                return _StorageType(name, dtypes.from_torch_storage(name))
            except UnsupportedError:
                return _StorageType(name, None)
        if module == "torch" and (name in _TORCH_DTYPES or _OTHER_TORCH_DTYPE.fullmatch(name)):
            return _TorchDType(name)
        cls = self._classes.get(path)
        if cls is None:
            cls = self._classes[path] = _InertMeta(name, (Inert,), {"_path": path})
        if path in _RECORDED:
            return lambda *args: cls.__new__(cls, *args)
        return cls

    def persistent_load(self, pid: Any) -> Any:
        if self._load_pid is None:
            raise FormatError("the pickle refers to an external object where none is expected.")
        # Readers quote a bad id in their messages: only flat tuples reach them, cheap to print.
        if not isinstance(pid, tuple) or len(pid) > 8 or not all(map(_flat, pid)):
            raise FormatError(f"the pickle has a persistent id that is {describe(pid)}, not a flat tuple.")
        return self._load_pid(pid)


def _flat(value: Any) -> bool:
    if isinstance(value, tuple):  # a storage view's (key, offset, size)
        return len(value) <= 8 and all(type(v) in _FLAT for v in value)
    return type(value) in _FLAT or isinstance(value, _StorageType | _InertMeta)


_FLAT = (str, bytes, int, bool, type(None))


def unpickle(
    data: bytes | memoryview, source: str | Path, persistent_load: Callable[[Any], Any] | None = None
) -> Any:
    """Load one pickle with the allow-list; any failure is a one-line `FormatError` naming `source`."""
    return unpickle_at(data, 0, source, persistent_load)[0]


def unpickle_at(
    data: bytes | memoryview,
    start: int,
    source: str | Path,
    persistent_load: Callable[[Any], Any] | None = None,
) -> tuple[Any, int]:
    """The pickle at `start` of `data` (a file holding several, or data after one) and where it ends."""
    try:
        stop = pickle_scan.scan(data, start)  # bounds what the C unpickler below can be made to spend
        return _Unpickler(io.BytesIO(data[start:stop]), persistent_load).load(), stop
    except CkptmapError as e:
        raise type(e)(f"{source}: {e}") from None
    except RecursionError:
        raise FormatError(f"{source}: the pickle nests too deeply.") from None
    except Exception as e:  # a malformed pickle can raise almost anything; none of it is ours
        # Only the text arguments of the error: a KeyError's argument is the file's own value.
        text = " ".join(a[:200] for a in e.args if isinstance(a, str))
        detail = one_line(f"{type(e).__name__}: {text}")[:200]  # its text may span lines
        raise FormatError(f"{source}: the pickle is damaged ({detail}).") from None


def storage_type(value: Any) -> _StorageType:
    """The storage class of a persistent id; raised errors get the path from `unpickle`."""
    if not isinstance(value, _StorageType):
        raise FormatError(f"a persistent id names {describe(value)}, not a torch storage class.")
    if value.dtype is None and not value.untyped:
        raise UnsupportedError(f"storages of type torch.{value.name} are not supported.")
    return value


def text(value: Any) -> str:
    """Persistent-id fields written by Python 2 arrive as bytes (torch `_maybe_decode_ascii`)."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    if type(value) is int:  # torch's own keys are str; hand-made files may number them
        return str(value)
    if not isinstance(value, str):
        raise FormatError(f"a persistent id holds {describe(value)} where a name belongs.")
    return value


def materialize(ref: TensorRef, storage: memoryview | bytes, *, big_endian: bool = False) -> np.ndarray:
    """The tensor as a C-contiguous array: a strided view of the storage bytes, then a copy.

    `storage` holds the whole (root) storage, so views sharing it and transposed tensors come out
    as torch would show them. A tensor that is its whole storage in C order (what a state dict
    mostly holds) is not copied: it is `storage` itself, read-only, so reading it costs no
    second buffer.
    """
    dt = ref.dtype.numpy
    if ref.extent == 0:
        return np.empty(ref.shape, dt)
    start = ref.storage.view_offset * ref.storage.itemsize + ref.offset * dt.itemsize
    count = ref.extent - ref.offset
    if start + count * dt.itemsize > len(storage):
        raise FormatError(f"storage '{ref.storage.key}' is shorter than its tensors need.")
    flat = np.frombuffer(storage, dtype=dt, count=count, offset=start)
    # A dimension of size 1 never uses its stride, so torch allows any there (2**62 included);
    # as_strided needs it to fit a C long. The extent check in _tensor bounds the others.
    strides = tuple(s * dt.itemsize if n > 1 else 0 for n, s in zip(ref.shape, ref.stride, strict=True))
    view = np.lib.stride_tricks.as_strided(flat, ref.shape, strides, writeable=False)
    whole = start == 0 and count * dt.itemsize == len(storage) and view.size == count
    if whole and view.flags.c_contiguous and not (big_endian and dt.itemsize > 1):
        out = flat.reshape(ref.shape)
    else:
        out = np.array(view, order="C", copy=True)
    if big_endian and dt.itemsize > 1:
        unit = dt.itemsize // 2 if dt.kind == "c" else dt.itemsize
        out.view(f"u{unit}").byteswap(inplace=True)
    if ref.conj:
        out = np.conj(out)
    if ref.neg:
        out = np.negative(out)
    return out
