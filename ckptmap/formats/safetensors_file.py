"""Format "safetensors", read and written with numpy and mmap.

The official `safetensors.numpy` API has no bfloat16 and builds the whole file in memory; this
module does neither. Layout (huggingface/safetensors README "Format"): an 8-byte little-endian
header length N, N bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}`, then the data buffer, row-major little-endian, offsets relative to
its start. Reading validates the header as strictly as the reference implementation
(safetensors/src/tensor.rs `Metadata::validate`): known dtypes, sizes matching shape x dtype,
tensors tiling the buffer with no gap, overlap or trailing bytes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes
from ..atomic import AtomicFiles
from ..errors import FormatError, UnsupportedError
from ..tree import Checkpoint, TensorEntry
from .rawio import MappedFile, file_size, open_output
from .stream import BlockStream

MAX_HEADER = 100_000_000  # safetensors/src/tensor.rs MAX_HEADER_SIZE
_ALIGN = 8  # the reference writer pads the header with spaces to 8 bytes


def sniff(path: Path) -> bool:
    """Header length that fits the file, followed by a '{'."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(MAX_HEADER, size - 8)


def read(path: Path) -> Checkpoint:
    """Index a safetensors file from its header; each tensor is a zero-copy view when read."""
    path = Path(path)
    size = file_size(path)
    if size < 8:
        raise FormatError(f"{path}: {size} bytes is too short for a safetensors header length.")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER:
                raise FormatError(f"{path}: the header claims {n} bytes; safetensors allows {MAX_HEADER}.")
            if 8 + n > size:
                raise FormatError(f"{path}: the header claims {n} bytes, the file has {size - 8}; truncated.")
            raw = f.read(n)
    except OSError as e:
        raise FormatError(f"{path}: cannot read it ({e.strerror or e}).") from None
    header = _parse_header(raw, path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings.")
    infos = [_tensor_info(name, info, path) for name, info in header.items()]
    _check_tiling(infos, size - 8 - n, path)
    mapped, base = MappedFile(path), 8 + n

    def entry(name: str, dt: dtypes.DType, shape: tuple[int, ...], begin: int, end: int) -> TensorEntry:
        def load() -> np.ndarray:
            count = end - begin
            flat = np.frombuffer(mapped.read(base + begin, count), dtype=dt.numpy, count=count // dt.itemsize)
            array = flat.reshape(shape)  # read-only; its pages are released when it is freed
            return array if array.flags.aligned else array.copy()  # the format does not align data

        return TensorEntry(name.replace(".", "/"), shape, dt.name, name, load)

    return Checkpoint((entry(*info) for info in infos), format="safetensors", path=path, files=[path],
                      metadata=metadata)  # fmt: skip


def _parse_header(raw: bytes, path: Path) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise FormatError(f"{path}: the header names a tensor twice.")
        return dict(pairs)

    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=no_duplicates) if text.startswith("{") else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: the safetensors header is not valid JSON ({e}).") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the safetensors header is not a JSON object.")
    return header


def _tensor_info(name: str, info: Any, path: Path) -> tuple[str, dtypes.DType, tuple[int, ...], int, int]:
    where = f"{path}: tensor '{name}'"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise FormatError(f"{where} lacks dtype, shape or data_offsets.")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise FormatError(f"{where} has shape {shape!r:.60}, not a list of non-negative ints.")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets):
        raise FormatError(f"{where} has data_offsets {offsets!r:.60}, not two non-negative ints.")
    try:
        dt = dtypes.from_safetensors(info["dtype"]) if isinstance(info["dtype"], str) else None
    except UnsupportedError as e:
        raise UnsupportedError(f"{where}: {e}") from None
    if dt is None:
        raise FormatError(f"{where} has dtype {info['dtype']!r:.40}, not a string.")
    begin, end = offsets
    expected = int(np.prod(shape, dtype=object)) * dt.itemsize
    if end - begin != expected:
        raise FormatError(f"{where} spans {end - begin} bytes; {tuple(shape)} of {dt.name} needs {expected}.")
    return name, dt, tuple(shape), begin, end


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _check_tiling(infos: list[tuple[Any, ...]], buffer_len: int, path: Path) -> None:
    cursor = 0
    for name, _, _, begin, end in sorted(infos, key=lambda i: (i[3], i[4])):
        if begin != cursor:
            what = "overlaps the previous tensor" if begin < cursor else f"leaves a gap at byte {cursor}"
            raise FormatError(f"{path}: tensor '{name}' starts at byte {begin} and {what}.")
        cursor = end
    if cursor != buffer_len:
        raise FormatError(
            f"{path}: the tensors cover {cursor} bytes but {buffer_len} follow the header"
            + ("; the file is truncated." if cursor > buffer_len else ".")
        )


def files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]:
    return [Path(path)]


def write(ckpt: Checkpoint, path: Path, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `ckpt` with keys joined by `.` and `__metadata__ = {"format": "pt"}`, so
    `safetensors.torch.load_file` and transformers accept it.

    The header comes first (shapes and dtypes are known from the entries), then each tensor's
    data as it is read; `progress(n)` gets each tensor's byte count.

    >>> write(ckptmap.load("lstm.pt"), Path("lstm.safetensors"))   # doctest: +SKIP
    """
    path = Path(path)
    # Larger elements first, as the reference writer orders by alignment, so every tensor stays
    # aligned to its element size for readers that map the file.
    ordered = sorted(ckpt.entries.values(), key=lambda e: -_dtype(e, path).itemsize)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in ordered:
        key = entry.name.replace("/", ".")
        if key in header:
            raise UnsupportedError(f"{path}: two tensors would both be saved as '{key}'.")
        header[key] = {"dtype": _dtype(entry, path).safetensors, "shape": list(entry.shape),
                       "data_offsets": [offset, offset + entry.nbytes]}  # fmt: skip
        offset += entry.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % _ALIGN)
    with AtomicFiles([path]) as out, open_output(out.temp(path)) as f, BlockStream(f) as stream:
        stream.write(struct.pack("<Q", len(raw)) + raw)
        for entry in ordered:
            stream.tensor(entry)
            if progress is not None:
                progress(entry.nbytes)
    return [path]


def _dtype(entry: TensorEntry, path: Path) -> dtypes.DType:
    dt = dtypes.by_name(entry.dtype)
    if dt.safetensors is None:
        raise UnsupportedError(f"{path}: tensor '{entry.name}' is {entry.dtype}, which safetensors lacks.")
    return dt
