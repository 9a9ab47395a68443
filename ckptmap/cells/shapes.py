"""The shape each tensor of a cell must have in its framework, from the cell's sizes.

A mapping computes a target cell's tensors with expressions; a slip in one (a missing `| T`, a
split at the wrong size) makes a tensor that writes fine and fails only when the target framework
restores it, or, square, never fails and computes something else. The engine checks every target
of a cell rule against these shapes before anything is written.

Sizes: `gates` is the cell's gate count (LSTM 4, GRU 3, vanilla 1), `inputs` the layer's input
width, `units` its hidden size, `recurrent` what feeds back (the projection size, else `units`).
Sources: torch/nn/modules/rnn.py (RNNBase: w_ih [gates*units, inputs], w_hh [gates*units,
recurrent], w_hr [proj, units]); keras/src/layers/rnn/{lstm,gru,simple_rnn}.py (kernel [inputs,
gates*units], recurrent_kernel [units, gates*units], bias [gates*units] or, for GRU reset_after,
[2, gates*units]); tensorflow/python/ops/rnn_cell_impl.py (one kernel over [inputs + recurrent],
GRUCell's gates [.., 2*units] and candidate [.., units], LSTMCell's projection [units, proj] and
peephole diagonals [units]).
"""

from __future__ import annotations

GATES = {"lstm": 4, "gru": 3, "rnn": 1}

Shape = tuple[int, ...]


def allowed(
    framework: str, kind: str, role: str, *, inputs: int, units: int, proj: int | None = None
) -> tuple[Shape, ...] | None:
    """The shapes `role` of a `framework`.`kind` cell may have, or None when this table has no
    entry (a role it does not know is not checked here; the cell's own tables refuse it)."""
    g = GATES.get(kind)
    if g is None:
        return None
    recurrent = proj or units
    table: dict[str, dict[str, tuple[Shape, ...]]] = {
        "torch": {
            "weight_ih": ((g * units, inputs),),
            "weight_hh": ((g * units, recurrent),),
            "bias_ih": ((g * units,),),
            "bias_hh": ((g * units,),),
            "weight_hr": ((recurrent, units),),
        },
        "keras": {
            "kernel": ((inputs, g * units),),
            "recurrent_kernel": ((units, g * units),),
            "bias": ((g * units,), (2, g * units)) if kind == "gru" else ((g * units,),),
        },
        "tf1": {
            "kernel": ((inputs + recurrent, g * units),),
            "bias": ((g * units,),),
            "gates_kernel": ((inputs + units, 2 * units),),
            "gates_bias": ((2 * units,),),
            "candidate_kernel": ((inputs + units, units),),
            "candidate_bias": ((units,),),
            "projection_kernel": ((units, recurrent),),
            "w_f_diag": ((units,),),
            "w_i_diag": ((units,),),
            "w_o_diag": ((units,),),
        },
    }
    return table.get(framework, {}).get(role)
