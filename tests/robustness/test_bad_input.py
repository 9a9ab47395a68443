"""Bad input and failing writes through the command line: exit code 2, one `Error: ...` line on
stderr that names the file, no traceback, and nothing left behind, neither output nor temporary.

Most commands run in-process through `ckptmap.cli.main` (an escaping exception would show as an
"Internal error" line and fail the checks); the ones that need a process of their own run as
subprocesses: another user (read-only directories), a file size limit (a full disk), SIGINT
(Ctrl-C), and inputs that once hung or exhausted memory, which run under a timeout and an
address-space limit so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import pytest

import ckptmap
from ckptmap.cli.main import INTERRUPTED
from ckptmap.errors import CkptmapError, FormatError
from ckptmap.formats import torch_pickle
from ckptmap.formats.protowire import (
    BundleEntry,
    BundleHeader,
    TensorSlice,
    encode_shape,
    len_field,
    varint_field,
)
from ckptmap.formats.sstable import TableReader, TableWriter, mask_crc
from ckptmap.tree import Checkpoint, TensorEntry
from tests.clirun import run
from tests.torchfiles import Call, legacy_file

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"
KERNEL = "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"
DATA = "model.ckpt.data-00000-of-00001"
WRITERS = {  # --to -> destination name
    "tf": "out/model.ckpt",
    "tf2": "out/ckpt",
    "torch": "out/model.pt",
    "safetensors": "out/model.safetensors",
    "keras3": "out/model.weights.h5",
    "keras2": "out/model.h5",
}


# ------------------------------------------------------------------------------------------ helpers


def assert_refused(code: int, out: str, err: str, names: object, *, nothing_in: Path | None = None) -> str:
    """Exit 2, no stdout, one Error line naming `names` (hints may follow), no traceback, and
    `nothing_in` (the destination's directory) absent or empty. Returns the error line."""
    lines = err.splitlines()
    assert code == 2, err
    assert "Traceback" not in err and not out, err
    assert lines and lines[0].startswith("Error: "), err
    assert all(line.startswith("Hint: ") for line in lines[1:]), err
    assert str(names) in lines[0], err
    if nothing_in is not None:
        assert not nothing_in.exists() or not list(nothing_in.iterdir()), list(nothing_in.iterdir())
    return lines[0]


def convert_refused(capsys, tmp_path: Path, src: object, *extra: object, names: object = None) -> str:
    """`convert SRC <new dir>/out.safetensors` fails, naming `names` (default SRC), writing nothing."""
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "convert", src, out_dir / "out.safetensors", *extra)
    return assert_refused(code, out, err, src if names is None else names, nothing_in=out_dir)


