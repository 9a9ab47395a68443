"""TF SavedModel directories (`saved_model.pb`, `variables/`), as tf-keras 2.x `model.save(dir)`
and TF Hub write them: read as the TF2 object checkpoint in `variables/variables`, with each Keras
layer's name from `keras_metadata.pb` where it is present.

A SavedModel's checkpoint stores no layer names (`layer_with_weights-<k>`, see tf2_object);
`keras_metadata.pb` is a SavedMetadata message (tensorflow/python/keras/protobuf/
saved_metadata.proto: `repeated SavedObject nodes = 1`; SavedObject: `node_id = 2`, `node_path =
3`, `identifier = 4`, `metadata = 5`, a JSON string with the layer's `name` and `class_name`), whose
`node_path` `root.layer_with_weights-0` is the edge the checkpoint keeps. Writing is not offered.

The metadata's `config` also says what no weight shows: a GRU's `reset_after` (which a GRU without
biases cannot tell), its activations and `go_backwards` (of the wrapped layer, for a Bidirectional).
Those are each tensor's `settings`, which cells/keras_cells.py reads.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..tree import Checkpoint, TensorEntry
from . import tf2_object
from .protowire import WireError, fields, messages

FORMAT = "savedmodel"
_MAX_METADATA = 64 << 20  # keras_metadata.pb is JSON per object; larger is not a Keras model's


def sniff(path: Path) -> bool:
    path = Path(path)
    return (
        path.is_dir()
        and (path / "saved_model.pb").is_file()
        and _variables(path).with_suffix(".index").is_file()
    )


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """The variables of the SavedModel at `path`, Keras layers under their own names."""
    path = Path(path)
    prefix = _variables(path)
    inner = tf2_object.read(prefix)
    layers = _layers(path)  # edge in the checkpoint -> the layer's name and settings
    edges = {edge: name for edge, (name, _) in layers.items()}
    taken = set(edges.values())
    entries = []
    for e in inner.entries.values():
        first, _, rest = e.name.partition("/")
        name, settings = layers.get(first, (None, None))
        renamed = f"{name}/{rest}" if name and rest and first not in taken else e.name
        entries.append(TensorEntry(renamed, e.shape, e.dtype, e.key, e.loader, e.kind, e.slot_of,
                                   settings=settings if rest else None))  # fmt: skip
    notes = [n for n in inner.notes if not (edges and n.startswith("TF2 checkpoints store no layer names"))]
    if edges:
        notes.append("Keras layer names from keras_metadata.pb.")
    return Checkpoint(
        entries,
        format=FORMAT,
        path=path,
        files=inner.files,
        notes=notes,
        metadata={
            **inner.metadata,
            "layer_edges": {v: k for k, v in edges.items()},
            "variables": str(prefix),
        },
        classify=False,
    )


def _variables(path: Path) -> Path:
    """The checkpoint prefix inside the SavedModel, refused if a link takes it outside."""
    variables = path / "variables"
    if variables.is_symlink() or (
        variables.exists() and not variables.resolve().is_relative_to(path.resolve())
    ):
        raise FormatError(f"{path}: 'variables' leads outside the SavedModel; refusing to follow it.")
    return variables / "variables"


# Settings of a recurrent layer's config that change what it computes (keras/src/layers/rnn/*.py).
_RNN_SETTINGS = ("activation", "recurrent_activation", "go_backwards", "reset_after", "use_bias")


def _layers(path: Path) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """`layer_with_weights-0` -> (`gru`, its class and recurrent settings), from keras_metadata.pb;
    empty when there is none."""
    meta = path / "keras_metadata.pb"
    try:
        mode = meta.lstat().st_mode
    except OSError:
        return {}
    if not stat.S_ISREG(mode):
        raise FormatError(f"{meta}: not a regular file; refusing to read it.")
    if meta.stat().st_size > _MAX_METADATA:
        raise FormatError(f"{meta}: {meta.stat().st_size} bytes, more than Keras metadata ever is.")
    try:
        nodes = messages(fields(meta.read_bytes()), 1)
        found: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for node in nodes:
            f = fields(node)
            node_path = bytes(messages(f, 3)[0]).decode() if messages(f, 3) else ""
            raw = bytes(messages(f, 5)[0]).decode() if messages(f, 5) else ""
            edge = node_path.removeprefix("root.")
            if node_path.startswith("root.") and "." not in edge and raw:
                layer = json.loads(raw)
                name = layer.get("name")
                if isinstance(name, str) and name and "/" not in name:
                    found[edge] = (name, _settings(layer))
    except (WireError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError) as e:
        raise FormatError(f"{meta}: damaged Keras metadata ({e}).") from None
    return found


def _settings(layer: dict[str, Any]) -> dict[str, Any] | None:
    """A recurrent layer's class and `_RNN_SETTINGS`; a Bidirectional's from the layer it wraps."""
    config = layer.get("config")
    if layer.get("class_name") == "Bidirectional" and isinstance(config, dict):
        config = (config.get("layer") or {}).get("config")
    if not isinstance(config, dict) or "units" not in config:
        return None
    settings = {key: config[key] for key in _RNN_SETTINGS if key in config}
    return {"keras_class": str(layer.get("class_name")), **settings}
