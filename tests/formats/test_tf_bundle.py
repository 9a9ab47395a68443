"""The V2 bundle format ("tf") against real TensorFlow: every dtype, slices and shards, the
writer restored by a TF1 Saver, damaged files, atomic output, and the ways users name a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ckptmap.errors import CkptmapError, FormatError, SourceNotFoundError
from ckptmap.formats import tf_bundle, tf_paths
from ckptmap.formats.protowire import BundleEntry, BundleHeader
from ckptmap.formats.sstable import TableWriter, mask_crc
from ckptmap.tree import Checkpoint

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


def sample_arrays() -> dict[str, np.ndarray]:
    """One variable per dtype, distinct values per element (a transpose would show)."""
    grid = np.arange(6).reshape(2, 3)
    arrays = {
        f"dtypes/{name}": grid.astype(dt)
        for name, dt in [
            ("float32", np.float32),
            ("float64", np.float64),
            ("float16", np.float16),
            ("bfloat16", ml_dtypes.bfloat16),
            ("int8", np.int8),
            ("int16", np.int16),
            ("uint8", np.uint8),
            ("uint16", np.uint16),
            ("uint32", np.uint32),
        ]
    }
    arrays["dtypes/int32"] = (grid - 3).astype(np.int32)
    arrays["dtypes/int64"] = (grid - 2**40).astype(np.int64)
    arrays["dtypes/uint64"] = grid.astype(np.uint64) + np.uint64(2**63)
    arrays["dtypes/bool"] = grid % 3 == 0
    arrays["dtypes/complex64"] = (grid + 1j * grid[::-1]).astype(np.complex64)
    arrays["dtypes/complex128"] = (grid - 1j * grid).astype(np.complex128)
    arrays["dtypes/string"] = np.array([b"lstm", b"", b"\x00\xff bytes"], dtype=object)
    arrays["scalar"] = np.array(7.5, dtype=np.float32)
    arrays["scalar_string"] = np.array(b"hello", dtype=object)
    arrays["rnn/empty"] = np.zeros((0, 3), dtype=np.float32)  # 0-size: TF stores 0 bytes
    arrays["rnn/lstm_cell/kernel"] = np.arange(40, dtype=np.float32).reshape(5, 8) / 7
    return arrays


def save_tf1(prefix: Path, arrays: dict[str, np.ndarray], **saver_options: object) -> str:
    """Save `arrays` as TF1 graph-mode variables with tf.compat.v1.train.Saver."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            dtype = tf.string if value.dtype == object else tf.as_dtype(value.dtype)
            tf.compat.v1.Variable(value, name=name, dtype=dtype)
        saver = tf.compat.v1.train.Saver(**saver_options)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix))


def restore_tf1(prefix: Path, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Restore into a fresh graph with the same variable names and dtypes (zero-initialized)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        variables = {}
        for name, value in like.items():
            dtype = tf.string if value.dtype == object else tf.as_dtype(value.dtype)
            blank = np.full(value.shape, b"", dtype=object) if value.dtype == object else np.zeros_like(value)
            variables[name] = tf.compat.v1.Variable(blank, name=name, dtype=dtype)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(prefix))
            return session.run(variables)


