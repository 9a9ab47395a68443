"""The parts of an ONNX model file ckptmap needs, decoded from the protobuf wire format by hand.

An ONNX file is one ModelProto (onnx/onnx.proto); reading it with the `onnx` package parses every
byte into Python objects and would make `inspect` of a 500 MB model slow and `onnx` a dependency
of reading. Here the file is memory-mapped and walked once: nodes keep their name, type, inputs,
outputs and scalar/list attributes; initializers keep where their bytes are (an offset into the
file, or an external data file), so nothing is read until a tensor is.

Field numbers, from onnx/onnx.proto (IR version 10):
    ModelProto:     ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8
    OperatorSetIdProto: domain 1, version 2
    GraphProto:     node 1, name 2, initializer 5, input 11, output 12, sparse_initializer 15
    NodeProto:      input 1, output 2, name 3, op_type 4, attribute 5, domain 7
    AttributeProto: name 1, f 2, i 3, s 4, t 5, g 6, floats 7, ints 8, strings 9, graphs 11, type 20
    TensorProto:    dims 1, data_type 2, segment 3, float_data 4, int32_data 5, string_data 6,
                    int64_data 7, name 8, raw_data 9, double_data 10, uint64_data 11,
                    external_data 13 (StringStringEntryProto: key 1, value 2), data_location 14
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .protowire import FIXED32, FIXED64, LEN, VARINT, WireError, as_signed64, read_varint

# A protobuf message cannot exceed 2 GiB (ONNX's reason for external data); larger files are not ONNX.
MAX_MODEL_BYTES = (1 << 31) - 1
MAX_NODES = 500_000  # real graphs have thousands; this bounds the memory a crafted graph costs
MAX_INITIALIZERS = 500_000
MAX_ATTRIBUTE_VALUES = 100_000  # elements of one ints/floats/strings attribute
# Names, list values, attributes, nodes and initializers kept, all together: real models keep tens
# of thousands; a 2 GB file of tiny fields would otherwise become hundreds of millions of objects.
MAX_ITEMS = 5_000_000
_MAX_NAME = 4096  # bytes of a node, tensor or attribute name


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]  # ints, floats, strings (decoded), and lists of them; no tensors or graphs
    has_subgraph: bool = False


@dataclass(frozen=True)
class Initializer:
    """Where one initializer's data is. `location` is an external data file (relative to the model's
    directory, as stored), else the bytes are in the model: `raw` (offset, length) of raw_data, or
    `typed` (field number, offset, length) of float_data, int32_data, ... in their packed form."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    raw: tuple[int, int] | None = None
    typed: tuple[int, int, int] | None = None
    location: str | None = None
    external_offset: int = 0
    external_length: int | None = None


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    initializers: list[Initializer] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)
    ir_version: int = 0
    producer: str = ""
    sparse_initializers: int = 0


def parse(buf: mmap.mmap | bytes) -> Graph:
    """The model's main graph; raises WireError for bytes that are not a ModelProto."""
    return _Parser(buf).model()


