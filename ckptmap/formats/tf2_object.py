"""Format "tf2": TF2 object-based checkpoints (`tf.train.Checkpoint`, tf-keras `save_weights(prefix)`).

They are V2 bundles (see `tf_bundle`) whose keys are object paths
(`layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE`) plus `_CHECKPOINTABLE_OBJECT_GRAPH`,
the object structure (see `object_graph`). Reading goes through `tf_bundle`, orders tensors by a
depth-first walk of the graph (model order: `layer_with_weights-2` before `-10`), and uses the graph
to mark optimizer slots. Writing builds a graph from the canonical names and hands the tensors,
renamed to their checkpoint keys, to `tf_bundle.write`.

TF2 checkpoints store no layer names: Keras restores by edge names, and a Keras model's edges to
its layers are `layer_with_weights-<k>`, k counting the layers that own weights in model order. So
canonical Keras names with real layer names (`gru/cell/kernel`, from .h5 or .keras files) are
written as `layer_with_weights-<k>/cell/kernel`, k the order in which layers first appear among the
names (nested models numbered within their parent) — the order Keras files list them in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import kinds, lazy
from ..errors import CkptmapError, FormatError, WriteError
from ..tree import Checkpoint, TensorEntry
from . import keras_names as kn
from . import object_graph as og
from . import registry, tf_bundle
from .protowire import WireError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

FORMAT = "tf2"
_KNOWN_ROLES = frozenset(r for roles in kn.LAYER_ROLES.values() for r in roles)


def sniff(path: Path) -> bool:
    """A V2 bundle whose index holds `_CHECKPOINTABLE_OBJECT_GRAPH` (one index block is read)."""
    table = tf_bundle.index_table(path)
    try:
        return table is not None and table.get(tf_bundle.OBJECT_GRAPH_KEY) is not None
    except CkptmapError:
        return False


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Open lazily: the index and the object graph are read, tensors when asked.

    >>> read(Path("ckpt/weights")).names[:2]       # doctest: +SKIP
    ['layer_with_weights-0/embeddings', 'layer_with_weights-1/cell/kernel']
    """
    bundle = tf_bundle.read(path)
    by_key = {e.key: e for e in bundle.entries.values()}
    graph_entry = by_key.pop(og.GRAPH_KEY, None)
    if graph_entry is None:
        raise FormatError(f"{bundle.path}: no {og.GRAPH_KEY}, so not an object-based checkpoint; try 'tf'.")
    try:
        raw = graph_entry.read().reshape(-1)
        if raw.size != 1 or not isinstance(raw[0], bytes):
            raise WireError("it is not one string")
        nodes = og.decode(raw[0])
    except WireError as e:
        raise FormatError(f"{bundle.path}: damaged object graph {og.GRAPH_KEY} ({e}).") from None
    keys, slots, others = _walk(nodes)
    ordered = [by_key[k] for k in dict.fromkeys(keys) if k in by_key]  # a key listed twice counts once
    listed = set(keys)
    unlisted = [e for k, e in by_key.items() if k not in listed]
    notes = list(bundle.notes)
    if unlisted:
        notes.append(f"{len(unlisted)} tensors are not in the object graph (first: '{unlisted[0].key}').")
    missing = [k for k in keys if k not in by_key]
    if missing:
        notes.append(
            f"The object graph lists {len(missing)} tensors the bundle lacks (first: '{missing[0]}')."
        )
    entries = _classify([*ordered, *unlisted], slots, others, by_key)
    entries = _by_layer_paths(entries, nodes)
    if any(kn.LAYER_WITH_WEIGHTS.fullmatch(p) for e in entries for p in e.name.split("/")):
        notes.append("TF2 checkpoints store no layer names: Keras layers are layer_with_weights-<k>.")
    root = [name for node_id, name in nodes[0].children if node_id != 0]
    metadata = {**bundle.metadata, "root_children": root, "objects": len(nodes), "slot_variables": len(slots)}
    return Checkpoint(
        entries,
        format=FORMAT,
        path=bundle.path,
        files=bundle.files,
        notes=notes,
        metadata=metadata,
        classify=False,
    )


def _walk(nodes: list[og.Node]) -> tuple[list[str], dict[str, str], set[str]]:
    """Checkpoint keys depth-first from the root (children in order, then the slots an optimizer
    holds); slot key -> its variable's key; keys of attributes that are not variables."""
    keys: list[str] = []
    slots: dict[str, str] = {}
    others: set[str] = set()
    seen: set[int] = set()
    stack = [0]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = nodes[node_id]
        for attr in node.attributes:
            keys.append(attr.checkpoint_key)
            if attr.name != og.VARIABLE_VALUE:
                others.add(attr.checkpoint_key)
        for ref in node.slot_variables:
            variable = next((a.checkpoint_key for a in nodes[ref.variable].attributes), None)
            for attr in nodes[ref.slot].attributes:
                if variable is not None:
                    slots[attr.checkpoint_key] = variable
        stack += [ref.slot for ref in reversed(node.slot_variables)]
        stack += [child for child, _ in reversed(node.children)]
    return keys, slots, others


