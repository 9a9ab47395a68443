"""TF SavedModel directories as tf-keras 2.x `model.save(dir)` writes them: read as their variables,
layer names from keras_metadata.pb, converted and verified with the real frameworks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import ckptmap
from tests.clirun import run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A SavedModel of Input -> GRU(4) -> Dense(2), its inputs and the GRU's outputs."""
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.Input((None, 3)), tf_keras.layers.GRU(4, return_sequences=True, name="encoder"),
         tf_keras.layers.Dense(2, name="head")]
    )  # fmt: skip
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("sm") / "model"
    model.save(str(path))
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    return path, x, model.get_layer("encoder")(x).numpy()


def test_a_saved_model_reads_with_its_layer_names(saved, capsys):
    path, _, _ = saved
    ckpt = ckptmap.load(path)
    assert ckpt.format == "savedmodel"
    assert sorted(ckpt) == ["encoder/cell/bias", "encoder/cell/kernel", "encoder/cell/recurrent_kernel",
                            "head/bias", "head/kernel"]  # fmt: skip
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "GRU at encoder: input 3, units 4, 1 layer, unidirectional, reset_after=True" in out


def test_a_saved_model_gru_converts_exactly_to_nn_gru(saved, tmp_path, capsys):
    import torch

    path, x, expected = saved
    code, _, err = run(capsys, "convert", path, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 0, err
    gru = torch.nn.GRU(3, 4, batch_first=True)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    gru.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}, strict=True
    )
    with torch.no_grad():
        np.testing.assert_allclose(gru(torch.from_numpy(x))[0].numpy(), expected, atol=1e-5)
    code, out, err = run(capsys, "verify", path, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 0 and out.splitlines()[-1] == "OK: 1 equal.", out + err


def test_without_metadata_the_layers_keep_their_checkpoint_edges(saved, tmp_path):
    path, _, _ = saved
    copy = tmp_path / "bare"
    shutil.copytree(path, copy)
    (copy / "keras_metadata.pb").unlink()
    ckpt = ckptmap.load(copy)
    assert "layer_with_weights-0/cell/kernel" in ckpt  # found through the layer, not `variables/0`
    assert [r.scope for r in ckpt.rnns] == ["layer_with_weights-0"]


@pytest.mark.parametrize("damage", ["variables-outside", "metadata-fifo", "metadata-garbage"])
def test_a_crafted_saved_model_is_one_line_and_exit_2(saved, tmp_path, capsys, damage):
    path, _, _ = saved
    copy = tmp_path / "crafted"
    shutil.copytree(path, copy)
    if damage == "variables-outside":
        shutil.move(copy / "variables", tmp_path / "elsewhere")
        (copy / "variables").symlink_to(tmp_path / "elsewhere")
        expected = "leads outside the SavedModel"
    elif damage == "metadata-fifo":
        (copy / "keras_metadata.pb").unlink()
        os.mkfifo(copy / "keras_metadata.pb")
        expected = "not a regular file"
    else:
        (copy / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
        expected = "damaged Keras metadata"
    code, out, err = run(capsys, "inspect", copy)
    assert code == 2 and not out and expected in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def saved_settings(tmp_path_factory) -> Path:
    """A SavedModel whose metadata says what the weights cannot: a GRU without biases and
    reset_after=False inside a Bidirectional, and a SimpleRNN with ReLU."""
    import tf_keras

    gru = tf_keras.layers.GRU(4, use_bias=False, reset_after=False, return_sequences=True)
    model = tf_keras.Sequential(
        [tf_keras.Input((None, 3)), tf_keras.layers.Bidirectional(gru, name="bi"),
         tf_keras.layers.SimpleRNN(2, activation="relu", name="relu_rnn")]
    )  # fmt: skip
    path = tmp_path_factory.mktemp("sm") / "settings"
    model.save(str(path))
    return path


def test_settings_only_the_metadata_holds_are_read(saved_settings, tmp_path, capsys):
    gru, relu = ckptmap.load(saved_settings).rnns
    # Without biases the weights cannot tell; Keras' default (True) would be the guess.
    assert (gru.scope, gru.bidirectional, gru.bias, gru.reset_after, gru.unsupported) == (
        "bi", True, False, False, "",
    )  # fmt: skip
    assert relu.unsupported == "layer relu_rnn has activation='relu', not 'tanh'"
    code, out, _ = run(capsys, "inspect", saved_settings)
    assert "reset_after=False" in out and "not convertible: layer relu_rnn has activation='relu'" in out
    code, _, err = run(capsys, "convert", saved_settings, tmp_path / "m.pt", "-m", "keras-to-torch")
    assert code == 2 and "activation='relu', not 'tanh'" in err and not (tmp_path / "m.pt").exists()


def test_a_gru_without_biases_converts_by_the_reset_after_its_metadata_gives(tmp_path, capsys):
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.Input((None, 3)), tf_keras.layers.GRU(4, use_bias=False, reset_after=False, name="g")]
    )
    model.save(str(tmp_path / "sm"))
    # reset_after=False is TF1's GRUCell exactly (with reset_after=True it would be approximate).
    code, out, err = run(
        capsys, "convert", tmp_path / "sm", tmp_path / "tf1/model.ckpt", "-m", "keras-to-tf1", "--verify"
    )
    assert code == 0 and "approximate" not in out and "EQUAL" in out, out + err