class _Parser:
    """One walk over a model's bytes. Every name, list value, attribute, node and initializer it
    keeps is counted against MAX_ITEMS, so a crafted file of many tiny fields (a node with a
    million inputs) costs bounded memory, whatever its count fields say."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.left = MAX_ITEMS

    def take(self, count: int = 1) -> None:
        self.left -= count
        if self.left < 0:
            raise WireError(f"more than {MAX_ITEMS} names, values and nodes; not a model ckptmap reads")

    def text(self, span: Any, limit: int = _MAX_NAME) -> str:
        self.take()
        return _text(self.buf, span, limit)

    def model(self) -> Graph:
        graph = Graph()
        found_graph = False
        for number, wire, value in _fields(self.buf, 0, len(self.buf)):
            if number == 1 and wire == VARINT:
                graph.ir_version = int(value)  # type: ignore[arg-type]
            elif number == 2 and wire == LEN:
                graph.producer = self.text(value)
            elif number == 3 and wire == LEN:
                graph.producer = f"{graph.producer} {self.text(value)}".strip()
            elif number == 8 and wire == LEN:
                domain, version = "", 0
                for n, w, v in _fields(self.buf, *value):  # type: ignore[misc]
                    if n == 1 and w == LEN:
                        domain = self.text(v)
                    elif n == 2 and w == VARINT:
                        version = int(v)  # type: ignore[arg-type]
                graph.opsets[domain] = version
            elif number == 7 and wire == LEN:
                found_graph = True
                self.graph(value, graph)  # type: ignore[arg-type]
        if not found_graph:
            raise WireError("no graph in the model")
        return graph

    def graph(self, span: tuple[int, int], graph: Graph) -> None:
        for number, wire, value in _fields(self.buf, *span):
            if wire != LEN:
                continue
            if number == 1:
                if len(graph.nodes) >= MAX_NODES:
                    raise WireError(f"more than {MAX_NODES} nodes")
                graph.nodes.append(self.node(value))  # type: ignore[arg-type]
            elif number == 5:
                if len(graph.initializers) >= MAX_INITIALIZERS:
                    raise WireError(f"more than {MAX_INITIALIZERS} initializers")
                graph.initializers.append(self.tensor(value))  # type: ignore[arg-type]
            elif number in (11, 12):  # ValueInfoProto: name 1
                fields = _fields(self.buf, *value)  # type: ignore[misc]
                name = next((self.text(v) for n, w, v in fields if n == 1 and w == LEN), "")
                (graph.inputs if number == 11 else graph.outputs).append(name)
            elif number == 15:
                graph.sparse_initializers += 1

    def node(self, span: tuple[int, int]) -> Node:
        self.take()
        inputs: list[str] = []
        outputs: list[str] = []
        name = op_type = domain = ""
        attributes: dict[str, Any] = {}
        subgraph = False
        for number, wire, value in _fields(self.buf, *span):
            if wire != LEN:
                continue
            if number == 1:
                inputs.append(self.text(value))
            elif number == 2:
                outputs.append(self.text(value))
            elif number == 3:
                name = self.text(value)
            elif number == 4:
                op_type = self.text(value)
            elif number == 7:
                domain = self.text(value)
            elif number == 5:
                key, attribute, nested = self.attribute(value)  # type: ignore[arg-type]
                subgraph = subgraph or nested
                if key and attribute is not None:
                    attributes[key] = attribute
        return Node(name, op_type, domain, tuple(inputs), tuple(outputs), attributes, subgraph)

    def attribute(self, span: tuple[int, int]) -> tuple[str, Any, bool]:
        """(name, value, holds a graph): a scalar, a string or a list; tensors and graphs are not kept."""
        name, value, nested = "", None, False
        lists: dict[int, list[Any]] = {7: [], 8: [], 9: []}
        for number, wire, v in _fields(self.buf, *span):
            if number == 1 and wire == LEN:
                name = self.text(v)
            elif number == 2 and wire == FIXED32:
                value = struct.unpack("<f", struct.pack("<I", v))[0]
            elif number == 3 and wire == VARINT:
                value = as_signed64(int(v))  # type: ignore[arg-type]
            elif number == 4 and wire == LEN:
                value = self.text(v, limit=1 << 16)
            elif number in (6, 11):
                nested = True
            elif number in lists:
                lists[number].extend(self.list_values(number, wire, v))
                if len(lists[number]) > MAX_ATTRIBUTE_VALUES:
                    raise WireError(f"attribute '{name}' holds more than {MAX_ATTRIBUTE_VALUES} values")
        found = next((values for values in lists.values() if values), None)
        return name, found if found is not None else value, nested

    def list_values(self, number: int, wire: int, v: Any) -> list[Any]:
        buf = self.buf
        if number == 9:  # strings: one LEN field each
            return [self.text(v, limit=1 << 16)] if wire == LEN else []
        if number == 7:  # floats: packed fixed32 or one fixed32
            if wire == LEN:
                start, end = v
                if (end - start) % 4:
                    raise WireError("packed floats of a length that is not a multiple of 4")
                self.take((end - start) // 4)
                return list(struct.unpack(f"<{(end - start) // 4}f", buf[start:end]))
            self.take()
            return [struct.unpack("<f", struct.pack("<I", v))[0]] if wire == FIXED32 else []
        if wire == LEN:  # ints: packed varints or one varint
            out, pos, end = [], v[0], v[1]
            while pos < end:
                value, pos = read_varint(buf, pos)
                self.take()
                out.append(as_signed64(value))
            return out
        self.take()
        return [as_signed64(int(v))] if wire == VARINT else []

    def tensor(self, span: tuple[int, int]) -> Initializer:
        self.take()
        dims: list[int] = []
        name, data_type, location_kind = "", 0, 0
        raw = typed = None
        external: dict[str, str] = {}
        for number, wire, v in _fields(self.buf, *span):
            if number == 1:
                dims.extend(self.list_values(8, wire, v))
            elif number == 2 and wire == VARINT:
                data_type = int(v)  # type: ignore[arg-type]
            elif number == 8 and wire == LEN:
                name = self.text(v)
            elif number == 9 and wire == LEN:
                raw = (v[0], v[1] - v[0])  # type: ignore[index]
            elif number in (4, 5, 7, 10, 11) and wire == LEN:
                typed = (number, v[0], v[1] - v[0])  # type: ignore[index]
            elif number in (4, 5, 7, 10, 11):
                raise WireError(f"tensor '{name}': unpacked repeated data, which ONNX writers do not produce")
            elif number == 13 and wire == LEN:
                entry = {n: self.text(x, limit=1 << 16) for n, w, x in _fields(self.buf, *v) if w == LEN}  # type: ignore[misc]
                if entry.get(1):
                    external[entry[1]] = entry.get(2, "")
            elif number == 14 and wire == VARINT:
                location_kind = int(v)  # type: ignore[arg-type]
            elif number == 3:
                raise WireError(f"tensor '{name}' is split into segments, which ckptmap does not read")
        if any(d < 0 for d in dims):
            raise WireError(f"tensor '{name}' has a negative dimension {tuple(dims)}")
        if location_kind == 1:
            try:
                offset = int(external.get("offset", "0") or 0)
                length = int(external["length"]) if external.get("length") else None
            except ValueError:
                raise WireError(f"tensor '{name}': external data offset or length is not a number") from None
            return Initializer(name, tuple(dims), data_type, location=external.get("location", ""),
                               external_offset=offset, external_length=length)  # fmt: skip
        return Initializer(name, tuple(dims), data_type, raw=raw, typed=typed)


def _text(buf: Any, span: Any, limit: int = _MAX_NAME) -> str:
    start, end = span
    if end - start > limit:
        raise WireError(f"a name of {end - start} bytes")
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("a name that is not UTF-8") from None


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """(field number, wire type, value) of the message in buf[start:end]: an int for scalars, the
    (start, end) of the bytes for length-delimited fields, so payloads are never copied."""
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if pos >= end:
            raise WireError("a field runs past the end of its message")
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            if pos > end:
                raise WireError("a varint runs past the end of its message")
            yield number, wire, value
        elif wire == LEN:
            length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise WireError("a length-delimited field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise WireError("a fixed-width field runs past the end of its message")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        else:
            raise WireError(f"unsupported wire type {wire}")
