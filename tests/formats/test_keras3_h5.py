"""The "keras3" format against Keras 3 itself: `.weights.h5` files from `model.save_weights` read
with canonical names and exact values, files ckptmap writes loaded by `model.load_weights` into
fresh models with the same outputs, and damaged or foreign files refused with one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ckptmap import dtypes
from ckptmap.errors import CkptmapError, FormatError, UnsupportedError
from ckptmap.formats import keras3_h5, registry
from ckptmap.tree import Checkpoint, TensorEntry

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
layers = keras.layers

REAL_KERAS3_LEGACY_H5 = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "real_checkpoints"
    / "keras3_gru_resetafter_h5"
    / "gru_model.h5"
)


# --- helpers shared with test_keras_archive.py -----------------------------------------------------


def fill(model, seed: int = 0) -> None:
    """Distinct values per element and per tensor, so a swapped tensor or transpose shows."""
    rng = np.random.default_rng(seed)
    for k, v in enumerate(model.weights):
        values = (np.arange(np.prod(v.shape)).reshape(v.shape) % 7 - 3) / 10 + rng.uniform(-0.2, 0.2, v.shape)
        if "variance" in v.path:
            values = np.abs(values) + 0.5
        v.assign((values + k / 1000).astype(v.dtype))


def value_of(model, name: str) -> np.ndarray:
    """A canonical name is the object path: `bi/forward_layer/cell/kernel` -> model.get_layer('bi')...."""
    obj, parts = model, name.split("/")
    for i, part in enumerate(parts):
        attribute = part in ("cell", "forward_layer", "backward_layer") or i == len(parts) - 1
        obj = getattr(obj, part) if attribute else obj.get_layer(part)
    return np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)


def assert_matches_model(ckpt: Checkpoint, model) -> None:
    weights = [e.name for e in ckpt.entries.values() if not e.name.startswith("optimizer/")]
    assert len(weights) == len(model.weights)
    for name in weights:
        np.testing.assert_array_equal(ckpt[name], value_of(model, name), err_msg=name)


def rnn_stack(names: dict[str, str] | None = None):
    """GRU (both reset_after), LSTM, SimpleRNN, Bidirectional, Dense with and without bias."""
    n = names or {}
    return keras.Sequential(
        [
            keras.Input((5, 3)),
            layers.GRU(4, return_sequences=True, name=n.get("gru")),
            layers.GRU(4, reset_after=False, return_sequences=True, name=n.get("gru_1")),
            layers.LSTM(3, return_sequences=True, name=n.get("lstm")),
            layers.SimpleRNN(3, return_sequences=True, name=n.get("simple_rnn")),
            layers.Bidirectional(
                layers.GRU(2, return_sequences=True, name="bi_gru"), name=n.get("bidirectional")
            ),
            layers.Dense(2, name=n.get("dense")),
            layers.Dropout(0.5),
            layers.Dense(1, use_bias=False, name=n.get("dense_1")),
        ]
    )


def inputs(shape=(2, 5, 3)) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def numpy_checkpoint(arrays: dict[str, np.ndarray]) -> Checkpoint:
    entries = [
        TensorEntry(n, a.shape, dtypes.from_numpy(a.dtype).name, n, lambda a=a: a) for n, a in arrays.items()
    ]
    return Checkpoint(entries, format="memory")


USER_NAMES = {
    "gru": "encoder",
    "gru_1": "encoder_2",
    "lstm": "middle",
    "simple_rnn": "plain",
    "bidirectional": "both_ways",
    "dense": "head",
    "dense_1": "out",
}


# --- reading --------------------------------------------------------------------------------------


def test_reads_a_sequential_rnn_stack_with_canonical_names(tmp_path: Path) -> None:
    model = rnn_stack({key: key for key in USER_NAMES})  # the names a fresh session gives
    fill(model)
    model.save_weights(tmp_path / "m.weights.h5")
    path = tmp_path / "m.weights.h5"
    assert keras3_h5.sniff(path) and registry.detect(path).name == "keras3"
    ckpt = keras3_h5.read(path)
    assert ckpt.format == "keras3" and ckpt.files == (path,)
    assert_matches_model(ckpt, model)
    entry = ckpt.entries["bidirectional/forward_layer/cell/recurrent_kernel"]
    assert entry.key == "layers/bidirectional/forward_layer/cell/vars/1" and entry.shape == (2, 6)
    assert ckpt.entries["gru/cell/bias"].shape == (2, 12)  # reset_after=True: input and recurrent bias
    # A bare file has no config, but Keras keys each layer's group by its class: layers/dense is a Dense.
    assert {"gru/cell/kernel", "dense/kernel", "dense/bias", "dense_1/kernel"} <= set(ckpt)
    assert "dense_1/bias" not in ckpt


def test_layers_are_named_by_their_names_not_their_group_keys(tmp_path: Path) -> None:
    model = rnn_stack(USER_NAMES)
    fill(model)
    model.save_weights(tmp_path / "m.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "m.weights.h5")
    assert_matches_model(ckpt, model)
    assert ckpt.entries["encoder_2/cell/kernel"].key == "layers/gru_1/cell/vars/0"
    assert ckpt.entries["head/kernel"].key == "layers/dense/vars/0"
    assert ckpt.rnns and {r.scope for r in ckpt.rnns} >= {"encoder", "middle", "both_ways"}


def nested_model(inner_name: str = "inner"):
    inner = keras.Sequential(
        [
            keras.Input((None, 4)),
            layers.LSTM(3, return_sequences=True, name="lstm_in"),
            layers.Dense(2, name="proj"),
        ],
        name=inner_name,
    )
    tokens = keras.Input((None,), dtype="int32")
    x = layers.Embedding(10, 4, name="embed")(tokens)
    x = inner(x)
    x = layers.GRU(2, name="gru")(x)
    return keras.Model(tokens, layers.Dense(1, name="dense")(x))


def test_reads_nested_models_under_the_outer_layer_name(tmp_path: Path) -> None:
    model = nested_model()
    fill(model)
    model.save_weights(tmp_path / "n.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "n.weights.h5")
    assert_matches_model(ckpt, model)
    assert ckpt.entries["inner/lstm_in/cell/kernel"].key == "layers/sequential/layers/lstm/cell/vars/0"
    assert {"inner/proj/kernel", "embed/embeddings", "dense/bias"} <= set(ckpt)


def test_reading_imports_neither_keras_nor_tensorflow(tmp_path: Path) -> None:
    model = nested_model()
    model.save_weights(tmp_path / "n.weights.h5")
    code = (
        "import sys; from pathlib import Path; from ckptmap.formats import keras3_h5\n"
        f"c = keras3_h5.read(Path({str(tmp_path / 'n.weights.h5')!r})); [c[n] for n in c]\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'imported a framework'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- writing --------------------------------------------------------------------------------------


def test_written_file_loads_into_a_fresh_model_with_equal_outputs(tmp_path: Path) -> None:
    model = rnn_stack(USER_NAMES)
    fill(model)
    model.save_weights(tmp_path / "keras.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "keras.weights.h5")
    seen: list[int] = []
    out = tmp_path / "out" / "ckptmap.weights.h5"
    assert keras3_h5.write(ckpt, out, progress=seen.append) == [out] == keras3_h5.files(out)
    assert sum(seen) == ckpt.nbytes and len(seen) == len(ckpt)
    fresh = rnn_stack(USER_NAMES)
    fresh.load_weights(out)
    np.testing.assert_array_equal(fresh.predict(inputs(), verbose=0), model.predict(inputs(), verbose=0))
    # Same datasets as Keras' own file; groups carry the names Keras gives them.
    with h5py.File(tmp_path / "keras.weights.h5") as ours_ref, h5py.File(out) as ours:
        assert _datasets(ours) == _datasets(ours_ref)
        assert ours["layers/bidirectional/vars"].attrs["name"] == "both_ways"
        assert ours["layers/bidirectional/forward_layer/vars"].attrs["name"] == "forward_gru"
        assert ours["layers/lstm/cell/vars"].attrs["name"] == "lstm_cell"
        assert ours["layers/simple_rnn/cell/vars"].attrs["name"] == "simple_rnn_cell"


def _datasets(f: h5py.File) -> set[str]:
    found: set[str] = set()
    f.visititems(lambda name, obj: found.add(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_writes_numpy_tensors_named_as_a_conversion_names_them(tmp_path: Path) -> None:
    # What torch-to-keras produces: layer names of the source scope, no file keys to lean on.
    names = {**USER_NAMES, "gru_1": "encoder_1", "lstm": "lstm", "simple_rnn": "rnn", "bidirectional": "bi"}
    reference = rnn_stack(names)
    fill(reference, seed=3)
    arrays = {}
    for layer in reference.layers:
        for weight in layer.weights:  # paths like sequential/bi/forward_gru/gru_cell/kernel
            parts = weight.path.split("/")[1:]
            parts = [
                p.split("_")[0] + "_layer" if p.startswith(("forward_", "backward_")) else p for p in parts
            ]
            parts = ["cell" if p.endswith("_cell") else p for p in parts]
            arrays["/".join(parts)] = weight.numpy()
    assert "bi/backward_layer/cell/recurrent_kernel" in arrays and "out/kernel" in arrays
    out = tmp_path / "converted.weights.h5"
    keras3_h5.write(numpy_checkpoint(arrays), out)
    fresh = rnn_stack(names)
    fresh.load_weights(out)
    np.testing.assert_array_equal(fresh.predict(inputs(), verbose=0), reference.predict(inputs(), verbose=0))
    assert_matches_model(keras3_h5.read(out), fresh)


@pytest.mark.parametrize("keys", ["keras", "none"])
def test_nested_model_round_trips(tmp_path: Path, keys: str) -> None:
    # A nested model's class is not in its weights: the group key its tensors came from tells it,
    # and without one (tensors from another format) its default name `sequential_<n>` does.
    model = nested_model("sequential_7")
    fill(model)
    model.save_weights(tmp_path / "n.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "n.weights.h5")
    if keys == "none":
        entries = [TensorEntry(e.name, e.shape, e.dtype, "x", e.loader) for e in ckpt.entries.values()]
        ckpt = Checkpoint(entries, format="memory")
    out = tmp_path / "w.weights.h5"
    keras3_h5.write(ckpt, out)
    fresh = nested_model("sequential_7")
    fresh.load_weights(out)
    tokens = np.array([[1, 4, 2, 9], [3, 3, 0, 7]], dtype="int32")
    np.testing.assert_array_equal(fresh.predict(tokens, verbose=0), model.predict(tokens, verbose=0))


def test_tensors_are_read_when_asked_not_when_listed(tmp_path: Path) -> None:
    model = nested_model()
    model.save_weights(tmp_path / "n.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "n.weights.h5")
    with h5py.File(tmp_path / "n.weights.h5", "r+") as f:
        f["layers/dense/vars/1"][...] = 42.0
    np.testing.assert_array_equal(ckpt["dense/bias"], [42.0])


def test_bfloat16_and_vars_index_names_round_trip(tmp_path: Path) -> None:
    # LayerNormalization(scale=False) stores beta as vars/0: a bare file cannot tell, so vars/0 stays.
    model = keras.Sequential(
        [
            keras.Input((3,)),
            layers.Dense(2, dtype="bfloat16", name="dense"),  # not dense_<n> after other tests
            layers.LayerNormalization(scale=False, name="layer_normalization"),
        ]
    )
    fill(model)
    model.save_weights(tmp_path / "b.weights.h5")
    ckpt = keras3_h5.read(tmp_path / "b.weights.h5")
    assert ckpt.entries["dense/kernel"].dtype == "bfloat16" and "layer_normalization/vars/0" in ckpt
    assert any("layer_normalization" in note for note in ckpt.notes)
    out = tmp_path / "w.weights.h5"
    keras3_h5.write(ckpt, out)
    fresh = keras.Sequential(
        [
            keras.Input((3,)),
            layers.Dense(2, dtype="bfloat16", name="dense"),  # not dense_<n> after other tests
            layers.LayerNormalization(scale=False, name="layer_normalization"),
        ]
    )
    fresh.load_weights(out)
    x = inputs((2, 3))
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"head/kernel": np.ones((2, 2)), "head/weird": np.ones(2)}, r"'head/weird'.*has a weight 'weird'"),
        (
            {"gru/cell/kernel": np.ones((2, 6)), "gru/cell/peephole": np.ones(2)},
            r"'gru/cell/peephole'.*RNN cell has no weight 'peephole'",
        ),
        ({"head/kernel": np.ones((2, 2)), "head/vars/1": np.ones(2)}, r"mixes named weights and vars"),
        ({"kernel": np.ones((2, 2))}, r"'kernel' names no layer"),
    ],
    ids=["unknown-role", "unknown-cell-role", "mixed-naming", "no-layer"],
)
def test_tensors_the_layout_cannot_hold_are_refused_by_name(tmp_path: Path, arrays, message) -> None:
    with pytest.raises(UnsupportedError, match=message):
        keras3_h5.write(numpy_checkpoint(arrays), tmp_path / "x.weights.h5")
    assert not list(tmp_path.iterdir())


def test_a_failing_tensor_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    def broken() -> np.ndarray:
        raise OSError("disk gone")

    good = np.ones((3, 6), np.float32)
    entries = [
        TensorEntry("gru/cell/kernel", (3, 6), "float32", "k", lambda: good),
        TensorEntry("gru/cell/recurrent_kernel", (2, 6), "float32", "r", broken),
    ]
    with pytest.raises(FormatError, match="gru/cell/recurrent_kernel"):
        keras3_h5.write(Checkpoint(entries, format="memory"), tmp_path / "x.weights.h5")
    assert not list(tmp_path.iterdir())


# --- bad input ------------------------------------------------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    model = rnn_stack()
    model.save_weights(tmp_path / "full.weights.h5")
    data = (tmp_path / "full.weights.h5").read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.weights.h5"


def _garbage(tmp_path: Path) -> Path:
    (tmp_path / "g.weights.h5").write_bytes(keras3_h5.SIGNATURE + bytes(range(256)) * 4)
    return tmp_path / "g.weights.h5"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "e.weights.h5").write_bytes(b"")
    return tmp_path / "e.weights.h5"


def _plain_h5(tmp_path: Path) -> Path:
    with h5py.File(tmp_path / "plain.weights.h5", "w") as f:
        f["x"] = np.ones(3)
    return tmp_path / "plain.weights.h5"


def _keras2_layout(tmp_path: Path) -> Path:
    with h5py.File(tmp_path / "k2.weights.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"dense/kernel:0"]
    return tmp_path / "k2.weights.h5"


def _soft_link(tmp_path: Path) -> Path:
    # Keras refuses links (saving_lib.safe_get_h5_group): they can point into other files.
    with h5py.File(tmp_path / "link.weights.h5", "w") as f:
        f.create_group("layers/dense/vars")["0"] = np.ones((2, 2))
        f["layers/dense/vars/1"] = h5py.ExternalLink("/etc/passwd", "/x")
    return tmp_path / "link.weights.h5"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated, "cannot read it as HDF5"),
        (_garbage, "cannot read it as HDF5"),
        (_plain_h5, "not Keras 3 weights"),
        (_keras2_layout, "Keras 2"),
        (_soft_link, "ExternalLink"),
        (_empty, "empty"),
    ],
    ids=["truncated", "garbage-after-signature", "not-keras", "keras2-layout", "external-link", "empty"],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path: Path, make, message) -> None:
    path = make(tmp_path)
    with pytest.raises(CkptmapError, match=message) as caught:
        keras3_h5.read(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_sniff_refuses_other_hdf5_layouts(tmp_path: Path) -> None:
    assert not keras3_h5.sniff(_plain_h5(tmp_path))
    assert not keras3_h5.sniff(_keras2_layout(tmp_path))
    assert not keras3_h5.sniff(tmp_path / "missing.weights.h5")


@pytest.mark.skipif(not REAL_KERAS3_LEGACY_H5.exists(), reason="shared/real_checkpoints is not here")
def test_sniff_leaves_keras3s_legacy_full_model_h5_to_keras2() -> None:
    assert not keras3_h5.sniff(REAL_KERAS3_LEGACY_H5)
