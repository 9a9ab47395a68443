"""The TF1 cell classes as data: the scope each opens and the variables it creates there.

Names of TF >= 1.2 (`tf.compat.v1.nn.rnn_cell`, tensorflow/python/ops/rnn_cell_impl.py): each
cell's `build` creates its variables under the cell's own variable scope, named after the class
(`lstm_cell`) unless the user gave the cell a name. tf1_candidates finds these scopes in a
checkpoint, tf1_cells measures and groups them.
"""

from __future__ import annotations

import functools
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
    # Each role's shape, axis by axis, as a sum of terms in `input` and `units` ("input + units",
    # "8 * units", "1"; "*" for any size): how the cells with no counterpart in another framework
    # are measured (the classic kinds have their own measures in tf1_cells).
    dims: Mapping[str, tuple[str, ...]] | None = None
    # tf.contrib.cudnn_rnn's saveable names each layer as a stack's, even a single one
    # (cudnn_rnn_ops.py _TFCanonicalNamePrefix: rnn/multi_rnn_cell/cell_<k>, and
    # stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/fw|bw): what a CudnnLSTM restores from.
    always_stacked: bool = False


CELLS: tuple[TF1Cell, ...] = (  # the classic cells first: a scope's first row is its default
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
        "CudnnCompatibleLSTMCell",
        "lstm",
        "cudnn_compatible_lstm_cell",
        {"kernel": "kernel", "bias": "bias"},
        always_stacked=True,
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
        always_stacked=True,
    ),
)
# TF 1.x contrib cells with no counterpart in PyTorch or Keras (cell_kinds.py says why), named and
# shaped as TF 1.15's tensorflow/contrib/rnn/python/ops/rnn_cell.py creates them: the scope is the
# class name in snake case (tensorflow/python/layers/base.py, _init_set_name), and _Linear's
# variables are `kernel` and `bias` (contrib/rnn/python/ops/core_rnn_cell.py). Variants a class's
# options make (a layer norm, an input projection, peepholes) are rows of their own.
_LAYER_NORMS = {
    f"{s}_{v}": f"{s}/{v}"
    for s in ("input", "transform", "forget", "output", "state")
    for v in ("gamma", "beta")
}
_LN_DIMS = {role: ("units",) for role in _LAYER_NORMS}
_PHASED = {"period": "period", "phase": "phase", "ratio_on": "ratio_on"}
CELLS += (
    # NASCell.build: recurrent_kernel [num_proj or units, 8 units], kernel [input, 8 units], a bias
    # with use_bias=True, projection_weights [units, num_proj] with num_proj. TF 1.2 opened the scope
    # `nas_rnn` (contrib/rnn/python/tools/checkpoint_convert.py renames its weights).
    *(
        TF1Cell(
            "NASCell",
            "nas",
            scope,
            {"kernel": "kernel", "recurrent_kernel": "recurrent_kernel"},
            {"bias": "bias", "projection_weights": "projection_weights"},
            dims={
                "kernel": ("input", "8 * units"),
                "recurrent_kernel": ("*", "8 * units"),
                "bias": ("8 * units",),
                "projection_weights": ("units", "*"),
            },
        )
        for scope in ("nas_cell", "nas_rnn")
    ),
    # UGRNNCell: _Linear([inputs, state], 2 units): gate g, then candidate c.
    TF1Cell(
        "UGRNNCell",
        "ugrnn",
        "ugrnn_cell",
        {"kernel": "kernel", "bias": "bias"},
        dims={"kernel": ("input + units", "2 * units"), "bias": ("2 * units",)},
    ),
    # IndRNNCell.build: kernel_w [input, units], kernel_u [1, units] (one recurrent weight a unit), bias.
    TF1Cell(
        "IndRNNCell",
        "indrnn",
        "ind_rnn_cell",
        {"kernel_w": "kernel_w", "kernel_u": "kernel_u", "bias": "bias"},
        dims={"kernel_w": ("input", "units"), "kernel_u": ("1", "units"), "bias": ("units",)},
    ),
    # LayerNormBasicLSTMCell (layer_norm=True, the default): kernel [input + units, 4 units], no bias,
    # gamma and beta [units] under input/, transform/, forget/, output/ and state/. With
    # layer_norm=False it is a BasicLSTMCell under another name: an LSTM (its own row below).
    TF1Cell(
        "LayerNormBasicLSTMCell",
        "layer_norm_lstm",
        "layer_norm_basic_lstm_cell",
        {"kernel": "kernel", **_LAYER_NORMS},
        dims={"kernel": ("input + units", "4 * units"), **_LN_DIMS},
    ),
    # IntersectionRNNCell: _Linear([inputs, state], 4 units) in the cell scope, after an
    # in_projection to `units` when the input is of another size (then the kernel has 2 units rows).
    TF1Cell(
        "IntersectionRNNCell",
        "intersection_rnn",
        "intersection_rnn_cell",
        {"kernel": "kernel", "bias": "bias"},
        dims={"kernel": ("input + units", "4 * units"), "bias": ("4 * units",)},
    ),
    TF1Cell(
        "IntersectionRNNCell",
        "intersection_rnn",
        "intersection_rnn_cell",
        {
            "kernel": "kernel",
            "bias": "bias",
            "in_projection_kernel": "in_projection/kernel",
            "in_projection_bias": "in_projection/bias",
        },
        dims={
            "kernel": ("2 * units", "4 * units"),
            "bias": ("4 * units",),
            "in_projection_kernel": ("input", "units"),
            "in_projection_bias": ("units",),
        },
    ),
    # PhasedLSTMCell: mask_gates (input and forget gates), new_input and output_gate _Linear maps
    # over [x, h] (and c with use_peepholes: one more `units` of rows for mask_gates and
    # output_gate), and the time gate's period, phase and ratio_on [units] in the cell scope.
    *(
        TF1Cell(
            "PhasedLSTMCell",
            "phased_lstm",
            "phased_lstm_cell",
            {
                "mask_gates_kernel": "mask_gates/kernel",
                "mask_gates_bias": "mask_gates/bias",
                "new_input_kernel": "new_input/kernel",
                "new_input_bias": "new_input/bias",
                "output_gate_kernel": "output_gate/kernel",
                "output_gate_bias": "output_gate/bias",
                **_PHASED,
            },
            dims={
                "mask_gates_kernel": (rows, "2 * units"),
                "mask_gates_bias": ("2 * units",),
                "new_input_kernel": ("input + units", "units"),
                "new_input_bias": ("units",),
                "output_gate_kernel": (rows, "units"),
                "output_gate_bias": ("units",),
                **{role: ("units",) for role in _PHASED},
            },
        )
        for rows in ("input + units", "input + 2 * units")
    ),
    # CoupledInputForgetGateLSTMCell: W_0 [input + units, 3 units] (gates j, f, o; i = 1 - f; a
    # `W_<k>` per shard), B [3 units], peepholes W_F_diag and W_O_diag, layer norms when asked.
    TF1Cell(
        "CoupledInputForgetGateLSTMCell",
        "cifg_lstm",
        "coupled_input_forget_gate_lstm_cell",
        {"kernel": "W_0", "bias": "B"},
        {"w_f_diag": "W_F_diag", "w_o_diag": "W_O_diag", **_LAYER_NORMS},
        dims={
            "kernel": ("input + units", "3 * units"),
            "bias": ("3 * units",),
            "w_f_diag": ("units",),
            "w_o_diag": ("units",),
            **_LN_DIMS,
        },
    ),
    # GridLSTMCell: per frequency block b a kernel W_f_<b>_0 [feature_size + 2 units, 4 units] and
    # bias B_f_<b> (more blocks, time weights and peepholes beside them); measured by block 0.
    TF1Cell(
        "GridLSTMCell",
        "grid_lstm",
        "grid_lstm_cell",
        {"kernel": "W_f_0_0", "bias": "B_f_0"},
        dims={"kernel": ("input + 2 * units", "4 * units"), "bias": ("4 * units",)},
    ),
    # Twins of LSTMCell under other scopes, the same variables and arithmetic (forget_bias added at
    # run time): LSTMBlockFusedCell (contrib/rnn/python/ops/lstm_ops.py: `lstm_fused_cell`; TF 1.1
    # opened `lstm_block_wrapper`), and LayerNormBasicLSTMCell(layer_norm=False). LSTMBlockCell and
    # GRUBlockCellV2 make exactly LSTMCell's and GRUCell's names (`lstm_cell`, `gru_cell`), so they
    # are read as those; GRUBlockCell's w_ru, b_ru, w_c, b_c are renamed by tf1-legacy-names.
    *(
        TF1Cell(
            "LSTMBlockFusedCell",
            "lstm",
            scope,
            {"kernel": "kernel", "bias": "bias"},
            {"w_f_diag": "w_f_diag", "w_i_diag": "w_i_diag", "w_o_diag": "w_o_diag"},
        )
        for scope in ("lstm_fused_cell", "lstm_block_wrapper")
    ),
    TF1Cell(
        "LayerNormBasicLSTMCell", "lstm", "layer_norm_basic_lstm_cell", {"kernel": "kernel", "bias": "bias"}
    ),
)
# Classes whose variables are another's, name for name: a checkpoint of theirs reads as that one's
# (contrib/rnn/python/ops/lstm_ops.py LSTMBlockCell: `lstm_cell`, kernel, bias, w_*_diag;
# gru_ops.py GRUBlockCellV2: `gru_cell`, gates/ and candidate/ kernel and bias; GRUBlockCell's
# w_ru, b_ru, w_c, b_c after tf1-legacy-names renames them to those).
READ_AS = {"LSTMBlockCell": "LSTMCell", "GRUBlockCellV2": "GRUCell", "GRUBlockCell": "GRUCell"}
BY_SCOPE: dict[str, TF1Cell] = {}
for _cell in CELLS:
    BY_SCOPE.setdefault(_cell.scope_name, _cell)
LSTM = BY_SCOPE["lstm_cell"]
GRU = BY_SCOPE["gru_cell"]
VANILLA = BY_SCOPE["basic_rnn_cell"]
PEEPHOLES = ("w_f_diag", "w_i_diag", "w_o_diag")


@functools.cache
def axis_terms(text: str) -> tuple[int, int, int] | None:
    """(a, b, c) of an axis written `a * input + b * units + c` ("input + 2 * units", "1"), or None
    for "*" (any size)."""
    if text.strip() == "*":
        return None
    terms = {"input": 0, "units": 0, "": 0}
    for term in text.split("+"):
        factor, _, name = term.strip().rpartition("*")
        if name.strip().isdigit():
            factor, name = name, ""
        terms[name.strip()] += int(factor or 1)
    return terms["input"], terms["units"], terms[""]


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
    """The row of class `cell_type` for `kind` (a class may build two kinds: LayerNormBasicLSTMCell
    with and without its layer norm), else the kind's default."""
    fits = (spec for spec in CELLS if spec.cell_type == cell_type and spec.kind == kind)
    return next(fits, None) or default_spec(kind)
