"""TF 1.x contrib cells that TensorFlow 2 no longer ships, built from their TF 1.x code so that
`verify` restores their checkpoints with the real Saver into a real TF graph.

Only the cell's arithmetic is rebuilt here, line for line from TF 1.15
(tensorflow/contrib/cudnn_rnn/python/ops/cudnn_rnn_ops.py, contrib/rnn/python/ops/lstm_ops.py and
rnn_cell.py), or the TF 2 cell that computes the same is named; the variables, their names and the
restore are TensorFlow's own. cell_kinds lists these classes as `removed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cells.model import RNN
from ..errors import UnsupportedError


def build(v1: Any, class_name: str, rnn: RNN, name: str, options: Mapping[str, Any]) -> Any:
    """A fresh cell of TF 1.x class `class_name` for `rnn`, named `name`; `options` are the
    mapping's parameters (forget_bias, cudnn_forget_bias)."""
    if class_name == "CudnnCompatibleLSTMCell":
        # An LSTMBlockCell(forget_bias=0, cell_clip=None, use_peephole=False): LSTMCell's variables,
        # gate order (i, c, f, o) and arithmetic. Projects that add 1.0 say so with cudnn_forget_bias.
        forget_bias = float(options.get("cudnn_forget_bias", 0.0))
        return v1.nn.rnn_cell.LSTMCell(rnn.units, forget_bias=forget_bias, name=name)
    if class_name in ("LSTMBlockFusedCell", "LayerNormBasicLSTMCell"):
        # contrib/rnn/python/ops/lstm_ops.py: the block LSTM op's gates i, c, f, o, forget_bias added
        # at run time, peepholes on c as LSTMCell's; rnn_cell.py LayerNormBasicLSTMCell with
        # layer_norm=False (the only form with a counterpart) is BasicLSTMCell's arithmetic.
        forget_bias = float(options.get("forget_bias", 1.0))
        return v1.nn.rnn_cell.LSTMCell(
            rnn.units, forget_bias=forget_bias, use_peepholes=rnn.peepholes, name=name
        )
    if class_name == "CudnnCompatibleGRUCell":
        return _cudnn_compatible_gru_cell(v1)(rnn.units, name=name)
    raise UnsupportedError(
        f"TensorFlow 2 has no {class_name} and ckptmap does not rebuild it, so it cannot be restored "
        "into a fresh model to verify."
    )


def _cudnn_compatible_gru_cell(v1: Any) -> type:
    import tensorflow as tf

    class CudnnCompatibleGRUCell(v1.nn.rnn_cell.GRUCell):
        """TF 1.15's CudnnCompatibleGRUCell: the reset gate multiplies the hidden projection
        (with its own bias), after the recurrent matmul, as cuDNN computes it."""

        def build(self, input_shape: Any) -> None:
            depth, n = input_shape[-1], self._num_units
            shapes = {
                "gates/kernel": [depth + n, 2 * n],
                "gates/bias": [2 * n],
                "candidate/input_projection/kernel": [depth, n],
                "candidate/hidden_projection/kernel": [n, n],
                "candidate/input_projection/bias": [n],
                "candidate/hidden_projection/bias": [n],
            }
            self._cudnn_variables = {p: self.add_weight(p, shape=shape) for p, shape in shapes.items()}
            self.built = True

        def call(self, inputs: Any, state: Any) -> tuple[Any, Any]:
            w = self._cudnn_variables
            gates = tf.matmul(tf.concat([inputs, state], 1), w["gates/kernel"]) + w["gates/bias"]
            r, u = tf.split(value=tf.sigmoid(gates), num_or_size_splits=2, axis=1)
            candidate = tf.matmul(inputs, w["candidate/input_projection/kernel"])
            candidate += w["candidate/input_projection/bias"]
            hidden = tf.matmul(state, w["candidate/hidden_projection/kernel"])
            hidden += w["candidate/hidden_projection/bias"]
            c = self._activation(candidate + r * hidden)
            new_h = (1 - u) * c + u * state
            return new_h, new_h

    return CudnnCompatibleGRUCell
