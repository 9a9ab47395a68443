"""The "torch-legacy" format (torch.save with `_use_new_zipfile_serialization=False`, the only
format before PyTorch 1.6) against real torch: every dtype, shared storages, storage views,
nested checkpoints and pickled modules, read without importing torch; damaged files refused."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from ckptmap.errors import CkptmapError, FormatError, UnsupportedError
from ckptmap.formats import safetensors_file, torch_legacy, torch_zip
from ckptmap.tree import Checkpoint

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


def save_legacy(obj: object, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def distinct(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        start = 0
        for p in module.parameters():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float32).reshape(p.shape) / 100)
            start += p.numel()
    return module


class Tagger(torch.nn.Module):
    """Pickled whole: the legacy format adds ("module", cls, file, source) persistent ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.rnn = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        self.out = torch.nn.Linear(8, 2)
        self.register_buffer("mask", torch.tensor([True, False]))
        self.register_buffer("cache", torch.zeros(2), persistent=False)


def assert_same(ckpt: Checkpoint, sd: dict[str, torch.Tensor]) -> None:
    assert list(ckpt.entries) == [k.replace(".", "/") for k in sd]
    for key, tensor in sd.items():
        got, expected = ckpt[key.replace(".", "/")], tensor.detach()
        assert got.shape == tuple(expected.shape) and got.flags.c_contiguous
        if expected.dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(
                got.view(np.uint16), expected.view(torch.int16).numpy().view(np.uint16)
            )
        else:
            assert got.dtype == expected.numpy().dtype
            np.testing.assert_array_equal(got, expected.numpy())


RNNS = {
    "lstm_bi_2layers": lambda: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: torch.nn.LSTM(3, 5, proj_size=2),
    "gru": lambda: torch.nn.GRU(3, 4, num_layers=2),
    "rnn_bi": lambda: torch.nn.RNN(3, 4, bidirectional=True),
}


@pytest.mark.parametrize("kind", RNNS, ids=list(RNNS))
def test_reads_rnn_state_dicts_exactly(tmp_path: Path, kind: str) -> None:
    path = save_legacy(distinct(RNNS[kind]()).state_dict(), tmp_path / "r.pt")
    assert torch_legacy.sniff(path) and not torch_zip.sniff(path) and not safetensors_file.sniff(path)
    ckpt = torch_legacy.read(path)
    assert ckpt.format == "torch-legacy" and ckpt.files == (path,)
    assert_same(ckpt, torch.load(path, weights_only=True))


def test_reads_files_pickled_at_protocol_4(tmp_path: Path) -> None:
    sd = distinct(torch.nn.GRU(3, 4)).state_dict()
    torch.save(sd, tmp_path / "p.pt", _use_new_zipfile_serialization=False, pickle_protocol=4)
    assert torch_legacy.sniff(tmp_path / "p.pt")  # the magic number now sits in a FRAME
    assert_same(torch_legacy.read(tmp_path / "p.pt"), sd)


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
          torch.int64, torch.uint8, torch.uint16, torch.uint64, torch.bool, torch.complex64]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d)[6:] for d in DTYPES])
def test_reads_every_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    # uint16/uint64 are saved as an UntypedStorage counted in bytes, not elements.
    values = torch.arange(-3, 9).reshape(3, 4) % (2 if dtype == torch.bool else 1000)
    sd = {"grid": values.to(dtype), "scalar": torch.tensor(1).to(dtype), "empty": torch.zeros(0, dtype=dtype)}
    path = save_legacy(sd, tmp_path / "d.pt")
    if dtype in (torch.uint16, torch.uint64):
        # torch 2.13 cannot load these itself (`_legacy_load` asks UntypedStorage for a dtype).
        with pytest.raises(AttributeError):
            torch.load(path, weights_only=False)
        assert_same(torch_legacy.read(path), sd)
    else:
        assert_same(torch_legacy.read(path), torch.load(path, weights_only=True))


def test_views_sharing_a_storage(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"t": base.t(), "row": base[1], "cols": base[:, ::2], "base": base, "scalar": torch.tensor(3.0)}
    path = save_legacy(sd, tmp_path / "v.pt")
    assert_same(torch_legacy.read(path), torch.load(path, weights_only=True))