def run_cli(*args: object, timeout: float = 120, memory: int | None = None,
            preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The CLI in its own process; `memory` caps its address space (bytes)."""

    def setup() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if preexec is not None:
            preexec()

    return subprocess.run(
        [sys.executable, "-m", "ckptmap", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=setup,
    )


def assert_refused_process(done: subprocess.CompletedProcess[str], names: object) -> str:
    return assert_refused(done.returncode, done.stdout, done.stderr, names)


def copy_lstm2(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(LSTM2, folder)
    return folder


def bundle_entry(folder: Path, key: str) -> BundleEntry:
    value = TableReader(folder / "model.ckpt.index").get(key.encode())
    assert value is not None
    return BundleEntry.decode(value)


def write_bundle(prefix: Path, entries: dict[bytes, bytes], data: bytes = b"") -> Path:
    """A V2 bundle from raw BundleEntryProto bytes, with valid table checksums."""
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data)
    with open(f"{prefix}.index", "wb") as f:
        table = TableWriter(f)
        table.add(b"", BundleHeader(num_shards=1).encode())
        for key, value in sorted(entries.items()):
            table.add(key, value)
        table.finish()
    return prefix


def raw_entry(dtype: int, shape: tuple[int, ...], size: int = 0, crc: int = 0, slices=()) -> bytes:
    """BundleEntryProto fields written by hand, so they can say what no writer would."""
    out = varint_field(1, dtype) + len_field(2, encode_shape(shape)) + varint_field(5, size)
    out += struct.pack("<BI", 6 << 3 | 5, crc)  # crc32c: fixed32, also when it is 0
    for extents in slices:
        body = b"".join(len_field(1, varint_field(1, s) + varint_field(2, n)) for s, n in extents)
        out += len_field(7, body)
    return out


# ----------------------------------------------------------------------------- missing and truncated


def test_missing_files_directories_and_prefixes(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    for missing in [tmp_path / "nope.pt", tmp_path / "run" / "model.ckpt", tmp_path / "empty_dir"]:
        line = convert_refused(capsys, tmp_path, missing)
        assert "no such file" in line or "no TensorFlow checkpoint" in line or "no checkpoint" in line


def test_a_missing_data_shard_is_named(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    (folder / DATA).unlink()
    for src in [folder, folder / "model.ckpt", folder / "model.ckpt.index"]:
        line = convert_refused(capsys, tmp_path, src, names=folder / "model.ckpt.index")
        assert f"its data shard {DATA} is missing" in line


def test_a_state_file_naming_a_missing_checkpoint(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model.ckpt-999"\n')
    for name in ("model.ckpt.index", DATA):
        (folder / name).unlink()
    line = convert_refused(capsys, tmp_path, folder, names=folder / "checkpoint")
    assert "model.ckpt-999" in line


@pytest.mark.parametrize("keep", [0, 20, 47, -1], ids=["empty", "20_bytes", "no_footer", "last_byte_cut"])
@pytest.mark.parametrize("named", ["directory", "prefix", "index"])
def test_a_truncated_index_is_named_however_the_checkpoint_is_named(capsys, tmp_path, keep, named) -> None:
    folder = copy_lstm2(tmp_path)
    index = folder / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:keep])
    src = {"directory": folder, "prefix": folder / "model.ckpt", "index": index}[named]
    line = convert_refused(capsys, tmp_path, src, names=index)
    assert any(w in line for w in ("empty", "too short", "truncated")), line


def test_a_truncated_data_file_names_the_file_and_the_tensor(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    entry = bundle_entry(folder, KERNEL)
    data = folder / DATA
    data.write_bytes(data.read_bytes()[: entry.offset + entry.size // 2])  # cut inside the kernel
    line = convert_refused(capsys, tmp_path, folder, "-m", "tf1-to-torch", names=data)
    assert f"Tensor '{KERNEL}'" in line and "truncated" in line


def test_an_empty_data_file_names_the_file(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    (folder / DATA).write_bytes(b"")
    line = convert_refused(capsys, tmp_path, folder, names=folder / DATA)
    assert "truncated" in line


def test_a_flipped_byte_fails_the_crc32c_naming_the_tensor(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    entry = bundle_entry(folder, KERNEL)
    data = bytearray((folder / DATA).read_bytes())
    data[entry.offset + 5] ^= 0x40
    (folder / DATA).write_bytes(bytes(data))
    line = convert_refused(capsys, tmp_path, folder, "-m", "tf1-to-torch", names=folder / DATA)
    assert f"Tensor '{KERNEL}'" in line and "checksum mismatch" in line


# ------------------------------------------------------------------------------ wrong and empty files


def _damage_first_bytes(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def _tf_index_magic(folder: Path) -> Path:
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF  # the table's magic number ends the file
    index.write_bytes(bytes(raw))
    return index


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("model.pt", lambda p: p.write_bytes(b"PK\x05\x06" + bytes(60)), "not a checkpoint"),
        ("model.safetensors", lambda p: p.write_bytes(b"\xff" * 8 + b'{"a": 1}'), "header claims"),
        ("model.weights.h5", lambda p: p.write_bytes(_damage_first_bytes(h5_bytes())), "HDF5"),
        ("model.h5", lambda p: p.write_bytes(_damage_first_bytes(h5_bytes())), "HDF5"),
        ("model.keras", lambda p: p.write_bytes(b"PK\x01\x02" + bytes(60)), "zip"),
        ("v1_model", lambda p: p.write_bytes(bytes(100)), "not a checkpoint"),
    ],
    ids=["torch", "safetensors", "keras3", "keras2", "keras-archive", "tf-v1"],
)
def test_wrong_magic_is_one_line_naming_the_file(capsys, tmp_path: Path, name: str, make, words: str) -> None:
    src = tmp_path / name
    make(src)
    assert words in convert_refused(capsys, tmp_path, src)


def test_wrong_magic_of_a_tf_index(capsys, tmp_path: Path) -> None:
    index = _tf_index_magic(copy_lstm2(tmp_path))
    assert "wrong magic number" in convert_refused(capsys, tmp_path, index.parent, names=index)


def h5_bytes() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["x"] = np.arange(3)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name",
    ["a.pt", "a.pth", "a.bin", "a.safetensors", "a.weights.h5", "a.h5", "a.keras", "v1_model", "a.index"],
)
def test_empty_files_of_every_format(capsys, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert "the file is empty" in convert_refused(capsys, tmp_path, tmp_path / name)


def test_an_empty_tf_index_named_by_its_prefix(capsys, tmp_path: Path) -> None:
    folder = copy_lstm2(tmp_path)
    (folder / "model.ckpt.index").write_bytes(b"")
    line = convert_refused(capsys, tmp_path, folder / "model.ckpt", names=folder / "model.ckpt.index")
    assert "the file is empty" in line


# ------------------------------------------------------------------------------------- torch files


def torch_zip(path: Path, members: dict[str, bytes], compress: set[str] = frozenset()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data, zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)
    return path


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(capsys, tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    attack = pickle.dumps({"weight": Call(os.system, f"touch {marker}")}, protocol=2)
    src = tmp_path / "attack.pt"
    if container == "zip":
        torch_zip(src, {"archive/data.pkl": attack, "archive/version": b"3\n"})
    else:
        legacy_file(src, attack)
    for command in (["inspect", src], ["convert", src, tmp_path / "out" / "x.safetensors"]):
        code, out, err = run(capsys, *command)
        line = assert_refused(code, out, err, src, nothing_in=tmp_path / "out")
        assert "not on ckptmap's allow-list" in line and "system" in line
    assert not marker.exists()


@pytest.fixture(scope="module")
def torch_members() -> dict[str, bytes]:
    """The members of a real torch.save file: {"w": arange(6), "b": arange(3)}."""
    with zipfile.ZipFile(SAMPLES / "torch_lstm.pt") as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _root(members: dict[str, bytes]) -> str:
    return next(iter(members)).split("/")[0]


def test_a_zip_holding_data_pkl_twice_is_refused(capsys, tmp_path: Path, torch_members) -> None:
    # zipfile keeps the last copy, other readers the first: which tensors the file holds is ambiguous.
    src = torch_zip(tmp_path / "dup.pt", torch_members)
    with zipfile.ZipFile(src, "a") as zf:
        zf.writestr(f"{_root(torch_members)}/data.pkl", pickle.dumps({}, protocol=2))
    assert "more than once" in convert_refused(capsys, tmp_path, src)


ODD_NAMES = {
    "absolute": "/{root}/data/9",
    "dotdot": "{root}/data/../../../etc/9",
    "dot": "{root}/./data/9",
    "backslashes": "{root}\\data\\9",
}


@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=list(ODD_NAMES))
def test_a_zip_member_that_is_not_a_plain_path_is_refused(capsys, tmp_path, torch_members, name: str) -> None:
    members = {**torch_members, name.format(root=_root(torch_members)): b"\0" * 8}
    src = torch_zip(tmp_path / "odd.pt", members)
    assert "not a path in its folder" in convert_refused(capsys, tmp_path, src)


def _declare_size(src: Path, member: str, size: int) -> None:
    """Patch the central directory so `member` claims `size` bytes (uncompressed and compressed)."""
    raw = bytearray(src.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + name_len].decode() == member:
            struct.pack_into("<II", raw, at + 20, size, size)
        at = raw.find(b"PK\x01\x02", at + 4)
    src.write_bytes(bytes(raw))


@pytest.mark.parametrize(("member", "words"), [("data.pkl", "implausibly large"), ("data/0", "truncated")])
def test_a_member_declaring_a_huge_size(capsys, tmp_path, torch_members, member: str, words: str) -> None:
    src = torch_zip(tmp_path / "huge.pt", torch_members)
    _declare_size(src, f"{_root(torch_members)}/{member}", 0xFFFF0000)
    assert words in convert_refused(capsys, tmp_path, src)


def test_a_compressed_data_pkl_reads_like_a_stored_one(capsys, tmp_path, torch_members) -> None:
    # torch never compresses, but a zip re-packed by hand may; that is still a valid checkpoint.
    root = _root(torch_members)
    src = torch_zip(tmp_path / "deflated.pt", torch_members, compress={f"{root}/data.pkl", f"{root}/data/0"})
    code, _, err = run(capsys, "convert", src, tmp_path / "out.safetensors")
    assert code == 0, err
    expected, got = ckptmap.load(SAMPLES / "torch_lstm.pt"), ckptmap.load(tmp_path / "out.safetensors")
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_compressed_pickle_bomb_is_refused_before_inflating(capsys, tmp_path, torch_members) -> None:
    # 300 MB of pickle opcodes deflate to 300 KB; unpickling them would take gigabytes.
    root = _root(torch_members)
    bomb = b"\x80\x02(" + b"N" * (300 << 20) + b"."
    src = torch_zip(tmp_path / "bomb.pt", {**torch_members, f"{root}/data.pkl": bomb}, {f"{root}/data.pkl"})
    assert "decompression bomb" in convert_refused(capsys, tmp_path, src)


def test_a_keras_archive_bomb_is_refused_before_inflating(capsys, tmp_path: Path, monkeypatch) -> None:
    # A .keras whose weights file declares 300 MB deflated to a few hundred KB: the same guard
    # as torch's, before anything is inflated to memory or to a temporary file.
    src = tmp_path / "bomb.keras"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": []}}')
        zf.writestr("model.weights.h5", bytes(300 << 20))
    real = zipfile.ZipExtFile.read

    def read(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        assert self.name != "model.weights.h5", "the bomb was inflated"
        return real(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    assert "decompression bomb" in convert_refused(capsys, tmp_path, src)


def test_a_view_that_repeats_its_storage_is_not_expanded(capsys, tmp_path: Path) -> None:
    # A 4-byte storage viewed with stride 0 as 2**20 x 2**20: reading it would copy 4 TB.
    import torch  # CI installs it: a broken install fails here instead of skipping

    src = tmp_path / "expanded.pt"
    torch.save({"w": torch.zeros(1).expand(1 << 20, 1 << 20), "ok": torch.arange(3.0).expand(2, 3)}, src)
    assert "refusing to expand it" in convert_refused(capsys, tmp_path, src)
    torch.save({"ok": torch.arange(3.0).expand(2, 3)}, src)  # small expanded views still read
    np.testing.assert_array_equal(ckptmap.load(src)["ok"], [[0, 1, 2], [0, 1, 2]])


def test_a_damaged_pickle_is_described_on_one_line() -> None:
    # The FLOAT opcode quotes its text, newline included, in the error it raises.
    with pytest.raises(FormatError, match="the pickle is damaged") as caught:
        torch_pickle.unpickle(b"Float\n.", "x.pt")
    assert "\n" not in str(caught.value)


# -------------------------------------------------------------------------------------- HDF5 files


def _h5(path: Path, build: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


@pytest.mark.parametrize(
    ("name", "build", "words"),
    [
        ("plain.h5", lambda f: f.create_dataset("x", data=[1, 2]), "without Keras weights"),
        ("plain.weights.h5", lambda f: f.create_dataset("x", data=[1, 2]), "not Keras 3 weights"),
        ("nothing.h5", lambda f: f.attrs.create("layer_names", np.array([], dtype="S1")), "holds no weights"),
    ],
    ids=["h5_without_layer_names", "weights_h5_without_layers", "layer_names_without_weights"],
)
def test_hdf5_files_without_weights(capsys, tmp_path: Path, name: str, build, words: str) -> None:
    assert words in convert_refused(capsys, tmp_path, _h5(tmp_path / name, build))


def _keras2_layer(f: h5py.File, weight: Callable[[h5py.Group], None]) -> None:
    f.attrs["layer_names"] = np.array([b"dense"])
    group = f.create_group("dense")
    group.attrs["weight_names"] = np.array([b"kernel:0"])
    weight(group)


def test_keras2_data_from_other_files_is_refused(capsys, tmp_path: Path) -> None:
    # External links and external raw storage would read any file this user can read as weights.
    secret = _h5(tmp_path / "secret.h5", lambda f: f.create_dataset("s", data=np.arange(4.0)))
    (tmp_path / "plain.bin").write_bytes(b"secret!!")
    cases = {
        "link.h5": lambda g: g.__setitem__("kernel:0", h5py.ExternalLink(str(secret), "/s")),
        "soft.h5": lambda g: g.__setitem__("kernel:0", h5py.SoftLink("/elsewhere")),
        "raw.h5": lambda g: g.create_dataset(
            "kernel:0", (8,), "u1", external=[(str(tmp_path / "plain.bin"), 0, 8)]
        ),
    }
    for name, weight in cases.items():
        src = _h5(tmp_path / name, lambda f, weight=weight: _keras2_layer(f, weight))
        line = convert_refused(capsys, tmp_path, src)
        assert "follows no links" in line or "outside the file" in line


@pytest.mark.parametrize("name", ["k.weights.h5", "k.h5"])
def test_an_external_link_to_a_fifo_does_not_block(tmp_path: Path, name: str) -> None:
    # HDF5 opens what an external link names; a FIFO would block that open forever.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def build(f: h5py.File) -> None:
        if name.endswith(".weights.h5"):
            f["layers"] = h5py.ExternalLink(str(fifo), "/")
        else:
            f.attrs["layer_names"] = np.array([b"dense"])
            f["dense"] = h5py.ExternalLink(str(fifo), "/")
            f["model_weights"] = h5py.ExternalLink(str(fifo), "/")

    src = _h5(tmp_path / name, build)
    line = assert_refused_process(run_cli("inspect", src, timeout=60), src)
    assert "follows no links" in line


def _damage_global_heap(data: bytes) -> bytes:
    """Give the first object of the first global heap collection the size 2**64-1: HDF5 1.14's
    H5HG__cache_heap_deserialize then steps by 0 bytes, forever."""
    at = data.find(b"GCOL\x01")
    assert at != -1, "no global heap to damage"
    out = bytearray(data)
    out[at + 16 + 8 : at + 16 + 16] = b"\xff" * 8  # collection header (16 bytes), then idx/refs/pad/size
    return bytes(out)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Keras 3 .weights.h5 and .keras archive and a Keras 2 .h5, each holding a global heap."""
    folder = tmp_path_factory.mktemp("keras")
    arrays = {"dense/kernel": np.ones((3, 2), np.float32), "dense/bias": np.zeros(2, np.float32)}
    ckpt = Checkpoint(
        [TensorEntry(n, a.shape, "float32", n, lambda a=a: a) for n, a in arrays.items()], format="numpy"
    )
    files = {
        "keras3": ckptmap.save(ckpt, folder / "m.weights.h5")[0],
        "keras2": ckptmap.save(ckpt, folder / "m.h5")[0],
    }
    archive = folder / "m.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": []}}')
        zf.writestr("model.weights.h5", files["keras3"].read_bytes())
    files["keras-archive"] = archive
    return files


