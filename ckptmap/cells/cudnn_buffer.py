"""cuDNN's flat RNN weight buffer, decoded into PyTorch's parameters and encoded back.

cuDNN keeps every weight of a recurrent network in one 1-D buffer whose layout it alone decides;
TF1's `tf.contrib.cudnn_rnn` layers save that buffer as the variable `opaque_kernel`. The buffer
does not record the network's sizes, so they are given (mapping parameters) and the buffer's
length must fit them exactly.

The layout assumed is the one cuDNN 9.19 uses with PyTorch's settings (linear input, two biases per
gate), recorded on a GPU in ../shared/cudnn_layouts (tests/data/cudnn_layouts holds the small
cases; tests/cells/test_cudnn_buffer.py checks every offset): every weight matrix of every layer
and direction first (layer by layer, forward before reverse; within one, the input matrix, the
recurrent matrix, then an LSTM's projection), then every bias in the same order (input bias
before recurrent bias), no padding. Gates inside each block are in cuDNN's order, which is
PyTorch's (LSTM i, f, g, o; GRU r, z, n). Older cuDNN versions, which wrote the `opaque_kernel` of
TF1-era checkpoints, may have laid the buffer out otherwise: TensorFlow documents the layout as
specific to the cuDNN version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cell_kinds import gate_count
from ..errors import MappingError

CUDNN_KINDS = ("lstm", "gru", "rnn")  # cuDNN's LSTM, GRU, RNN_TANH and RNN_RELU modes
LAYOUT = (
    "cuDNN 9.19's: every weight matrix (per layer, forward then reverse: input, recurrent, projection), "
    "then every bias"
)


@dataclass(frozen=True)
class CudnnNetwork:
    """The sizes a buffer does not record."""

    kind: str  # lstm | gru | rnn (cuDNN's RNN_TANH and RNN_RELU share one layout)
    input_size: int
    units: int
    layers: int = 1
    bidirectional: bool = False
    proj: int = 0  # an LSTM's projection size, 0 for none

    def describe(self) -> str:
        direction = "bidirectional" if self.bidirectional else "unidirectional"
        proj = f", projection {self.proj}" if self.proj else ""
        return (
            f"{self.kind.upper()} input {self.input_size}, units {self.units}, {self.layers} "
            f"layer{'s' if self.layers != 1 else ''}, {direction}{proj}"
        )


def parameters(net: CudnnNetwork) -> list[tuple[str, tuple[int, ...]]]:
    """PyTorch's names and shapes of the parameters, in the order the buffer holds them."""
    gates = gate_count(net.kind) * net.units
    out = net.proj or net.units  # what a layer passes up and feeds back
    suffixes = ("", "_reverse") if net.bidirectional else ("",)
    weights: list[tuple[str, tuple[int, ...]]] = []
    biases: list[tuple[str, tuple[int, ...]]] = []
    for layer in range(net.layers):
        inputs = net.input_size if layer == 0 else out * len(suffixes)
        for suffix in suffixes:
            weights += [
                (f"weight_ih_l{layer}{suffix}", (gates, inputs)),
                (f"weight_hh_l{layer}{suffix}", (gates, out)),
            ]
            if net.proj:
                weights.append((f"weight_hr_l{layer}{suffix}", (net.proj, net.units)))
            biases += [(f"bias_ih_l{layer}{suffix}", (gates,)), (f"bias_hh_l{layer}{suffix}", (gates,))]
    return weights + biases


def buffer_size(net: CudnnNetwork) -> int:
    return sum(int(np.prod(shape)) for _, shape in parameters(net))


def decode(buffer: np.ndarray, net: CudnnNetwork, *, what: str = "the cuDNN buffer") -> dict[str, np.ndarray]:
    """Each PyTorch parameter of `net`, cut from `buffer` (copies, in the buffer's dtype)."""
    check(buffer.shape, net, what)
    out, offset = {}, 0
    for name, shape in parameters(net):
        size = int(np.prod(shape))
        out[name] = np.array(buffer[offset : offset + size]).reshape(shape)
        offset += size
    return out


def encode(params: dict[str, np.ndarray], net: CudnnNetwork) -> np.ndarray:
    """The buffer cuDNN would hold for these PyTorch parameters."""
    parts = []
    for name, shape in parameters(net):
        value = params.get(name)
        if value is None or tuple(value.shape) != shape:
            got = "missing" if value is None else f"shape {list(value.shape)}"
            raise MappingError(f"{name}: {got}; a {net.describe()} needs {list(shape)}.")
        parts.append(np.asarray(value).reshape(-1))
    return np.concatenate(parts)


def check(shape: tuple[int, ...], net: CudnnNetwork, what: str) -> None:
    """Refuse a buffer that is not 1-D or whose length does not fit `net` in the layout assumed."""
    sizes_valid = min(net.input_size, net.units, net.layers) >= 1 and net.proj >= 0
    if net.kind not in CUDNN_KINDS or not sizes_valid or (net.proj and net.kind != "lstm"):
        raise MappingError(f"{what}: not a cuDNN network: {net.describe()}.")
    if len(shape) != 1:
        raise MappingError(f"{what} has shape {list(shape)}; a cuDNN buffer is 1-D.")
    wanted = buffer_size(net)
    if shape[0] != wanted:
        raise MappingError(
            f"{what} holds {shape[0]} values, but the sizes given ({net.describe()}) take {wanted} in the "
            f"layout assumed ({LAYOUT}): check the sizes given, or the buffer was written by a cuDNN "
            "that laid it out otherwise."
        )
