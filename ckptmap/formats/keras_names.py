"""One canonical naming for Keras weights, whichever file they come from.

Keras keeps the same tensors under three layouts:

    Keras 3 .weights.h5      layers/gru/cell/vars/0                 (index-named)
    Keras 2 / tf-keras .h5   gru/gru/gru_cell/kernel:0              (group gru, weight gru/gru_cell/kernel:0)
    TF2 object checkpoint    layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE

ckptmap names all of them the way the object structure reads:

    <layer>/cell/<role>                        an RNN layer (GRU, LSTM, SimpleRNN): its cell's weights
    <layer>/forward_layer/cell/<role>          Bidirectional(...): each direction is a full RNN layer
    <layer>/backward_layer/cell/<role>
    <layer>/<role>                             any other layer (Dense: kernel, bias; Embedding: embeddings)
    <layer>/vars/<i>                           a Keras 3 variable whose meaning is not known
    <outer>/<layer>/...                        a layer inside a nested model

`<layer>` is the layer's name (`gru`, `bidirectional_1`); TF2 object-based checkpoints do not store
names, so there it is `layer_with_weights-<k>`. Optimizer state stays under `optimizer/...`.
Readers produce these names and keep the file's own path as `TensorEntry.key`; writers turn them
back into the layout of their format using the tables below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..cell_kinds import KINDS, kind_with_gates

# Object attributes in a path; every other component before the role is a layer (or nested model).
CELL = "cell"
DIRECTIONS = ("forward_layer", "backward_layer")
ATTRIBUTES = frozenset({CELL, *DIRECTIONS})
# The groups of a Keras 3 `.weights.h5` that hold layers by key; `_layer_checkpoint_dependencies`
# is what Keras 2.13 wrote instead of `layers` (keras/src/saving/saving_lib.py, H5IOStore.get).
CONTAINERS = ("layers", "_layer_checkpoint_dependencies")

# Variables in creation order, which is the order of Keras 3's `vars/<i>` and of tf-keras'
# `weight_names` (keras/src/layers/rnn/gru.py, lstm.py, simple_rnn.py: kernel, recurrent_kernel, bias).
RNN_CELL_ROLES = ("kernel", "recurrent_kernel", "bias")
# A Keras model's edges to its layers in TF2 checkpoints and tf-keras files: `layer-3`, and
# `layer_with_weights-2` for the layers that have weights.
LAYER_EDGE = re.compile(r"layer(?:_with_weights)?-\d+")
LAYER_WITH_WEIGHTS = re.compile(r"layer_with_weights-\d+")
# From the table of cell kinds: the Keras layer class of each kind, its key (the snake-case class
# name), and by key the cell's own default name, as tf-keras writes it in weight names.
_KERAS = {k.name: k.of("keras") for k in KINDS if k.counterpart("keras")}
LAYER_CLASSES = {name: keras.builds for name, keras in _KERAS.items()}
LAYER_KEYS = {name: keras.key for name, keras in _KERAS.items()}
CELL_NAMES = {keras.key: keras.cell_name for keras in _KERAS.values()}
# Keras 2's CuDNNLSTM and CuDNNGRU (tf_keras/src/layers/rnn/cudnn_lstm.py, cudnn_gru.py) hold the
# weights of cuDNN's layout under the names of LSTM and GRU: a bias [2*g*units], cuDNN's input
# biases then its recurrent ones, and each gate's input-kernel block [input, units] holding that
# gate's [units, input] matrix in row-major order (tf_keras/src/saving/legacy/hdf5_format.py,
# `_convert_rnn_weights`, which converts them when a file of theirs is loaded into LSTM or GRU).
CUDNN_CLASSES = {
    name: cls for name, keras in _KERAS.items() for cls in keras.removed if cls.startswith("CuDNN")
}

# Other common layers, by Keras class name: their variables in creation order.
LAYER_ROLES: dict[str, tuple[str, ...]] = {
    "GRUCell": RNN_CELL_ROLES,
    "LSTMCell": RNN_CELL_ROLES,
    "SimpleRNNCell": RNN_CELL_ROLES,
    "Dense": ("kernel", "bias"),
    "EinsumDense": ("kernel", "bias"),
    "Embedding": ("embeddings",),
    "Conv1D": ("kernel", "bias"),
    "Conv2D": ("kernel", "bias"),
    "Conv3D": ("kernel", "bias"),
    "LayerNormalization": ("gamma", "beta"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def rnn_cell_roles(shapes: Sequence[tuple[int, ...]]) -> tuple[str, ...] | None:
    """The roles of a cell's variables when their shapes are those of a Keras RNN cell:
    kernel [input, g*units], recurrent_kernel [units, g*units], and optionally a bias
    [g*units], for GRU(reset_after=True) [2, g*units], and for Keras 2's CuDNNLSTM and CuDNNGRU
    [2*g*units]."""
    if len(shapes) not in (2, 3):
        return None
    kernel, recurrent = shapes[0], shapes[1]
    if len(kernel) != 2 or len(recurrent) != 2 or kernel[1] != recurrent[1]:
        return None
    kind = kind_with_gates(recurrent[1], recurrent[0])
    if kind is None:
        return None
    cudnn_bias = ((2 * kernel[1],),) if kind in CUDNN_CLASSES else ()
    if len(shapes) == 3 and shapes[2] not in ((kernel[1],), (2, kernel[1]), *cudnn_bias):
        return None
    return RNN_CELL_ROLES[: len(shapes)]


def roles_for(
    class_name: str | None, shapes: Sequence[tuple[int, ...]], *, is_cell: bool
) -> tuple[str, ...] | None:
    """Names for a Keras 3 object's `vars/0..n-1`: from its class when known, else from shapes for
    RNN cells; None when the meaning cannot be told (the caller keeps `vars/<i>`)."""
    roles = LAYER_ROLES.get(class_name or "")
    # Only a trailing bias is optional (use_bias=False); normalization layers can drop gamma or beta,
    # so a shorter list there is ambiguous.
    if roles is not None and (
        len(roles) == len(shapes) or (roles[-1] == "bias" and len(roles) == len(shapes) + 1)
    ):
        return roles[: len(shapes)]
    return rnn_cell_roles(shapes) if is_cell else None


def split(name: str) -> tuple[list[str], str]:
    """A canonical name as (object path, role): `gru/cell/kernel` -> (['gru', 'cell'], 'kernel');
    `dense/vars/3` -> (['dense'], 'vars/3')."""
    parts = name.split("/")
    if len(parts) >= 3 and parts[-2] == "vars" and is_index(parts[-1]):
        return parts[:-2], "vars/" + parts[-1]
    return parts[:-1], parts[-1]


def is_index(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def index_key(digits: str) -> tuple[int, str]:
    """A sort key that orders digit strings as numbers, without int(): Python 3.11 refuses int()
    of over 4300 digits, and a crafted name can hold any number of them."""
    value = digits.lstrip("0")
    return len(value), value


def layer_path(path: Sequence[str]) -> list[str]:
    """The layer components of an object path (drops `cell`, `forward_layer`, `backward_layer`)."""
    return [p for p in path if p not in ATTRIBUTES]


class UniqueKeys:
    """The keys Keras 3 gives the layers of one container in its weights file: `dense`, `dense_1`,
    `dense_2`, ... per class name, in layer order (keras saving_lib._get_unique_name)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        count = self._seen[base] = self._seen.get(base, -1) + 1
        return f"{base}_{count}" if count else base
