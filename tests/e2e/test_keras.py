"""Keras <-> PyTorch and TF1 -> Keras through the CLI, checked by the real loaders themselves:
Keras 3 `model.load_weights`, tf-keras `load_weights`, `load_state_dict(strict=True)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ckptmap.cell_kinds import KINDS
from tests.clirun import ok, run
from tests.frameworks import inputs, run_torch, save_tf1_rnn, torch_rnn
from tests.verification.conftest import INPUT, UNITS, keras_model

TOL = 1e-5


def torch_modules(path: Path):
    import torch

    return torch.load(path, weights_only=True)


def load_torch(state, prefix: str, kind: str, input_size: int = INPUT, **options):
    module = torch_rnn(kind, input_size, UNITS, **options)
    module.load_state_dict(
        {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}, strict=True
    )
    return module


@pytest.mark.parametrize(
    ("kind", "bidirectional"),
    [("gru", False), ("lstm", True), ("gru", True)],
    ids=["gru", "lstm-bi", "gru-bi"],
)
def test_keras3_saved_weights_load_into_fresh_torch_modules(tmp_path, kind, bidirectional):
    import keras

    model = keras_model(keras, kind, bidirectional=bidirectional)
    model.save_weights(tmp_path / "k.weights.h5")
    x = inputs(size=INPUT)
    ok("convert", tmp_path / "k.weights.h5", tmp_path / "m.pt", "--mapping", "keras-to-torch")
    layer = model.layers[0].name
    module = load_torch(torch_modules(tmp_path / "m.pt"), layer, kind, bidirectional=bidirectional)
    np.testing.assert_allclose(run_torch(module, x), np.asarray(model(x)), atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", [k.name for k in KINDS if k.counterpart("keras") and k.counterpart("torch")])
def test_torch_to_keras3_loads_with_load_weights(tmp_path, kind):
    import keras
    import torch

    torch.manual_seed(0)
    module = torch_rnn(kind, INPUT, UNITS, layers=2, bidirectional=True)
    torch.save(module.state_dict(), tmp_path / "m.pt")
    ok("convert", tmp_path / "m.pt", tmp_path / "k.weights.h5", "--mapping", "torch-to-keras")
    fresh = keras_model(keras, kind, layers=2, bidirectional=True, seed=99)  # other weights until loaded
    fresh.load_weights(tmp_path / "k.weights.h5")
    x = inputs(size=INPUT)
    np.testing.assert_allclose(np.asarray(fresh(x)), run_torch(module, x), atol=TOL, rtol=0)


def test_stacked_bidirectional_keras_to_torch_and_back_is_exact(tmp_path):
    import keras

    model = keras_model(keras, "lstm", layers=2, bidirectional=True)
    model.save_weights(tmp_path / "k.weights.h5")
    ok("convert", tmp_path / "k.weights.h5", tmp_path / "m.pt", "-m", "keras-to-torch")
    state = torch_modules(tmp_path / "m.pt")
    first, second = (layer.name for layer in model.layers)
    a = load_torch(state, first, "lstm", bidirectional=True)
    b = load_torch(state, second, "lstm", 2 * UNITS, bidirectional=True)
    x = inputs(size=INPUT)
    import torch

    with torch.no_grad():
        y = b(a(torch.from_numpy(x))[0])[0].numpy()
    np.testing.assert_allclose(y, np.asarray(model(x)), atol=TOL, rtol=0)
    ok("convert", tmp_path / "m.pt", tmp_path / "back.weights.h5", "-m", "torch-to-keras")
    again = keras_model(keras, "lstm", layers=2, bidirectional=True, seed=5)
    again.load_weights(tmp_path / "back.weights.h5")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=TOL, rtol=0)


def test_tf1_gru_cell_is_exactly_a_keras_gru_without_reset_after(tmp_path):
    import keras

    x = inputs(size=INPUT)
    _, y_tf = save_tf1_rnn(tmp_path / "tf" / "model.ckpt", "gru", INPUT, UNITS, xs=x)
    ok("convert", tmp_path / "tf", tmp_path / "k.weights.h5", "-m", "tf1-to-keras")
    fresh = keras_model(keras, "gru", reset_after=False, seed=3)
    fresh.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(np.asarray(fresh(x)), y_tf, atol=TOL, rtol=0)  # every step, not just the first


@pytest.mark.parametrize("where", ["k.h5", "tf2/ckpt"], ids=["keras2-h5", "tf2-checkpoint"])
def test_tf_keras_files_inspect_and_convert(tmp_path, capsys, where):
    import tf_keras

    model = keras_model(tf_keras, "gru", bidirectional=True)
    model.save_weights(str(tmp_path / where))
    src = tmp_path / where if where.endswith(".h5") else tmp_path / "tf2"
    ok("inspect", src)
    assert "GRU at " in capsys.readouterr().out
    ok("convert", src, tmp_path / "m.pt", "-m", "keras-to-torch")
    state = torch_modules(tmp_path / "m.pt")
    prefix = next(iter(state)).split(".")[0]
    module = load_torch(state, prefix, "gru", bidirectional=True)
    x = inputs(size=INPUT)
    np.testing.assert_allclose(run_torch(module, x), np.asarray(model(x)), atol=TOL, rtol=0)


def test_keras3_bidirectional_gru_to_torch_and_back_each_verified_exact(capsys, tmp_path):
    import keras

    keras_model(keras, "gru", bidirectional=True).save_weights(tmp_path / "k.weights.h5")
    code, out, _ = run(
        capsys, "convert", tmp_path / "k.weights.h5", tmp_path / "m.pt", "-m", "keras-to-torch", "--verify"
    )
    assert code == 0 and "EQUAL" in out and "OK: 1 equal." in out
    code, out, _ = run(
        capsys, "convert", tmp_path / "m.pt", tmp_path / "back.weights.h5", "-m", "torch-to-keras", "--verify"
    )
    assert code == 0 and "EQUAL" in out and "OK: 1 equal." in out


def test_converting_between_frameworks_without_a_mapping_hints_and_does_not_verify(capsys, tmp_path):
    import keras

    keras_model(keras, "lstm").save_weights(tmp_path / "k.weights.h5")
    code, out, err = run(capsys, "convert", tmp_path / "k.weights.h5", tmp_path / "m.pt", "--verify")
    assert code == 1 and "--mapping keras-to-torch" in err and "NO RESTORE" in out


def test_into_keras_restores_a_converted_torch_module(capsys, tmp_path):
    import torch

    torch.save(torch_rnn("gru", INPUT, UNITS, layers=2).state_dict(), tmp_path / "m.pt")
    code, out, _ = run(capsys, "verify", tmp_path / "m.pt", "--into", "keras")
    assert code == 0 and "after torch-to-keras" in out and out.count("restores and runs") == 2


REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_checkpoints is not beside the checkout")
def test_real_keras_files_convert_and_verify(capsys, tmp_path):
    # Keras 2.1.1 GRUs predate reset_after: they are GRU(reset_after=False), approximate in nn.GRU.
    code, out, _ = run(
        capsys,
        "convert",
        REAL / "keras211_gru_simplernn_weightsonly" / "model_gru.h5",
        tmp_path / "a.pt",
        "-m",
        "keras-to-torch",
        "--verify",
    )
    assert code == 0 and out.count("APPROXIMATE") == 2
    # A Keras 3 GRU(reset_after=True) saved in the legacy full-model .h5: exact.
    code, out, _ = run(
        capsys,
        "convert",
        REAL / "keras3_gru_resetafter_h5" / "gru_model.h5",
        tmp_path / "b.pt",
        "-m",
        "keras-to-torch",
        "--verify",
    )
    assert code == 0 and "EQUAL" in out
