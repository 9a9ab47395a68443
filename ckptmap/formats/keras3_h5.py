"""Format "keras3": the `.weights.h5` files Keras 3 `save_weights` writes (and `.keras` archives hold).

Layout (keras/src/saving/saving_lib.py, `_save_state` and `H5IOStore`): every object with state
has a group whose `vars` subgroup holds its variables as datasets `0..n-1` in creation order and an
attribute `name` (the object's name). Sub-objects hang under their attribute names (`cell`,
`forward_layer`, `backward_layer`, `optimizer`); a Sequential or Functional model's layers sit
under `layers/<key>`, where the key is the layer's class in snake case made unique per container
(`dense`, `dense_1`, `gru`), not its name. So a `Dense(name="head")` is `layers/dense`, and
`load_weights` finds groups by class and position: groups of layers the model lacks are ignored,
a missing group reads as "no variables".

Reading names each layer by its `name` attribute (the layer's real name, as Keras 2 files and
`model.summary()` show it) and each variable by its role (formats/keras_names.py) when the class is
known: from config.json for archives, else from the class Keras encoded in the group key; RNN cells
from their shapes. Writing does the reverse: a layer's class, and so its key, comes from its
weights (a cell's gate count, a kernel's rank, ...); where they do not tell (a nested model,
`vars/<i>` names) from the key its tensors had in a Keras 3 file (`TensorEntry.key`), else from its
name taken as a Keras default name (`sequential_2` -> `sequential`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import dtypes
from ..errors import CkptmapError, FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from .hdf5_guard import SIGNATURE, Guard, check_global_heaps_in_file
from .keras_names import (
    ATTRIBUTES,
    CELL,
    CONTAINERS,
    LAYER_CLASSES,
    LAYER_ROLES,
    index_key,
    roles_for,
)
from .rawio import file_size

_MAX_DEPTH = 64  # hard links can make cycles; a real model nests a few levels
_FLOATS = ("float16", "bfloat16", "float32", "float64")

Opener = Callable[[], AbstractContextManager[h5py.File]]


def snake_case(class_name: str) -> str:
    """Keras' group key for a class (keras/src/utils/naming.py `to_snake_case`): GRU -> gru."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_CLASS_OF_KEY = {
    snake_case(c): c for c in (*LAYER_ROLES, *LAYER_CLASSES.values(), "Bidirectional", "Sequential")
}


@dataclass(frozen=True)
class LayerInfo:
    """What a model's config says about the layer stored at one group (read as data only)."""

    name: str
    class_name: str
    config: Mapping[str, Any] = field(default_factory=dict)


