"""The kinds of recurrent cell, one row each: the facts about a kind that every part of ckptmap reads.

Recognition (cells/), mapping validation (rules/schema.py), the rule engine's `when:` facts, the
model builders of `verify` and the writers all look a kind up here rather than restating it. A row
says, per framework, which classes build the kind (the first is what ckptmap builds for it), which
gate layout its weights use (the layouts themselves, with their sources, are rows of
cells/layouts.py; tests/cells/test_cell_kinds.py holds the two tables to each other and to the
frameworks), and, where the framework has no such cell, why not.

This module imports nothing of ckptmap, so readers and writers in formats/ may use it too.
Adding a kind is one row here, its layouts in cells/layouts.py, its recognition and its mapping
rules; see "Where things go" in CONTRIBUTING.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import RuleError

FRAMEWORKS = ("tf1", "torch", "keras", "onnx", "flax")

# `when:` facts every cell rule may test: the RNN's attribute of the same name (rules/engine.py).
COMMON_FACTS: Mapping[str, type] = {
    "bidirectional": bool,
    "bias": bool,
    "layers": int,
    "cell_type": str,
    "stacking": str,
}


@dataclass(frozen=True)
class InFramework:
    """How one framework builds a kind, or why it cannot."""

    classes: tuple[str, ...] = ()  # class names; the first is the one ckptmap builds
    layout: str | None = None  # the gate layout of its weights (cells/layouts.py key)
    missing: str = ""  # why the framework has no counterpart, when `classes` is empty
    key: str = ""  # Keras: the layer's snake-case key and default name (`simple_rnn`)
    cell_name: str = ""  # Keras: the cell's default name, as tf-keras writes it (`simple_rnn_cell`)
    # Classes that today's framework no longer builds: TF 1.x contrib cells, recognized and built by
    # verify from their TF 1.x code (verification/tf1_contrib_cells.py); Keras 2's CuDNN layers,
    # which tf-keras builds but runs only on a GPU and Keras 3 does not have (formats/keras_names.py
    # CUDNN_CLASSES says how their weights differ).
    removed: tuple[str, ...] = ()

    @property
    def builds(self) -> str:
        return self.classes[0]


@dataclass(frozen=True)
class CellKind:
    name: str
    gates: int  # gate blocks fused along the weights' gate axis
    state: tuple[str, ...]  # the parts of its state: h, and c for an LSTM
    facts: Mapping[str, type]  # `when:` facts of this kind beyond COMMON_FACTS
    frameworks: Mapping[str, InFramework] = field(default_factory=dict)
    source: str = ""

    def of(self, framework: str) -> InFramework:
        try:
            return self.frameworks[framework]
        except KeyError:
            raise RuleError(f"Unknown framework '{framework}'; known: {', '.join(FRAMEWORKS)}.") from None

    def counterpart(self, framework: str) -> bool:
        return bool(self.of(framework).classes)

    @property
    def when_facts(self) -> dict[str, type]:
        return {**COMMON_FACTS, **self.facts}


KINDS: tuple[CellKind, ...] = (
    CellKind(
        "lstm",
        gates=4,
        state=("h", "c"),
        facts={"peepholes": bool, "proj": bool},
        frameworks={
            # LSTMBlockCell, LSTMBlockFusedCell and LayerNormBasicLSTMCell(layer_norm=False): TF 1.x
            # contrib twins of LSTMCell (cells/tf1_specs.py).
            "tf1": InFramework(
                (
                    "LSTMCell",
                    "BasicLSTMCell",
                    "CudnnCompatibleLSTMCell",
                    "LSTMBlockCell",
                    "LSTMBlockFusedCell",
                    "LayerNormBasicLSTMCell",
                ),
                "tf1.lstm",
                removed=(
                    "CudnnCompatibleLSTMCell",
                    "LSTMBlockCell",
                    "LSTMBlockFusedCell",
                    "LayerNormBasicLSTMCell",
                ),
            ),
            "torch": InFramework(("nn.LSTM",), "torch.lstm"),
            "keras": InFramework(
                ("LSTM", "CuDNNLSTM"),
                "keras.lstm",
                key="lstm",
                cell_name="lstm_cell",
                removed=("CuDNNLSTM",),
            ),
            "onnx": InFramework(("LSTM",), "onnx.lstm"),
            # linen's two LSTM cells hold the same parameters; nnx spells the forget gate `if_`
            # (a keyword otherwise) and fuses OptimizedLSTMCell's gates (cells/flax_cells.py).
            "flax": InFramework(
                ("LSTMCell", "OptimizedLSTMCell", "nnx.LSTMCell", "nnx.OptimizedLSTMCell"), "flax.lstm"
            ),
        },
        source="tensorflow/python/ops/rnn_cell_impl.py LSTMCell; torch/nn/modules/rnn.py LSTM; "
        "keras/src/layers/rnn/lstm.py; onnx/defs/rnn/defs.cc LSTM; flax/linen/recurrent.py LSTMCell",
    ),
    CellKind(
        "gru",
        gates=3,
        state=("h",),
        facts={"reset_after": bool},
        frameworks={
            "tf1": InFramework(
                ("GRUCell", "CudnnCompatibleGRUCell", "GRUBlockCell", "GRUBlockCellV2"),
                "tf1.gru",
                removed=("CudnnCompatibleGRUCell", "GRUBlockCell", "GRUBlockCellV2"),
            ),
            "torch": InFramework(("nn.GRU",), "torch.gru"),
            "keras": InFramework(
                ("GRU", "CuDNNGRU"), "keras.gru", key="gru", cell_name="gru_cell", removed=("CuDNNGRU",)
            ),
            "onnx": InFramework(("GRU",), "onnx.gru"),
            "flax": InFramework(("GRUCell", "nnx.GRUCell"), "flax.gru"),
        },
        source="tensorflow/python/ops/rnn_cell_impl.py GRUCell; torch/nn/modules/rnn.py GRU; "
        "keras/src/layers/rnn/gru.py; onnx/defs/rnn/defs.cc GRU; flax/linen/recurrent.py GRUCell",
    ),
    CellKind(
        "rnn",
        gates=1,
        state=("h",),
        facts={},
        frameworks={
            "tf1": InFramework(("BasicRNNCell",), "tf1.rnn"),
            "torch": InFramework(("nn.RNN",), "torch.rnn"),
            "keras": InFramework(("SimpleRNN",), "keras.rnn", key="simple_rnn", cell_name="simple_rnn_cell"),
            "onnx": InFramework(("RNN",), "onnx.rnn"),
            "flax": InFramework(("SimpleCell", "nnx.SimpleCell"), "flax.rnn"),
        },
        source="tensorflow/python/ops/rnn_cell_impl.py BasicRNNCell; torch/nn/modules/rnn.py RNN "
        "(tanh); keras/src/layers/rnn/simple_rnn.py; onnx/defs/rnn/defs.cc RNN; flax/linen/recurrent.py "
        "SimpleCell",
    ),
)


def _tf1_only(name: str, cls: str, gates: int, state: tuple[str, ...], why: str, source: str) -> CellKind:
    """A TF 1.x contrib cell no other framework has: recognized, shown, refused."""
    missing = InFramework(missing=why)
    return CellKind(
        name,
        gates=gates,
        state=state,
        facts={},
        frameworks={
            "tf1": InFramework((cls,), removed=(cls,)),
            **dict.fromkeys(("torch", "keras", "onnx", "flax"), missing),
        },
        source=source,
    )


_CONTRIB = "tensorflow/contrib/rnn/python/ops/rnn_cell.py (TF 1.15)"
KINDS += (
    _tf1_only(
        "nas",
        "NASCell",
        8,
        ("h", "c"),
        "NASCell's 8 gates feed a fixed tree of products and sums found by architecture search "
        "(Zoph and Le, 2017), which no built-in layer computes",
        _CONTRIB,
    ),
    _tf1_only(
        "ugrnn",
        "UGRNNCell",
        2,
        ("h",),
        "UGRNNCell mixes state and candidate with a single update gate and no reset gate (Collins "
        "et al., 2017), which neither a GRU nor a plain RNN computes",
        _CONTRIB,
    ),
    _tf1_only(
        "indrnn",
        "IndRNNCell",
        1,
        ("h",),
        "IndRNNCell's recurrence is one weight per unit (kernel_u [1, units]), not a matrix; an RNN "
        "with ReLU and a diagonal recurrent matrix would compute it, but no built-in mapping makes one",
        _CONTRIB,
    ),
    _tf1_only(
        "layer_norm_lstm",
        "LayerNormBasicLSTMCell",
        4,
        ("h", "c"),
        "LayerNormBasicLSTMCell normalizes every gate and the cell state (gamma, beta), and no "
        "built-in LSTM has layer normalization",
        _CONTRIB,
    ),
    _tf1_only(
        "intersection_rnn",
        "IntersectionRNNCell",
        4,
        ("h",),
        "IntersectionRNNCell gates its state and its output apart (Collins et al., 2017), which no "
        "built-in layer computes",
        _CONTRIB,
    ),
    _tf1_only(
        "phased_lstm",
        "PhasedLSTMCell",
        2,
        ("h", "c"),
        "PhasedLSTMCell opens and closes its state with a time gate (period, phase, ratio_on) driven "
        "by timestamps fed beside the input, which no built-in LSTM has",
        _CONTRIB,
    ),
    _tf1_only(
        "cifg_lstm",
        "CoupledInputForgetGateLSTMCell",
        3,
        ("h", "c"),
        "CoupledInputForgetGateLSTMCell has no input gate of its own (it is 1 - forget); an LSTM "
        "whose input gate is the negated forget gate would compute it, but no built-in mapping makes one",
        _CONTRIB,
    ),
    _tf1_only(
        "grid_lstm",
        "GridLSTMCell",
        4,
        ("h", "c"),
        "GridLSTMCell runs LSTMs along both time and frequency blocks of its input, which no "
        "built-in layer does",
        _CONTRIB,
    ),
)
_BY_NAME = {k.name: k for k in KINDS}
KIND_NAMES = tuple(_BY_NAME)


def kind(name: str) -> CellKind:
    """The row of kind `name` (`lstm`, `gru`, `rnn`, ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise RuleError(f"Unknown cell kind '{name}'; known kinds: {', '.join(_BY_NAME)}.") from None


def gate_count(name: str) -> int:
    """The gate blocks a `name` cell fuses along its weights' gate axis: LSTM 4, GRU 3, RNN 1."""
    return kind(name).gates


def kind_with_gates(width: int, units: int) -> str | None:
    """The cell kind whose fused gate axis is `width` wide for `units` units (gates x units), if
    exactly one kind that every framework builds has that many gates."""
    if units <= 0 or width % units:
        return None
    fits = [k.name for k in KINDS if k.gates == width // units and all(map(k.counterpart, FRAMEWORKS))]
    return fits[0] if len(fits) == 1 else None


def default_class(framework: str, name: str) -> str:
    """The class ckptmap builds for kind `name` in `framework` (`LSTMCell`, `nn.GRU`, `SimpleRNN`)."""
    row = kind(name).frameworks.get(framework)
    return row.builds if row is not None and row.classes else name.upper()


def kind_of_class(framework: str, class_name: str) -> str | None:
    """The kind a framework's class builds (`BasicLSTMCell` -> `lstm`), or None."""
    return next((k.name for k in KINDS if class_name in k.of(framework).classes), None)


def when_facts() -> dict[str, type]:
    """Every `when:` fact any kind has, with its type: what a cell rule may test."""
    facts = dict(COMMON_FACTS)
    for k in KINDS:
        facts.update(k.facts)
    return facts