def tf_tensors(prefix: Path | str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    # TF returns a scalar string tensor as plain bytes.
    actual, expected = (
        np.array(x, dtype=object) if isinstance(x, bytes) else np.asarray(x) for x in (actual, expected)
    )
    assert actual.shape == expected.shape, what
    if expected.dtype == object or expected.dtype.kind == "S":
        assert [bytes(x) for x in actual.ravel()] == [bytes(x) for x in expected.ravel()], what
    else:
        assert actual.dtype == expected.dtype, what
        assert actual.tobytes() == expected.tobytes(), what  # exact bits, bfloat16 included


@pytest.fixture(scope="module")
def tf1_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(save_tf1(tmp_path_factory.mktemp("tf1") / "model.ckpt", sample_arrays()))


def test_reads_every_dtype_like_tensorflow(tf1_prefix: Path) -> None:
    ckpt = tf_bundle.read(tf1_prefix)
    expected = tf_tensors(tf1_prefix)
    assert set(ckpt.names) == set(expected) == set(sample_arrays())
    for name, value in expected.items():
        assert_same(ckpt[name], value, name)
        assert ckpt.entries[name].dtype == sample_arrays()[name].dtype.name.replace("object", "string")
    assert ckpt.format == "tf" and ckpt.path == tf1_prefix
    assert ckpt.files == (
        tf1_prefix.with_name("model.ckpt.index"),
        tf1_prefix.with_name("model.ckpt.data-00000-of-00001"),
    )


def test_numeric_tensors_are_zero_copy_read_only_views(tf1_prefix: Path) -> None:
    kernel = tf_bundle.read(tf1_prefix)["rnn/lstm_cell/kernel"]
    assert not kernel.flags.writeable and not kernel.flags.owndata


def test_reading_never_imports_tensorflow(tf1_prefix: Path) -> None:
    code = (
        "import sys; from ckptmap.formats import tf_bundle\n"
        f"c = tf_bundle.read({str(tf1_prefix)!r}); [c[n] for n in c]\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tf1_partitioned_variable_reads_as_one_tensor(tmp_path: Path) -> None:
    import tensorflow as tf

    full = np.arange(70, dtype=np.float32).reshape(10, 7)

    def init(shape, dtype=None, partition_info=None):
        offset = partition_info.var_offset if partition_info else [0] * len(shape)
        return tf.constant(
            full[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))], dtype=dtype
        )

    graph = tf.Graph()
    with graph.as_default():
        # Partition along axis 1 too, so slices are not just leading rows.
        for axis in (0, 1):
            tf.compat.v1.get_variable(
                f"emb{axis}",
                shape=full.shape,
                initializer=init,
                partitioner=tf.compat.v1.fixed_size_partitioner(3, axis=axis),
            )
        saver = tf.compat.v1.train.Saver(sharded=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "model.ckpt"))
    ckpt = tf_bundle.read(Path(prefix))
    assert ckpt.names == ["emb0", "emb1"]  # the slice keys are hidden
    for name, value in tf_tensors(prefix).items():
        assert_same(ckpt[name], value, name)
        assert_same(ckpt[name], full, name)


_TF2_SHARDED = """
import sys, numpy as np, tensorflow as tf
module = tf.Module()
module.cell = tf.Module()
module.cell.kernel = tf.Variable(np.arange(1000, dtype=np.float32).reshape(100, 10))
module.cell.bias = tf.Variable(np.arange(50, dtype=np.float64) - 25)
policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=1000)  # splits the kernel
options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
tf.train.Checkpoint(model=module).write(sys.argv[1], options=options)
"""


def test_tf2_sharded_and_split_variables_with_attribute_suffix_dropped(tmp_path: Path) -> None:
    # Eager TF2 in a subprocess: other tests switch this process to graph mode for good.
    prefix = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-c", _TF2_SHARDED, str(prefix)], check=True)
    ckpt = tf_bundle.read(prefix)
    assert len(ckpt.files) > 3  # index + several data shards
    assert "model/cell/kernel" in ckpt and "model/cell/bias" in ckpt
    assert ckpt.entries["model/cell/kernel"].key == "model/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    expected = tf_tensors(prefix)
    for name, entry in ckpt.entries.items():
        assert_same(entry.read(), expected[entry.key], name)
    assert_same(ckpt["model/cell/kernel"], np.arange(1000, dtype=np.float32).reshape(100, 10))
    # Written back under its canonical names, it restores into a TF1 graph.
    tf_bundle.write(ckpt, tmp_path / "tf1" / "model.ckpt")
    restored = restore_tf1(tmp_path / "tf1" / "model.ckpt", {"model/cell/bias": np.arange(50.0) - 25})
    assert_same(restored["model/cell/bias"], np.arange(50.0) - 25)