@pytest.mark.parametrize("kind", ["keras3", "keras2", "keras-archive"])
def test_a_damaged_global_heap_does_not_hang_hdf5(tmp_path: Path, keras_files, kind: str) -> None:
    src = tmp_path / keras_files[kind].name
    if kind == "keras-archive":
        with zipfile.ZipFile(keras_files[kind]) as zin, zipfile.ZipFile(src, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info)
                zout.writestr(
                    info.filename, _damage_global_heap(data) if info.filename.endswith(".h5") else data
                )
    else:
        src.write_bytes(_damage_global_heap(keras_files[kind].read_bytes()))
    line = assert_refused_process(run_cli("convert", src, tmp_path / "out" / "x.pt", timeout=60), src)
    assert "global heap" in line and not (tmp_path / "out").exists()


def test_valid_keras_files_pass_the_global_heap_check(keras_files) -> None:
    for path in keras_files.values():
        ckpt = ckptmap.load(path)
        assert [ckpt[n].shape for n in ckpt] == [(3, 2), (2,)]


# ----------------------------------------------------------------------------- TF bundle internals


def test_a_string_tensor_whose_shape_its_data_does_not_back(tmp_path: Path) -> None:
    # 0 bytes of data for 2**31 strings: allocating the array first would take 16 GB.
    prefix = write_bundle(tmp_path / "model.ckpt", {b"names": raw_entry(7, (1 << 31,), crc=mask_crc(0))})
    done = run_cli("convert", prefix, tmp_path / "out" / "x.ckpt", memory=2 << 30, timeout=60)
    assert "string data does not fit its entry" in assert_refused_process(done, DATA)


