"""The "torch" zip format against real torch: files torch.save writes are read exactly (every
dtype, views, nested training checkpoints, pickled modules) without importing torch, and files
ckptmap writes load with `torch.load(weights_only=True)` (and mmap) into fresh RNN modules."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

import ckptmap
from ckptmap.errors import CkptmapError, FormatError, UnsupportedError
from ckptmap.formats import torch_legacy, torch_zip
from ckptmap.tree import Checkpoint, TensorEntry
from tests.torchfiles import Call

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"

RNNS = {
    "lstm": lambda: torch.nn.LSTM(3, 4),
    "lstm_bi_2layers": lambda: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: torch.nn.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True),
    "gru_bi": lambda: torch.nn.GRU(3, 4, bidirectional=True),
    "gru_2layers": lambda: torch.nn.GRU(3, 4, num_layers=2, batch_first=True),
    "rnn_relu": lambda: torch.nn.RNN(3, 4, nonlinearity="relu", num_layers=2),
}


def distinct(module: torch.nn.Module) -> torch.nn.Module:
    """Every element of every parameter different, so a transpose or gate swap shows."""
    with torch.no_grad():
        start = 0
        for p in module.parameters():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float32).reshape(p.shape) / 100)
            start += p.numel()
    return module


class Seq2Seq(torch.nn.Module):
    """A model whose class the reader cannot import: pickled whole by torch.save(model)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.LSTM(3, 4, bidirectional=True)
        self.decoder = torch.nn.GRU(8, 4)
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))
        self.register_buffer("steps", torch.tensor(7))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)


def assert_same(ckpt: Checkpoint, sd: dict[str, torch.Tensor]) -> None:
    """Names, order, dtypes and values exactly as torch loads them."""
    assert list(ckpt.entries) == [k.replace(".", "/") for k in sd]
    for key, tensor in sd.items():
        entry = ckpt.entries[key.replace(".", "/")]
        expected = tensor.detach().resolve_conj().resolve_neg()
        got = ckpt[entry.name]
        assert entry.key == key and got.shape == tuple(expected.shape) and got.flags.c_contiguous
        if expected.dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(
                got.view(np.uint16), expected.view(torch.int16).numpy().view(np.uint16)
            )
        else:
            assert got.dtype == expected.numpy().dtype
            np.testing.assert_array_equal(got, expected.numpy())


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("kind", RNNS, ids=list(RNNS))
def test_reads_rnn_state_dicts_exactly(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "rnn.pt"
    torch.save(distinct(RNNS[kind]()).state_dict(), path)
    assert torch_zip.sniff(path) and not torch_legacy.sniff(path)
    ckpt = torch_zip.read(path)
    assert ckpt.format == "torch" and ckpt.files == (path,) and ckpt.notes == []
    assert_same(ckpt, torch.load(path, weights_only=True))


@pytest.mark.parametrize("protocol", [4, 5])
def test_reads_files_pickled_at_newer_protocols(tmp_path: Path, protocol: int) -> None:
    # Protocols 4+ frame the pickle and name globals with STACK_GLOBAL instead of GLOBAL.
    model = distinct(torch.nn.LSTM(3, 4, bidirectional=True))
    torch.save({"model": model.state_dict(), "epoch": 1}, tmp_path / "p.pt", pickle_protocol=protocol)
    assert_same(torch_zip.read(tmp_path / "p.pt"), model.state_dict())


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
          torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool, torch.complex64,
          torch.complex128]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d)[6:] for d in DTYPES])
def test_reads_every_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    # uint16/32/64 go through _rebuild_tensor_v3 with an UntypedStorage; the rest through v2.
    values = torch.arange(-3, 9).reshape(3, 4) % (2 if dtype == torch.bool else 1000)
    sd = {
        "grid": values.to(dtype),
        "scalar": torch.tensor(5).to(dtype),
        "empty": torch.zeros(0, 2, dtype=dtype),
    }
    torch.save(sd, tmp_path / "d.pt")
    assert_same(torch_zip.read(tmp_path / "d.pt"), torch.load(tmp_path / "d.pt", weights_only=True))