def test_written_checkpoint_restores_in_tf1_saver(tmp_path: Path, tf1_prefix: Path) -> None:
    source = tf_bundle.read(tf1_prefix)
    out = tmp_path / "out" / "model.ckpt"
    written = tf_bundle.write(source, out)
    assert written == tf_bundle.files(out) == tf_bundle.files(out.with_name("model.ckpt.index"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    arrays = sample_arrays()
    restored = restore_tf1(out, arrays)
    for name, value in arrays.items():
        assert_same(np.asarray(restored[name]), value, name)
    for name, value in tf_tensors(out).items():
        assert_same(value, arrays[name], name)
    import tensorflow as tf

    assert tf.train.latest_checkpoint(str(tmp_path / "out")) == str(out)


def test_writer_output_is_byte_identical_to_tensorflows_data(tmp_path: Path, tf1_prefix: Path) -> None:
    # Same tensors in TF's (sorted) order: the data file and index should match TF's exactly.
    source = tf_bundle.read(tf1_prefix)
    ordered = Checkpoint([source.entries[n] for n in sorted(source.names)], format="tf")
    out = tmp_path / "model.ckpt"
    tf_bundle.write(ordered, out)
    for made, original in zip(tf_bundle.files(out)[:2], tf_bundle.files(tf1_prefix)[:2], strict=True):
        assert made.read_bytes() == original.read_bytes(), made.name


def test_writer_splits_into_shards_and_reports_progress(tmp_path: Path, tf1_prefix: Path) -> None:
    source = tf_bundle.read(tf1_prefix)
    seen: list[int] = []
    out = tmp_path / "sharded"
    written = tf_bundle.write(source, out, progress=seen.append, max_shard_bytes=64)
    shards = [p for p in written if ".data-" in p.name]
    assert len(shards) > 3 and written == tf_bundle.files(out, source, max_shard_bytes=64)
    assert len(seen) == len(source) and sum(seen) == sum(p.stat().st_size for p in shards)
    for name, value in tf_tensors(out).items():
        assert_same(value, sample_arrays()[name], name)
    assert_same(tf_bundle.read(out)["dtypes/bfloat16"], sample_arrays()["dtypes/bfloat16"])


def test_state_file_keeps_earlier_checkpoints(tmp_path: Path, tf1_prefix: Path) -> None:
    source = tf_bundle.read(tf1_prefix)
    tf_bundle.write(source, tmp_path / "a.ckpt")
    tf_bundle.write(source, tmp_path / "b.ckpt")
    state = tf_paths.read_state(tmp_path / "checkpoint")
    assert state.model_checkpoint_path == "b.ckpt"
    assert state.all_model_checkpoint_paths == ("a.ckpt", "b.ckpt")
    assert tf_paths.resolve(tmp_path) == tf_paths.Resolved("v2", tmp_path / "b.ckpt")


def _copy_checkpoint(prefix: Path, into: Path) -> Path:
    into.mkdir()
    for path in tf_bundle.files(prefix)[:2]:
        (into / path.name).write_bytes(path.read_bytes())
    return into / prefix.name


def test_flipped_byte_in_data_names_the_tensor_and_file(tmp_path: Path, tf1_prefix: Path) -> None:
    prefix = _copy_checkpoint(tf1_prefix, tmp_path / "ckpt")
    entry = tf_bundle._Bundle(prefix).entries[b"rnn/lstm_cell/kernel"]
    data = prefix.with_name("model.ckpt.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 5] ^= 0x10
    data.write_bytes(bytes(raw))
    ckpt = tf_bundle.read(prefix)  # listing still works; the damage shows when the tensor is read
    with pytest.raises(
        FormatError, match=r"'rnn/lstm_cell/kernel' in .*data-00000-of-00001: checksum"
    ) as err:
        ckpt["rnn/lstm_cell/kernel"]
    assert "\n" not in str(err.value)
    assert_same(ckpt["dtypes/int64"], sample_arrays()["dtypes/int64"])  # the others still read


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong-magic"])
def test_damaged_index_is_a_one_line_error_naming_it(tmp_path: Path, tf1_prefix: Path, damage: str) -> None:
    prefix = _copy_checkpoint(tf1_prefix, tmp_path / "ckpt")
    index = tf_paths.index_path(prefix)
    raw = index.read_bytes()
    index.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "empty": b"",
            "garbage": raw[:10] + bytes(b ^ 0x5A for b in raw[10:-48]) + raw[-48:],
            "wrong-magic": raw[:-1] + b"\x00",
        }[damage]
    )
    with pytest.raises(CkptmapError) as err:
        tf_bundle.read(prefix)
    assert str(index) in str(err.value) and "\n" not in str(err.value)
    assert not tf_bundle.sniff(prefix)


def test_missing_shard_is_named(tmp_path: Path, tf1_prefix: Path) -> None:
    prefix = _copy_checkpoint(tf1_prefix, tmp_path / "ckpt")
    prefix.with_name("model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(SourceNotFoundError, match=r"data shard model\.ckpt\.data-00000-of-00001 is missing"):
        tf_bundle.read(prefix)


def _three_shards(prefix: Path, *, num_shards: int = 3) -> dict[str, np.ndarray]:
    """A bundle of three float tensors, one per data shard, written by hand."""
    import google_crc32c

    values = {f"w{i}": np.arange(4, dtype=np.float32) + i for i in range(3)}
    with open(tf_paths.index_path(prefix), "wb") as f:
        table = TableWriter(f)
        table.add(b"", BundleHeader(num_shards).encode())
        for i, (name, value) in enumerate(values.items()):
            raw = value.tobytes()
            tf_paths.data_path(prefix, i, num_shards).write_bytes(raw)
            crc = mask_crc(google_crc32c.value(raw))
            table.add(name.encode(), BundleEntry(1, value.shape, i, 0, len(raw), crc).encode())
        table.finish()
    return values


def _unlistable(monkeypatch: pytest.MonkeyPatch, directory: Path) -> list[Path]:
    """Make `directory` fail to list as a mode-0o311 directory does for its non-owners (root
    ignores the mode, so the refusal is simulated); returns the paths probed one by one."""
    scandir, lexists, probed = os.scandir, os.path.lexists, []

    def refusing(path: str | os.PathLike[str] = ".") -> object:
        if Path(path) == directory:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def probing(path: str | os.PathLike[str]) -> bool:
        probed.append(Path(path))
        return lexists(path)

    monkeypatch.setattr(os, "scandir", refusing)
    monkeypatch.setattr(os.path, "lexists", probing)
    return probed


def test_a_directory_that_cannot_be_listed_is_read_shard_by_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shared model stores often give checkpoint folders mode 0o311: enter, read, but not list.
    # Listing the folder to count shards made such checkpoints fail ("cannot list its directory").
    prefix = tmp_path / "model.ckpt"
    values = _three_shards(prefix)
    probed = _unlistable(monkeypatch, tmp_path)
    ckpt = tf_bundle.read(prefix)
    for name, value in values.items():
        assert_same(ckpt[name], value)
    assert tf_paths.data_path(prefix, 2, 3) in probed
    tf_paths.data_path(prefix, 1, 3).unlink()
    missing = r"data shard model\.ckpt\.data-00001-of-00003 is missing \(the index lists 3 shards\)\.$"
    with pytest.raises(SourceNotFoundError, match=missing):
        tf_bundle.read(prefix)


def test_an_unlistable_directory_still_bounds_a_damaged_shard_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shards named for 10**9: probing stops at the first missing one, 4 paths, not 10**9.
    prefix = tmp_path / "model.ckpt"
    _three_shards(prefix, num_shards=10**9)
    probed = _unlistable(monkeypatch, tmp_path)
    missing = r"shard model\.ckpt\.data-00003-of-1000000000 is missing \(the index lists 1000000000 shards\)"
    with pytest.raises(SourceNotFoundError, match=missing):
        tf_bundle.read(prefix)
    assert len([p for p in probed if ".data-" in p.name]) == 4


def test_big_endian_bundles_are_byte_swapped(tmp_path: Path) -> None:
    # TF writes endianness=BIG on big-endian hosts (tensor_bundle.cc); build such a bundle by hand.
    values = {
        b"f": np.arange(6, dtype=">f4").reshape(2, 3),
        b"c": (np.arange(3) + 2j).astype(">c8"),
        b"h": np.arange(4).astype(ml_dtypes.bfloat16).view(np.uint16).astype(">u2"),
    }
    codes = {b"f": 1, b"c": 8, b"h": 14}
    prefix = tmp_path / "be"
    data, entries, offset = b"", {}, 0
    for key, value in values.items():
        raw = value.tobytes()
        crc = mask_crc(__import__("google_crc32c").value(raw))
        entries[key] = BundleEntry(codes[key], value.shape, 0, offset, len(raw), crc)
        data, offset = data + raw, offset + len(raw)
    tf_paths.data_path(prefix, 0, 1).write_bytes(data)
    with open(tf_paths.index_path(prefix), "wb") as f:
        table = TableWriter(f)
        table.add(b"", BundleHeader(1, big_endian=True).encode())
        for key in sorted(entries):
            table.add(key, entries[key].encode())
        table.finish()
    ckpt = tf_bundle.read(prefix)
    assert_same(ckpt["f"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert_same(ckpt["c"], (np.arange(3) + 2j).astype(np.complex64))
    assert_same(ckpt["h"], np.arange(4).astype(ml_dtypes.bfloat16))


def test_paths_users_type_all_resolve(tmp_path: Path, tf1_prefix: Path) -> None:
    prefix = _copy_checkpoint(tf1_prefix, tmp_path / "run")
    v2 = tf_paths.Resolved("v2", prefix)
    for typed in (prefix, tf_paths.index_path(prefix), tf_paths.data_path(prefix, 0, 1), tmp_path / "run"):
        assert tf_paths.resolve(typed) == v2, typed
        assert tf_bundle.sniff(typed)
    # A state file written on another machine: fall back to the basename in this directory.
    (tmp_path / "run" / "checkpoint").write_text('model_checkpoint_path: "/home/someone/exp/model.ckpt"\n')
    assert tf_paths.resolve(tmp_path / "run") == v2
    (tmp_path / "run" / "checkpoint").write_text('model_checkpoint_path: "gone.ckpt"\n')
    with pytest.raises(SourceNotFoundError, match=r"gone\.ckpt"):
        tf_paths.resolve(tmp_path / "run")
    (tmp_path / "run" / "checkpoint").unlink()
    tf_paths.index_path(tmp_path / "run" / "other").write_bytes(b"")
    with pytest.raises(FormatError, match="holds 2 checkpoints"):
        tf_paths.resolve(tmp_path / "run")
    with pytest.raises(SourceNotFoundError, match="nothing_here"):
        tf_bundle.read(tmp_path / "nothing_here")
    with pytest.raises(SourceNotFoundError, match=r"model\.ckpt\.index is missing"):
        tf_paths.resolve(tmp_path / "model.ckpt.data-00000-of-00001")


REAL_V2 = [
    "g2p_v2_gru_weights_tf10",
    "g2p_attseq2seq_gru_weights_tf11",
    "g2p_attseq2seq_gru_kernel_tf12",
    "tidigits_multigru_weights_tf11",
    "aplain_basiclstm_weights_tf11",
    "sunrepe_multilstm_kernel_small",
    "fracogno_bilstm_multirnn",
    "kokkini_peephole_lstm_customname",
]


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_checkpoints is not here")
@pytest.mark.parametrize("folder", REAL_V2)
def test_real_checkpoints_match_tensorflow(folder: str) -> None:
    # Some state files hold absolute paths from their authors' machines.
    ckpt = tf_bundle.read(REAL / folder)
    expected = tf_tensors(ckpt.path)
    assert sorted(e.key for e in ckpt.entries.values()) == sorted(expected)
    for entry in ckpt.entries.values():
        assert_same(entry.read(), expected[entry.key], entry.name)


def test_environment_keeps_tensorflow_quiet() -> None:
    # tests/conftest.py sets these before TF is imported; the TF tests above rely on them.
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
