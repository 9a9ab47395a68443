"""V1 single-file checkpoints ("tf-v1"): TF 2.21 still writes them with
`Saver(write_version=SaverDef.V1)`, so they are tested against TensorFlow itself and a real
TF 1.0-era file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_tf_bundle import REAL, assert_same, save_tf1, tf_tensors  # tests/formats is on sys.path

from ckptmap.errors import FormatError
from ckptmap.formats import registry, tf_bundle, tf_v1


def v1_arrays() -> dict[str, np.ndarray]:
    """The dtypes TF's V1 writer accepts (TensorSliceWriter::MaxBytesPerElement; float16,
    uint16 and complex fail with "Data type not supported", bfloat16/uint32/uint64 abort)."""
    grid = np.arange(12).reshape(3, 4)
    return {
        "v1/float32": (grid / 8).astype(np.float32),
        "v1/float64": (grid / 3).astype(np.float64),
        "v1/int8": (grid - 6).astype(np.int8),  # negatives: 10-byte varints in int_val
        "v1/int16": (grid * 1000 - 5000).astype(np.int16),
        "v1/int32": (grid - 2**30).astype(np.int32),
        "v1/int64": (grid - 2**40).astype(np.int64),
        "v1/uint8": (grid + 200).astype(np.uint8),
        "v1/bool": grid % 5 == 0,
        "v1/string": np.array([b"gru", b"", b"\xff\x00"], dtype=object),
        "scalar": np.array(-3.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("v1")  # the V1 Saver does not create directories
    return Path(save_tf1(folder / "model.ckpt", v1_arrays(), write_version=tf.compat.v1.train.SaverDef.V1))


def test_tensorflow_still_writes_a_single_v1_file(v1_file: Path) -> None:
    assert v1_file.is_file() and not Path(f"{v1_file}.index").exists()


def test_reads_every_v1_dtype_like_tensorflow(v1_file: Path) -> None:
    ckpt = tf_v1.read(v1_file)
    expected = tf_tensors(v1_file)
    assert set(ckpt.names) == set(expected) == set(v1_arrays())
    for name, value in expected.items():
        assert_same(ckpt[name], value, name)
        assert_same(ckpt[name], v1_arrays()[name], name)
    assert ckpt.format == "tf-v1" and ckpt.files == (v1_file,)


def test_sniff_tells_v1_from_v2(v1_file: Path, tmp_path: Path) -> None:
    v2 = Path(save_tf1(tmp_path / "model.ckpt", {"x": np.arange(3.0)}))
    assert tf_v1.sniff(v1_file) and not tf_bundle.sniff(v1_file)
    assert tf_bundle.sniff(v2) and not tf_v1.sniff(v2) and not tf_v1.sniff(Path(f"{v2}.index"))
    # Through the directory's state file, and through the registry's detection.
    assert tf_v1.sniff(v1_file.parent) and not tf_bundle.sniff(v1_file.parent)
    assert registry.detect(v1_file).name == "tf-v1"
    assert registry.detect(v2).name == "tf"


def test_partitioned_v1_variable_is_assembled(tmp_path: Path) -> None:
    import tensorflow as tf

    full = np.arange(60, dtype=np.float32).reshape(12, 5)

    def init(shape, dtype=None, partition_info=None):
        offset = partition_info.var_offset if partition_info else [0] * len(shape)
        return tf.constant(
            full[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))], dtype=dtype
        )

    def build(initializer) -> tuple[object, object]:
        emb = tf.compat.v1.get_variable(
            "emb",
            shape=full.shape,
            initializer=initializer,
            partitioner=tf.compat.v1.fixed_size_partitioner(4, axis=1),
        )
        return emb, tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        _, saver = build(init)
        session.run(tf.compat.v1.global_variables_initializer())
        path = saver.save(session, str(tmp_path / "model.ckpt"))
    ckpt = tf_v1.read(Path(path))
    assert ckpt.names == ["emb"]
    assert_same(ckpt["emb"], full)
    # tf.train.load_checkpoint refuses sliced V1 files, so compare with a Saver restore instead.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        emb, saver = build(tf.compat.v1.zeros_initializer())
        saver.restore(session, path)
        assert_same(ckpt["emb"], session.run(tf.concat(list(emb), axis=1)))


def test_reading_v1_never_imports_tensorflow(v1_file: Path) -> None:
    code = (
        "import sys; from ckptmap.formats import tf_v1\n"
        f"c = tf_v1.read({str(v1_file)!r}); [c[n] for n in c]\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_damaged_v1_data_names_the_file(v1_file: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "model.ckpt"
    raw = bytearray(v1_file.read_bytes())
    raw[len(raw) // 3] ^= 0x20  # inside the data block: its CRC no longer matches
    damaged.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=str(damaged)) as err:
        ckpt = tf_v1.read(damaged)
        for name in ckpt:
            ckpt[name]
    assert "\n" not in str(err.value)


def test_v2_prefix_is_refused_with_a_hint(tmp_path: Path) -> None:
    v2 = Path(save_tf1(tmp_path / "model.ckpt", {"x": np.arange(3.0)}))
    with pytest.raises(FormatError, match="use format 'tf'"):
        tf_v1.read(v2)


POEMBOT = REAL / "poembot_v1_multilstm_oldnames"


@pytest.mark.skipif(not POEMBOT.is_dir(), reason="shared/real_checkpoints is not here")
def test_real_v1_checkpoint_matches_tensorflow() -> None:
    # The state file lists five saves; only the latest, model.ckpt-360000, was kept.
    ckpt = tf_v1.read(POEMBOT)
    assert ckpt.path == POEMBOT / "model.ckpt-360000"
    expected = tf_tensors(ckpt.path)
    assert sorted(ckpt.names) == sorted(expected)
    assert "rnnlm/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix" in ckpt
    for name, value in expected.items():
        assert_same(ckpt[name], value, name)
