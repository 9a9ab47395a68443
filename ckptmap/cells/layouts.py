"""Gate orders and cell arithmetic of every framework, as data. The one place these facts live.

Frameworks fuse a cell's gates into one matrix and disagree on the order of the blocks. Gates are
named here by one shared vocabulary so that a reorder is a lookup, not a hand-written slice:

    LSTM: i = input gate, f = forget gate, g = cell candidate, o = output gate
    GRU:  r = reset gate, z = update gate, n = candidate ("new" state)
    RNN:  h = the single block

Each row cites where its fact comes from; tests/cells/test_layouts.py pins every row against the
real framework by building a cell, setting one gate's block and watching which gate moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RuleError


@dataclass(frozen=True)
class GateLayout:
    framework: str
    cell: str
    gates: tuple[str, ...]  # shared gate names, in the order of the blocks along the fused axis
    labels: tuple[str, ...]  # the framework's own names for the same blocks
    source: str
    note: str = ""
    reset_after: bool | None = None  # GRU only: reset gate applied after the recurrent matmul?

    @property
    def key(self) -> str:
        return f"{self.framework}.{self.cell}"

    def block(self, gate: str) -> int:
        try:
            return self.gates.index(gate)
        except ValueError:
            raise RuleError(
                f"Layout {self.key} has no gate '{gate}'; its gates are {', '.join(self.gates)}."
            ) from None


LAYOUTS: tuple[GateLayout, ...] = (
    GateLayout(
        "tf1",
        "lstm",
        ("i", "g", "f", "o"),
        ("i", "j", "f", "o"),
        source="tensorflow/python/ops/rnn_cell_impl.py: LSTMCell.call and BasicLSTMCell.call, "
        "`i, j, f, o = array_ops.split(value=lstm_matrix, num_or_size_splits=4, axis=1)`",
        note="kernel is [inputs; h] stacked on axis 0, gates on axis 1; forget_bias (default 1.0) is "
        "added to f at run time and never stored; one bias",
    ),
    GateLayout(
        "tf1",
        "gru",
        ("r", "z", "n"),
        ("r", "u", "c"),
        source="tensorflow/python/ops/rnn_cell_impl.py: GRUCell.call, "
        "`r, u = array_ops.split(value=value, num_or_size_splits=2, axis=1)`; candidate separate",
        note="gates/kernel holds [r, u], candidate/kernel holds c, both over [inputs; h]; the reset gate "
        "multiplies h before the candidate matmul; new_h = u*h + (1-u)*c; gates/bias starts at 1.0",
        reset_after=False,
    ),
    GateLayout(
        "tf1",
        "rnn",
        ("h",),
        ("h",),
        source="tensorflow/python/ops/rnn_cell_impl.py: BasicRNNCell.call, "
        "`output = tanh(matmul(concat([inputs, state], 1), kernel) + bias)`",
    ),
    GateLayout(
        "torch",
        "lstm",
        ("i", "f", "g", "o"),
        ("i", "f", "g", "o"),
        source="torch/nn/modules/rnn.py: LSTM docstring, weight_ih_l[k] = (W_ii|W_if|W_ig|W_io)",
        note="weight_ih [4h, input], weight_hh [4h, h or proj], bias_ih and bias_hh are summed; "
        "weight_hr_l[k] [proj, h] with proj_size",
    ),
    GateLayout(
        "torch",
        "gru",
        ("r", "z", "n"),
        ("r", "z", "n"),
        source="torch/nn/modules/rnn.py: GRU docstring, weight_ih_l[k] = (W_ir|W_iz|W_in), "
        "n = tanh(W_in x + b_in + r * (W_hn h + b_hn))",
        note="the reset gate multiplies (W_hn h + b_hn), after the recurrent matmul; h' = (1-z)*n + z*h",
        reset_after=True,
    ),
    GateLayout(
        "torch",
        "rnn",
        ("h",),
        ("h",),
        source="torch/nn/modules/rnn.py: RNN docstring, h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)",
        note="nonlinearity='tanh' assumed: a checkpoint does not record it",
    ),
    GateLayout(
        "keras",
        "lstm",
        ("i", "f", "g", "o"),
        ("i", "f", "c", "o"),
        source="keras/src/layers/rnn/lstm.py: LSTMCell, kernel split into i, f, c, o",
        note="kernel [input, 4h], recurrent_kernel [h, 4h], one bias [4h]",
    ),
    GateLayout(
        "keras",
        "gru",
        ("z", "r", "n"),
        ("z", "r", "h"),
        source="keras/src/layers/rnn/gru.py: GRUCell, kernel split into z, r, h",
        note="reset_after=True (default): bias [2, 3h] = input and recurrent biases, exactly torch's GRU",
        reset_after=True,
    ),
    GateLayout(
        "keras",
        "rnn",
        ("h",),
        ("h",),
        source="keras/src/layers/rnn/simple_rnn.py: SimpleRNNCell",
    ),
    # ONNX operators (onnx/defs/rnn/defs.cc, opsets 7, 14 and 22 agree on all of this; 14 adds `layout`,
    # which moves the batch axis of X and Y, never of the weights). Per direction: W [gates*h, input],
    # R [gates*h, h], B [2*gates*h] = input biases then recurrent biases (both summed, as PyTorch's).
    GateLayout(
        "onnx",
        "lstm",
        ("i", "o", "f", "g"),
        ("i", "o", "f", "c"),
        source="onnx/defs/rnn/defs.cc: LSTM, `W[iofc]`, `R[iofc]`, `Wb[iofc]`, `Rb[iofc]`, `P[iof]`",
        note="peepholes P [3h] (i, o, f): i and f see C(t-1), o sees C(t), as TF1's LSTMCell(use_peepholes)",
    ),
    GateLayout(
        "onnx",
        "gru",
        ("z", "r", "n"),
        ("z", "r", "h"),
        source="onnx/defs/rnn/defs.cc: GRU, `W[zrh]`, `R[zrh]`, `Wb[zrh]`, `Rb[zrh]`",
        note="the node's linear_before_reset says where the reset gate acts: 0 multiplies h before the "
        "candidate's recurrent matmul (TF1 GRUCell, Keras reset_after=False; Rbh is added after the "
        "matmul, so the biases still sum), 1 multiplies (Rh h + Rbh) after it (PyTorch, Keras "
        "reset_after=True)",
    ),
    GateLayout(
        "onnx",
        "rnn",
        ("h",),
        ("i",),
        source="onnx/defs/rnn/defs.cc: RNN, `Ht = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Wbi + Rbi)`, f = Tanh "
        "by default",
    ),
    # Flax: linen cells keep one Dense per gate and source (`ii`, `hi`, ...: no axis to reorder, the
    # gates are named); nnx's OptimizedLSTMCell and GRUCell fuse them as `dense_i` / `dense_h` with the
    # gates in this order along the last (output) axis. Kernels are [in, out], as Keras'.
    GateLayout(
        "flax",
        "lstm",
        ("i", "f", "g", "o"),
        ("i", "f", "g", "o"),
        source="flax/linen/recurrent.py: LSTMCell (`ii`, `if`, `ig`, `io` over inputs, no bias; `hi`, `hf`, "
        "`hg`, `ho` over h, with bias); flax/nnx/nn/recurrent.py: OptimizedLSTMCell, "
        "`i, f, g, o = jnp.split(y, indices_or_sections=4, axis=-1)`",
    ),
    GateLayout(
        "flax",
        "gru",
        ("r", "z", "n"),
        ("r", "z", "n"),
        source="flax/linen/recurrent.py: GRUCell (`ir`, `iz`, `in` with bias; `hr`, `hz` without; `hn` "
        "with), "
        "`n = tanh(dense_i(in)(x) + r * dense_h(hn)(h))`; flax/nnx/nn/recurrent.py: GRUCell, "
        "`xi_r, xi_z, xi_n = jnp.split(x_transformed, 3, axis=-1)`",
        note="the reset gate multiplies the recurrent matmul's result, as PyTorch's; nnx's GRUCell has no "
        "recurrent bias at all (dense_h without bias)",
        reset_after=True,
    ),
    GateLayout(
        "flax",
        "rnn",
        ("h",),
        ("h",),
        source="flax/linen/recurrent.py: SimpleCell, `new_carry = dense_i(name='i')(inputs) + "
        "dense_h(name='h')(carry)`, tanh",
    ),
)

_BY_KEY = {layout.key: layout for layout in LAYOUTS}


def layout(key: str) -> GateLayout:
    """The layout named `framework.cell`, e.g. `layout("tf1.lstm")`."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise RuleError(f"Unknown gate layout '{key}'; known layouts: {', '.join(_BY_KEY)}.") from None


def layout_keys() -> list[str]:
    return list(_BY_KEY)


def permutation(source: GateLayout, target: GateLayout) -> list[int]:
    """For each block of `target`, the index of the same gate's block in `source`."""
    if sorted(source.gates) != sorted(target.gates):
        raise RuleError(f"Layouts {source.key} and {target.key} have different gates; cannot reorder.")
    return [source.gates.index(g) for g in target.gates]
