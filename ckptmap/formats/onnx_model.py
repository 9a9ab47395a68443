"""Format "onnx": an ONNX model read as a checkpoint of its initializers, and written by putting a
checkpoint's tensors into an existing model (`convert --into model.onnx`).

Reading needs no `onnx` package (formats/onnx_graph.py walks the file). The weights of an `LSTM`,
`GRU` or `RNN` node (onnx/defs/rnn/defs.cc) are renamed after the node, one tensor per direction,
since ONNX stacks both directions of a bidirectional node in one initializer: the node `/enc/LSTM`
gives `enc/LSTM/forward/W` [4h, input], `enc/LSTM/forward/R`, `enc/LSTM/forward/B` [8h] (and
`reverse/...`, and the peepholes `P`), whatever the exporter called its initializers
(`onnx::LSTM_381`). Each such tensor carries its node's attributes in `TensorEntry.settings`, for
cells/onnx_cells.py. Other initializers keep their names (`fc.bias` reads as `fc/bias`, as PyTorch's
state-dict names do). External data files are read where the model's directory holds them: an
absolute location, `..` or a symbolic link is refused, as onnx and onnxruntime refuse them.

Writing needs the `onnx` package (`pip install 'ckptmap[onnx]'`): ckptmap does not make graphs, so
a template model gives the graph and every tensor of the checkpoint replaces the initializer the
template reads under the same name (shapes and dtypes must agree). The result is checked with
`onnx.checker` before it replaces anything.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import dtypes, lazy
from ..atomic import AtomicFiles
from ..errors import FormatError, UnsupportedError, UsageError
from ..tree import Checkpoint, TensorEntry
from . import onnx_graph
from .onnx_graph import Graph, Initializer, Node
from .protowire import WireError, packed_varints
from .rawio import MappedFile, file_size, open_output, open_regular

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

FORMAT = "onnx"
RNN_OPS = {"LSTM": ("W", "R", "B", "P"), "GRU": ("W", "R", "B"), "RNN": ("W", "R", "B")}
_ROLE_INPUT = {"W": 1, "R": 2, "B": 3, "P": 7}  # input positions (onnx/defs/rnn/defs.cc)
# Ops that pass a sequence through unchanged in content (layout and shape only): an RNN node whose
# input comes from another one through these is the next layer of the same stack.
_RESHAPING = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Flatten", "Cast"}
_TYPED_FIELD = {4: "<f4", 10: "<f8"}  # float_data, double_data: fixed width; others are varints
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
    except (WireError, RecursionError) as e:
        raise FormatError(f"{path}: not a valid ONNX model ({e}).") from None
    finally:
        mapped.close()
    return _checkpoint(path, graph)


def _checkpoint(path: Path, graph: Graph) -> Checkpoint:
    files = MappedFile(path)
    by_name = {i.name: i for i in graph.initializers}
    if len(by_name) != len(graph.initializers):
        raise FormatError(f"{path}: two initializers have the same name.")
    entries: list[TensorEntry] = []
    placed: dict[str, tuple[str, int | None]] = {}  # canonical name -> (initializer, direction index)
    notes: list[str] = []
    used: set[str] = set()
    for node, scope in _rnn_nodes(graph):
        directions = _directions(node)
        roles = [(r, node.inputs[_ROLE_INPUT[r]]) for r in RNN_OPS[node.op_type]
                 if len(node.inputs) > _ROLE_INPUT[r] and node.inputs[_ROLE_INPUT[r]]]  # fmt: skip
        computed = [name for _, name in roles if name not in by_name]
        if computed or any(name in used for _, name in roles):
            what = f"computes {computed[0]}" if computed else "shares its weights with another RNN node"
            notes.append(
                f"ONNX node {node.name or scope} ({node.op_type}) {what}; its weights are not read as an RNN."
            )
            continue
        settings = _settings(node, scope, graph)
        for role, name in roles:
            init = by_name[name]
            if not init.dims or init.dims[0] != len(directions):
                raise FormatError(
                    f"{path}: {node.op_type} node {node.name or scope}: input {role} ({name}) has shape "
                    f"{list(init.dims)}, not [{len(directions)}, ...] for direction {settings['direction']}."
                )
            used.add(name)
            for index, direction in enumerate(directions):
                canonical = f"{scope}/{direction}/{role}"
                entries.append(_entry(path, files, init, canonical, index, settings))
                placed[canonical] = (name, index)
    taken = {e.name for e in entries}
    for init in graph.initializers:
        if init.name in used:
            continue
        canonical = _plain_name(init.name)
        if canonical in taken:
            canonical = init.name
        if canonical in taken:
            raise FormatError(f"{path}: initializer '{init.name}' has the name an RNN weight is read under.")
        taken.add(canonical)
        entries.append(_entry(path, files, init, canonical, None, None))
        placed[canonical] = (init.name, None)
    if used:
        notes.append(
            "RNN weights are named <node>/<direction>/<W|R|B|P>: ONNX keeps both directions in one "
            "initializer."
        )
    if graph.sparse_initializers:
        notes.append(f"{graph.sparse_initializers} sparse initializers are not read.")
    if any(n.has_subgraph for n in graph.nodes):
        notes.append("Initializers inside subgraphs (If, Loop, Scan bodies) are not read.")
    return Checkpoint(
        entries,
        format=FORMAT,
        path=path,
        files=[path, *_external_files(path, graph)],
        notes=notes,
        metadata={
            "ir_version": graph.ir_version,
            "producer": graph.producer,
            "opsets": graph.opsets,
            "initializers": placed,
        },
    )


def _rnn_nodes(graph: Graph) -> list[tuple[Node, str]]:
    """RNN nodes with the scope their weights are named under: the node's name without the
    leading `/` torch.onnx gives it (`/enc/LSTM_1` -> `enc/LSTM_1`), else `<op>_<k>`."""
    out: list[tuple[Node, str]] = []
    seen: set[str] = set()
    for node in graph.nodes:
        if node.op_type not in RNN_OPS or node.domain not in ("", "ai.onnx"):
            continue
        scope = "/".join(p for p in node.name.split("/") if p and p not in (".", ".."))
        if not scope or scope in seen:
            scope = next(
                f"{node.op_type}_{k}" for k in range(len(seen) + 1) if f"{node.op_type}_{k}" not in seen
            )
        seen.add(scope)
        out.append((node, scope))
    return out


def _directions(node: Node) -> tuple[str, ...]:
    direction = node.attributes.get("direction", "forward")
    return ("forward", "reverse") if direction == "bidirectional" else (str(direction),)


def _settings(node: Node, scope: str, graph: Graph) -> dict[str, Any]:
    """The node's attributes (defaults filled in from the operator's schema), and the RNN node
    whose output feeds this one's input, if any: what recognition needs beyond shapes."""
    attrs = node.attributes
    return {
        "op": node.op_type,
        "node": node.name,
        "scope": scope,
        "direction": str(attrs.get("direction", "forward")),
        "hidden_size": attrs.get("hidden_size"),
        "linear_before_reset": int(attrs.get("linear_before_reset", 0)),
        "activations": tuple(attrs.get("activations", ())),
        "activation_alpha": tuple(attrs.get("activation_alpha", ())),
        "activation_beta": tuple(attrs.get("activation_beta", ())),
        "clip": attrs.get("clip"),
        "input_forget": int(attrs.get("input_forget", 0)),
        "layout": int(attrs.get("layout", 0)),
        "y": node.outputs[0] if node.outputs else "",
        "fed_by": _feeding_rnn(node, graph),
    }