def test_overlapping_slices_are_not_assembled_into_uninitialized_memory(capsys, tmp_path: Path) -> None:
    # Two copies of slice [0:2] of a (4,) tensor add up to 4 elements, yet [2:4] is never written.
    part = np.arange(2, dtype=np.float32).tobytes()
    slices = [[(0, 2)], [(0, 2)]]
    entries = {
        b"v": raw_entry(1, (4,), slices=slices),
        TensorSlice(((0, 2),)).key(b"v"): raw_entry(1, (2,), 8, mask_crc(google_crc32c.value(part))),
    }
    prefix = write_bundle(tmp_path / "model.ckpt", entries, part)
    line = convert_refused(capsys, tmp_path, prefix, names=tmp_path / "model.ckpt.index")
    assert "slices overlap" in line


def test_a_shape_whose_element_count_overflows(capsys, tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path / "model.ckpt", {b"w": raw_entry(1, (1 << 62, 4), crc=mask_crc(0))})
    line = convert_refused(capsys, tmp_path, prefix, names=tmp_path / "model.ckpt.index")
    assert "more elements than an int64 counts" in line


def test_a_slice_stored_with_another_dtype(capsys, tmp_path: Path) -> None:
    # Found by test_fuzz: a slice entry with dtype code 0 raised an error that named no file.
    part = np.arange(2, dtype=np.float32).tobytes()
    for code in (0, 2):  # not a TF dtype; float64 where the tensor is float32
        entries = {
            b"v": raw_entry(1, (2,), slices=[[(0, 2)]]),
            TensorSlice(((0, 2),)).key(b"v"): raw_entry(code, (2,), 8, mask_crc(google_crc32c.value(part))),
        }
        folder = tmp_path / f"dtype{code}"
        folder.mkdir()
        prefix = write_bundle(folder / "model.ckpt", entries, part)
        line = convert_refused(capsys, tmp_path, prefix, names=f"{prefix}.index")
        assert "Tensor 'v" in line


