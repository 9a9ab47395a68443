"""Format "orbax": an orbax PyTree checkpoint directory (`ocp.StandardCheckpointer().save`, flax's
`checkpoints.save_checkpoint` since it moved to orbax), read through tensorstore.

The tree is in `_METADATA` (JSON, orbax/checkpoint/_src/metadata/tree.py): `tree_metadata` maps
each leaf's key tuple to `key_metadata` (the keys) and `value_metadata` (`value_type`: an array
type or a Python scalar; `write_shape`). Arrays are zarr arrays named `'.'.join(keys)` inside an
OCDBT database (`manifest.ocdbt`, `ocdbt.process_<n>/`, orbax's default) or, with `use_ocdbt`
off, in directories of that name (orbax/checkpoint/_src/serialization/tensorstore_utils.py). No
file holds the dtypes, so each array's zarr metadata is opened to index it; its data is read when
asked. Names join the keys with "/" (each key's own "/" and "%" escaped, as flax_msgpack does).
Needs tensorstore (`pip install 'ckptmap[flax]'`); writing is not offered.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from .. import dtypes
from ..errors import FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from .flax_msgpack import escape
from .rawio import read_small

FORMAT = "orbax"
METADATA = "_METADATA"
_MAX_METADATA = 64 << 20  # JSON of the tree: a key tuple and a shape per leaf
_ARRAY_TYPES = {"jax.Array", "np.ndarray"}
_MAX_FILES = 1_000_000
# An array may claim more bytes than the files hold (compressed, or chunks of zeros not stored), but
# not without bound: a 16 KB directory claiming 149 GB is a crafted one.
_MAX_RATIO = 1000
_ALWAYS_PLAUSIBLE = 1 << 30
_SAFE_PARAM = re.compile(r"[^/\\\x00]+")  # a zarr array's name; with use_ocdbt off, a directory's


def sniff(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / METADATA).is_file() and not (path / METADATA).is_symlink()


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """The arrays of the orbax checkpoint in directory `path`, each read when asked."""
    path = Path(path)
    meta = _metadata(path)
    held = _held_bytes(path)
    ts = _tensorstore()
    # Chunks orbax always stores (`store_array_data_equal_to_fill_value`) must be there to be read.
    strict = bool(meta.get("store_array_data_equal_to_fill_value"))
    notes: list[str] = []
    entries = []
    skipped = []
    for leaf in meta["tree_metadata"].values():
        keys, value = _leaf(path, leaf)
        name = "/".join(escape(k) for k in keys)
        if value.get("value_type") not in _ARRAY_TYPES:
            skipped.append(name)
            continue
        param = ".".join(keys)
        if not _SAFE_PARAM.fullmatch(param) or param in (".", "..") or param.startswith("."):
            raise FormatError(f"{path}: array name '{param}' is not one orbax writes; refusing it.")
        spec = {**_spec(path, param, meta), **({"fill_missing_data_reads": False} if strict else {})}
        try:
            store = ts.open(spec, read=True).result()
        except Exception as e:  # tensorstore's own refusal of the array's metadata
            why = " ".join(str(e).split())
            raise FormatError(f"{path}: array '{param}' cannot be opened ({why[:300]}).") from None
        dt = dtypes.from_numpy(store.dtype.numpy_dtype)
        nbytes = math.prod(store.shape) * dt.itemsize
        if nbytes > max(_ALWAYS_PLAUSIBLE, _MAX_RATIO * held):
            raise FormatError(
                f"{path}: array '{param}' claims {nbytes} bytes, which the {held} bytes of the checkpoint "
                "cannot hold; refusing it."
            )
        entries.append(TensorEntry(name, tuple(store.shape), dt.name, param, _loader(store)))
    if skipped:
        notes.append(f"{len(skipped)} values that are not arrays are not read ({', '.join(skipped[:3])}).")
    return Checkpoint(entries, format=FORMAT, path=path, files=[path], notes=notes)


def _held_bytes(path: Path) -> int:
    """The bytes of the checkpoint's files; a symbolic link anywhere in it is refused (tensorstore
    would follow it out of the directory), and so is a tree of more files than orbax writes."""
    total = count = 0
    for folder, dirs, names in os.walk(path):
        for name in (*dirs, *names):
            count += 1
            item = Path(folder) / name
            if item.is_symlink():
                raise FormatError(f"{path}: {item} is a symbolic link; refusing to follow it.")
            if count > _MAX_FILES:
                raise FormatError(f"{path}: more than {_MAX_FILES} files; not an orbax checkpoint.")
        total += sum((Path(folder) / n).lstat().st_size for n in names)
    return total


def _metadata(path: Path) -> dict[str, Any]:
    raw = read_small(path / METADATA, _MAX_METADATA, "orbax tree metadata")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{path / METADATA}: not JSON ({e}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tree_metadata"), dict):
        raise FormatError(f"{path / METADATA}: no tree_metadata; not an orbax PyTree checkpoint.")
    return meta


def _leaf(path: Path, leaf: Any) -> tuple[list[str], dict[str, Any]]:
    try:
        keys = [str(k["key"]) for k in leaf["key_metadata"]]
        value = leaf["value_metadata"]
    except (TypeError, KeyError) as e:
        raise FormatError(f"{path / METADATA}: a leaf without keys or value metadata ({e}).") from None
    if not keys or not isinstance(value, dict) or any(not k for k in keys):
        raise FormatError(f"{path / METADATA}: a leaf with an empty key.")
    return keys, value


def _spec(path: Path, param: str, meta: dict[str, Any]) -> dict[str, Any]:
    base = {"driver": "file", "path": str(path.resolve()) + "/"}
    kvstore: dict[str, Any] = (
        {"driver": "ocdbt", "base": base, "path": param}
        if meta.get("use_ocdbt", True)
        else {**base, "path": base["path"] + param}
    )
    return {"driver": "zarr3" if meta.get("use_zarr3") else "zarr", "kvstore": kvstore}


def _loader(store: Any) -> Any:
    def load() -> Any:
        return store.read().result()

    return load


def _tensorstore() -> Any:
    try:
        import tensorstore
    except ImportError:
        raise UnsupportedError(
            "Reading orbax checkpoints needs tensorstore: pip install 'ckptmap[flax]'."
        ) from None
    return tensorstore