def test_views_and_shared_storages_come_out_as_torch_shows_them(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "transposed": base.t(),  # stride (1, 6)
        "row": base[2],  # storage offset 12
        "columns": base[:, 1:5:2],  # offset and step
        "whole": base,  # same storage as all the above
        "expanded": torch.arange(3.0).expand(4, 3),  # stride 0
        "permuted": torch.arange(24.0).reshape(2, 3, 4).permute(2, 0, 1),
        "scalar": torch.tensor(2.5),
        "conj": torch.tensor([1 + 2j, 3 - 1j]).conj(),  # saved with the conj bit, data not conjugated
        "neg": torch.tensor([1.0, 2.0])._neg_view(),
    }
    torch.save(sd, tmp_path / "v.pt")
    ckpt = torch_zip.read(tmp_path / "v.pt")
    assert_same(ckpt, torch.load(tmp_path / "v.pt", weights_only=True))
    # The first four share one storage: six storages for nine tensors.
    assert len([n for n in zipfile.ZipFile(tmp_path / "v.pt").namelist() if "/data/" in n]) == 6


def test_odd_tensor_pickles_are_read(tmp_path: Path) -> None:
    # A Parameter with attributes (_rebuild_parameter_with_state) and a tensor with a Python
    # attribute (_rebuild_from_type_v2) are pickled differently from plain tensors.
    param = torch.nn.Parameter(torch.arange(4.0))
    param.tag = "x"
    tagged = torch.arange(3.0)
    tagged.note = 5
    torch.save({"param": param, "tagged": tagged}, tmp_path / "odd.pt")
    assert_same(torch_zip.read(tmp_path / "odd.pt"), torch.load(tmp_path / "odd.pt", weights_only=True))


def test_training_checkpoint_exposes_the_model_state_dict(tmp_path: Path) -> None:
    model = distinct(torch.nn.LSTM(3, 4, num_layers=2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 2, 3))[0].sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "c.pt")
    ckpt = torch_zip.read(tmp_path / "c.pt")
    assert_same(ckpt, model.state_dict())
    assert ckpt.notes == ["picked the state dict under 'model' (also present: optimizer, epoch)"]
    assert ckpt.metadata == {"epoch": 3}


def test_nested_choice_prefers_conventional_keys_then_more_tensors(tmp_path: Path) -> None:
    small, big = torch.nn.GRU(2, 2).state_dict(), torch.nn.LSTM(2, 2, num_layers=2).state_dict()
    torch.save({"ema": big, "state_dict": small}, tmp_path / "a.pt")
    assert_same(torch_zip.read(tmp_path / "a.pt"), small)
    torch.save({"a": small, "b": big}, tmp_path / "b.pt")
    ckpt = torch_zip.read(tmp_path / "b.pt")
    assert_same(ckpt, big)
    assert ckpt.notes == ["picked the state dict under 'b' (also present: a)"]


def test_pickled_module_gives_the_names_state_dict_gives(tmp_path: Path) -> None:
    model = distinct(Seq2Seq())
    torch.save(model, tmp_path / "m.pt")
    ckpt = torch_zip.read(tmp_path / "m.pt")
    assert_same(ckpt, model.state_dict())  # no 'scratch': it is a non-persistent buffer
    assert ckpt.notes == [
        f"the file holds a pickled {__name__}.Seq2Seq; its parameters and buffers were read without "
        "running any of its code"
    ]


def test_pickled_module_inside_a_dict(tmp_path: Path) -> None:
    model = distinct(torch.nn.GRU(3, 4, bidirectional=True))
    torch.save({"model": model, "epoch": 1}, tmp_path / "m.pt")
    ckpt = torch_zip.read(tmp_path / "m.pt")
    assert_same(ckpt, model.state_dict())
    assert ckpt.notes[0].startswith(
        "picked the pickled torch.nn.modules.rnn.GRU under 'model' (also present: epoch)"
    )


