"""The "keras-archive" format against Keras 3's own `.keras` files: classes taken from config.json
name every variable, values match the model, optimizer state is kept as bookkeeping, the weights
convert to a `.weights.h5` that `load_weights` accepts, and broken archives give one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ckptmap import kinds
from ckptmap.errors import CkptmapError
from ckptmap.formats import keras3_h5, keras_archive, registry
from tests.formats.test_keras3_h5 import assert_matches_model, fill, keras, layers


def trained_model():
    """Functional: Embedding, a nested Sequential, GRU(reset_after=False), Bidirectional LSTM,
    LayerNormalization(scale=False) (beta alone at vars/0: only the config says so), Dense."""
    inner = keras.Sequential(
        [
            keras.Input((None, 4)),
            layers.LSTM(3, return_sequences=True, name="lstm_in"),
            layers.Dense(4, name="proj"),
        ],
        name="inner",
    )
    tokens = keras.Input((None,), dtype="int32")
    x = layers.Embedding(10, 4, name="embed")(tokens)
    x = inner(x)
    x = layers.GRU(3, reset_after=False, return_sequences=True, name="enc")(x)
    x = layers.Bidirectional(layers.LSTM(2, name="bi_lstm"), name="both")(x)
    x = layers.LayerNormalization(scale=False, name="norm")(x)
    return keras.Model(tokens, layers.Dense(1, name="dense")(x))


TOKENS = np.array([[1, 4, 2, 9, 0], [3, 3, 0, 7, 5]], dtype="int32")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    model = trained_model()
    model.compile("adam", "mse")
    model.fit(TOKENS, np.ones((2, 1)), epochs=1, verbose=0)
    fill(model, seed=5)
    path = tmp_path_factory.mktemp("archive") / "model.keras"
    model.save(path)
    return path, model


def test_reads_weights_named_by_the_classes_in_config(archive) -> None:
    path, model = archive
    assert (
        keras_archive.sniff(path)
        and not keras3_h5.sniff(path)
        and registry.detect(path).name == "keras-archive"
    )
    ckpt = keras_archive.read(path)
    assert ckpt.format == "keras-archive" and ckpt.files == (path,)
    assert_matches_model(ckpt, model)
    assert {"dense/kernel", "norm/beta", "embed/embeddings", "inner/proj/kernel", "enc/cell/bias"} <= set(
        ckpt
    )
    assert ckpt.entries["both/backward_layer/cell/recurrent_kernel"].key == (
        "layers/bidirectional/backward_layer/cell/vars/1"
    )
    assert ckpt.entries["inner/lstm_in/cell/kernel"].key == "layers/sequential/layers/lstm/cell/vars/0"
    assert any("inner/lstm_in=LSTM" in note and "norm=LayerNormalization" in note for note in ckpt.notes)
    assert ckpt.metadata["keras_version"] == keras.__version__
    # Adam's state: iterations, learning rate, then m and v per weight, under optimizer/vars/<i>.
    optimizer = [e for e in ckpt.entries.values() if e.name.startswith("optimizer/")]
    assert len(optimizer) == 2 + 2 * len(model.weights)
    assert {e.kind for e in optimizer} == {kinds.BOOKKEEPING} and optimizer[0].name == "optimizer/vars/0"


def test_archive_weights_convert_to_a_file_load_weights_accepts(archive, tmp_path: Path) -> None:
    path, model = archive
    out = tmp_path / "from_archive.weights.h5"
    keras3_h5.write(keras_archive.read(path), out)  # optimizer/vars/<i> included; Keras skips them
    fresh = trained_model()
    fresh.load_weights(out)
    np.testing.assert_array_equal(fresh.predict(TOKENS, verbose=0), model.predict(TOKENS, verbose=0))


@pytest.mark.parametrize("copy", ["memory", "temporary-file"])
def test_a_compressed_weights_member_reads_the_same(archive, tmp_path: Path, monkeypatch, copy: str) -> None:
    # Keras stores members uncompressed (read in place); another zip tool may deflate them, and
    # then a large member is decompressed to a temporary file rather than into memory.
    path, model = archive
    if copy == "temporary-file":
        monkeypatch.setattr(keras_archive, "_IN_MEMORY", 0)
    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    ckpt = keras_archive.read(deflated)
    assert_matches_model(ckpt, model)


def test_reading_imports_neither_keras_nor_tensorflow(archive) -> None:
    path, _ = archive
    code = (
        "import sys; from pathlib import Path; from ckptmap.formats import keras_archive\n"
        f"c = keras_archive.read(Path({str(path)!r})); [c[n] for n in c]\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'imported a framework'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _rezip(source: Path, target: Path, *, drop: str = "", replace: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename != drop:
                dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda src, p: _rezip(src, p, drop="model.weights.h5"), "without model.weights.h5"),
        (
            lambda src, p: _rezip(src, p, replace={"config.json": b"{not json"}),
            "config.json is not valid JSON",
        ),
        (
            lambda src, p: _rezip(src, p, replace={"model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(300)}),
            "HDF5",
        ),
        (lambda src, p: p.write_bytes(src.read_bytes()[:-200]) and p, "not a readable zip"),
    ],
    ids=["no-weights", "config-not-json", "weights-not-hdf5", "truncated"],
)
def test_broken_archives_give_one_line_errors_naming_the_file(
    archive, tmp_path: Path, damage, message
) -> None:
    path = damage(archive[0], tmp_path / "broken.keras")
    with pytest.raises(CkptmapError, match=message) as caught:
        keras_archive.read(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_sniff_wants_both_config_and_weights(archive, tmp_path: Path) -> None:
    assert not keras_archive.sniff(_rezip(archive[0], tmp_path / "a.keras", drop="config.json"))
    assert not keras_archive.sniff(tmp_path / "missing.keras")
    (tmp_path / "text.keras").write_text(json.dumps({"not": "a zip"}))
    assert not keras_archive.sniff(tmp_path / "text.keras")