def test_storage_views_of_old_files(tmp_path: Path) -> None:
    # torch < 1.0 could save storage views: ("storage", type, root, location, numel, (view_key,
    # offset, size)). Modern torch never writes them but still reads them; build one by hand.
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, tuple) and obj and obj[0] == "pid":
                return obj[1]
            return None

    def tensor(view: tuple | None, offset: int, size: tuple, stride: tuple) -> object:
        pid = ("pid", ("storage", torch.FloatStorage, "root", "cpu", 10, view))
        return torch._utils._rebuild_tensor_v2, (pid, offset, size, stride, False, {})

    class Reduce:
        def __init__(self, spec: tuple) -> None:
            self.spec = spec

        def __reduce__(self) -> tuple:
            return self.spec

    obj = {
        "whole": Reduce(tensor(None, 0, (2, 5), (5, 1))),
        "view": Reduce(tensor(("v", 4, 6), 1, (2, 2), (1, 2))),
    }
    buf = io.BytesIO()
    for header in (torch_legacy.MAGIC_NUMBER, torch_legacy.PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(obj)
    pickle.dump(["root"], buf, protocol=2)
    buf.write((10).to_bytes(8, "little") + np.arange(10, dtype="<f4").tobytes())
    (tmp_path / "views.pt").write_bytes(buf.getvalue())
    expected = torch.load(tmp_path / "views.pt", weights_only=False)
    assert expected["view"].tolist() == [[5.0, 7.0], [6.0, 8.0]]
    assert_same(torch_legacy.read(tmp_path / "views.pt"), expected)


def test_training_checkpoint_exposes_the_model_state_dict(tmp_path: Path) -> None:
    model = distinct(torch.nn.GRU(3, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 3))[0].sum().backward()
    opt.step()
    path = save_legacy({"model_state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 9},
                       tmp_path / "c.pt")  # fmt: skip
    ckpt = torch_legacy.read(path)
    assert_same(ckpt, model.state_dict())
    assert ckpt.notes == ["picked the state dict under 'model_state_dict' (also present: optimizer, epoch)"]


def test_pickled_module_gives_the_names_state_dict_gives(tmp_path: Path) -> None:
    model = distinct(Tagger())
    path = save_legacy(model, tmp_path / "m.pt")
    ckpt = torch_legacy.read(path)
    assert_same(ckpt, model.state_dict())
    assert ckpt.notes[0].startswith(f"the file holds a pickled {__name__}.Tagger; ")


def test_reading_never_imports_torch(tmp_path: Path) -> None:
    path = save_legacy(distinct(Tagger()), tmp_path / "m.pt")
    code = (
        "import sys; from ckptmap.formats import torch_legacy; c = torch_legacy.read(sys.argv[1]); "
        "[c[n] for n in c]; assert 'torch' not in sys.modules, 'torch imported'; print(len(c))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(Tagger().state_dict()))


@pytest.mark.skipif(not (REAL / "torch_gru_legacy").exists(), reason="real checkpoints not present")
def test_real_gru_checkpoint_saved_on_a_gpu_under_windows_sizes() -> None:
    path = REAL / "torch_gru_legacy" / "gru.pt"  # sys_info says long is 4 bytes; storages on cuda:0
    ckpt = torch_legacy.read(path)
    assert_same(ckpt, torch.load(path, weights_only=True, map_location="cpu"))
    assert ckpt.entries["gru/weight_ih_l0"].shape == (192, 200)


# ------------------------------------------------------------------------------------------ bad input


def test_every_truncation_is_a_format_error(tmp_path: Path) -> None:
    data = save_legacy(distinct(torch.nn.GRU(2, 3)).state_dict(), tmp_path / "g.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    for size in range(0, len(data), 23):
        cut.write_bytes(data[:size])
        with pytest.raises(CkptmapError, match=str(cut)):
            ckpt = torch_legacy.read(cut)
            [ckpt[n] for n in ckpt]


def test_corrupted_bytes_raise_only_ckptmap_errors(tmp_path: Path) -> None:
    data = save_legacy(distinct(torch.nn.GRU(2, 3)).state_dict(), tmp_path / "g.pt").read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.pt"
    for _ in range(300):
        damaged = bytearray(data)
        for pos in rng.integers(0, 900, 2):  # the pickles, where damage changes structure
            damaged[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(damaged))
        try:
            ckpt = torch_legacy.read(bad)
            [ckpt[n] for n in ckpt]
        except CkptmapError as e:
            assert "\n" not in str(e)


@pytest.mark.parametrize(
    ("pickles", "match"),
    [
        ([12345], "bad magic number"),
        ([torch_legacy.MAGIC_NUMBER, 999], "protocol version 999"),
        ([torch_legacy.MAGIC_NUMBER, 1001, {}, {"w": 1}], "no tensors"),
    ],
    ids=["bad_magic", "bad_protocol", "no_tensors"],
)
def test_wrong_headers_are_refused(tmp_path: Path, pickles: list, match: str) -> None:
    (tmp_path / "x.pt").write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in pickles))
    with pytest.raises(CkptmapError, match=match):
        torch_legacy.read(tmp_path / "x.pt")


def test_empty_file_and_pre_0_4_tar_files(tmp_path: Path) -> None:
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        torch_legacy.read(tmp_path / "e.pt")
    with tarfile.open(tmp_path / "old.pt", "w") as tar:  # the PyTorch <= 0.3 layout
        info = tarfile.TarInfo("sys_info")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert torch_legacy.sniff(tmp_path / "old.pt")
    with pytest.raises(UnsupportedError, match="tar-based"):
        torch_legacy.read(tmp_path / "old.pt")


def test_sniff_says_no_to_other_files_without_raising(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(1)}, tmp_path / "zip.pt")
    (tmp_path / "pickle.pkl").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"\x80\x02\x8a\x0a" + b"\xff" * 40)
    for name in ["zip.pt", "pickle.pkl", "empty", "junk", "missing"]:
        assert torch_legacy.sniff(tmp_path / name) is False
    assert torch_legacy.sniff(tmp_path) is False