@pytest.mark.parametrize("what", ["state_dict", "module"])
def test_reading_never_imports_torch(tmp_path: Path, what: str) -> None:
    model = distinct(Seq2Seq())
    torch.save(model.state_dict() if what == "state_dict" else model, tmp_path / "m.pt")
    code = (
        "import sys; from ckptmap.formats import torch_zip; c = torch_zip.read(sys.argv[1]); "
        "total = sum(float(c[n].astype('float64').sum()) for n in c); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(len(c), total)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(len(model.state_dict()))


def test_big_endian_file_is_byteswapped(tmp_path: Path) -> None:
    # No big-endian machine here: rewrite a torch file as one would write it (byteorder "big",
    # storages swapped); torch.load itself swaps such files back.
    sd = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "i": torch.tensor([1, -2], dtype=torch.int64),
        "h": torch.arange(3).to(torch.bfloat16),
        "c": torch.tensor([1 + 2j], dtype=torch.complex64),
    }
    torch.save(sd, tmp_path / "le.pt")
    keys = {str(i): t for i, t in enumerate(sd.values())}  # torch numbers storages in pickle order
    with zipfile.ZipFile(tmp_path / "le.pt") as src, zipfile.ZipFile(tmp_path / "be.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            kind = info.filename.split("/", 1)[1]
            if kind == "byteorder":
                data = b"big"
            elif kind.startswith("data/"):
                t = keys[kind[5:]]
                unit = t.element_size() // (2 if t.is_complex() else 1)
                data = np.frombuffer(data, f"<u{unit}").astype(f">u{unit}").tobytes()
            dst.writestr(info.filename, data)
    ckpt = torch_zip.read(tmp_path / "be.pt")
    assert_same(ckpt, torch.load(tmp_path / "be.pt", weights_only=True))
    assert "big-endian" in ckpt.notes[-1]


@pytest.mark.skipif(not (REAL / "torch_bilstm2_zip").exists(), reason="real checkpoints not present")
def test_real_bidirectional_lstm_checkpoint() -> None:
    path = REAL / "torch_bilstm2_zip" / "bilstm.pt"  # saved from an MPS device by an older torch
    ckpt = torch_zip.read(path)
    assert_same(ckpt, torch.load(path, weights_only=True, map_location="cpu"))
    assert "rnn/weight_hh_l1_reverse" in ckpt


def test_torchscript_archive_is_refused_with_a_hint(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.GRU(2, 3)), tmp_path / "jit.pt")
    with pytest.raises(UnsupportedError, match="TorchScript") as info:
        torch_zip.read(tmp_path / "jit.pt")
    assert "state_dict" in (info.value.hint or "")


# ------------------------------------------------------------------------------------------ bad input


def small_file(tmp_path: Path) -> Path:
    torch.save(distinct(torch.nn.GRU(2, 3)).state_dict(), tmp_path / "g.pt")
    return tmp_path / "g.pt"


def read_all(path: Path) -> None:
    ckpt = torch_zip.read(path)
    for name in ckpt:
        ckpt[name]


def test_every_truncation_is_a_format_error(tmp_path: Path) -> None:
    data = small_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.pt"
    for size in range(0, len(data), 37):
        cut.write_bytes(data[:size])
        with pytest.raises(CkptmapError, match=str(cut)):
            read_all(cut)


def test_corrupted_bytes_raise_only_ckptmap_errors(tmp_path: Path) -> None:
    data = bytearray(small_file(tmp_path).read_bytes())
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.pt"
    for _ in range(300):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), 3):
            damaged[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(damaged))
        try:
            read_all(bad)
        except CkptmapError as e:
            assert "\n" not in str(e)


def test_damaged_storage_bytes_fail_the_checksum(tmp_path: Path) -> None:
    path = small_file(tmp_path)
    flip_stored_byte(path, "g/data/0", 5)
    with pytest.raises(FormatError, match=r"checksum mismatch in g/data/0"):
        read_all(path)


