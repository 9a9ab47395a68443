"""Which scopes of a checkpoint hold TF1 cells, and which cell classes each one could be.

A cell under TF's default name (`lstm_cell`, `basic_lstm_cell`, `gru_cell`, `basic_rnn_cell`) is
known by that name. A cell the user named (`MultiRNNCell([BasicRNNCell(n, name="cell_1"), ...])`
makes `multi_rnn_cell/cell_0/cell_1/kernel`) is known only by evidence that a cell leaves:

- variables or sub-scopes no other layer makes: GRUCell's `gates/` and `candidate/` (`.../my_gru/
  gates/kernel`), LSTMCell's `projection/kernel` and peephole diagonals `w_f_diag`, `w_i_diag`,
  `w_o_diag`. These are cells wherever they are.
- for `kernel` and `bias` alone (BasicRNNCell, BasicLSTMCell, LSTMCell), which any dense layer
  has too, the place: directly in a MultiRNNCell's `multi_rnn_cell/cell_<k>` or a bidirectional
  RNN's `fw`/`bw` (scopes TF opens for cells only), or as the only variables in `dynamic_rnn`'s
  scope `rnn` (a user's own `rnn` scope may hold a dense layer beside the RNN: then nothing there
  is taken). Their shapes may fit an LSTM and a vanilla RNN alike ([40, 20]: LSTMCell(5) over 35
  inputs, or BasicRNNCell(20) over 20), so both classes stay candidates; tf1_cells keeps the kind
  whose layers chain (each layer's input is the layer below's output) and drops a cell that both
  kinds fit. LSTMCell stands for BasicLSTMCell here: the two make the same variables.

A scope that also holds `recurrent_kernel` is a Keras cell run by a TF1 graph (keras_cells), never
a TF1 cell, whatever its name: TF1's `lstm_cell` and tf-keras' LSTMCell share the default name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .tf1_specs import BY_SCOPE, CELLS, GRU, LSTM, PEEPHOLES, VANILLA, TF1Cell

_CELL_K = re.compile(r"cell_\d+")
# Sub-scope and leaf that only one cell class makes: scope of the cell is two parts up.
_OWN_PARTS = {
    ("gates", "kernel"): GRU,
    ("gates", "bias"): GRU,
    ("candidate", "kernel"): GRU,
    ("candidate", "bias"): GRU,
    ("projection", "kernel"): LSTM,
}
_KEYS = "kernel", "bias"  # what a kernel-and-bias cell holds (BasicRNNCell, (Basic)LSTMCell)


# The last two parts of a member's name ("lstm_cell", "kernel"; "gates", "kernel") -> the cells and
# paths it can be: a checkpoint's names are looked up, not compared with every path of every cell.
def _by_tail() -> dict[tuple[str, str], list[tuple[TF1Cell, str]]]:
    table: dict[tuple[str, str], list[tuple[TF1Cell, str]]] = {}
    for cell in CELLS:
        for path in (*cell.members.values(), *cell.optional.values()):
            parts = [cell.scope_name, *path.split("/")]
            table.setdefault((parts[-2], parts[-1]), []).append((cell, path))
    return table


_BY_TAIL = _by_tail()


def candidates(names: Iterable[str]) -> dict[str, tuple[TF1Cell, ...]]:
    """Cell scope -> the cell classes it may be (one, or LSTM and vanilla RNN), among `names`
    (weights only), in the order the scopes first appear."""
    names = list(names)
    keras = {n[: -len("/recurrent_kernel")] for n in names if n.endswith("/recurrent_kernel")}
    found: dict[str, tuple[TF1Cell, ...]] = {}
    unnamed: list[str] = []  # custom-named kernel-and-bias scopes, judged by their place below
    for name in names:
        head, _, leaf = name.rpartition("/")
        parent = head.rpartition("/")[2]
        for spec, path in _BY_TAIL.get((parent, leaf), ()):
            scope = name[: -len(path) - 1]
            # A scope several rows name (with and without a layer norm) has a reading of each.
            known = found.get(scope, ())
            if (
                name.endswith("/" + path)
                and scope.rpartition("/")[2] == spec.scope_name
                and spec not in known
            ):
                found[scope] = (*known, spec)
        if not head or parent in BY_SCOPE:
            continue
        if leaf in PEEPHOLES:
            found.setdefault(head, (LSTM,))
        elif (spec := _OWN_PARTS.get((parent, leaf))) is not None:
            scope = head.rpartition("/")[0]
            if scope and scope.rpartition("/")[2] not in BY_SCOPE:
                found.setdefault(scope, (spec,))
        elif leaf == "kernel":
            unnamed.append(head)
    under_rnn: dict[str, set[str]] = {}  # a `.../rnn` scope -> every name under it, when asked
    for scope in unnamed:
        if scope not in found and _in_a_cells_place(scope, names, under_rnn):
            found[scope] = (LSTM, VANILLA)
    # A Keras cell's scope holds `recurrent_kernel`; so does a NASCell's, which says so in its row.
    return {
        scope: specs
        for scope, specs in found.items()
        if scope not in keras or any("recurrent_kernel" in spec.members for spec in specs)
    }


def _in_a_cells_place(scope: str, names: list[str], under_rnn: dict[str, set[str]]) -> bool:
    parts = scope.split("/")
    if len(parts) >= 3 and parts[-3] == "multi_rnn_cell" and _CELL_K.fullmatch(parts[-2]):
        return True
    if len(parts) >= 2 and parts[-2] in ("fw", "bw"):
        return True
    if len(parts) >= 2 and parts[-2] == "rnn":
        rnn_scope = scope.rpartition("/")[0] + "/"
        if rnn_scope not in under_rnn:
            under_rnn[rnn_scope] = {n for n in names if n.startswith(rnn_scope)}
        return under_rnn[rnn_scope] <= {f"{scope}/{key}" for key in _KEYS}
    return False
