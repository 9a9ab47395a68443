"""ckptmap's decoder of cuDNN's flat weight buffer, against buffers a real cuDNN laid out on a GPU
(tests/data/cudnn_layouts: every element distinct, so a permutation or transpose shows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckptmap.cells import cudnn_buffer
from ckptmap.cells.cudnn_buffer import CudnnNetwork
from ckptmap.errors import MappingError

DATA = Path(__file__).resolve().parents[1] / "data" / "cudnn_layouts"
CASES = json.loads((DATA / "layouts.json").read_text())["cases"]
KIND = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}


def network(case: dict) -> CudnnNetwork:
    return CudnnNetwork(
        KIND[case["mode"]],
        case["input_size"],
        case["hidden_size"],
        case["num_layers"],
        case["bidirectional"],
        case["proj_size"],
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_decoding_gives_the_parameters_cudnn_holds(name):
    case, arrays = CASES[name], np.load(DATA / f"{name}.npz")
    net = network(case)
    assert cudnn_buffer.buffer_size(net) == case["buffer_floats"]
    offsets, offset = {}, 0
    for param, shape in cudnn_buffer.parameters(net):
        offsets[param] = offset
        offset += int(np.prod(shape))
    assert offsets == case["offsets"]
    decoded = cudnn_buffer.decode(arrays["buffer"], net)
    assert set(decoded) == {k.removeprefix("param:") for k in arrays.files if k.startswith("param:")}
    for param, value in decoded.items():
        np.testing.assert_array_equal(value, arrays[f"param:{param}"], err_msg=param)
    np.testing.assert_array_equal(cudnn_buffer.encode(decoded, net), arrays["buffer"])


def test_a_buffer_that_does_not_fit_the_sizes_is_refused_with_the_reason():
    arrays = np.load(DATA / "lstm_in3_h4_l1_uni.npz")
    wanted = r"holds 144 values, but the sizes given \(LSTM input 3, units 5.*\) take 200"
    with pytest.raises(MappingError, match=wanted):
        cudnn_buffer.decode(arrays["buffer"], CudnnNetwork("lstm", 3, 5), what="opaque_kernel")
    with pytest.raises(MappingError, match="1-D"):
        cudnn_buffer.decode(arrays["buffer"].reshape(12, 12), CudnnNetwork("lstm", 3, 4))