def sniff(path: Path) -> bool:
    """An HDF5 file with a `layers` or `vars` group at its root and no Keras 2 `layer_names`."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != SIGNATURE:
                return False
        with h5py.File(path, "r") as f:
            return "layer_names" not in f.attrs and any(k in f for k in ("vars", *CONTAINERS))
    except Exception:  # h5py raises many types on damaged files; any of them means "not mine"
        return False


def read(path: Path) -> Checkpoint:
    """Index a `.weights.h5` file; each tensor is read when asked.

    >>> read(Path("model.weights.h5")).names[:2]   # doctest: +SKIP
    ['gru/cell/kernel', 'gru/cell/recurrent_kernel']
    """
    path = Path(path)
    size = file_size(path)
    heap_object = check_global_heaps_in_file(path)  # a damaged heap hangs HDF5 itself
    guard = Guard(path, file_bytes=size, heap_object=heap_object)
    return read_h5(lambda: h5py.File(path, "r"), path=path, format="keras3", guard=guard)


def read_h5(
    opener: Opener,
    *,
    path: Path,
    format: str,
    guard: Guard,
    layers: Mapping[str, LayerInfo] | None = None,
    notes: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """The Checkpoint of a Keras 3 weights file that `opener()` opens (again for each tensor read).
    `layers` maps group paths (`layers/sequential/layers/lstm`) to what a config says of them;
    `guard` bounds the walk of that file (see hdf5_guard)."""
    try:
        with opener() as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                raise FormatError(f"{path}: a Keras 2 / tf-keras HDF5 file; read it with --format keras2.")
            if not any(k in f for k in ("vars", *CONTAINERS)):
                raise FormatError(f"{path}: an HDF5 file, but not Keras 3 weights (no `layers` or `vars`).")
            walker = _Walker(guard, layers or {})
            walker.object(f, (), ())
    except CkptmapError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, RuntimeError, ...
        raise FormatError(f"{path}: cannot read it as HDF5 ({one_line(e)}).") from None
    entries = [
        TensorEntry(name, shape, dtype, key, _loader(opener, path, key, dtype == "bfloat16"))
        for name, key, shape, dtype in walker.found
    ]
    found = list(notes)
    if walker.unknown:
        found.append(f"kept vars/<i> where the class is not known: {', '.join(walker.unknown)}")
    return Checkpoint(entries, format=format, path=path, files=[path], notes=found, metadata=metadata)


class _Walker:
    """Collects (canonical name, HDF5 path, shape, dtype) for every dataset, in model order."""

    def __init__(self, guard: Guard, layers: Mapping[str, LayerInfo]) -> None:
        self.guard, self.path, self.layers = guard, Path(guard.label), layers
        # Per container, once: a file can hold thousands of containers and a config thousands of layers.
        self.rank = {p: i for i, p in enumerate(layers)}
        self.siblings: dict[str, dict[str, LayerInfo]] = {}
        for p, i in layers.items():
            self.siblings.setdefault(p.rpartition("/")[0], {})[i.name] = i
        self.found: list[tuple[str, str, tuple[int, ...], str]] = []
        self.unknown: list[str] = []

    def object(self, group: h5py.Group, keys: tuple[str, ...], names: tuple[str, ...],
               info: LayerInfo | None = None, depth: int = 0) -> None:  # fmt: skip
        if depth > _MAX_DEPTH:
            raise FormatError(f"{self.path}: groups nest deeper than {_MAX_DEPTH} levels at '{group.name}'.")
        self.guard.visit(group)
        for key in sorted(group, key=_natural):
            child = self.guard.get(group, key)
            if key == "vars" and isinstance(child, h5py.Group):
                self._vars(child, keys, names, info)
            elif isinstance(child, h5py.Dataset):  # not Keras' own layout, but never drop a tensor
                self._add("/".join((*names, key)), child)
            elif key in CONTAINERS:
                self._container(child, (*keys, key), names, depth)
            elif isinstance(child, h5py.Group):
                self.object(child, (*keys, key), (*names, key), None, depth + 1)

    def _container(
        self, group: h5py.Group, keys: tuple[str, ...], names: tuple[str, ...], depth: int
    ) -> None:
        where = "/".join((*keys[:-1], "layers"))
        siblings = self.siblings.get(where, {})
        # Model order when a config gives it, else Keras' numbering (`dense`, `dense_1`, `dense_2`, ...).
        rank = self.rank
        self.guard.visit(group)
        ordered = sorted(group, key=lambda k: (rank.get(f"{where}/{k}", len(rank)), _natural(k)))
        children = [(k, self.guard.get(group, k)) for k in ordered]
        infos: list[LayerInfo] = []
        for key, child in children:
            stored = self._name_attr(child)
            info = siblings.get(stored) if stored else self.layers.get(f"{where}/{key}")
            # Without a config, the key is the class: Keras keys layers/<snake_case(class)>[_<n>].
            class_name = info.class_name if info else _CLASS_OF_KEY.get(re.sub(r"_\d+$", "", key), "")
            infos.append(
                LayerInfo(stored or (info.name if info else key), class_name, info.config if info else {})
            )
        labels = Counter(i.name for i in infos)
        for (key, child), info in zip(children, infos, strict=True):
            if isinstance(child, h5py.Dataset):
                self._add("/".join((*names, key)), child)
            elif isinstance(child, h5py.Group):
                label = info.name if labels[info.name] == 1 and _valid_component(info.name) else key
                self.object(child, (*keys, key), (*names, label), info, depth + 1)

    def _vars(self, group: h5py.Group, keys: tuple[str, ...], names: tuple[str, ...],
              info: LayerInfo | None) -> None:  # fmt: skip
        self.guard.visit(group)
        items = [(k, self.guard.get(group, k)) for k in sorted(group, key=_natural)]
        datasets = [(k, d) for k, d in items if isinstance(d, h5py.Dataset)]
        if not datasets:
            return
        indexed = [k for k, _ in datasets] == [str(i) for i in range(len(datasets))]
        floats = all(self._dtype(d) in _FLOATS for _, d in datasets)  # quantized layers hold ints
        shapes = [tuple(d.shape) for _, d in datasets]
        roles = _roles(info, shapes, keys[-1:] == (CELL,)) if indexed and floats else None
        if roles is None and names[:1] not in ((), ("optimizer",)):
            self.unknown.append("/".join(names))
        for i, (key, dataset) in enumerate(datasets):
            self._add("/".join((*names, roles[i] if roles else f"vars/{key}")), dataset)

    def _add(self, name: str, dataset: h5py.Dataset) -> None:
        self.guard.dataset(dataset)  # data in other files, more than its storage holds, or seen before
        self.found.append((name, dataset.name.lstrip("/"), tuple(dataset.shape), self._dtype(dataset)))

    def _name_attr(self, group: h5py.Group | h5py.Dataset) -> str | None:
        """The `name` attribute of a layer group's `vars`, reached through hard links only."""
        if not isinstance(group, h5py.Group) or "vars" not in group:
            return None
        variables = self.guard.get(group, "vars")
        value = self.guard.attr(variables, "name") if isinstance(variables, h5py.Group) else None
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return value if isinstance(value, str) and value else None

    def _dtype(self, dataset: h5py.Dataset) -> str:
        # bfloat16 is stored as 2-byte opaque data, marked by H5IOStore.__setitem__.
        marked = self.guard.attr(dataset, "dtype") if dataset.dtype.itemsize == 2 else None
        if isinstance(marked, str) and marked == "bfloat16":
            return "bfloat16"
        try:
            return dtypes.from_numpy(dataset.dtype).name
        except UnsupportedError:
            raise UnsupportedError(
                f"{self.path}: dataset '{dataset.name}' has dtype {dataset.dtype}."
            ) from None


