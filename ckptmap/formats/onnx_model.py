"""Format "onnx": an ONNX model read as a checkpoint of its initializers (formats/onnx_names.py,
without the onnx package), and written by putting a checkpoint's tensors into an existing model
(`convert --into model.onnx`).

Writing needs the `onnx` package (`pip install 'ckptmap[onnx]'`): ckptmap does not make graphs, so
a template model gives the graph and every tensor of the checkpoint replaces the initializer the
template reads under the same name (shapes and dtypes must agree, a node gets all its weights or
none, a GRU only goes into a node that resets where it does). The result is checked with
`onnx.checker` before it replaces anything.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import lazy
from ..atomic import AtomicFiles
from ..errors import FormatError, UnsupportedError, UsageError
from ..tree import Checkpoint, TensorEntry
from . import onnx_graph, onnx_names
from .protowire import WireError
from .rawio import file_size, open_output, open_regular

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

FORMAT = onnx_names.FORMAT
_INSTALL = "pip install 'ckptmap[onnx]'"


def sniff(path: Path) -> bool:
    """A ModelProto starts with ir_version (field 1, varint) and then another known field."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return (
        len(head) == 4
        and head[0] == 0x08
        and 1 <= head[1] <= 0x7F
        and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)
    )


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """The initializers of the ONNX model at `path`, RNN weights named after their nodes."""
    path = Path(path)
    size = file_size(path)
    if size > onnx_graph.MAX_MODEL_BYTES:
        raise FormatError(f"{path}: {size} bytes; an ONNX model is one protobuf message of at most 2 GiB.")
    with open_regular(path) as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        graph = onnx_graph.parse(mapped)
    except WireError as e:
        raise FormatError(f"{path}: not a valid ONNX model ({e}).") from None
    finally:
        mapped.close()
    return onnx_names.checkpoint(path, graph)


_TEMPLATES: dict[tuple[str, int, int], Checkpoint] = {}


def _template(path: Path) -> Checkpoint:
    """The template model, read once per convert (it is asked for its names several times)."""
    info = Path(path).stat()
    key = (str(Path(path).resolve()), info.st_mtime_ns, info.st_size)
    if key not in _TEMPLATES:
        _TEMPLATES.clear()
        _TEMPLATES[key] = read(path)
    return _TEMPLATES[key]


def files(path: Path, ckpt: Checkpoint | None = None, *, template: Path | None = None) -> list[Path]:
    return [Path(path)]


_NODE_WEIGHT = re.compile(
    r"(?:(?P<module>.+)/)?(?P<op>LSTM|GRU|RNN)(?:_(?P<k>\d+))?/(?P<direction>forward|reverse)/(?P<role>[WRBP])"
)


def written_names(ckpt: Checkpoint, *, template: Path | None = None) -> dict[str, str]:
    """RNN weights named for nodes the template names otherwise, renamed to its nodes in order.

    The mappings to ONNX name layer k of a module `enc` as torch.onnx names its nodes (`enc/LSTM`,
    `enc/LSTM_1`); a model from another exporter (or an older torch.onnx: `LSTM_589`) has other
    names. When the nodes ckptmap's names miss are the layers of one module, and the template's
    nodes no name reaches are as many, of the same ops and, tensor by tensor, the same shapes, layer
    k goes into the k-th of those nodes in graph order; otherwise nothing is renamed and `write` says
    what is missing.
    """
    if template is None:
        return {}
    model = _template(template)
    missing: dict[tuple[str, str, int], dict[str, TensorEntry]] = {}
    for name, entry in ckpt.entries.items():
        m = _NODE_WEIGHT.fullmatch(name)
        if name not in model.entries and m:
            node = (m["module"] or "", m["op"], int(m["k"] or 0))
            missing.setdefault(node, {})[f"{m['direction']}/{m['role']}"] = entry
    taken = {e.settings["scope"] for n, e in model.entries.items() if e.settings and n in ckpt.entries}
    free: dict[str, str] = {}  # template node scope -> op, in graph order
    for entry in model.entries.values():
        settings = entry.settings or {}
        if "op" in settings and settings["scope"] not in taken:
            free[settings["scope"]] = settings["op"]
    # One module's layers only, in layer order: with two modules missing, nothing here says which
    # of the template's nodes is whose (their shapes may well agree).
    if not missing or len(missing) != len(free) or len({module for module, _, _ in missing}) != 1:
        return {}
    pairs = list(zip(sorted(missing), free, strict=True))  # layer order, graph order
    if any(free[scope] != op for (_, op, _), scope in pairs):
        return {}
    renamed = {}
    for node, scope in pairs:
        for part, entry in missing[node].items():
            slot = model.entries.get(f"{scope}/{part}")
            if slot is None or slot.shape != entry.shape:
                return {}
            renamed[entry.name] = slot.name
    return renamed


def unplaced(ckpt: Checkpoint, *, template: Path | None = None) -> dict[str, str]:
    """The tensors the template model has no initializer for, each with why."""
    if template is None:
        return {}
    model = _template(template)
    renamed = written_names(ckpt, template=template)
    return {
        name: f"{Path(template).name} has no initializer read as '{name}'"
        for name in ckpt.entries
        if renamed.get(name, name) not in model.entries
    }


