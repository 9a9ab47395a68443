"""The Keras 2 / tf-keras HDF5 format ("keras2") against real tf-keras: files `save_weights` and
`save` write are read exactly under canonical names, files ckptmap writes load with
`load_weights` (by order and by name) into fresh models with equal outputs, real Keras 2.1 and
Keras 3 legacy files read, damaged files fail on one line, and a failed write leaves nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tfkeras_models as km  # tests/formats is on sys.path

from ckptmap.errors import CkptmapError
from ckptmap.formats import keras2_h5, registry, tf2_object
from ckptmap.tree import Checkpoint, TensorEntry

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"
KINDS = list(km.BUILDERS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str], list, np.ndarray]]:
    """Per kind: a save_weights .h5, the expected names, weights and outputs of its model."""
    out = {}
    folder = tmp_path_factory.mktemp("keras2")
    for kind in KINDS:
        model = km.build(kind)
        path = folder / f"{kind}.h5"
        model.save_weights(str(path))
        out[kind] = (path, km.canonical_names(model), km.legacy_weights(model), km.outputs(model))
    return out


def assert_loads(path: Path, kind: str, expected: np.ndarray) -> None:
    """A fresh model restored from `path` by order and by name gives `expected`."""
    for by_name in (False, True):
        model = km.build(kind, seed=None)
        model.load_weights(str(path), by_name=by_name)
        np.testing.assert_array_equal(km.outputs(model), expected, err_msg=f"by_name={by_name}")


@pytest.mark.parametrize("kind", KINDS)
def test_save_weights_file_reads_exactly_under_canonical_names(saved: dict, kind: str) -> None:
    path, names, weights, _ = saved[kind]
    assert keras2_h5.sniff(path) and registry.detect(path).name == "keras2"
    ckpt = keras2_h5.read(path)
    assert ckpt.format == "keras2" and ckpt.names == names
    for name, value in zip(names, weights, strict=True):
        entry = ckpt.entries[name]
        assert entry.kind == "weight" and entry.shape == value.shape and entry.dtype == "float32"
        np.testing.assert_array_equal(ckpt[name], value, err_msg=name)
        with h5py.File(path) as f:  # the key is the dataset's path in the file
            np.testing.assert_array_equal(f[entry.key][()], value)


def test_bidirectional_names_and_gru_bias_shape(saved: dict) -> None:
    ckpt = keras2_h5.read(saved["bidirectional"][0])
    assert ckpt.names[:7] == [
        "embedding/embeddings",
        "bidirectional/forward_layer/cell/kernel",
        "bidirectional/forward_layer/cell/recurrent_kernel",
        "bidirectional/forward_layer/cell/bias",
        "bidirectional/backward_layer/cell/kernel",
        "bidirectional/backward_layer/cell/recurrent_kernel",
        "bidirectional/backward_layer/cell/bias",
    ]
    assert ckpt.entries["bidirectional_1/backward_layer/cell/bias"].shape == (2, 3 * km.UNITS)  # reset_after
    assert ckpt.entries["bidirectional/forward_layer/cell/kernel"].key == (
        "bidirectional/bidirectional/forward_lstm/lstm_cell/kernel:0"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_written_file_loads_in_tf_keras_by_order_and_by_name(saved: dict, tmp_path: Path, kind: str) -> None:
    path, names, _, expected = saved[kind]
    out = tmp_path / "copy.h5"
    assert keras2_h5.write(keras2_h5.read(path), out) == keras2_h5.files(out) == [out]
    assert keras2_h5.read(out).names == names
    assert_loads(out, kind, expected)


@pytest.mark.parametrize(
    ("kind", "via"),
    [
        ("bidirectional", "save_weights"),
        ("stacked", "save_weights"),
        ("nested", "save_weights"),
        # tf.train.Checkpoint(model=m) names are `model/layer_with_weights-k/...`: unwrapped
        ("nested", "checkpoint"),
    ],
)
def test_tf2_checkpoint_written_as_h5_loads(tmp_path: Path, kind: str, via: str) -> None:
    import tensorflow as tf

    model = km.build(kind)
    prefix = tmp_path / "tf2" / "weights"
    if via == "save_weights":
        model.save_weights(str(prefix))
    else:
        tf.train.Checkpoint(model=model).write(str(prefix))
    source = tf2_object.read(prefix)
    keras2_h5.write(source, tmp_path / "out.h5")
    fresh = km.build(kind, seed=None)
    fresh.load_weights(str(tmp_path / "out.h5"))  # TF2 has no layer names: by order only
    np.testing.assert_array_equal(km.outputs(fresh), km.outputs(model))


def test_entries_with_numpy_loaders_are_ordered_as_tf_keras_creates_them(tmp_path: Path) -> None:
    # Layers in model order, but inside each the bias first and backward before forward: the writer
    # still lists each layer's weights in creation order.
    model = km.build("bidirectional")
    values = dict(zip(km.canonical_names(model), km.legacy_weights(model), strict=True))
    layers = [n.split("/")[0] for n in values]
    shuffled = sorted(
        values, key=lambda n: (layers.index(n.split("/")[0]), "backward" not in n, "kernel" in n)
    )
    ckpt = Checkpoint(
        [TensorEntry(n, values[n].shape, "float32", n, lambda n=n: values[n]) for n in shuffled],
        format="numpy",
    )
    seen: list[int] = []
    keras2_h5.write(ckpt, tmp_path / "w.h5", progress=seen.append)
    assert len(seen) == len(values) and sum(seen) == ckpt.nbytes
    with h5py.File(tmp_path / "w.h5") as f:
        assert [n.decode() for n in f["bidirectional"].attrs["weight_names"]][:3] == [
            "bidirectional/forward_lstm/lstm_cell/kernel:0",
            "bidirectional/forward_lstm/lstm_cell/recurrent_kernel:0",
            "bidirectional/forward_lstm/lstm_cell/bias:0",
        ]
    assert keras2_h5.read(tmp_path / "w.h5").metadata["keras_version"].startswith("2.")
    assert_loads(tmp_path / "w.h5", "bidirectional", km.outputs(model))


def test_full_model_file_reads_weights_and_optimizer_state(tmp_path: Path) -> None:
    model = km.build("gru_reset_after")
    model.compile("adam", "mse")
    model.fit(km.tokens(), np.zeros((2, 2), np.float32), verbose=0)
    model.save(str(tmp_path / "full.h5"))
    ckpt = keras2_h5.read(tmp_path / "full.h5")
    weights = [e.name for e in ckpt.weights()]
    assert weights == km.canonical_names(model)
    for name, value in zip(weights, km.legacy_weights(model), strict=True):
        np.testing.assert_array_equal(ckpt[name], value)
    assert ckpt.entries["gru/cell/kernel"].key == "model_weights/gru/gru/gru_cell/kernel:0"
    optimizer = [e for e in ckpt.entries.values() if e.kind != "weight"]
    assert optimizer and all(e.name.startswith("optimizer/") and e.kind == "bookkeeping" for e in optimizer)
    assert "optimizer/Adam/m/gru/gru_cell/kernel" in ckpt
    assert ckpt.metadata["full_model"] and ckpt.metadata["layer_classes"]["gru"] == "GRU"
    # Written back weights-only; the optimizer state rides along where load_weights ignores it.
    keras2_h5.write(ckpt, tmp_path / "w.h5")
    assert keras2_h5.read(tmp_path / "w.h5").names == ckpt.names
    assert_loads(tmp_path / "w.h5", "gru_reset_after", km.outputs(model))


@pytest.mark.skipif(not (REAL / "keras211_gru_simplernn_weightsonly").is_dir(), reason="no real checkpoints")
def test_real_keras211_files_get_their_cell_scope_back() -> None:
    # Keras 2.1 wrote `gru_1/kernel:0` (no cell scope) and `YT_1/kernel:0` in group `YT`.
    folder = REAL / "keras211_gru_simplernn_weightsonly"
    gru = keras2_h5.read(folder / "model_gru.h5")
    assert gru.names == [
        *(f"gru_{i}/cell/{r}" for i in (1, 2) for r in ("kernel", "recurrent_kernel", "bias")),
        *(f"{layer}/{r}" for layer in ("dense_4", "YT", "YP") for r in ("kernel", "bias")),
    ]
    assert gru.entries["gru_1/cell/kernel"].shape == (69, 384) and gru.metadata["keras_version"] == "2.1.1"
    rnn = keras2_h5.read(folder / "model_rnn.h5")
    assert rnn.entries["simple_rnn_2/cell/recurrent_kernel"].shape == (128, 128)
    assert all(np.isfinite(rnn[n]).all() for n in rnn)


@pytest.mark.skipif(not (REAL / "keras3_gru_resetafter_h5").is_dir(), reason="no real checkpoints")
def test_real_keras3_legacy_file_reads_and_loads_into_tf_keras(tmp_path: Path) -> None:
    import tf_keras as keras

    ckpt = keras2_h5.read(REAL / "keras3_gru_resetafter_h5" / "gru_model.h5")
    assert [e.name for e in ckpt.weights()] == [
        "embedding_2/embeddings",
        *(f"gru/cell/{r}" for r in ("kernel", "recurrent_kernel", "bias")),
        *(f"dense_{i}/{r}" for i in (4, 5) for r in ("kernel", "bias")),
    ]
    assert ckpt.entries["gru/cell/bias"].shape == (2, 96)
    assert ckpt.entries["optimizer/adam/iteration"].kind == "bookkeeping"
    keras2_h5.write(ckpt, tmp_path / "w.h5")
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            layers.Embedding(10000, 32, name="embedding_2"),
            layers.GRU(32, reset_after=True, name="gru"),
            layers.Dense(16, name="dense_4"),
            layers.Dense(1, name="dense_5"),
        ]
    )
    model.load_weights(str(tmp_path / "w.h5"), by_name=True)
    for name, value in zip([e.name for e in ckpt.weights()], km.legacy_weights(model), strict=True):
        np.testing.assert_array_equal(ckpt[name], value, err_msg=name)


def test_long_name_lists_are_split_into_chunked_attributes(tmp_path: Path) -> None:
    # HDF5 attributes stop at 64 KiB; tf-keras splits longer lists into layer_names0, layer_names1...
    from tf_keras.src.saving.legacy.hdf5_format import load_attributes_from_hdf5_group

    names = [f"a_rather_long_layer_name_{i:05d}/bias" for i in range(3000)]
    ckpt = Checkpoint(
        [
            TensorEntry(n, (1,), "float32", n, lambda i=i: np.array([i], np.float32))
            for i, n in enumerate(names)
        ],
        format="numpy",
    )
    keras2_h5.write(ckpt, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5") as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
        assert load_attributes_from_hdf5_group(f, "layer_names") == [n.split("/")[0] for n in names]
    assert keras2_h5.read(tmp_path / "w.h5").names == names


def test_sniff_wants_keras_structure(tmp_path: Path, saved: dict) -> None:
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(tmp_path / "k3.weights.h5", "w") as f:  # Keras 3's own layout: layers/<name>/vars
        f.create_group("layers/dense/vars")["0"] = np.ones((2, 2))
    (tmp_path / "text.h5").write_text("not hdf5")
    for name in ("plain.h5", "k3.weights.h5", "text.h5"):
        assert not keras2_h5.sniff(tmp_path / name), name
    assert not keras2_h5.sniff(tmp_path / "missing.h5")


def _damaged(tmp_path: Path, saved: dict, damage: str) -> Path:
    path = tmp_path / f"{damage}.h5"
    raw = saved["lstm"][0].read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 3])
    elif damage == "garbage":
        path.write_bytes(raw[:8] + bytes(b ^ 0x5A for b in raw[8:]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "no-weights":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    elif damage == "weightless-layers":
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = np.array([b"dropout"])
            f.create_group("dropout").attrs["weight_names"] = np.zeros(0)
    elif damage == "missing-dataset":
        path.write_bytes(raw)
        with h5py.File(path, "a") as f:
            del f["lstm/lstm/lstm_cell/kernel:0"]
    return path


@pytest.mark.parametrize(
    "damage", ["truncated", "garbage", "empty", "no-weights", "weightless-layers", "missing-dataset"]
)
def test_bad_files_fail_with_one_line_naming_the_file(tmp_path: Path, saved: dict, damage: str) -> None:
    path = _damaged(tmp_path, saved, damage)
    with pytest.raises(CkptmapError) as err:
        ckpt = keras2_h5.read(path)
        [ckpt[n] for n in ckpt]
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_strings_cannot_be_written(tmp_path: Path) -> None:
    entry = TensorEntry("x/names", (1,), "string", "x", lambda: np.array([b"a"], dtype=object))
    with pytest.raises(CkptmapError, match=r"x/names"):
        keras2_h5.write(Checkpoint([entry], format="test"), tmp_path / "w.h5")
    assert not (tmp_path / "w.h5").exists()


_NO_FRAMEWORKS = """
import sys
from pathlib import Path
import ckptmap
ckpt = ckptmap.load(Path(sys.argv[1]))
assert ckpt.format == "keras2", ckpt.format
sum(float(ckpt[n].sum()) for n in ckpt)
loaded = [m for m in ("tensorflow", "keras", "tf_keras", "torch") if m in sys.modules]
assert not loaded, loaded
"""


def test_reading_imports_no_framework(saved: dict) -> None:
    subprocess.run([sys.executable, "-c", _NO_FRAMEWORKS, str(saved["nested"][0])], check=True)