def _feeding_rnn(node: Node, graph: Graph) -> str | None:
    """The output Y of the RNN node that reaches `node`'s X through reshaping ops only."""
    producers = {out: n for n in graph.nodes for out in n.outputs if out}
    name = node.inputs[0] if node.inputs else ""
    for _ in range(32):
        producer = producers.get(name)
        if producer is None:
            return None
        if producer.op_type in RNN_OPS:
            return name if producer.outputs[0] == name else None  # Y, not the final state
        if producer.op_type not in _RESHAPING or not producer.inputs:
            return None
        name = producer.inputs[0]
    return None


def _plain_name(name: str) -> str:
    """A dotted PyTorch parameter path (`fc.bias`) as the canonical `fc/bias`; others as they are."""
    return name.replace(".", "/") if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name) else name


def _entry(
    path: Path,
    files: MappedFile,
    init: Initializer,
    name: str,
    index: int | None,
    settings: Mapping[str, Any] | None,
) -> TensorEntry:
    dt = dtypes.from_onnx(init.data_type) if init.data_type != 8 else None
    if dt is None:
        raise UnsupportedError(
            f"{path}: initializer '{init.name}' holds strings, which ckptmap does not read."
        )
    shape = init.dims if index is None else init.dims[1:]
    expected = math.prod(init.dims) * dt.itemsize

    def load() -> np.ndarray:
        array = _read_initializer(path, files, init, dt, expected).reshape(init.dims)
        return array if index is None else array[index]

    return TensorEntry(name, tuple(shape), dt.name, init.name, load, settings=settings)