def test_a_name_with_a_line_break_still_gives_one_line(capsys, tmp_path: Path) -> None:
    # Found by test_fuzz: damage put a newline into a tensor name, and the message quoted it.
    prefix = write_bundle(tmp_path / "model.ckpt", {b"rnn/ker\nnel": raw_entry(1, (4,), 16, mask_crc(0))})
    line = convert_refused(capsys, tmp_path, prefix, names=tmp_path / DATA)
    assert "rnn/ker\\nnel" in line
    with pytest.raises(CkptmapError) as caught:  # the library's own message, not just the CLI's line
        ckptmap.load(prefix)["rnn/ker\nnel"]
    assert "\n" not in str(caught.value)


def test_a_keras2_weight_that_is_a_named_datatype(capsys, tmp_path: Path) -> None:
    # Found by test_fuzz: a committed datatype has a dtype but no shape and no data.
    def weight(group: h5py.Group) -> None:
        group["kernel:0"] = np.dtype("float32")

    src = _h5(tmp_path / "k.h5", lambda f: _keras2_layer(f, weight))
    assert "has no dataset" in convert_refused(capsys, tmp_path, src)


# ------------------------------------------------------------------------------------ mapping YAML

ALIAS_BOMB = (
    "name: bomb\nrules:\n  - match: x\n    drop: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"  - match: y{i}\n    drop: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: t\nrules:\n\t- rename: {a: b}\n", "found character '\\t'"),
        ("name: t\nfrobnicate: 1\nrules:\n  - rename: {a: b}\n", ":2: unknown key 'frobnicate'"),
        ("name: t\nrules:\n  - rename: {a: b}\n    frob: 1\n", ":4: unknown key 'frob' in rule 1"),
        ("name: t\nrules:\n  - match: 'rnn/(.*'\n    to: x\n", "line 3: bad regex"),
        ("name: t\nrules:\n  - rename: {'(?P<a>x': b}\n", "line 3: bad regex"),
        (
            "name: t\nrules:\n  - match: '(?P<p>.*)/lstm_cell/kernel'\n"
            "    to: {'{p}/k': 'src | reshape([7, 7])'}\n",
            "cannot become [7, 7]",
        ),
        ("rules: [\n", "not valid YAML"),
        ("name: t\nrules:\n  - rename: {?[1, 2]: b}\n", "line 3: a key must be a name"),
        ("name: t\nrules:\n  - cell: tf1.lstm\n    to: torch.lstm\n    make: [1]\n", "'make' maps"),
        ("name: t\nrules:\n  - cell: tf1.lstm\n    when: [1]\n    drop: x\n", "'when' maps"),
        ("name: t\nrules:\n  - match: x\n    inputs: [1]\n    to: {y: src}\n", "'inputs' maps"),
        ("name: t\nrules:\n  - match: {a: 1}\n    to: y\n", "'match' is a regex"),
        (
            "name: t\nrules:\n  - match: x\n    when: {bias: true}\n    to: y\n",
            "'when' takes ndim, not 'bias'",
        ),
        ("name: t\ninclude: [no-such-mapping]\nrules:\n  - rename: {a: b}\n", ":2: No built-in mapping"),
        (ALIAS_BOMB, "aliases here expand to more than"),
        ("rules: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    ],
    ids=[
        "tab",
        "unknown_top_key",
        "unknown_rule_key",
        "bad_match_regex",
        "bad_rename_regex",
        "reshape_to_wrong_size",
        "broken_yaml",
        "unhashable_key",
        "make_is_a_list",
        "when_is_a_list",
        "inputs_is_a_list",
        "match_is_a_mapping",
        "when_on_a_match_rule",
        "unknown_include",
        "alias_bomb",
        "deep_nesting",
    ],
)
def test_bad_mapping_files(capsys, tmp_path: Path, text: str, words: str) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    started = time.monotonic()
    line = convert_refused(capsys, tmp_path, LSTM2, "-m", mapping, names=mapping)
    assert words in line and time.monotonic() - started < 30


def test_a_mapping_file_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_bytes(b"name: \xff\xfe\n")
    assert "not UTF-8" in convert_refused(capsys, tmp_path, LSTM2, "-m", mapping, names=mapping)


# ---------------------------------------------------------------------------- destinations, writes


def keras_shaped_source(path: Path, tensors: int, shape: tuple[int, int]) -> Path:
    """A safetensors file of `dense_<i>/kernel` tensors, which every writer can place (Keras ones
    included); written a tensor at a time, so a large one never sits in memory."""
    entries = [
        TensorEntry(
            f"dense_{i}/kernel",
            shape,
            "float32",
            f"dense_{i}.kernel",
            lambda i=i: np.full(shape, i, np.float32),
        )
        for i in range(tensors)
    ]
    ckptmap.save(Checkpoint(entries, format="numpy"), path)
    return path


@pytest.fixture(scope="module")
def world_readable_dir() -> Iterator[Path]:
    """A directory under the system temp dir that another user can enter (pytest's is private)."""
    folder = Path(tempfile.mkdtemp(prefix="ckptmap-ro-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _others_can_reach(path: Path) -> bool:
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o004)


_PR_CAPBSET_DROP = 24
_DAC_CAPS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (linux/capability.h)


def unprivileged() -> Callable[[], None] | None:
    """What makes a child process obey file permissions: nothing for a normal user; for root,
    becoming `nobody` when it can still run this Python, else dropping the capabilities that let
    root ignore permissions (they leave the bounding set, so exec does not grant them)."""
    if os.geteuid() != 0:
        return None
    import ckptmap as package

    modules = [Path(sys.executable), Path(package.__file__), Path(np.__file__), Path(h5py.__file__)]
    if all(_others_can_reach(p) for p in modules):

        def become_nobody() -> None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        return become_nobody

    def drop_caps() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in _DAC_CAPS:
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop_caps


@pytest.mark.parametrize("to", ["tf", "torch", "safetensors", "keras3"])
@pytest.mark.parametrize("parent", ["read_only", "inside_read_only"])
def test_a_destination_in_a_read_only_directory(world_readable_dir: Path, to: str, parent: str) -> None:
    case = world_readable_dir / f"{to}-{parent}"
    case.mkdir()
    src = keras_shaped_source(case / "src.safetensors", 2, (4, 3))
    src.chmod(0o644)
    read_only = case / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    preexec = unprivileged()
    probe = subprocess.run([sys.executable, "-c", f"open({str(read_only / 'probe')!r}, 'w')"],
                           capture_output=True, preexec_fn=preexec)  # fmt: skip
    if probe.returncode == 0:
        pytest.skip("this user can write into a read-only directory here")
    dst = read_only / WRITERS[to].split("/")[1] if parent == "read_only" else read_only / WRITERS[to]
    done = run_cli("convert", src, dst, "--to", to, preexec=preexec)
    line = assert_refused_process(done, read_only)
    assert "not writable" in line or "Permission denied" in line
    assert list(read_only.iterdir()) == []


@pytest.fixture(scope="module")
def eight_mb_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keras_shaped_source(tmp_path_factory.mktemp("src") / "src.safetensors", 8, (512, 512))


def full_disk() -> None:
    """In the child: files may grow to 3 MB, and writing past that fails with EFBIG instead of
    killing the process (SIGXFSZ ignored), as ENOSPC fails a write on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))


@pytest.mark.parametrize("to", list(WRITERS))
def test_a_full_disk_mid_file_leaves_nothing(tmp_path: Path, eight_mb_source: Path, to: str) -> None:
    dst = tmp_path / WRITERS[to]
    done = run_cli("convert", eight_mb_source, dst, "--to", to, preexec=full_disk)
    line = assert_refused_process(done, dst.parent)
    assert "File too large" in line
    assert not dst.parent.exists(), list(dst.parent.iterdir())


@pytest.fixture(scope="module")
def gigabyte_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("big")
    yield keras_shaped_source(folder / "big.safetensors", 16, (4096, 4096))  # 16 x 64 MB
    shutil.rmtree(folder)


@pytest.mark.parametrize("to", list(WRITERS))
def test_ctrl_c_in_the_middle_of_a_write_leaves_nothing(
    tmp_path: Path, gigabyte_source: Path, to: str
) -> None:
    dst = tmp_path / WRITERS[to]
    command = ["convert", str(gigabyte_source), str(dst), "--to", to]
    process = subprocess.Popen(  # -X faulthandler: a hang below dumps its threads (SIGABRT)
        [sys.executable, "-X", "faulthandler", "-m", "ckptmap", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        temps = list(dst.parent.glob(".*.tmp")) if dst.parent.exists() else []
        if any(t.exists() and t.stat().st_size > (1 << 20) for t in temps):
            break  # the output is being written
        time.sleep(0.005)
    assert process.poll() is None, "the conversion finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=60)
        pytest.fail(f"still running 120 s after Ctrl-C; where its threads were:\n{err}")
    assert process.returncode == 130, err
    assert err == INTERRUPTED + "\n" and "Traceback" not in err
    assert not dst.parent.exists(), list(dst.parent.iterdir())


# -------------------------------------------------------------------------------------- the library


def test_library_errors_are_ckptmap_errors_with_one_line(tmp_path: Path) -> None:
    """The same inputs through the API: CkptmapError subclasses that also are the builtins."""
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CkptmapError) as caught:
        ckptmap.load(tmp_path / "e.safetensors")
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError):
        ckptmap.load(tmp_path / "missing.pt")