# Edges that list variables again (a model's `variables`, Keras' `keras_api` bookkeeping) or a
# layer again (`layer-<k>` beside `layer_with_weights-<k>`). A SavedModel's variables checkpoint
# keys its RNN cells' variables by the first of these TF met (`variables/0`), though the same
# objects are reachable through the layers (`layer_with_weights-0/cell/kernel`).
_DETOURS = frozenset(
    {"variables", "trainable_variables", "non_trainable_variables", "keras_api", "layers", "_variables",
     "_trainable_weights", "_non_trainable_weights", "regularization_losses", "signatures"}
)  # fmt: skip


def _detour(edge: str) -> bool:
    return edge in _DETOURS or (edge.startswith("layer-") and edge[6:].isdigit())


def _by_layer_paths(entries: list[TensorEntry], nodes: list[og.Node]) -> list[TensorEntry]:
    """Entries whose key goes through a detour renamed by the path through the layers, where there
    is one (fewest detour edges, then the graph's order)."""
    if not any(_detour(part) for e in entries for part in e.name.split("/")[:-1]):
        return entries
    from collections import deque

    best: dict[int, tuple[int, tuple[str, ...]]] = {0: (0, ())}
    queue: deque[int] = deque([0])
    while queue:  # 0-1 breadth-first: a detour edge costs 1, any other 0
        node = queue.popleft()
        cost, path = best[node]
        for child, edge in nodes[node].children:
            step = cost + _detour(edge)
            if child not in best or step < best[child][0]:
                best[child] = (step, (*path, edge))
                (queue.append if _detour(edge) else queue.appendleft)(child)
    by_key = {a.checkpoint_key: best[i] for i, n in enumerate(nodes) if i in best for a in n.attributes
              if a.name == og.VARIABLE_VALUE}  # fmt: skip
    taken = {e.name for e in entries}
    out = []
    for e in entries:
        cost, path = by_key.get(e.key, (0, ()))
        name = "/".join(path)
        if path and cost == 0 and name not in taken and any(_detour(p) for p in e.name.split("/")[:-1]):
            taken.add(name)
            e = TensorEntry(name, e.shape, e.dtype, e.key, e.loader, e.kind, e.slot_of)
        out.append(e)
    return out


def _classify(
    entries: list[TensorEntry], slots: dict[str, str], others: set[str], by_key: dict[str, TensorEntry]
) -> list[TensorEntry]:
    """Kinds from names (ckptmap.kinds), then what the graph adds: its slot references, attributes
    that are not variables, and everything under an `optimizer` edge is training state."""
    classes = kinds.classify(e.name for e in entries)
    out = []
    for e in entries:
        kind, slot_of = classes[e.name].kind, classes[e.name].slot_of
        if e.key in slots and slots[e.key] in by_key:
            kind, slot_of = kinds.SLOT, by_key[slots[e.key]].name
        elif kind == kinds.WEIGHT and (e.key in others or "optimizer" in e.name.split("/")[:-1]):
            kind = kinds.BOOKKEEPING
        out.append(TensorEntry(e.name, e.shape, e.dtype, e.key, e.loader, kind, slot_of))
    return out


# --- writing -------------------------------------------------------------------------------


def files(path: str | os.PathLike[str], ckpt: Checkpoint | None = None) -> list[Path]:
    """Data shard, index, `checkpoint` state file."""
    return tf_bundle.files(path)


