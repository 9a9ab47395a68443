"""Dtypes survive every conversion bit for bit; tensors over 2 GB and checkpoints with thousands of
variables work; TF checkpoints are written in shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ckptmap
from ckptmap import dtypes
from tests.clirun import ok
from tests.frameworks import tf1

ALL = [
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
]
FORMATS = {"tf": "model.ckpt", "tf2": "tf2.ckpt", "torch": "m.pt", "safetensors": "m.safetensors"}
KERAS = {"keras3": "k.weights.h5", "keras2": "k.h5"}


def _bits(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Arbitrary bit patterns (NaN payloads, -0.0, infinities, subnormals included for floats)."""
    dt = dtypes.by_name(dtype).numpy
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    raw = rng.integers(0, 256, int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def _checkpoint(names_dtypes: dict[str, str], shape=(3, 5)) -> ckptmap.Checkpoint:
    arrays = {name: _bits(dtype, shape, i) for i, (name, dtype) in enumerate(names_dtypes.items())}
    return ckptmap.Checkpoint(
        [ckptmap.TensorEntry(n, a.shape, names_dtypes[n], n, lambda a=a: a) for n, a in arrays.items()],
        format="test",
    )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(FORMATS, 2)), ids=lambda f: f)
def test_every_dtype_survives_every_conversion_bit_for_bit(tmp_path, a, b):
    source = _checkpoint({f"t/{d}": d for d in ALL})
    first = tmp_path / "a" / FORMATS[a]
    ckptmap.save(source, first, format=a)
    second = tmp_path / "b" / FORMATS[b]
    ok("convert", first, second, "--to", b)
    back = ckptmap.load(second)
    for name in source:
        assert _same_bits(back[name], source[name]), (name, a, b)


def test_frameworks_read_the_dtypes_as_their_own(tmp_path):
    import safetensors.torch
    import tensorflow as tf
    import torch

    source = _checkpoint({f"t/{d}": d for d in ALL})
    ckptmap.save(source, tmp_path / "m.pt")
    ckptmap.save(source, tmp_path / "m.safetensors")
    ckptmap.save(source, tmp_path / "tf" / "model.ckpt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["t.bfloat16"].dtype == torch.bfloat16 and state["t.uint16"].dtype == torch.uint16
    assert safetensors.torch.load_file(tmp_path / "m.safetensors")["t.bfloat16"].dtype == torch.bfloat16
    reader = tf.train.load_checkpoint(str(tmp_path / "tf" / "model.ckpt"))
    assert reader.get_variable_to_dtype_map()["t/bfloat16"] == tf.bfloat16
    for d in ALL:
        expected = source[f"t/{d}"]
        got = state[f"t.{d}"]
        as_bits = got.view(torch.int16).numpy() if d == "bfloat16" else got.numpy()
        assert as_bits.tobytes() == expected.tobytes(), d
        assert reader.get_tensor(f"t/{d}").tobytes() == expected.tobytes(), d


# bfloat16 in Keras 3 files only: Keras 2 / tf-keras .h5 files have no way to say it.
KERAS_CASES = [
    (f, d)
    for f in KERAS
    for d in ("float16", "float32", "float64", "bfloat16")
    if (f, d) != ("keras2", "bfloat16")
]


@pytest.mark.parametrize(("fmt", "dtype"), KERAS_CASES, ids=[f"{f}-{d}" for f, d in KERAS_CASES])
def test_float_dtypes_survive_keras_files(tmp_path, fmt, dtype):
    kernel, bias = _bits(dtype, (4, 4), 1), _bits(dtype, (4,), 2)
    source = ckptmap.Checkpoint(
        [
            ckptmap.TensorEntry("dense/kernel", (4, 4), dtype, "dense/kernel", lambda: kernel),
            ckptmap.TensorEntry("dense/bias", (4,), dtype, "dense/bias", lambda: bias),
        ],
        format="test",
    )
    path = tmp_path / KERAS[fmt]
    ckptmap.save(source, path, format=fmt)
    ok("convert", path, tmp_path / "m.safetensors")
    back = ckptmap.load(tmp_path / "m.safetensors")
    assert _same_bits(back["dense/kernel"], source["dense/kernel"])
    assert _same_bits(back["dense/bias"], source["dense/bias"])


def test_a_tensor_over_2_gb_goes_through_every_byte_level_format(tmp_path):
    n = 2**31 + 12345  # past every 32-bit offset and size field
    pattern = np.resize(np.arange(251, dtype=np.uint8), n)  # a shifted offset would show
    big = ckptmap.Checkpoint(
        [
            ckptmap.TensorEntry("big", (n,), "uint8", "big", lambda: pattern),
            ckptmap.TensorEntry("after", (3,), "int64", "after", lambda: np.array([7, 8, 9])),
        ],
        format="test",
    )
    ckptmap.save(big, tmp_path / "a.safetensors")
    for dst in (tmp_path / "tf" / "model.ckpt", tmp_path / "b.pt"):
        ok("convert", tmp_path / "a.safetensors", dst)
        back = ckptmap.load(dst)
        assert np.array_equal(back["big"], pattern) and back["after"].tolist() == [7, 8, 9]
        del back
    import torch

    state = torch.load(tmp_path / "b.pt", weights_only=True, mmap=True)
    assert state["big"].shape == (n,) and int(state["big"][-1]) == int(pattern[-1])


def test_thousands_of_variables(tmp_path):
    import tensorflow as tf

    names = {f"layer_{i // 10}/w_{i % 10}": "float32" for i in range(3000)}
    ckptmap.save(_checkpoint(names, shape=(2,)), tmp_path / "tf" / "model.ckpt")
    assert len(tf.train.list_variables(str(tmp_path / "tf" / "model.ckpt"))) == 3000
    ok("convert", tmp_path / "tf", tmp_path / "m.pt")
    import torch

    assert len(torch.load(tmp_path / "m.pt", weights_only=True)) == 3000
    assert len(ckptmap.load(tmp_path / "m.pt")) == 3000


def test_sharded_tf_checkpoints_are_written_and_restore(tmp_path):
    source = _checkpoint({f"v/{i}": "float32" for i in range(10)}, shape=(100, 100))  # 40 KB each
    ckptmap.save(source, tmp_path / "a.safetensors")
    ok("convert", tmp_path / "a.safetensors", tmp_path / "tf" / "model.ckpt", "--shard-size", "100KB")
    shards = sorted(p.name for p in (tmp_path / "tf").glob("model.ckpt.data-*"))
    assert len(shards) == 5 and shards[0] == "model.ckpt.data-00000-of-00005"
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:  # tf's own Saver reads all five shards
        variables = {name: v1.Variable(np.zeros((100, 100), np.float32)) for name in source}
        v1.train.Saver(variables).restore(sess, str(tmp_path / "tf" / "model.ckpt"))
        restored = sess.run(variables)
    for name in source:
        assert restored[name].tobytes() == source[name].tobytes()