def flip_stored_byte(path: Path, member: str, at: int) -> None:
    """Flip bits of byte `at` of a stored zip member's data, leaving its recorded CRC32 as it was."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[info.header_offset + 30 + len(info.filename) + extra_len + at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("to", ["out.safetensors", "out.pt", "tf/model.ckpt"])
def test_a_checksum_checked_while_writing_still_stops_the_output(tmp_path, monkeypatch, threads, to) -> None:
    """While converting, a storage's CRC32 is checked beside the writing of its bytes (with more
    than one thread); a mismatch must still fail the run and leave nothing behind."""
    monkeypatch.setenv("CKPTMAP_THREADS", threads)
    path = tmp_path / "big.pt"
    torch.save({"w": torch.arange(1 << 20, dtype=torch.float32), "b": torch.ones(3)}, path)
    flip_stored_byte(path, "big/data/0", 12345)
    with pytest.raises(FormatError, match=r"checksum mismatch in big/data/0"):
        ckptmap.convert(path, tmp_path / to)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["big.pt"]


def test_views_of_one_storage_check_it_once(tmp_path: Path, monkeypatch) -> None:
    """Three tensors sharing a storage: its CRC32 is computed once, also while an earlier view's
    check is still running beside the writing."""
    from ckptmap import parallel

    monkeypatch.setenv("CKPTMAP_THREADS", "2")
    base = torch.arange(1 << 22, dtype=torch.float32)  # 16 MB
    torch.save({"a": base[: 1 << 20], "b": base[1 << 20 : 1 << 21], "c": base}, tmp_path / "views.pt")
    sizes: list[int] = []
    real = parallel.crc32

    def counted(data, value=0):
        sizes.append(len(memoryview(data).cast("B")))
        if sizes[-1] == base.nbytes:
            time.sleep(0.3)  # still running while the next views are read (ISA-L takes ~1 ms)
        return real(data, value)

    monkeypatch.setattr(parallel, "crc32", counted)
    ckptmap.convert(tmp_path / "views.pt", tmp_path / "views.safetensors")
    assert sizes.count(base.nbytes) == 1, sizes


def test_files_saved_without_checksums_are_read(tmp_path: Path) -> None:
    from torch.utils.serialization import config

    # torch's own patch, not monkeypatch: pytest >= 9.2 undoes setattr with delattr, which torch's
    # config module takes as deleting the option for every later torch.save in the process.
    with config.patch({"save.compute_crc32": False}):  # torch then writes CRC 0 everywhere
        torch.save({"w": torch.arange(4.0)}, tmp_path / "nocrc.pt")
    assert_same(torch_zip.read(tmp_path / "nocrc.pt"), {"w": torch.arange(4.0)})


# {"w": _rebuild_tensor_v2(("storage", FloatStorage, "0", "cpu", 2), 0, (2,), (1,), False, None)}
MISSING_STORAGE = (
    b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
    b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x02\x85K\x01\x85\x89NtRs."
)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"x/version": b"3\n"}, r"no x/data\.pkl"),
        ({"x/data.pkl": b"\x80\x02}q\x00.", "x/byteorder": b"middle"}, "unknown byte order"),
        ({"x/data.pkl": b"\x80\x02}X\x01\x00\x00\x00aK\x01s."}, r"holds no tensors \(top-level keys: a\)"),
        ({"x/data.pkl": b"not a pickle"}, "pickle is damaged"),
        # A state dict that names storage '0' but the archive has no x/data/0.
        ({"x/data.pkl": MISSING_STORAGE}, "storage '0' is missing"),
    ],
    ids=["no_data_pkl", "bad_byteorder", "no_tensors", "not_a_pickle", "missing_storage"],
)
def test_malformed_archives_are_format_errors(tmp_path: Path, members: dict[str, bytes], match: str) -> None:
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(FormatError, match=match):
        read_all(path)


class _Storage:
    """Pickled as torch pickles a storage: by persistent id, ("storage", type, key, location, numel)."""

    def __init__(self, stype: type, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        if isinstance(obj, _Storage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


def _tensor(storage: _Storage, numel: int) -> Call:
    return Call(torch._utils._rebuild_tensor_v2, storage, 0, (numel,), (1,), False, OrderedDict())


@pytest.mark.parametrize(
    ("second", "refused"),
    [
        ((torch.FloatStorage, 4), False),  # views of one storage: legitimate
        ((torch.FloatStorage, 2), True),
        ((torch.DoubleStorage, 4), True),
    ],
    ids=["same", "other_size", "other_type"],
)
def test_a_storage_declared_twice_differently_is_refused(tmp_path: Path, second: tuple, refused: bool):
    # Storage '0' first as 4 floats, then again: torch takes the first declaration whatever the
    # second says, so a tensor's dtype and bounds were checked against a storage it is not
    # (torch_legacy refused this already).
    stype, numel = second
    first = _Storage(torch.FloatStorage, "0", 4)
    state = {"a": _tensor(first, 4), "b": _tensor(_Storage(stype, "0", numel), 2)}
    buffer = io.BytesIO()
    _StoragePickler(buffer, protocol=2).dump(state)
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/data.pkl", buffer.getvalue())
        zf.writestr("x/data/0", np.arange(4, dtype="<f4").tobytes())
    if not refused:
        ckpt = torch_zip.read(path)
        np.testing.assert_array_equal(ckpt["a"], np.arange(4, dtype=np.float32))
        np.testing.assert_array_equal(ckpt["b"], np.arange(2, dtype=np.float32))
        return
    twice = r"x\.pt: storage '0' is declared twice, with different types or sizes"
    with pytest.raises(FormatError, match=twice) as err:
        torch_zip.read(path)
    assert "\n" not in str(err.value)


def test_sniff_says_no_to_other_files_without_raising(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("config.json", "{}")
    torch.save({"a": torch.ones(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ["empty.pt", "text.pt", "other.zip", "legacy.pt", "missing.pt"]:
        assert torch_zip.sniff(tmp_path / name) is False
    assert torch_zip.sniff(tmp_path) is False  # a directory


def test_empty_file_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(FormatError, match=r"e\.pt: the file is empty"):
        torch_zip.read(tmp_path / "e.pt")


# ------------------------------------------------------------------------------------------ writing


def numpy_checkpoint(arrays: dict[str, np.ndarray]) -> Checkpoint:
    from ckptmap import dtypes

    return Checkpoint(
        [
            TensorEntry(n, a.shape, dtypes.from_numpy(a.dtype).name, n, lambda a=a: a)
            for n, a in arrays.items()
        ],
        format="memory",
    )


@pytest.mark.parametrize("kind", RNNS, ids=list(RNNS))
def test_written_file_restores_a_fresh_module_exactly(tmp_path: Path, kind: str) -> None:
    source = distinct(RNNS[kind]())
    torch.save(source.state_dict(), tmp_path / "src.pt")
    assert torch_zip.write(torch_zip.read(tmp_path / "src.pt"), tmp_path / "out.pt") == [tmp_path / "out.pt"]
    sd = torch.load(tmp_path / "out.pt", weights_only=True)
    assert type(sd) is OrderedDict and list(sd) == list(source.state_dict())
    fresh = RNNS[kind]()
    fresh.load_state_dict(sd, strict=True)
    xs = torch.randn(5, 2, 3)
    with torch.no_grad():
        assert torch.equal(fresh(xs)[0], source(xs)[0])
    for key, value in source.state_dict().items():
        assert torch.equal(sd[key], value) and sd[key].is_contiguous()


def test_written_file_from_numpy_entries_loads_into_gru(tmp_path: Path) -> None:
    ref = distinct(torch.nn.GRU(3, 4, bidirectional=True))
    ckpt = numpy_checkpoint({k.replace(".", "/"): v.numpy().copy() for k, v in ref.state_dict().items()})
    torch_zip.write(ckpt, tmp_path / "gru.pt")
    fresh = torch.nn.GRU(3, 4, bidirectional=True)
    fresh.load_state_dict(torch.load(tmp_path / "gru.pt", weights_only=True), strict=True)
    xs = torch.randn(4, 1, 3)
    with torch.no_grad():
        assert torch.equal(fresh(xs)[0], ref(xs)[0])


def test_written_file_loads_with_mmap_and_torch_computed_offsets(tmp_path: Path, monkeypatch) -> None:
    # calculate_storage_offsets makes torch compute each storage's offset as miniz lays records
    # out instead of reading the headers; TORCH_SERIALIZATION_DEBUG makes it check them.
    from torch.utils.serialization import config

    ref = distinct(torch.nn.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True)).state_dict()
    ckpt = numpy_checkpoint({k: v.numpy() for k, v in ref.items()} | {"empty": np.zeros((0, 3), np.float32)})
    torch_zip.write(ckpt, tmp_path / "m.pt")
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")
    with config.patch({"load.calculate_storage_offsets": True}):  # torch's patch: see above
        for mmap in (False, True):
            sd = torch.load(tmp_path / "m.pt", weights_only=True, mmap=mmap)
            assert all(torch.equal(sd[k], v) for k, v in ref.items())
    with zipfile.ZipFile(tmp_path / "m.pt") as zf:
        assert zf.testzip() is None  # CRCs right
        raw = (tmp_path / "m.pt").read_bytes()
        for info in zf.infolist():
            name_len, extra_len = np.frombuffer(raw[info.header_offset + 26 : info.header_offset + 30], "<u2")
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_writes_every_dtype(tmp_path: Path) -> None:
    grid = np.arange(-2, 10).reshape(3, 4)
    arrays = {}
    for d in DTYPES:
        t = torch.from_numpy(grid % 2 if d == torch.bool else grid).to(d)
        arrays[str(d)[6:]] = (
            t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if d == torch.bfloat16 else t.numpy()
        )
    arrays |= {"zero_dim": np.array(3.5, np.float32), "empty": np.zeros((2, 0), np.int64)}
    torch_zip.write(numpy_checkpoint(arrays), tmp_path / "all.pt")
    sd = torch.load(tmp_path / "all.pt", weights_only=True)
    for name, array in arrays.items():
        t = sd[name]
        got = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16 else t.numpy()
        assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array), name
    assert sd["bfloat16"].dtype == torch.bfloat16 and sd["uint16"].dtype == torch.uint16


def test_empty_state_dicts_round_trip(tmp_path: Path) -> None:
    torch.save(torch.nn.ReLU().state_dict(), tmp_path / "relu.pt")
    assert len(torch_zip.read(tmp_path / "relu.pt")) == 0
    torch_zip.write(Checkpoint([], format="memory"), tmp_path / "empty.pt")
    assert torch.load(tmp_path / "empty.pt", weights_only=True) == OrderedDict()
    assert len(torch_zip.read(tmp_path / "empty.pt")) == 0


def test_write_reports_progress_per_tensor(tmp_path: Path) -> None:
    ckpt = numpy_checkpoint({"a": np.ones((3, 4), np.float32), "b": np.ones(5, np.float64)})
    seen: list[int] = []
    torch_zip.write(ckpt, tmp_path / "p.pt", progress=seen.append)
    assert seen == [48, 40]


def test_forced_zip64_records_load_in_torch(tmp_path: Path, monkeypatch) -> None:
    # Files past 4 GiB need zip64 records; lowering the threshold exercises that path cheaply.
    monkeypatch.setattr(torch_zip, "_ZIP64_AT", 1000)
    ref = distinct(torch.nn.GRU(20, 30)).state_dict()
    torch_zip.write(numpy_checkpoint({k: v.numpy() for k, v in ref.items()}), tmp_path / "z.pt")
    with zipfile.ZipFile(tmp_path / "z.pt") as zf:
        assert zf.testzip() is None
    for mmap in (False, True):
        sd = torch.load(tmp_path / "z.pt", weights_only=True, mmap=mmap)
        assert all(torch.equal(sd[k], v) for k, v in ref.items())
    assert_same(torch_zip.read(tmp_path / "z.pt"), ref)


@pytest.mark.parametrize(
    ("entries", "error", "match"),
    [
        (
            [TensorEntry("s", (1,), "string", "s", lambda: np.array([b"x"], object))],
            UnsupportedError,
            "string",
        ),
        (
            [TensorEntry(n, (1,), "float32", n, lambda: np.ones(1, np.float32)) for n in ("a/b", "a.b")],
            UnsupportedError,
            "'a.b'",
        ),
        ([TensorEntry("f", (1,), "float32", "f", lambda: np.ones(1, np.float64))], FormatError, "float64"),
    ],
    ids=["string_dtype", "name_collision", "loader_dtype_mismatch"],
)
def test_write_refuses_what_torch_cannot_hold(tmp_path: Path, entries, error, match) -> None:
    with pytest.raises(error, match=match):
        torch_zip.write(Checkpoint(entries, format="memory"), tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_huge_stride_on_a_dimension_of_one_is_read(tmp_path: Path) -> None:
    # torch never uses the stride of a dimension of size 1 and saves any; found by the fuzz tests
    # (numpy's as_strided raised OverflowError on 2**62 * itemsize).
    w = torch.as_strided(torch.arange(4.0), (1, 2), (2**62, 1))
    torch.save({"w": w}, tmp_path / "strided.pt")
    np.testing.assert_array_equal(torch_zip.read(tmp_path / "strided.pt")["w"], w.numpy())