def _roles(info: LayerInfo | None, shapes: list[tuple[int, ...]], is_cell: bool) -> tuple[str, ...] | None:
    class_name, config = (info.class_name, info.config) if info else (None, {})
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name")):
        return None  # quantized layers store scales and packed kernels in their own order
    full = LAYER_ROLES.get(class_name or "")
    if class_name in ("LayerNormalization", "BatchNormalization") and full and len(shapes) < len(full):
        # scale=False or center=False drop gamma or beta, and only the config says which one.
        gone = {r for r, flag in (("gamma", "scale"), ("beta", "center")) if config.get(flag) is False}
        kept = tuple(r for r in full if r not in gone)
        return kept if config and len(kept) == len(shapes) else None
    return roles_for(class_name, shapes, is_cell=is_cell)


def _valid_component(label: str) -> bool:
    return "/" not in label and label not in ("vars", *CONTAINERS, *ATTRIBUTES)


def _natural(key: str) -> list[Any]:
    """`dense` < `dense_2` < `dense_10`: the order Keras numbered layers of one class in."""
    # Odd pieces of re.split are the digit runs; index_key orders them without int().
    return [index_key(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", key))]


def _loader(opener: Opener, path: Path, key: str, bfloat16: bool) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            with opener() as f:
                data = np.asarray(f[key][()])
        except CkptmapError:
            raise
        except Exception as e:  # as in read_h5: h5py's many error types for one damaged file
            raise FormatError(f"{path}: cannot read '{key}' ({one_line(e)}).") from None
        return data.view(dtypes.by_name("bfloat16").numpy) if bfloat16 else data

    return load


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --- writing --------------------------------------------------------------------------------------


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def unplaced(ckpt: Checkpoint) -> dict[str, str]:
    """Tensors a Keras file has no place for, with why (a bare `Variable`, a matrix outside any
    known layer): Keras keeps weights per layer, in both file formats (see keras3_writer)."""
    from . import keras3_writer

    return keras3_writer.unplaced(ckpt)


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `ckpt` as a `.weights.h5` that Keras 3 `model.load_weights` accepts (see keras3_writer)."""
    from . import keras3_writer

    return keras3_writer.write(ckpt, path, progress=progress)
