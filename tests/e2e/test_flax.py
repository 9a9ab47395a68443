"""Flax end to end: linen and nnx cells initialized by Flax, saved with flax.serialization and
orbax, converted with the built-in mappings and run again in JAX, PyTorch (load_state_dict(strict=
True)) and Keras (load_weights), outputs compared with the original model's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import jax.numpy as jnp
import torch
from flax import linen as nn
from flax import nnx, serialization

import ckptmap
from tests.clirun import run

ATOL = 1e-5
X = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)  # [batch, steps, input]

LINEN = {
    "lstm": (lambda: nn.RNN(nn.LSTMCell(5)), torch.nn.LSTM, False),
    "optimized-lstm": (lambda: nn.RNN(nn.OptimizedLSTMCell(5)), torch.nn.LSTM, False),
    "gru": (lambda: nn.RNN(nn.GRUCell(5)), torch.nn.GRU, False),
    "simple": (lambda: nn.RNN(nn.SimpleCell(5)), torch.nn.RNN, False),
    "bidirectional-lstm": (
        lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(5)), nn.RNN(nn.LSTMCell(5))),
        torch.nn.LSTM,
        True,
    ),
}


def _linen(kind: str, seed: int = 1) -> tuple[nn.Module, dict, np.ndarray]:
    """A linen model, its variables (all shifted off their initial values) and its outputs on X."""
    model = LINEN[kind][0]()
    variables = model.init(jax.random.PRNGKey(seed), X)
    variables = jax.tree_util.tree_map(lambda a: a + 0.05 * (seed + 1), variables)
    return model, variables, np.asarray(model.apply(variables, X))


def _torch(kind: str, path: Path) -> torch.nn.Module:
    _, cls, bidirectional = LINEN[kind]
    module = cls(3, 5, batch_first=True, bidirectional=bidirectional)
    module.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return module


@pytest.mark.parametrize("kind", LINEN)
def test_linen_msgpack_converts_to_pytorch_exactly_and_back(kind, tmp_path, capsys):
    model, variables, expected = _linen(kind)
    src = tmp_path / "params.msgpack"
    src.write_bytes(serialization.to_bytes(variables))
    code, _, err = run(capsys, "convert", src, tmp_path / "m.pt", "-m", "flax-to-torch")
    assert code == 0, err
    module = _torch(kind, tmp_path / "m.pt")
    got, _ = module(torch.from_numpy(X))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=ATOL)
    # And back: other weights in PyTorch, into a file Flax restores into the model's own tree.
    torch.manual_seed(3)
    other = LINEN[kind][1](3, 5, batch_first=True, bidirectional=LINEN[kind][2])
    torch.save(other.state_dict(), tmp_path / "other.pt")
    code, _, err = run(
        capsys, "convert", tmp_path / "other.pt", tmp_path / "back.msgpack", "-m", "torch-to-flax"
    )
    assert code == 0, err
    restored = serialization.from_bytes(variables, (tmp_path / "back.msgpack").read_bytes())
    want, _ = other(torch.from_numpy(X))
    np.testing.assert_allclose(np.asarray(model.apply(restored, X)), want.detach().numpy(), atol=ATOL)


def test_an_orbax_checkpoint_converts_to_pytorch_exactly_and_verifies(tmp_path, capsys):
    import orbax.checkpoint as ocp

    _, variables, expected = _linen("lstm")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((tmp_path / "ckpt").resolve(), variables)
    checkpointer.wait_until_finished()
    ckpt = ckptmap.load(tmp_path / "ckpt")
    assert ckpt.format == "orbax" and [r.cell_type for r in ckpt.rnns] == ["LSTMCell"]
    np.testing.assert_array_equal(ckpt["params/cell/ii/kernel"], variables["params"]["cell"]["ii"]["kernel"])
    code, _, err = run(capsys, "convert", tmp_path / "ckpt", tmp_path / "m.pt", "-m", "flax-to-torch")
    assert code == 0, err
    got, _ = _torch("lstm", tmp_path / "m.pt")(torch.from_numpy(X))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=ATOL)
    code, out, _ = run(capsys, "verify", tmp_path / "ckpt", tmp_path / "m.pt")
    assert code == 0 and "EQUAL" in out


@pytest.mark.parametrize(
    ("cell", "torch_class"),
    [
        ("LSTMCell", torch.nn.LSTM),
        ("OptimizedLSTMCell", torch.nn.LSTM),
        ("GRUCell", torch.nn.GRU),
        ("SimpleCell", torch.nn.RNN),
    ],
)
def test_nnx_cells_convert_to_pytorch_exactly(cell, torch_class, tmp_path, capsys):
    model = nnx.RNN(getattr(nnx, cell)(3, 5, rngs=nnx.Rngs(2)))
    expected = np.asarray(model(jnp.asarray(X)))
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    (tmp_path / "nnx.msgpack").write_bytes(serialization.to_bytes(state))
    [rnn] = ckptmap.load(tmp_path / "nnx.msgpack").rnns
    assert rnn.cell_type == f"nnx.{cell}"
    code, _, err = run(capsys, "convert", tmp_path / "nnx.msgpack", tmp_path / "m.pt", "-m", "flax-to-torch")
    assert code == 0, err
    module = torch_class(3, 5, batch_first=True)
    module.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    np.testing.assert_allclose(module(torch.from_numpy(X))[0].detach().numpy(), expected, atol=ATOL)


@pytest.mark.parametrize("kind", ["lstm", "gru", "bidirectional-lstm"])
def test_linen_to_keras_and_back_exactly(kind, tmp_path, capsys):
    import keras

    _, variables, expected = _linen(kind)
    (tmp_path / "p.msgpack").write_bytes(serialization.to_bytes(variables))
    code, _, err = run(
        capsys, "convert", tmp_path / "p.msgpack", tmp_path / "k.weights.h5", "-m", "flax-to-keras"
    )
    assert code == 0, err
    # Flax scopes at the root become the names Keras gives a fresh model's first layer.
    layer = {"gru": keras.layers.GRU}.get(kind, keras.layers.LSTM)
    extra = {"reset_after": True} if kind == "gru" else {}
    name = {"gru": "gru", "lstm": "lstm"}.get(kind, "bidirectional")
    if kind.startswith("bi"):
        wrapped = keras.layers.Bidirectional(layer(5, return_sequences=True), name=name)
    else:
        wrapped = layer(5, return_sequences=True, name=name, **extra)
    keras_model = keras.Sequential([keras.Input((None, 3)), wrapped])
    keras_model.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(np.asarray(keras_model(X)), expected, atol=ATOL)
    code, _, err = run(
        capsys, "convert", tmp_path / "k.weights.h5", tmp_path / "b.msgpack", "-m", "keras-to-flax"
    )
    assert code == 0, err
    # The Keras layer's name is the Flax scope: the tree nests under it.
    back = ckptmap.load(tmp_path / "b.msgpack")
    original = ckptmap.load(tmp_path / "p.msgpack")
    for n in original:
        np.testing.assert_allclose(back[n.replace("params/", f"params/{name}/", 1)], original[n], atol=1e-6)


def test_verify_catches_swapped_gates(tmp_path, capsys):
    _, variables, _ = _linen("lstm")
    params = variables["params"]["cell"]
    params["if"], params["ig"] = params["ig"], params["if"]  # a slicing script's classic mistake
    (tmp_path / "good.msgpack").write_bytes(serialization.to_bytes(_linen("lstm")[1]))
    (tmp_path / "bad.msgpack").write_bytes(serialization.to_bytes(variables))
    code, _, err = run(capsys, "convert", tmp_path / "good.msgpack", tmp_path / "m.pt", "-m", "flax-to-torch")
    assert code == 0, err
    code, out, _ = run(capsys, "verify", tmp_path / "good.msgpack", tmp_path / "m.pt")
    assert code == 0 and "EQUAL" in out
    code, out, _ = run(capsys, "verify", tmp_path / "bad.msgpack", tmp_path / "m.pt", "-m", "flax-to-torch")
    assert code == 1 and "DIFFERS" in out


_ARRAY_W = (
    '{"tree_metadata": {"w": {"key_metadata": [{"key": "w"}], '
    '"value_metadata": {"value_type": "jax.Array"}}}, "use_ocdbt": false}'
)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("{not json", "not JSON"),
        ('{"tree_metadata": 3}', "no tree_metadata"),
        (
            '{"tree_metadata": {"a": {"key_metadata": [{"key": "../x"}], "value_metadata": '
            '{"value_type": "jax.Array"}}}, "use_ocdbt": false}',
            "not one orbax writes",
        ),
        ("[" * 100_000, "not JSON"),
        (_ARRAY_W, "claims 160000000000 bytes"),
        (_ARRAY_W, "is a symbolic link"),
    ],
    ids=["not-json", "no-tree", "escaping-name", "deep-json", "huge-array", "link-outside"],
)
def test_crafted_orbax_metadata_fails_with_one_line(tmp_path, capsys, metadata, message):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "_METADATA").write_text(metadata)
    if message.startswith("claims"):  # a 16 KB directory whose zarr array says 200000 x 200000
        (folder / "w").mkdir()
        zarray = {"zarr_format": 2, "shape": [200000, 200000], "chunks": [1000, 1000], "dtype": "<f4",
                  "compressor": None, "fill_value": 0, "order": "C", "filters": None}  # fmt: skip
        (folder / "w" / ".zarray").write_text(json.dumps(zarray))
    if message.startswith("is a symbolic link"):
        (tmp_path / "elsewhere").mkdir()
        (folder / "w").symlink_to(tmp_path / "elsewhere")
    code, out, err = run(capsys, "inspect", folder)
    assert code == 2 and message in err and str(folder) in err and "Traceback" not in out + err


def test_a_linen_lstm_goes_to_tf1_through_pytorch_and_verifies(tmp_path, capsys):
    _, variables, _ = _linen("lstm")
    (tmp_path / "p.msgpack").write_bytes(serialization.to_bytes(variables))
    dst = tmp_path / "tf1" / "model.ckpt"
    code, _, err = run(
        capsys, "convert", tmp_path / "p.msgpack", dst, "-m", "flax-to-torch", "-m", "torch-to-tf1"
    )
    assert code == 0, err
    code, out, _ = run(capsys, "verify", tmp_path / "p.msgpack", dst)  # the chain chosen by verify
    assert code == 0 and "flax-to-torch, torch-to-tf1" in out and "EQUAL" in out
