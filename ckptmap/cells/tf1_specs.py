"""The TF1 cell classes as data: the scope each opens and the variables it creates there.

Names of TF >= 1.2 (`tf.compat.v1.nn.rnn_cell`, tensorflow/python/ops/rnn_cell_impl.py): each
cell's `build` creates its variables under the cell's own variable scope, named after the class
(`lstm_cell`) unless the user gave the cell a name. tf1_candidates finds these scopes in a
checkpoint, tf1_cells measures and groups them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TF1Cell:
    cell_type: str
    kind: str
    scope_name: str  # the variable scope the cell opens under its parent
    members: Mapping[str, str]  # role -> path under the cell scope; all required
    optional: Mapping[str, str] = field(default_factory=dict)
    reset_after: bool | None = None  # a GRU whose reset gate acts after the recurrent matmul


CELLS: tuple[TF1Cell, ...] = (
    TF1Cell(
        "LSTMCell",
        "lstm",
        "lstm_cell",
        {"kernel": "kernel", "bias": "bias"},
        {
            "w_f_diag": "w_f_diag",
            "w_i_diag": "w_i_diag",
            "w_o_diag": "w_o_diag",
            "projection_kernel": "projection/kernel",
        },
    ),
    TF1Cell("BasicLSTMCell", "lstm", "basic_lstm_cell", {"kernel": "kernel", "bias": "bias"}),
    TF1Cell(
        "GRUCell",
        "gru",
        "gru_cell",
        {
            "gates_kernel": "gates/kernel",
            "gates_bias": "gates/bias",
            "candidate_kernel": "candidate/kernel",
            "candidate_bias": "candidate/bias",
        },
    ),
    TF1Cell("BasicRNNCell", "rnn", "basic_rnn_cell", {"kernel": "kernel", "bias": "bias"}),
    # The cells whose variables tf.contrib.cudnn_rnn's saveables write in place of cuDNN's buffer
    # (tensorflow/contrib/cudnn_rnn/python/ops/cudnn_rnn_ops.py, TF 1.15). CudnnCompatibleLSTMCell is
    # an LSTMBlockCell(forget_bias=0) named `cudnn_compatible_lstm_cell`: LSTMCell's variables and
    # gate order. CudnnCompatibleGRUCell keeps the candidate's input and hidden projections apart
    # and applies the reset gate after the hidden one, as cuDNN (and nn.GRU) do.
    TF1Cell(
        "CudnnCompatibleLSTMCell", "lstm", "cudnn_compatible_lstm_cell", {"kernel": "kernel", "bias": "bias"}
    ),
    TF1Cell(
        "CudnnCompatibleGRUCell",
        "gru",
        "cudnn_compatible_gru_cell",
        {
            "gates_kernel": "gates/kernel",
            "gates_bias": "gates/bias",
            "candidate_input_kernel": "candidate/input_projection/kernel",
            "candidate_input_bias": "candidate/input_projection/bias",
            "candidate_hidden_kernel": "candidate/hidden_projection/kernel",
            "candidate_hidden_bias": "candidate/hidden_projection/bias",
        },
        reset_after=True,
    ),
)
BY_SCOPE = {c.scope_name: c for c in CELLS}
LSTM = BY_SCOPE["lstm_cell"]
GRU = BY_SCOPE["gru_cell"]
VANILLA = BY_SCOPE["basic_rnn_cell"]
PEEPHOLES = ("w_f_diag", "w_i_diag", "w_o_diag")


def kind_roles(kind: str) -> tuple[str, ...]:
    """Every tensor role a TF1 cell of `kind` may have, over all the classes of that kind."""
    roles: dict[str, None] = {}
    for spec in CELLS:
        if spec.kind == kind:
            roles.update(dict.fromkeys((*spec.members, *spec.optional)))
    return tuple(roles)


def default_spec(kind: str) -> TF1Cell:
    # LSTMCell over BasicLSTMCell: same variables, and it also covers projections and peepholes.
    return {"lstm": LSTM, "gru": GRU, "rnn": VANILLA}[kind]


def spec_for(cell_type: str, kind: str) -> TF1Cell:
    return next((spec for spec in CELLS if spec.cell_type == cell_type), None) or default_spec(kind)
