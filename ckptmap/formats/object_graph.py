"""TF2's TrackableObjectGraph: the object structure stored in a checkpoint, decoded and built by hand.

A TF2 object-based checkpoint keeps, under the key `_CHECKPOINTABLE_OBJECT_GRAPH`, a serialized
TrackableObjectGraph (tensorflow/core/protobuf/trackable_object_graph.proto): a list of nodes, node
0 the root, each with `children` (edges named by `local_name`), `attributes` (the tensors it saves,
each with its bundle `checkpoint_key`) and, on optimizers, `slot_variables`. Restoring walks the
edges from the root and matches them to the program's objects by name, so a writer only needs a
tree of named edges whose leaves carry a `VARIABLE_VALUE` attribute. Keys follow
tensorflow/python/checkpoint/util.py and trackable/trackable_utils.py: the first path to an object
in breadth-first order, `/`-joined, then `/.ATTRIBUTES/<name>`; slots are
`<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .protowire import WireError, fields, len_field, message, messages, scalar, varint_field
from .tf_bundle import OBJECT_GRAPH_KEY

GRAPH_KEY = OBJECT_GRAPH_KEY.decode()
ATTRIBUTES = "/.ATTRIBUTES/"
VARIABLE_VALUE = "VARIABLE_VALUE"
SLOT_MARK = "/.OPTIMIZER_SLOT/"


@dataclass(frozen=True)
class Attribute:
    """SerializedTensor: name=1, full_name=2, checkpoint_key=3."""

    name: str
    full_name: str
    checkpoint_key: str


@dataclass(frozen=True)
class SlotRef:
    """SlotVariableReference: original_variable_node_id=1, slot_name=2, slot_variable_node_id=3."""

    variable: int
    slot_name: str
    slot: int


@dataclass
class Node:
    """TrackableObject: children=1 (ObjectReference: node_id=1, local_name=2), attributes=2,
    slot_variables=3, registered_saver=4 (not used here), has_checkpoint_values=5 (BoolValue)."""

    children: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    slot_variables: list[SlotRef] = field(default_factory=list)


def decode(buf: bytes | memoryview) -> list[Node]:
    """Parse a TrackableObjectGraph; raises WireError when it is damaged or points nowhere."""
    nodes = []
    for raw in messages(fields(buf), 1):
        f = fields(raw)
        node = Node()
        for ref in messages(f, 1):
            r = fields(ref)
            node.children.append((scalar(r, 1), _text(r, 2)))
        for attr in messages(f, 2):
            a = fields(attr)
            node.attributes.append(Attribute(_text(a, 1), _text(a, 2), _text(a, 3)))
        for slot in messages(f, 3):
            s = fields(slot)
            node.slot_variables.append(SlotRef(scalar(s, 1), _text(s, 2), scalar(s, 3)))
        nodes.append(node)
    if not nodes:
        raise WireError("the object graph has no root node")
    ids = [i for n in nodes for i, _ in n.children]
    ids += [i for n in nodes for s in n.slot_variables for i in (s.variable, s.slot)]
    if any(not 0 <= i < len(nodes) for i in ids):
        raise WireError(f"an edge points outside the {len(nodes)} nodes")
    return nodes


def _text(f: dict, number: int) -> str:
    value = message(f, number)
    if value is None:
        return ""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"field {number} is not UTF-8") from e


def encode(nodes: list[Node]) -> bytes:
    """Serialize, marking every node as holding values (all nodes ckptmap writes lead to tensors)."""
    out = bytearray()
    for node in nodes:
        body = bytearray()
        for node_id, name in node.children:
            body += len_field(1, varint_field(1, node_id) + _string(2, name))
        for a in node.attributes:
            body += len_field(2, _string(1, a.name) + _string(2, a.full_name) + _string(3, a.checkpoint_key))
        for s in node.slot_variables:
            ref = varint_field(1, s.variable) + _string(2, s.slot_name) + varint_field(3, s.slot)
            body += len_field(3, ref)
        body += len_field(5, varint_field(1, 1))
        out += len_field(1, bytes(body))
    return bytes(out)


def _string(number: int, value: str) -> bytes:
    return len_field(number, value.encode("utf-8")) if value else b""


def variable_key(path: str, attribute: str = VARIABLE_VALUE) -> str:
    return f"{path}{ATTRIBUTES}{attribute}"


class Builder:
    """Builds a graph from object paths: every `/`-component an edge, every tensor a leaf attribute.

    >>> b = Builder(); b.add_variable("layer_with_weights-0/cell/kernel", "gru/cell/kernel")
    'layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    """

    def __init__(self) -> None:
        self.nodes = [Node()]
        self._paths: dict[tuple[str, ...], int] = {(): 0}

    def node(self, path: tuple[str, ...]) -> int:
        """The node at `path`, creating the edges that lead to it."""
        if path not in self._paths:
            parent = self.node(path[:-1])
            self.nodes.append(Node())
            self._paths[path] = len(self.nodes) - 1
            self.nodes[parent].children.append((len(self.nodes) - 1, path[-1]))
        return self._paths[path]

    def add_variable(self, path: str, full_name: str, attribute: str = VARIABLE_VALUE) -> str:
        """A tensor at object path `path`; returns its checkpoint key."""
        key = variable_key(path, attribute)
        self.nodes[self.node(tuple(path.split("/")))].attributes.append(Attribute(attribute, full_name, key))
        return key

    def add_slot(self, name: str, full_name: str) -> str | None:
        """An optimizer slot named `<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>`, attached to its
        optimizer's `slot_variables` as TF does; None when the name is not of that form."""
        variable, _, rest = name.partition(SLOT_MARK)
        optimizer, _, slot_name = rest.rpartition("/")
        if not (variable and optimizer and slot_name):
            return None
        self.nodes.append(Node([], [Attribute(VARIABLE_VALUE, full_name, variable_key(name))]))
        slot = len(self.nodes) - 1
        original = self.node(tuple(variable.split("/")))
        self.nodes[self.node(tuple(optimizer.split("/")))].slot_variables.append(
            SlotRef(original, slot_name, slot)
        )
        return variable_key(name)
