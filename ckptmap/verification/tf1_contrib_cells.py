"""TF 1.x contrib cells that TensorFlow 2 no longer ships, built from their TF 1.x code so that
`verify` restores their checkpoints with the real Saver into a real TF graph.

Only the cell's arithmetic is rebuilt here, line for line from TF 1.15
(tensorflow/contrib/cudnn_rnn/python/ops/cudnn_rnn_ops.py); the variables, their names and the
restore are TensorFlow's own. cell_kinds lists these classes as `removed`.
"""

from __future__ import annotations

from typing import Any


def build(v1: Any, class_name: str, units: int, name: str, forget_bias: float) -> Any:
    """A fresh cell of TF 1.x class `class_name`, named `name`."""
    if class_name == "CudnnCompatibleLSTMCell":
        # An LSTMBlockCell(forget_bias=0, cell_clip=None, use_peephole=False): LSTMCell's variables,
        # gate order (i, c, f, o) and arithmetic. Projects that add 1.0 say so with forget_bias.
        return v1.nn.rnn_cell.LSTMCell(units, forget_bias=forget_bias, name=name)
    if class_name == "CudnnCompatibleGRUCell":
        return _cudnn_compatible_gru_cell(v1)(units, name=name)
    raise ValueError(f"no TF 1.x builder for {class_name}")


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
