"""The "flax" format against flax itself: parameter trees of real linen and nnx recurrent modules
saved with `flax.serialization.to_bytes` read exactly; files ckptmap writes restored by
`from_bytes` / `msgpack_restore` and run through the modules with the same outputs; crafted files
refused with one-line errors, quickly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax = pytest.importorskip("jax", reason="the flax tests need jax and flax")
flax = pytest.importorskip("flax", reason="the flax tests need jax and flax")
msgpack = pytest.importorskip("msgpack", reason="flax needs msgpack")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx, serialization  # noqa: E402

from ckptmap import dtypes  # noqa: E402
from ckptmap.errors import CkptmapError, FormatError, UnsupportedError  # noqa: E402
from ckptmap.formats import flax_msgpack, msgpack_wire  # noqa: E402
from ckptmap.tree import Checkpoint, TensorEntry  # noqa: E402

X = jnp.linspace(-1.0, 1.0, 2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)  # batch, time, features

LINEN = {
    "lstm": lambda: nn.RNN(nn.LSTMCell(8)),
    "optimized_lstm": lambda: nn.RNN(nn.OptimizedLSTMCell(8)),
    "gru": lambda: nn.RNN(nn.GRUCell(8)),
    "simple": lambda: nn.RNN(nn.SimpleCell(8)),
    "bidirectional": lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(8)), nn.RNN(nn.GRUCell(8))),
    "stack": lambda: nn.Sequential([nn.RNN(nn.GRUCell(8)), nn.RNN(nn.LSTMCell(8))]),
}


def tree_names(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The tree's array leaves by their keys joined with "/", in the order flax writes them (the
    dicts' own; jax's tree_flatten would sort the keys)."""
    state = serialization.to_state_dict(tree)
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(tree_names(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def checkpoint(arrays: dict[str, np.ndarray]) -> Checkpoint:
    entries = [
        TensorEntry(n, a.shape, dtypes.from_numpy(a.dtype).name, n, lambda a=a: a) for n, a in arrays.items()
    ]
    return Checkpoint(entries, format="memory", classify=False)


def assert_same_arrays(ckpt: Checkpoint, expected: dict[str, np.ndarray]) -> None:
    assert list(ckpt.entries) == list(expected)
    for name, array in expected.items():
        got = ckpt[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert np.array_equal(got, array), name


@pytest.mark.parametrize("kind", list(LINEN), ids=list(LINEN))
def test_linen_rnn_params_read_and_write_back_exactly(tmp_path: Path, kind: str) -> None:
    model = LINEN[kind]()
    variables = model.init(jax.random.PRNGKey(0), X)
    source = tmp_path / "params.msgpack"
    source.write_bytes(serialization.to_bytes(variables))
    assert flax_msgpack.sniff(source)

    ckpt = flax_msgpack.read(source)
    assert ckpt.format == "flax" and ckpt.files == (source,) and not ckpt.notes
    assert_same_arrays(ckpt, tree_names(variables))

    out = tmp_path / "out.msgpack"
    assert flax_msgpack.write(ckpt, out) == [out]
    data = out.read_bytes()
    assert data == source.read_bytes()  # the same bytes msgpack-python writes for the same tree
    restored = serialization.from_bytes(variables, data)
    assert_same_arrays(checkpoint(tree_names(serialization.msgpack_restore(data))), tree_names(variables))
    assert np.array_equal(np.asarray(model.apply(restored, X)), np.asarray(model.apply(variables, X)))


def test_bfloat16_params_round_trip_and_run(tmp_path: Path) -> None:
    model = nn.RNN(nn.LSTMCell(8))  # initialized in float32: the orthogonal init has no bfloat16
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), model.init(jax.random.PRNGKey(1), X))
    source = tmp_path / "bf16.msgpack"
    source.write_bytes(serialization.to_bytes(variables))

    ckpt = flax_msgpack.read(source)
    assert {e.dtype for e in ckpt.entries.values()} == {"bfloat16"}
    assert_same_arrays(ckpt, tree_names(variables))
    flax_msgpack.write(ckpt, tmp_path / "out.msgpack")
    restored = serialization.from_bytes(variables, (tmp_path / "out.msgpack").read_bytes())
    assert np.array_equal(np.asarray(model.apply(restored, X)), np.asarray(model.apply(variables, X)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nnx_params_saved_as_a_pure_dict_round_trip(tmp_path: Path, cell: str) -> None:
    # nnx has no msgpack saving of its own (its checkpointing guide uses orbax, and to_bytes of an
    # nnx.State raises TypeError); msgpack users save nnx.to_pure_dict(state), as tested here.
    make = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell}[cell]
    model = nnx.RNN(make(3, 8, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    source = tmp_path / "nnx.msgpack"
    source.write_bytes(serialization.to_bytes(params))

    ckpt = flax_msgpack.read(source)
    assert_same_arrays(ckpt, tree_names(params))
    flax_msgpack.write(ckpt, tmp_path / "out.msgpack")
    other = nnx.RNN(make(3, 8, rngs=nnx.Rngs(7)))
    state = nnx.state(other, nnx.Param)
    nnx.replace_by_pure_dict(state, serialization.msgpack_restore((tmp_path / "out.msgpack").read_bytes()))
    nnx.update(other, state)
    assert np.array_equal(np.asarray(other(X)), np.asarray(model(X)))


def test_leaves_that_are_not_arrays_are_metadata(tmp_path: Path) -> None:
    tree = {
        "step": 12,
        "params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "opt_state": [np.arange(3, dtype=np.int32), {"count": np.int32(4), "lr": np.float32(0.25)}],
        "z": 1 + 2j,
        "tag": "run-1",
        "none": None,
        "empty": {},
    }
    source = tmp_path / "state.msgpack"
    source.write_bytes(serialization.to_bytes(tree))
    ckpt = flax_msgpack.read(source)
    # Lists become maps keyed "0", "1", ... (flax's _list_state_dict).
    assert list(ckpt.entries) == ["params/w", "opt_state/0"]
    assert ckpt.metadata["leaves"] == {
        "step": 12,
        "opt_state/1/count": 4,
        "opt_state/1/lr": 0.25,
        "z": 1 + 2j,
        "tag": "run-1",
        "none": None,
        "empty": {},
    }
    assert any("7 values that are not arrays" in note for note in ckpt.notes)


def test_keys_holding_slashes_are_escaped_and_written_back(tmp_path: Path) -> None:
    # Haiku-style module names hold "/"; as names they would fake nesting.
    tree = {"lstm/~/linear": {"w%": np.ones((2, 2), np.float32)}, "lstm": {"b": np.zeros(2, np.float32)}}
    source = tmp_path / "slashes.msgpack"
    source.write_bytes(serialization.to_bytes(tree))
    ckpt = flax_msgpack.read(source)
    assert list(ckpt.entries) == ["lstm%2F~%2Flinear/w%25", "lstm/b"]
    flax_msgpack.write(ckpt, tmp_path / "out.msgpack")
    assert (tmp_path / "out.msgpack").read_bytes() == source.read_bytes()


def test_chunked_arrays_read_and_written_as_flax_chunks_them(tmp_path: Path, monkeypatch) -> None:
    # Flax chunks arrays over 2**30 bytes; a small limit on both sides tests the same layout.
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 48)
    monkeypatch.setattr(flax_msgpack, "MAX_CHUNK_BYTES", 48)
    tree = {"big": np.arange(35, dtype=np.float32).reshape(5, 7), "small": np.arange(4, dtype=np.float64)}
    source = tmp_path / "chunked.msgpack"
    source.write_bytes(serialization.to_bytes(tree))
    assert serialization.msgpack_restore(source.read_bytes())["big"].shape == (5, 7)

    ckpt = flax_msgpack.read(source)
    assert_same_arrays(ckpt, tree)
    flax_msgpack.write(ckpt, tmp_path / "out.msgpack")
    data = (tmp_path / "out.msgpack").read_bytes()
    assert data == source.read_bytes()
    assert_same_arrays(checkpoint(serialization.msgpack_restore(data)), tree)


def test_reading_indexes_only_and_maps_the_data_when_asked(tmp_path: Path) -> None:
    source = tmp_path / "lazy.msgpack"
    source.write_bytes(serialization.to_bytes({"w": np.zeros(64, np.float32)}))
    ckpt = flax_msgpack.read(source)
    data = source.read_bytes()  # the data is the file's last 256 bytes: change it after indexing
    source.write_bytes(data[:-256] + np.full(64, 3, np.float32).tobytes())
    assert np.array_equal(ckpt["w"], np.full(64, 3, np.float32))


def test_write_reports_progress_per_tensor(tmp_path: Path) -> None:
    arrays = {"a/kernel": np.ones((3, 4), np.float32), "a/bias": np.ones(4, np.float16)}
    seen: list[int] = []
    flax_msgpack.write(checkpoint(arrays), tmp_path / "p.msgpack", progress=seen.append)
    assert seen == [48, 8]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["rnn/cell", "rnn/cell/kernel"], "'rnn/cell' is both a tensor and a scope"),
        (["rnn/cell/kernel", "rnn/cell"], "'rnn/cell' is both a tensor and a scope"),
        (["rnn//kernel"], "empty key"),
        (["a/__msgpack_chunked_array__/x"], "__msgpack_chunked_array__"),
    ],
    ids=["tensor-then-scope", "scope-then-tensor", "empty-key", "chunk-marker"],
)
def test_writer_refuses_names_that_make_no_flax_tree(tmp_path: Path, names: list[str], message: str) -> None:
    out = tmp_path / "bad.msgpack"
    with pytest.raises(UnsupportedError, match=re.escape(message)):
        flax_msgpack.write(checkpoint({n: np.ones(2, np.float32) for n in names}), out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_sniff_claims_flax_files_only(tmp_path: Path) -> None:
    import h5py
    import torch

    flax_file = tmp_path / "checkpoint_100"  # flax.training.checkpoints' legacy name: no suffix
    flax_file.write_bytes(serialization.to_bytes({"params": {"w": np.ones(3, np.float32)}}))
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    modern = tmp_path / "modern.pt"
    torch.save({"w": torch.ones(3)}, modern)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["w"] = np.ones(3)
    # A safetensors header length whose low bytes read as fixmap(5), fixstr(1) "A", then zeros.
    (tmp_path / "st.safetensors").write_bytes(b"\x85\xa1\x41\x00\x00\x00\x00\x00{" + b" " * 40)
    (tmp_path / "empty_map").write_bytes(b"\x80")
    (tmp_path / "int_key").write_bytes(msgpack.packb({1: 2}))
    (tmp_path / "garbage_after").write_bytes(flax_file.read_bytes() + b"\x00")
    assert flax_msgpack.sniff(flax_file)
    for other in (
        "legacy.pt",
        "modern.pt",
        "w.h5",
        "st.safetensors",
        "empty_map",
        "int_key",
        "garbage_after",
    ):
        assert not flax_msgpack.sniff(tmp_path / other), other
    assert not flax_msgpack.sniff(tmp_path / "missing")


def _packed_ndarray(shape: Any, dtype: str, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb((shape, dtype, data), use_bin_type=True))


def _valid() -> bytes:
    return serialization.to_bytes({"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}})


HOSTILE: dict[str, tuple[Any, str]] = {
    "truncated": (lambda: _valid()[:-5], "truncated"),
    "depth-bomb": (lambda: b"\x81\xa1a" * 100_000 + b"\xc0", "nest deeper than 64"),
    "huge-bin32": (lambda: (b"\x81\xa1a\xc6\xff\xff\xff\xff").ljust(100, b"\0"), "4294967295 bytes claimed"),
    "huge-map32": (lambda: b"\x81\xa1a\xdf\xff\xff\xff\xff\xa1b\xc0", "claims 4294967295 items"),
    "huge-ext32": (lambda: b"\x81\xa1a\xc9\xff\xff\xff\xf0\x01\x93", "bytes claimed"),
    "shape-bytes-mismatch": (
        lambda: msgpack.packb({"w": _packed_ndarray((2, 3), "float32", b"\0" * 20)}),
        "needs 24 bytes, the file holds 20",
    ),
    "negative-dim": (
        lambda: msgpack.packb({"w": _packed_ndarray((-1, 3), "float32", b"")}),
        "not a non-negative int",
    ),
    "overflowing-shape": (
        lambda: msgpack.packb({"w": _packed_ndarray((2**63, 2**63), "float32", b"")}),
        "needs 340282366920938463463374607431768211456 bytes",
    ),
    "too-many-dims": (
        lambda: msgpack.packb({"w": _packed_ndarray((1,) * 65, "int8", b"\0")}),
        "64 dimensions",
    ),
    "odd-dtype-name": (
        lambda: msgpack.packb({"w": _packed_ndarray((1,), "<f4", b"\0" * 4)}),
        "not a dtype name",
    ),
    "unknown-ext": (lambda: msgpack.packb({"w": msgpack.ExtType(7, b"xx")}), "ext type 7"),
    "ext-longer-than-array": (
        lambda: msgpack.packb({"w": msgpack.ExtType(1, msgpack.packb(((1,), "int8", b"\0")) + b"\0")}),
        "ext value claims",
    ),
    "trailing-garbage": (lambda: _valid() + b"\x00\x01", "2 bytes of garbage"),
    "duplicate-key": (lambda: b"\x82\xa1a\xc0\xa1a\xc0", "'a' appears twice"),
    "int-key": (lambda: b"\x81\x01\xc0", "not a string"),
    "bad-utf8-key": (lambda: b"\x81\xa2\xff\xfe\xc0", "not UTF-8"),
    "reserved-byte": (lambda: b"\x81\xa1a\xc1", "0xc1 is not a msgpack type byte"),
    "bad-chunks": (
        lambda: msgpack.packb(
            {"w": {"__msgpack_chunked_array__": True, "shape": {"0": 5}, "chunks": {"0": 1}}}
        ),
        "chunks are not 1-D arrays",
    ),
    "top-level-array": (lambda: msgpack.packb([1, 2]), "not a map"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_crafted_files_are_refused_quickly_naming_the_file(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    path = tmp_path / f"{case}.msgpack"
    path.write_bytes(make())
    started = time.monotonic()
    with pytest.raises(FormatError) as caught:
        flax_msgpack.read(path)
    assert time.monotonic() - started < 2
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unsupported_dtype_is_named(tmp_path: Path) -> None:
    import ml_dtypes

    path = tmp_path / "f8.msgpack"
    path.write_bytes(serialization.to_bytes({"w": np.zeros(3, ml_dtypes.float8_e4m3fn)}))
    with pytest.raises(UnsupportedError, match=r"tensor 'w' is float8_e4m3fn"):
        flax_msgpack.read(path)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "params.msgpack"
    os.mkfifo(fifo)
    outcome: list[BaseException | bool] = []

    def attempt() -> None:
        outcome.append(flax_msgpack.sniff(fifo))
        try:
            flax_msgpack.read(fifo)
        except FormatError as e:
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)  # a blocked open would hang it, not the run
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert outcome[0] is False
    assert (
        isinstance(outcome[1], FormatError) and "a FIFO" in str(outcome[1]) and str(fifo) in str(outcome[1])
    )


def test_reads_and_writes_with_neither_jax_nor_msgpack(tmp_path: Path) -> None:
    source = tmp_path / "p.msgpack"
    source.write_bytes(_valid())
    script = f"""
import sys
sys.modules.update(jax=None, flax=None, msgpack=None)  # importing any of them now fails
from pathlib import Path
from ckptmap.formats import flax_msgpack
ckpt = flax_msgpack.read(Path({str(source)!r}))
assert "numpy" not in sys.modules  # the index needs no numpy either
flax_msgpack.write(ckpt, Path({str(tmp_path / "out.msgpack")!r}))
print(ckpt["params/w"].tolist())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]"
    assert (tmp_path / "out.msgpack").read_bytes() == source.read_bytes()


def test_encoders_pick_the_forms_msgpack_python_picks() -> None:
    for n in (0, 15, 16, 255, 256, 65535, 65536):
        assert msgpack.packb(dict.fromkeys(map(str, range(n)))).startswith(msgpack_wire.map_header(n))
    for value in (0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        assert msgpack_wire.integer(value) == msgpack.packb(value)
    for text in ("", "a" * 31, "a" * 32, "a" * 255, "a" * 256, "a" * 65536):
        assert msgpack_wire.text(text) == msgpack.packb(text, use_bin_type=True)
    for size in (0, 1, 2, 3, 4, 8, 16, 17, 255, 256, 65536):
        packed = msgpack.packb(msgpack.ExtType(1, b"\0" * size))
        assert msgpack_wire.ext_header(1, size) == packed[: len(packed) - size]


def test_damaged_copies_of_a_file_raise_only_ckptmap_errors(tmp_path: Path) -> None:
    # Random bytes changed, cut out or put in: each copy reads, or fails with a one-line CkptmapError
    # (never a struct.error, IndexError or RecursionError from inside the decoder).
    import random

    good = serialization.to_bytes(
        {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float32(2)}, "c": [1, "x", 2j]}
    )
    rng = random.Random(16)
    path = tmp_path / "damaged.msgpack"
    refused = 0
    for _ in range(400):
        data = bytearray(good)
        at = rng.randrange(len(data))
        choice = rng.randrange(3)
        if choice == 0:
            data[at] = rng.randrange(256)
        elif choice == 1:
            del data[at : at + rng.randint(1, 8)]
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        path.write_bytes(bytes(data))
        try:
            flax_msgpack.sniff(path)
            ckpt = flax_msgpack.read(path)
            for name in ckpt:
                ckpt[name]
        except CkptmapError as e:
            assert "\n" not in str(e)
            refused += 1
    assert refused > 100  # most damage is caught (a changed data byte is not)