def _read_initializer(
    path: Path, files: MappedFile, init: Initializer, dt: dtypes.DType, nbytes: int
) -> np.ndarray:
    where = f"{path}: initializer '{init.name}'"
    if init.location is not None:
        data = _external(path, init, nbytes)
    elif init.raw is not None:
        offset, length = init.raw
        if length != nbytes:
            raise FormatError(
                f"{where} has {length} bytes of data; {list(init.dims)} {dt.name} needs {nbytes}."
            )
        data = files.read(offset, length)
    elif init.typed is not None:
        return _typed(where, files, init, dt, nbytes // dt.itemsize)
    elif nbytes == 0:
        data = memoryview(b"")
    else:
        raise FormatError(f"{where} has no data.")
    return np.frombuffer(data, dtype=dt.numpy.newbyteorder("<"))


def _typed(where: str, files: MappedFile, init: Initializer, dt: dtypes.DType, count: int) -> np.ndarray:
    """float_data, double_data (fixed width; a complex number is two of them) or int32_data,
    int64_data, uint64_data (varints); 16-bit floats sit in int32_data as their bit patterns
    (onnx/onnx.proto, TensorProto)."""
    assert init.typed is not None
    number, offset, length = init.typed
    raw = files.read(offset, length)
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


def _external(path: Path, init: Initializer, nbytes: int) -> memoryview:
    where = f"{path}: initializer '{init.name}'"
    target = _external_path(path, init.location or "")
    length = nbytes if init.external_length is None else init.external_length
    if length != nbytes:
        raise FormatError(f"{where}: external data of {length} bytes; {list(init.dims)} needs {nbytes}.")
    return MappedFile(target).read(init.external_offset, length)


def _external_path(path: Path, location: str) -> Path:
    """The external data file `location` names, inside the model's directory and no link."""
    base = path.parent
    parts = Path(location).parts
    if not location or Path(location).is_absolute() or ".." in parts or "\0" in location:
        raise FormatError(
            f"{path}: external data location '{location}' is not a file beside the model; refusing it."
        )
    target = base / location
    for depth in range(1, len(parts) + 1):
        step = base.joinpath(*parts[:depth])
        try:
            mode = step.lstat().st_mode
        except OSError:
            raise FormatError(f"{path}: its external data file {target} is missing.") from None
        if stat.S_ISLNK(mode):
            raise FormatError(f"{path}: external data location '{location}' is a symbolic link; refusing it.")
    return target


def _external_files(path: Path, graph: Graph) -> list[Path]:
    names = dict.fromkeys(i.location for i in graph.initializers if i.location)
    out = []
    for location in names:
        try:
            out.append(_external_path(path, location or ""))
        except FormatError:
            continue  # said when the tensor is read
    return out


# --- writing ------------------------------------------------------------------------------------
def files(path: Path, ckpt: Checkpoint | None = None, *, template: Path | None = None) -> list[Path]:
    return [Path(path)]


_NODE_WEIGHT = re.compile(
    r"(?:(?P<module>.+)/)?(?P<op>LSTM|GRU|RNN)(?:_(?P<k>\d+))?/(?P<direction>forward|reverse)/(?P<role>[WRBP])"
)


def written_names(ckpt: Checkpoint, *, template: Path | None = None) -> dict[str, str]:
    """RNN weights named for nodes the template names otherwise, renamed to its nodes in order.

    The mappings to ONNX name layer k of a module `enc` as torch.onnx names its nodes (`enc/LSTM`,
    `enc/LSTM_1`); a model from another exporter (or an older torch.onnx: `LSTM_589`) has other
    names. When the nodes ckptmap's names miss and the template's nodes no name reaches are as many,
    of the same ops and, tensor by tensor, the same shapes, in the order of the layers and of the
    graph, the one goes into the other; otherwise nothing is renamed and `write` says what is missing.
    """
    if template is None:
        return {}
    model = read(template)
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
    if not missing or len(missing) != len(free):
        return {}
    pairs = list(zip(missing, free, strict=True))  # both in order: the checkpoint's, the graph's
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
    model = read(template)
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
    model_ckpt = read(template)
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
    return updates


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