def write(
    ckpt: Checkpoint,
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
    template: Path | None = None,
) -> list[Path]:
    """The model `template` with each of its initializers that `ckpt` names replaced by `ckpt`'s
    tensor, checked with onnx.checker and written atomically as one file."""
    path = Path(path)
    if template is None:
        raise UsageError(
            f"{path}: writing ONNX needs an existing model to put the weights into (--into model.onnx); "
            "ckptmap does not build graphs."
        )
    template = Path(template)
    model_ckpt = _template(template)
    renamed = written_names(ckpt, template=template)
    if renamed:
        ckpt = ckpt.derived(e.renamed(renamed.get(e.name, e.name)) for e in ckpt.entries.values())
    missing = unplaced(ckpt, template=template)
    if missing:
        name = next(iter(missing))
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FormatError(
            f"{path}: {missing[name]}{more}, so the model would keep its old value; its tensors are "
            f"named like {_examples(model_ckpt)} (the mappings to onnx name RNNs so: --mapping "
            "torch-to-onnx, keras-to-onnx); leave a tensor out with --drop REGEX, or name it with --rename."
        )
    updates = _updates(ckpt, model_ckpt, path)
    onnx = _onnx()
    from onnx import numpy_helper

    try:
        model = onnx.load(str(template))
    except Exception as e:  # onnx's own loader refused the template
        raise FormatError(f"{template}: onnx cannot load it ({e}).") from None
    replaced = 0
    for init in model.graph.initializer:
        parts = updates.get(init.name)
        if parts is None:
            continue
        array = numpy_helper.to_array(init).copy()
        for index, entry in parts:
            data = np.asarray(entry.read())
            if index is None:
                array = data.reshape(array.shape)
            else:
                array[index] = data
            if progress is not None:
                progress(entry.nbytes)
        new = numpy_helper.from_array(np.ascontiguousarray(array), init.name)
        init.CopyFrom(new)
        replaced += 1
    data = model.SerializeToString()
    if len(data) > onnx_graph.MAX_MODEL_BYTES:
        raise UnsupportedError(
            f"{path}: the model would be {len(data)} bytes; writing external data is not supported yet."
        )
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise FormatError(f"{path}: onnx.checker rejects the result ({e}); nothing written.") from None
    with AtomicFiles([path]) as out, open_output(out.temp(path)) as f:
        f.write(data)
    return [path]


def _updates(
    ckpt: Checkpoint, model_ckpt: Checkpoint, path: Path
) -> dict[str, list[tuple[int | None, TensorEntry]]]:
    placed = model_ckpt.metadata["initializers"]
    updates: dict[str, list[tuple[int | None, TensorEntry]]] = {}
    for name, entry in ckpt.entries.items():
        slot = model_ckpt.entries[name]
        if entry.shape != slot.shape or entry.dtype != slot.dtype:
            raise FormatError(
                f"{path}: '{name}' is {list(entry.shape)} {entry.dtype}; the template's is "
                f"{list(slot.shape)} {slot.dtype}."
            )
        _refuse_other_gru(name, entry, slot, path)
        initializer, index = placed[name]
        updates.setdefault(initializer, []).append((index, entry))
    _refuse_part_of_a_node(ckpt, model_ckpt, path)
    return updates


def _refuse_part_of_a_node(ckpt: Checkpoint, model_ckpt: Checkpoint, path: Path) -> None:
    """A node gets all its weights or none: a unidirectional LSTM put into a bidirectional node's
    forward half would leave the template's reverse half computing beside it."""
    nodes: dict[str, list[str]] = {}
    for name, slot in model_ckpt.entries.items():
        if slot.settings and "op" in slot.settings:
            nodes.setdefault(slot.settings["scope"], []).append(name)
    for scope, names in nodes.items():
        given = [n for n in names if n in ckpt.entries]
        if given and len(given) != len(names):
            kept = ", ".join(n.removeprefix(scope + "/") for n in names if n not in ckpt.entries)
            raise FormatError(
                f"{path}: the template's node {scope} would get only some of its weights; {kept} would keep "
                "the template's values. Give all of them, or none."
            )


def _refuse_other_gru(name: str, entry: TensorEntry, slot: TensorEntry, path: Path) -> None:
    """A GRU's weights go only into a node whose reset gate acts where theirs did: the same numbers
    in a node of the other linear_before_reset compute something else (onnx/defs/rnn/defs.cc)."""
    node = slot.settings or {}
    made = _reset_after(entry.settings or {})
    if node.get("op") != "GRU" or made is None or made == bool(node["linear_before_reset"]):
        return
    raise FormatError(
        f"{path}: '{name}' belongs to a GRU whose reset gate acts {'after' if made else 'before'} the "
        f"recurrent matmul, but the template's node {node['node'] or node['scope']} has linear_before_reset="
        f"{node['linear_before_reset']}, which computes the other; nothing written."
    )


def _reset_after(settings: Mapping[str, Any]) -> bool | None:
    if settings.get("op") == "GRU":  # a tensor read from another ONNX model
        return bool(settings["linear_before_reset"])
    return settings.get("reset_after") if settings.get("kind") == "gru" else None


def _examples(ckpt: Checkpoint) -> str:
    names = list(ckpt.entries)[:3]
    return ", ".join(names) if names else "(none: the template has no initializers)"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UnsupportedError(f"Writing ONNX needs the onnx package: {_INSTALL}.") from None
    return onnx
