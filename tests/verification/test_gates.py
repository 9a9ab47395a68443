"""verify names the gate a conversion got wrong: each gate's pre-activation recomputed on both
sides in PyTorch's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import ckptmap
from ckptmap.verification.run import verify
from tests.clirun import run

SAMPLES = Path(__file__).parents[2] / "sample_checkpoints"


def _swap_blocks(path: Path, out: Path, suffix: str, a: int, b: int, gates: int) -> None:
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if k.endswith(suffix))
    w = state[key].clone()
    units = w.shape[0] // gates
    w[a * units : (a + 1) * units], w[b * units : (b + 1) * units] = (
        state[key][b * units : (b + 1) * units], state[key][a * units : (a + 1) * units],
    )  # fmt: skip
    state[key] = w
    torch.save(state, out)


def test_swapped_blocks_are_named_and_only_those(tmp_path, capsys):
    ckptmap.convert(SAMPLES / "tf1_lstm2", tmp_path / "m.pt", mapping="tf1-to-torch")
    [good] = verify(SAMPLES / "tf1_lstm2", tmp_path / "m.pt").pairs
    assert good.gates and good.wrong_gates() == []
    # Layer 1's forget (f, block 1) and candidate (g, block 2) swapped: the classic slicing mistake.
    _swap_blocks(tmp_path / "m.pt", tmp_path / "bad.pt", "weight_hh_l1", 1, 2, 4)
    [bad] = verify(SAMPLES / "tf1_lstm2", tmp_path / "bad.pt", "tf1-to-torch").pairs
    assert bad.verdict == "differs"
    assert {(g.layer, g.reverse, g.gate) for g in bad.wrong_gates()} == {(1, False, "f"), (1, False, "g")}
    code, out, _ = run(capsys, "verify", SAMPLES / "tf1_lstm2", tmp_path / "bad.pt", "-m", "tf1-to-torch")
    assert code == 1 and "forget gate (f) of layer 1 fw" in out and "cell candidate (g) of layer 1 fw" in out


def test_an_approximate_gru_blames_no_gate(tmp_path):
    ckptmap.convert(SAMPLES / "tf1_gru", tmp_path / "g.pt", mapping="tf1-to-torch")
    [pair] = verify(SAMPLES / "tf1_gru", tmp_path / "g.pt").pairs
    assert pair.verdict == "approximate" and pair.gates and pair.wrong_gates() == []


def test_a_keras_destination_is_compared_gate_by_gate_too(tmp_path):
    import keras

    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, bidirectional=True)
    torch.save(gru.state_dict(), tmp_path / "g.pt")
    ckptmap.convert(tmp_path / "g.pt", tmp_path / "g.weights.h5", mapping="torch-to-keras")
    inputs = keras.Input((None, 3))
    layer = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), name="bidirectional")
    model = keras.Model(inputs, layer(inputs))
    model.load_weights(tmp_path / "g.weights.h5")
    backward = model.get_layer("bidirectional").backward_layer
    kernel, recurrent, bias = backward.get_weights()
    bias[0, 4:8] += 1.0  # the backward layer's reset gate (Keras: z, r, h) input bias
    backward.set_weights([kernel, recurrent, bias])
    model.save_weights(tmp_path / "bad.weights.h5")
    [pair] = verify(tmp_path / "g.pt", tmp_path / "bad.weights.h5").pairs
    wrong = pair.wrong_gates()
    assert [(g.layer, g.reverse, g.gate) for g in wrong] == [(0, True, "r")]
    assert np.isclose(wrong[0].max_abs, 1.0)
