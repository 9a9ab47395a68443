"""The "safetensors" format against the reference library: files from `safetensors.torch.save_file`
read exactly (bfloat16 included), files ckptmap writes loaded by `safetensors.torch.load_file` and
`safetensors.numpy.load_file`, and every malformed header refused with a one-line error."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.torch import load_file, save_file

from ckptmap import dtypes
from ckptmap.errors import CkptmapError, FormatError, UnsupportedError
from ckptmap.formats import safetensors_file, torch_legacy, torch_zip
from ckptmap.tree import Checkpoint, TensorEntry

DTYPE_NAMES = (
    "float32 float64 float16 bfloat16 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool complex64"
)
DTYPES = [getattr(torch, n) for n in DTYPE_NAMES.split()]
# What safetensors.numpy can hold (no bfloat16, no complex, no unsigned > 8 bits in its table).
NUMPY_OK = {"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool"}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def sample() -> dict[str, torch.Tensor]:
    grid = torch.arange(-3, 9).reshape(3, 4)
    out = {f"dtypes.{str(d)[6:]}": (grid % 2 if d == torch.bool else grid).to(d) for d in DTYPES}
    out["rnn.weight_ih_l0"] = torch.arange(24, dtype=torch.float32).reshape(8, 3) / 7
    out["scalar"] = torch.tensor(2.5)
    out["empty"] = torch.zeros(0, 3)
    return out


def numpy_checkpoint(arrays: dict[str, np.ndarray]) -> Checkpoint:
    entries = [
        TensorEntry(n, a.shape, dtypes.from_numpy(a.dtype).name, n, lambda a=a: a) for n, a in arrays.items()
    ]
    return Checkpoint(entries, format="memory")


def test_reads_files_written_by_the_reference_library(tmp_path: Path) -> None:
    tensors = sample()
    save_file(tensors, tmp_path / "s.safetensors", metadata={"format": "pt", "who": "test"})
    path = tmp_path / "s.safetensors"
    assert safetensors_file.sniff(path) and not torch_zip.sniff(path) and not torch_legacy.sniff(path)
    ckpt = safetensors_file.read(path)
    assert ckpt.format == "safetensors" and ckpt.metadata == {"format": "pt", "who": "test"}
    assert set(ckpt) == {k.replace(".", "/") for k in tensors}
    for key, tensor in tensors.items():
        entry = ckpt.entries[key.replace(".", "/")]
        got, expected = ckpt[entry.name], to_numpy(tensor)
        assert entry.key == key and got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()


def test_written_file_loads_in_the_reference_library_with_bfloat16(tmp_path: Path) -> None:
    tensors = sample()
    arrays = {k.replace(".", "/"): to_numpy(t).copy() for k, t in tensors.items()}
    seen: list[int] = []
    out = tmp_path / "w.safetensors"
    assert safetensors_file.write(numpy_checkpoint(arrays), out, progress=seen.append) == [out]
    assert sum(seen) == sum(a.nbytes for a in arrays.values()) and len(seen) == len(arrays)
    loaded = load_file(out)
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt"}
    header_len = int.from_bytes(out.read_bytes()[:8], "little")
    assert header_len % 8 == 0  # data starts 8-aligned, as the reference writer pads it


def test_written_file_loads_in_safetensors_numpy(tmp_path: Path) -> None:
    arrays = {
        k: to_numpy(t) for k, t in sample().items() if dtypes.from_numpy(to_numpy(t).dtype).name in NUMPY_OK
    }
    safetensors_file.write(numpy_checkpoint(arrays), tmp_path / "n.safetensors")
    loaded = np_load_file(tmp_path / "n.safetensors")
    for key, array in arrays.items():
        assert loaded[key].dtype == array.dtype and np.array_equal(loaded[key], array), key


def test_torch_to_safetensors_to_torch_restores_an_lstm(tmp_path: Path) -> None:
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).to(torch.bfloat16)
    torch.save(lstm.state_dict(), tmp_path / "a.pt")
    safetensors_file.write(torch_zip.read(tmp_path / "a.pt"), tmp_path / "b.safetensors")
    torch_zip.write(safetensors_file.read(tmp_path / "b.safetensors"), tmp_path / "c.pt")
    fresh = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).to(torch.bfloat16)
    fresh.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True), strict=True)
    xs = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(fresh(xs)[0], lstm(xs)[0])


def test_reading_never_imports_torch(tmp_path: Path) -> None:
    save_file(sample(), tmp_path / "s.safetensors")
    code = (
        "import sys; from ckptmap.formats import safetensors_file as s; c = s.read(sys.argv[1]); "
        "[c[n] for n in c]; assert 'torch' not in sys.modules, 'torch imported'; print(len(c))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.safetensors")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(sample()))


# ------------------------------------------------------------------------------------------ bad input


def handmade(path: Path, header: object, data: bytes = b"", *, raw: bytes | None = None) -> Path:
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


TRUNCATED = "cover 8 bytes but 4 follow the header; the file is truncated"
GAP = "'b' starts at byte 8 and leaves a gap"
F32 = [("a", "F32", [1], 0, 4)]


def tensors(*specs: tuple) -> dict:
    return {name: t(dtype, shape, begin, end) for name, dtype, shape, begin, end in specs}


@pytest.mark.parametrize(
    ("header", "data", "error", "match"),
    [
        (tensors(("a", "F32", [2], 0, 8)), b"\0" * 4, FormatError, TRUNCATED),
        (tensors(("a", "F32", [2], 0, 8)), b"\0" * 12, FormatError, "cover 8 bytes but 12 follow the header"),
        (tensors(("a", "F32", [3], 0, 8)), b"\0" * 8, FormatError, r"'a' spans 8 bytes; \(3,\) of float32"),
        (tensors(*F32, ("b", "F32", [1], 8, 12)), b"\0" * 12, FormatError, GAP),
        (tensors(("a", "F32", [2], 0, 8), ("b", "F32", [1], 4, 8)), b"\0" * 8, FormatError, "overlaps"),
        (tensors(("a", "F32", [-1], 0, 4)), b"\0" * 4, FormatError, "shape"),
        (tensors(("a", "F32", [1], 4, 0)), b"", FormatError, "spans -4 bytes"),
        (tensors(("a", "F32", [1], 0, "4")), b"", FormatError, "data_offsets"),
        ({"a": {"dtype": "F32", "shape": [1]}}, b"", FormatError, "lacks dtype, shape or data_offsets"),
        (tensors(("a", "F8_E4M3", [1], 0, 1)), b"\0", UnsupportedError, "F8_E4M3"),
        (tensors(("a", 5, [1], 0, 1)), b"\0", FormatError, "not a string"),
        ({"__metadata__": {"n": 1}}, b"", FormatError, "__metadata__ must map strings to strings"),
        ([1, 2], b"", FormatError, "not a JSON object"),
    ],
    ids=["truncated_data", "trailing_bytes", "size_mismatch", "gap", "overlap", "negative_dim",
         "reversed_offsets", "offset_not_int", "missing_field", "unknown_dtype", "dtype_not_string",
         "bad_metadata", "not_an_object"],
)  # fmt: skip
def test_malformed_headers_are_refused(
    tmp_path: Path, header: object, data: bytes, error, match: str
) -> None:
    path = handmade(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(error, match=match) as info:
        safetensors_file.read(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\x01\x02\x03", "too short"),
        (struct.pack("<Q", 200_000_000) + b"{}", "safetensors allows 100000000"),
        (struct.pack("<Q", 50) + b"{}", "the file has 2; truncated"),
        (struct.pack("<Q", 9) + b'{"a": 1,}', "not valid JSON"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON"),
        (struct.pack("<Q", 27) + b'{"a": {}, "a": {}, "b": 1} ', "names a tensor twice"),
    ],
    ids=["empty", "short", "huge_header", "header_past_end", "bad_json", "not_utf8", "duplicate_key"],
)
def test_broken_files_are_format_errors(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(FormatError, match=match):
        safetensors_file.read(tmp_path / "x.safetensors")


def test_every_truncation_is_a_format_error(tmp_path: Path) -> None:
    save_file(sample(), tmp_path / "s.safetensors")
    data = (tmp_path / "s.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    for size in range(0, len(data) - 1, 29):
        cut.write_bytes(data[:size])
        with pytest.raises(CkptmapError, match=str(cut)):
            safetensors_file.read(cut)


def test_sniff_says_no_to_other_files_without_raising(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(1)}, tmp_path / "a.pt")
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "big").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    for name in ["a.pt", "e", "big", "missing"]:
        assert safetensors_file.sniff(tmp_path / name) is False
    assert safetensors_file.sniff(tmp_path) is False


# ------------------------------------------------------------------------------------------ writing


def test_write_refuses_dtypes_safetensors_lacks(tmp_path: Path) -> None:
    ckpt = numpy_checkpoint({"c": np.ones(2, np.complex128)})
    with pytest.raises(UnsupportedError, match="'c' is complex128"):
        safetensors_file.write(ckpt, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []
