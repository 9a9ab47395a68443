"""Format "keras2": the HDF5 weights of Keras 2 / tf-keras, read and written with h5py.

`model.save_weights("x.h5")` (tf_keras/src/saving/legacy/hdf5_format.py `save_weights_to_hdf5_group`)
writes root attributes `layer_names`, `backend`, `keras_version`, then one group per layer with a
`weight_names` attribute and a dataset `<layer>/<weight name>` per weight, in `_legacy_weights`
order (trainable weights first). `model.save("x.h5")` puts the same under `model_weights` and adds
`optimizer_weights`; Keras 3 writes that legacy layout too, with weight names prefixed by the model
name and without `:0`. Attributes longer than HDF5's 64 KiB header limit are split into `name0`,
`name1`, ... (`save_attributes_to_hdf5_group`).

Names are canonical Keras names (see `keras_names`); `keras2_names` translates the weight names
(`gru/gru_cell/kernel:0` <-> `gru/cell/kernel`, Keras 2.1's cell-less `gru_1/kernel:0` included)
and orders weights so that tf-keras `load_weights`, by order or by name, accepts what is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes, kinds
from ..atomic import AtomicFiles
from ..errors import CkptmapError, FormatError, UnsupportedError, WriteError, one_line
from ..tree import Checkpoint, TensorEntry
from . import keras_names as kn
from .hdf5_guard import SIGNATURE, Guard, check_global_heaps_in_file
from .keras2_names import INDEX, canonical_names, weight_names
from .rawio import file_size
from .stream import write_dataset

FORMAT = "keras2"
TOP_LEVEL = "top_level_model_weights"  # a model's own variables, outside any layer
OPTIMIZER_GROUP, OPTIMIZER_PREFIX = "optimizer_weights", "optimizer/"
# tf-keras only converts weights when keras_version is "1" (preprocess_weights_for_loading); any 2.x works.
KERAS_VERSION = "2.15.0"
_ATTR_LIMIT = 64512  # HDF5_OBJECT_HEADER_LIMIT in hdf5_format.py
_MAX_DEPTH = 64  # optimizer_weights nests a few levels


def sniff(path: Path) -> bool:
    """An HDF5 signature, then a root `layer_names` attribute or a `model_weights` group."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != SIGNATURE:
                return False
        import h5py

        with h5py.File(path, "r") as f:  # links are not followed: an external one may block forever
            if _has_attr(f, "layer_names"):
                return True
            return isinstance(f.get("model_weights", getlink=True), h5py.HardLink) and isinstance(
                f["model_weights"], h5py.Group
            )
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


def read(path: Path) -> Checkpoint:
    """Index the weights from the attributes and dataset headers; data is read per tensor.

    >>> read(Path("model.h5")).entries["gru/cell/bias"].shape   # doctest: +SKIP
    (2, 96)
    """
    path = Path(path)
    h5 = _H5File(path)
    try:
        return _index(path, h5)
    except CkptmapError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:  # h5py on damaged metadata
        raise FormatError(f"{path}: damaged Keras HDF5 file ({one_line(e)}).") from None


def _index(path: Path, h5: _H5File) -> Checkpoint:
    f = h5.file()
    guard = h5.guard
    root, prefix, full = f, "", False
    if not _has_attr(f, "layer_names") and "model_weights" in f:
        root, prefix, full = guard.get(f, "model_weights"), "model_weights/", True
    if not _has_attr(root, "layer_names"):
        raise FormatError(f"{path}: an HDF5 file without Keras weights (no layer_names attribute).")
    layers = _attr_list(root, "layer_names", guard)
    seen: set[str] = set()
    for layer in layers:
        if layer in seen:
            raise FormatError(f"{path}: layer_names lists '{layer}' more than once.")
        seen.add(layer)
    entries: list[TensorEntry] = []
    for layer in layers:
        group = guard.get(root, layer)
        if group is None or not hasattr(group, "keys"):
            raise FormatError(f"{path}: layer '{layer}' is listed in layer_names but has no group.")
        guard.visit(group)  # one group listed twice, or linked under two names, is refused
        weights = _datasets(group, _attr_list(group, "weight_names", guard), guard, f"{prefix}{layer}/")
        names = canonical_names(layer, [(w, ds.shape) for w, ds in weights])
        entries += [
            h5.entry(n, ds, f"{prefix}{layer}/{w}") for n, (w, ds) in zip(names, weights, strict=True)
        ]
    if (group := guard.get(root, TOP_LEVEL)) is not None:
        for w, ds in _datasets(group, _attr_list(group, "weight_names", guard), guard, TOP_LEVEL):
            entries.append(h5.entry(INDEX.sub("", w), ds, f"{prefix}{TOP_LEVEL}/{w}"))
    if (group := guard.get(f, OPTIMIZER_GROUP)) is not None:
        for w, ds in _optimizer_datasets(group, guard):
            entries.append(h5.entry(OPTIMIZER_PREFIX + INDEX.sub("", w), ds, f"{OPTIMIZER_GROUP}/{w}"))
    if not entries:
        raise FormatError(f"{path}: a Keras HDF5 file that holds no weights (layers: {len(layers)}).")
    metadata = {
        "keras_version": _meta_text(guard, root, f, "keras_version"),
        "backend": _meta_text(guard, root, f, "backend"),
        "layers": layers,
        "full_model": full,
        **_layer_classes(f, guard),
    }
    return Checkpoint(entries, format=FORMAT, path=path, files=[path], metadata=metadata)


class _H5File:
    """One h5py handle per checkpoint, opened on first use and shared by its lazy loaders."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self.guard = Guard(path, file_bytes=0, heap_object=0)  # replaced when the file is opened

    def file(self) -> Any:
        if self._file is None:
            import h5py

            size = file_size(self.path)  # missing, empty, not a regular file: one-line errors
            heap_object = check_global_heaps_in_file(self.path)  # a damaged heap hangs HDF5 itself
            self.guard = Guard(self.path, file_bytes=size, heap_object=heap_object)
            try:
                self._file = h5py.File(self.path, "r")
            except (OSError, ValueError) as e:
                raise FormatError(f"{self.path}: not a readable HDF5 file ({one_line(e)}).") from None
        return self._file

    def entry(self, name: str, ds: Any, key: str) -> TensorEntry:
        self.guard.dataset(ds)  # data in other files, more than its storage holds, or seen before
        dt = ds.dtype
        try:
            dtype = dtypes.from_numpy(dt.newbyteorder("=") if dt.byteorder in "<>" else dt)
        except UnsupportedError as e:
            raise UnsupportedError(f"{self.path}: dataset '{key}': {e}") from None
        return TensorEntry(name, tuple(ds.shape), dtype.name, key, partial(self._load, key))

    def _load(self, key: str) -> np.ndarray:
        try:
            array = np.asarray(self.file()[key][()])
        except (OSError, KeyError, ValueError) as e:
            raise FormatError(f"{self.path}: cannot read dataset '{key}' ({one_line(e)}).") from None
        return array.astype(array.dtype.newbyteorder("="), copy=False)


def _datasets(group: Any, weight_names: list[str], guard: Guard, where: str) -> list[tuple[str, Any]]:
    import h5py

    out = []
    for w in weight_names:
        ds = guard.get(group, w)
        if not isinstance(ds, h5py.Dataset):  # a group, or a named datatype, has no data
            raise FormatError(f"{guard.label}: weight '{w}' of '{where.rstrip('/')}' has no dataset.")
        out.append((w, ds))
    return out


def _optimizer_datasets(group: Any, guard: Guard) -> list[tuple[str, Any]]:
    """Every dataset under `optimizer_weights`; Keras 3 writes its `weight_names` as one str()."""
    found: list[tuple[str, Any]] = []
    _walk(group, "", guard, found, 0)
    try:
        order = {w: i for i, w in enumerate(_attr_list(group, "weight_names", guard))}
    except FormatError:
        order = {}
    return sorted(found, key=lambda item: order.get(item[0], len(order)))


def _walk(group: Any, prefix: str, guard: Guard, found: list[tuple[str, Any]], depth: int) -> None:
    """Datasets under `group` in name order, as h5py's visititems lists them, but through hard
    links only (refusing others, where visititems skips them silently) and each group once."""
    import h5py

    if depth > _MAX_DEPTH:
        raise FormatError(f"{guard.label}: groups nest deeper than {_MAX_DEPTH} levels at '{group.name}'.")
    guard.visit(group)
    for key in sorted(group):
        child = guard.get(group, key)
        if isinstance(child, h5py.Dataset):
            found.append((prefix + key, child))
        elif isinstance(child, h5py.Group):
            _walk(child, f"{prefix}{key}/", guard, found, depth + 1)


def _layer_classes(f: Any, guard: Guard) -> dict[str, Any]:
    """Layer class names from a full-model file's `model_config`, read as JSON data only."""
    try:
        config = json.loads(_text(guard.attr(f, "model_config")))
        layers = config["config"]["layers"]
        return {"layer_classes": {la["config"]["name"]: la["class_name"] for la in layers}}
    except (KeyError, TypeError, ValueError, RecursionError):
        return {}


def _meta_text(guard: Guard, root: Any, f: Any, name: str) -> str:
    """An attribute of the weights' group, else of the file (full-model files keep it there)."""
    value = guard.attr(root, name)
    if value is None:
        value = guard.attr(f, name)
    return "" if value is None else _text(value)


# --- writing -------------------------------------------------------------------------------


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def unplaced(ckpt: Checkpoint) -> dict[str, str]:
    """Tensors a Keras file has no place for, with why (a bare `Variable`, a matrix outside any
    known layer): Keras keeps weights per layer, in both file formats (see keras3_writer)."""
    from . import keras3_writer

    return keras3_writer.unplaced(ckpt)


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write a weights-only file that tf-keras `model.load_weights(path)` (by order or `by_name=True`)
    loads into a model with the same layers.

    Weights are grouped by layer (their first name component) in the order layers first appear;
    inside a layer they are ordered as tf-keras creates them (kernel, recurrent_kernel, bias;
    forward before backward; non-trainable statistics last). Names with one component go to
    `top_level_model_weights`; optimizer state and other bookkeeping to `optimizer_weights`, which
    `load_weights` ignores. Data is written a block at a time; `progress(n)` gets each tensor's bytes.

    >>> write(ckptmap.load("ckpt/model.ckpt"), Path("weights.h5"))   # doctest: +SKIP
    """
    path = Path(path)
    layers, top, rest = _plan(ckpt, path)
    with AtomicFiles([path]) as out:
        try:
            with _h5_for_writing(out.temp(path), path) as f:
                _save_attr(f, "layer_names", list(layers))
                f.attrs["backend"] = b"tensorflow"
                f.attrs["keras_version"] = KERAS_VERSION.encode()
                groups = [*((f.create_group(n), w) for n, w in layers.items())]
                groups += [(f.create_group(TOP_LEVEL), top)]
                groups += [(f.create_group(OPTIMIZER_GROUP), rest)] if rest else []
                for group, weights in groups:
                    _save_attr(group, "weight_names", [w for w, _ in weights])
                    for w, entry in weights:
                        write_dataset(group, w, entry)
                        if progress is not None:
                            progress(entry.nbytes)
        except CkptmapError:
            raise
        except (OSError, ValueError, TypeError) as e:  # TypeError: h5py given a block of the wrong shape
            raise WriteError(f"{path}: could not write ({_write_reason(e)}).") from e
    return [path]


@contextmanager
def _h5_for_writing(temp: Path, path: Path) -> Iterator[Any]:
    """An HDF5 file open for writing whose close, where HDF5 flushes its metadata and so finds a
    full disk, raises `WriteError` (h5py says RuntimeError); after a failure it closes quietly."""
    import h5py

    f = h5py.File(temp, "w")
    try:
        yield f
    except BaseException:
        with suppress(Exception):
            f.close()
        raise
    try:
        f.close()
    except (OSError, RuntimeError) as e:
        raise WriteError(f"{path}: could not write ({_write_reason(e)}).") from e


def _write_reason(e: Exception) -> str:
    # h5py's text names the temporary file and a timestamp; the errno says what matters.
    return os.strerror(e.errno) if isinstance(e, OSError) and e.errno else one_line(e)


Weights = list[tuple[str, TensorEntry]]


def _plan(ckpt: Checkpoint, path: Path) -> tuple[dict[str, Weights], Weights, Weights]:
    """(layer group -> weights, top-level weights, optimizer/bookkeeping) with tf-keras weight names."""
    for e in ckpt.entries.values():
        if e.dtype in ("string", "bfloat16"):
            raise UnsupportedError(f"{path}: tensor '{e.name}' is {e.dtype}; Keras HDF5 files hold numbers.")
    weights = [e for e in ckpt.entries.values() if e.kind == kinds.WEIGHT]
    rest = [e for e in ckpt.entries.values() if e.kind != kinds.WEIGHT]
    paths = {e.name: kn.split(e.name) for e in weights}
    heads = {p[0] if p else "" for p, _ in paths.values()}
    wrapped = len(heads) == 1 and not kn.LAYER_EDGE.fullmatch(heads.pop())
    if wrapped and all(len(p) > 1 and kn.LAYER_WITH_WEIGHTS.fullmatch(p[1]) for p, _ in paths.values()):
        # tf.train.Checkpoint(model=m) keeps the model under a root attribute: unwrap it.
        paths = {n: (p[1:], role) for n, (p, role) in paths.items()}
    layers: dict[str, list[tuple[tuple[str, ...], str, TensorEntry]]] = {}
    top: Weights = []
    for e in weights:
        obj, role = paths[e.name]
        if not obj:
            top.append((f"{role}:0", e))
        else:
            layers.setdefault(obj[0], []).append((tuple(obj[1:]), role, e))
    if layers and all(
        kn.LAYER_WITH_WEIGHTS.fullmatch(n) for n in layers
    ):  # from a TF2 checkpoint, maybe key-sorted
        layers = dict(sorted(layers.items(), key=lambda kv: kn.index_key(kv[0].rsplit("-", 1)[1])))
    planned = {}
    for name, items in layers.items():
        named = weight_names(name, [(obj, role, e.shape) for obj, role, e in items])
        planned[name] = [(w, items[i][2]) for i, w in named]
        if len({w for w, _ in planned[name]}) < len(items):
            raise UnsupportedError(f"{path}: two tensors of layer '{name}' would get the same weight name.")
    bookkeeping = [(INDEX.sub("", e.name.removeprefix(OPTIMIZER_PREFIX)) + ":0", e) for e in rest]
    return planned, top, bookkeeping


# --- attributes ----------------------------------------------------------------------------


def _has_attr(group: Any, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _attr_list(group: Any, name: str, guard: Guard) -> list[str]:
    """A list attribute, joined from its chunks (`load_attributes_from_hdf5_group`)."""
    chunks = [guard.attr(group, name)] if name in group.attrs else []
    while f"{name}{len(chunks)}" in group.attrs:
        chunks.append(guard.attr(group, f"{name}{len(chunks)}"))
    out: list[str] = []
    for chunk in chunks:
        values = np.asarray(chunk)
        if values.dtype.kind == "f" and values.size == 0:
            continue  # an empty list is stored as a float64 array
        if values.dtype.kind not in "SUO" or values.ndim != 1:
            raise FormatError(f"{guard.label}: attribute '{name}' of '{group.name}' is not a list of names.")
        out += [_text(v) for v in values]
    return out


def _save_attr(group: Any, name: str, values: list[str]) -> None:
    """Store a list of names, split into chunks below HDF5's header limit as tf-keras does."""
    data = np.array([v.encode("utf-8") for v in values]) if values else np.zeros(0)
    chunks = 1
    while chunks < len(values) and any(c.nbytes > _ATTR_LIMIT for c in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
        return
    for i, part in enumerate(np.array_split(data, chunks)):
        group.attrs[f"{name}{i}"] = part


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)