def write(
    ckpt: Checkpoint,
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
    keras: bool | None = None,
    save_counter: bool | None = None,
) -> list[Path]:
    """Write `ckpt` as an object-based checkpoint at prefix `path`.

    Every name component becomes an edge of the object graph and every tensor a `VARIABLE_VALUE`
    attribute; `<v>/.OPTIMIZER_SLOT/<opt>/<slot>` names become slot variables of `<opt>`.
    `keras` renames layers to `layer_with_weights-<k>` (see the module docstring); by default it
    does so for checkpoints read from Keras files, or whose names all look like canonical Keras
    names. `save_counter` adds the counter `tf.train.Checkpoint.restore` expects; by default it is
    added when the root is not a Keras model. A fresh tf-keras model then restores the output with
    `model.load_weights(prefix)`, or `tf.train.Checkpoint(model=model).restore(prefix)`.

    >>> write(ckptmap.load("weights.h5"), Path("tf2/weights"))   # doctest: +SKIP
    """
    paths = object_paths(ckpt, keras=keras)
    builder = og.Builder()
    entries: list[TensorEntry] = []
    for entry in ckpt.entries.values():
        if entry.name == og.GRAPH_KEY:
            continue  # the graph of the source checkpoint; a new one is written below
        obj = paths[entry.name]
        if og.ATTRIBUTES in obj:  # a non-variable attribute kept from a TF2 checkpoint
            node, attribute = obj.split(og.ATTRIBUTES, 1)
            key = builder.add_variable(node, entry.name, attribute)
        else:
            slot = builder.add_slot(obj, entry.name) if og.SLOT_MARK in obj else None
            key = slot or builder.add_variable(obj, entry.name)
        entries.append(entry.renamed(key, slot_of=entry.slot_of))
    user_tensors = len(entries)
    root = {p.split("/", 1)[0] for p in paths.values()}
    if save_counter is None:
        save_counter = "save_counter" not in root and not any(kn.LAYER_EDGE.fullmatch(r) for r in root)
    if save_counter and "save_counter" not in root:
        key = builder.add_variable("save_counter", "save_counter")
        entries.append(TensorEntry(key, (), "int64", key, lambda: np.array(1, dtype=np.int64)))
    graph = og.encode(builder.nodes)
    graph_array = np.array(graph, dtype=object)
    entries.append(TensorEntry(og.GRAPH_KEY, (), "string", og.GRAPH_KEY, lambda: graph_array))
    keys = [e.name for e in entries]
    if len(set(keys)) < len(keys):
        raise WriteError(f"{path}: two tensors would have the same checkpoint key; rename one first.")
    written = 0

    def report(nbytes: int) -> None:  # only the caller's tensors, not the counter or the graph
        nonlocal written
        written += 1
        if progress is not None and written <= user_tensors:
            progress(nbytes)

    out = Checkpoint(entries, format=FORMAT, classify=False)
    return tf_bundle.write(out, path, progress=report)


def object_paths(ckpt: Checkpoint, *, keras: bool | None = None) -> dict[str, str]:
    """Canonical name -> object path in the written checkpoint (see `write`)."""
    if keras is None:
        keras = looks_keras(ckpt)
    if not keras:
        return {name: name for name in ckpt.entries}
    numbering: dict[tuple[str, ...], dict[str, str]] = {}
    out = {}
    for entry in ckpt.entries.values():
        if entry.kind != kinds.WEIGHT:
            out[entry.name] = entry.name  # optimizer state keeps its own structure
            continue
        obj, role = kn.split(entry.name)
        new: list[str] = []
        for part in obj:
            if part in kn.ATTRIBUTES:
                new.append(part)
                continue
            level = numbering.setdefault(tuple(new), {})
            if part not in level:
                level[part] = (
                    part if kn.LAYER_WITH_WEIGHTS.fullmatch(part) else f"layer_with_weights-{len(level)}"
                )
                if list(level.values()).count(level[part]) > 1:
                    raise WriteError(
                        f"Tensor '{entry.name}': layer '{part}' would become {level[part]}, which another "
                        "layer already is; rename the layers all in one style first."
                    )
            new.append(level[part])
        out[entry.name] = "/".join([*new, role])
    return out


def written_names(ckpt: Checkpoint) -> dict[str, str]:
    """Canonical name -> the name reading the written checkpoint back shows (registry protocol)."""
    return object_paths(ckpt)


def looks_keras(ckpt: Checkpoint) -> bool:
    """Whether the names are canonical Keras names with layer names (see `write`)."""
    read_as_keras = ckpt.format in registry.of_library("keras")  # canonical Keras names, from a Keras file
    if read_as_keras or ckpt.metadata.get("names_of") == "keras":  # or mapped to them
        return True
    if ckpt.format in (FORMAT, tf_bundle.FORMAT):
        return False  # already object paths
    names = [e.name for e in ckpt.weights()]
    return bool(names) and all(_keras_shaped(n) for n in names)


def _keras_shaped(name: str) -> bool:
    obj, role = kn.split(name)
    attrs = [p for p in obj if p in kn.ATTRIBUTES]
    layers = obj[: len(obj) - len(attrs)]
    return (
        (role in _KNOWN_ROLES or role.startswith("vars/"))
        and bool(layers)
        and not any(p in kn.ATTRIBUTES for p in layers)
        and attrs in ([], [kn.CELL], ["forward_layer", kn.CELL], ["backward_layer", kn.CELL])
        and not all(kn.LAYER_EDGE.fullmatch(p) for p in layers)
    )
