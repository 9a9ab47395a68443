"""Hostile TF bundles, TF V1 files and torch zips (issue 12, part 3): small files that claimed
huge counts, pointed many entries at the same bytes, or encoded values so that decoding them
took gigabytes. Each is refused with one `Error:` line naming the file, exit 2 and nothing
written, or, when the file is valid, read within its size. Inputs that could hang or exhaust
memory run the CLI in a subprocess under a timeout and an address-space limit.
"""

from __future__ import annotations

import struct
import time
import zipfile
import zlib
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

import ckptmap
from ckptmap.formats import sstable, torch_zip
from ckptmap.formats.protowire import (
    BundleHeader,
    TensorSlice,
    encode_shape,
    encode_varint,
    len_field,
    tag,
    varint_field,
)
from ckptmap.formats.sstable import TableWriter, mask_crc
from ckptmap.tree import TensorEntry
from tests.robustness.test_bad_input import assert_refused_process, convert_refused, run_cli

# Address space for a CLI run: ckptmap with numpy needs ~1.1 GB of it (thread stacks and malloc
# arenas count), so this leaves ~700 MB for the reading itself.
MEMORY = 1800 << 20


def _entry(offset: int, data: bytes, shape: tuple[int, ...], *, slices=(), dtype: int = 1) -> bytes:
    """BundleEntryProto written by hand, with offset and size even when 0 (so aliasing shows)."""
    out = varint_field(1, dtype) + len_field(2, encode_shape(shape))
    out += tag(4, 0) + encode_varint(offset) + tag(5, 0) + encode_varint(len(data))
    out += struct.pack("<BI", 6 << 3 | 5, mask_crc(google_crc32c.value(data)))
    for extents in slices:
        body = b"".join(len_field(1, varint_field(1, s) + varint_field(2, n)) for s, n in extents)
        out += len_field(7, body)
    return out


def _bundle(prefix: Path, entries: dict[bytes, bytes], data: bytes, *, num_shards: int = 1) -> Path:
    """A bundle with one data shard (named for `num_shards`) and valid table checksums."""
    Path(f"{prefix}.data-00000-of-{num_shards:05d}").write_bytes(data)
    with open(f"{prefix}.index", "wb") as f:
        table = TableWriter(f)
        table.add(b"", BundleHeader(num_shards=num_shards).encode())
        for key, value in sorted(entries.items()):
            table.add(key, value)
        table.finish()
    return prefix


# ------------------------------------------------------------------------------------- shard counts


@pytest.mark.parametrize(("count", "words"), [(10**9, "the index lists 1000000000 shards, 0 are here"),
                                              (1 << 40, "num_shards=1099511627776")])  # fmt: skip
def test_a_huge_shard_count_is_refused_before_building_shard_paths(
    tmp_path: Path, count: int, words: str
) -> None:
    # The index claims 10**9 shards: building every shard's path first took minutes and gigabytes.
    prefix = _bundle(tmp_path / "model.ckpt", {b"w": _entry(0, bytes(16), (4,))}, bytes(16))
    Path(f"{prefix}.index").unlink()
    with open(f"{prefix}.index", "wb") as f:
        table = TableWriter(f)
        table.add(b"", varint_field(1, count))
        table.add(b"w", _entry(0, bytes(16), (4,)))
        table.finish()
    started = time.monotonic()
    done = run_cli("convert", prefix, tmp_path / "out" / "x.safetensors", memory=MEMORY, timeout=30)
    assert words in assert_refused_process(done, f"{prefix}.index")
    assert time.monotonic() - started < 20
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ aliasing


def test_entries_pointing_at_the_same_bytes_are_refused(capsys, tmp_path: Path) -> None:
    # Two tensors over one 16-byte range: a thousand such entries turn 16 bytes into 16 KB, and
    # 4 MB into 4 GB of output.
    data = np.arange(4, dtype=np.float32).tobytes()
    prefix = _bundle(
        tmp_path / "model.ckpt", {b"a": _entry(0, data, (4,)), b"b": _entry(0, data, (4,))}, data
    )
    line = convert_refused(capsys, tmp_path, prefix, names=f"{prefix}.index")
    assert "'a' and 'b' point at the same bytes" in line


def test_slices_sharing_their_bytes_are_not_assembled(capsys, tmp_path: Path) -> None:
    # 64 slices of a (256,) tensor, each stored over the same 16 bytes: the slices tile the
    # tensor, so only the shared bytes give the amplification away (350 KB made a 512 MB tensor).
    data = np.arange(4, dtype=np.float32).tobytes()
    slices = [[(4 * i, 4)] for i in range(64)]
    entries = {b"v": _entry(0, b"", (256,), slices=slices)}
    for ((start, length),) in slices:
        entries[TensorSlice(((start, length),)).key(b"v")] = _entry(0, data, (4,))
    prefix = _bundle(tmp_path / "model.ckpt", entries, data)
    line = convert_refused(capsys, tmp_path, prefix, names=f"{prefix}.index")
    assert "refusing aliased data" in line


def test_adjacent_and_empty_entries_still_read(tmp_path: Path) -> None:
    # Empty tensors take no bytes, so they may sit at any offset, even another tensor's.
    a, b = np.arange(4, dtype=np.float32), np.arange(4, 6, dtype=np.float32)
    entries = {b"a": _entry(0, a.tobytes(), (4,)), b"b": _entry(16, b.tobytes(), (2,)),
               b"e": _entry(0, b"", (0,)), b"f": _entry(16, b"", (0, 3))}  # fmt: skip
    ckpt = ckptmap.load(_bundle(tmp_path / "model.ckpt", entries, a.tobytes() + b.tobytes()))
    np.testing.assert_array_equal(ckpt["a"], a)
    np.testing.assert_array_equal(ckpt["b"], b)
    assert ckpt["f"].shape == (0, 3)


def test_a_table_index_naming_one_block_many_times_is_refused(tmp_path: Path) -> None:
    # An index block listing one data block of 2,000 entries 100,000 times (1 MB of file): each
    # mention made the block be checked and decoded again, 200 million entries, a hang.
    prefix = tmp_path / "model.ckpt"
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    out, index = bytearray(), sstable._BlockBuilder(1)

    def put(block: sstable._BlockBuilder) -> bytes:
        body = block.finish()
        handle = sstable._encode_handle(len(out), len(body))
        out.extend(body + b"\0" + struct.pack("<I", mask_crc(google_crc32c.value(body + b"\0"))))
        return handle

    header, entries = sstable._BlockBuilder(16), sstable._BlockBuilder(16)
    header.add(b"", BundleHeader(num_shards=1).encode())
    for i in range(2000):
        entries.add(b"t%05d" % i, varint_field(1, 1) + len_field(2, encode_shape((0,))))
    index.add(b"", put(header))
    handle = put(entries)
    for i in range(100_000):
        index.add(b"t%05d\xff%06d" % (1999, i), handle)
    footer = put(sstable._BlockBuilder(16)) + put(index)
    out += footer.ljust(sstable.FOOTER_SIZE - 8, b"\0") + struct.pack("<Q", sstable.MAGIC)
    Path(f"{prefix}.index").write_bytes(bytes(out))
    done = run_cli("convert", prefix, tmp_path / "out" / "x.safetensors", memory=MEMORY, timeout=30)
    assert "overlapping or out-of-order blocks" in assert_refused_process(done, f"{prefix}.index")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- torch zip


def _aliased_torch_zip(path: Path, n: int, floats: int, *, share: str) -> Path:
    """A torch.save zip of `n` tensors whose storages data/0..n-1 all lead to one copy of the data:
    through local headers that follow one another, each declaring an extra field that runs up to
    that copy (share="data"), or through central-directory entries that all point at data/0's
    local header (share="header")."""
    entries = [TensorEntry(f"w{i}", (floats,), "float32", f"w{i}", lambda: None) for i in range(n)]
    small = [(b"archive/data.pkl", torch_zip._state_dict_pickle(entries, path)), (b"archive/version", b"3\n")]
    payload = np.arange(floats, dtype=np.float32).tobytes()
    names = [b"archive/data/%d" % i for i in range(n)]
    out, central = bytearray(), []

    def header(name: bytes, data: bytes, extra_len: int) -> int:
        """A local header (its extra field's bytes are whatever follows); returns its offset."""
        offset = len(out)
        out.extend(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, zlib.crc32(data), len(data),
                               len(data), len(name), extra_len) + name)  # fmt: skip
        return offset

    def record(name: bytes, data: bytes, offset: int) -> None:
        fixed = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, zlib.crc32(data),
                            len(data), len(data), len(name), 0, 0, 0, 0, 0, offset)  # fmt: skip
        central.append(fixed + name)

    for name, data in small:
        record(name, data, header(name, data, 0))
        out.extend(data)
    if share == "data":
        start = len(out) + sum(30 + len(name) for name in names)
        for name in names:
            record(name, payload, header(name, payload, start - len(out) - 30 - len(name)))
    else:
        first = header(names[0], payload, 0)
        for name in names:
            record(name, payload, first)
    out.extend(payload)
    directory = len(out)
    out.extend(b"".join(central))
    out.extend(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                           len(out) - directory, directory, 0))  # fmt: skip
    path.write_bytes(bytes(out))
    with zipfile.ZipFile(path) as zf:  # zipfile lists it: the aliasing is all that is wrong
        assert len(zf.infolist()) == n + 2
    return path


SHARED = {"data": "overlap; refusing aliased data", "header": "points at another member's local header"}


@pytest.mark.parametrize(("share", "words"), SHARED.items(), ids=list(SHARED))
def test_zip_members_sharing_their_data_are_refused(capsys, tmp_path: Path, share: str, words: str) -> None:
    # 250 storages over one 4 MB copy made 1 GB of output; 8 over 4 KB show the same thing.
    src = _aliased_torch_zip(tmp_path / "aliased.pt", 8, 1024, share=share)
    assert words in convert_refused(capsys, tmp_path, src)


def test_tensors_viewing_one_storage_still_read(tmp_path: Path) -> None:
    # Views of one storage legitimately share a member: only members sharing bytes are refused.
    import torch

    base = torch.arange(12.0)
    torch.save({"a": base[:6].view(2, 3), "b": base[6:], "c": base}, tmp_path / "views.pt")
    ckpt = ckptmap.load(tmp_path / "views.pt")
    np.testing.assert_array_equal(ckpt["a"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(ckpt["b"], np.arange(6.0, 12.0))
    np.testing.assert_array_equal(ckpt["c"], np.arange(12.0))


# ------------------------------------------------------------------------------------------ TF V1


def _v1_file(path: Path, shape: tuple[int, ...], dtype: int, values: bytes) -> Path:
    """A V1 checkpoint of one tensor 'x' stored as one full slice, whose TensorProto value fields
    are `values`, written by hand so they can be encoded any way protobuf allows."""
    full = b"".join(len_field(1, b"") for _ in shape)  # an extent without length: the whole dim
    meta = (
        len_field(1, b"x") + len_field(2, encode_shape(shape)) + varint_field(3, dtype) + len_field(4, full)
    )
    proto = varint_field(1, dtype) + len_field(2, encode_shape(shape)) + values
    saved = len_field(1, b"x") + len_field(2, full) + len_field(3, proto)
    with open(path, "wb") as f:
        table = TableWriter(f)
        table.add(b"", len_field(1, len_field(1, meta)))
        table.add(TensorSlice(tuple((0, -1) for _ in shape)).key(b"x"), len_field(2, saved))
        table.finish()
    return path


DT_FLOAT, DT_INT8, DT_INT32 = 1, 6, 3


def test_more_packed_values_than_the_shape_holds_fail_fast(tmp_path: Path) -> None:
    # 48 MB of one-byte varints for a (4,) tensor: all were decoded, ~50 bytes each, before
    # their number was compared with the shape's.
    src = _v1_file(tmp_path / "model.ckpt", (4,), DT_INT32, len_field(7, bytes(48 << 20)))
    done = run_cli("convert", src, tmp_path / "out" / "x.safetensors", memory=MEMORY, timeout=60)
    assert "more than the 4 values expected" in assert_refused_process(done, src)
    assert not (tmp_path / "out").exists()


def test_a_large_packed_varint_tensor_reads_within_its_size(tmp_path: Path) -> None:
    # 40 MB of int8 values in packed varints: decoding took ~2 GB of temporaries at once.
    n = 40 << 20
    values = (np.arange(n) % 100).astype(np.int8)
    src = _v1_file(tmp_path / "model.ckpt", (n,), DT_INT8, len_field(7, values.tobytes()))
    done = run_cli("convert", src, tmp_path / "x.safetensors", memory=MEMORY, timeout=60)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(ckptmap.load(tmp_path / "x.safetensors")["x"], values)


def test_millions_of_unpacked_floats_read_vectorized(tmp_path: Path) -> None:
    # 8M float_val fields written one by one (valid protobuf, 40 MB): one Python int and one
    # array per field took gigabytes and most of a minute.
    values = np.arange(8 << 20, dtype=np.float32)
    records = np.empty((values.size, 5), np.uint8)
    records[:, 0] = 5 << 3 | 5  # float_val, fixed32
    records[:, 1:] = values.view(np.uint8).reshape(-1, 4)
    src = _v1_file(tmp_path / "model.ckpt", values.shape, DT_FLOAT, records.tobytes())
    done = run_cli("convert", src, tmp_path / "x.safetensors", memory=MEMORY, timeout=60)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(ckptmap.load(tmp_path / "x.safetensors")["x"], values)


@pytest.mark.parametrize("layout", ["packed", "unpacked", "mixed"])
def test_v1_values_decode_however_they_are_split(tmp_path: Path, layout: str) -> None:
    # Protobuf lets a repeated field come packed, unpacked, or in several pieces of either.
    ints = np.array([1, -2, 300, 2**31 - 1, -(2**31), 0], np.int32)
    packed = [encode_varint(int(v)) for v in ints]
    unpacked = [tag(7, 0) + p for p in packed]
    mixed = len_field(7, b"".join(packed[:2])) + b"".join(unpacked[2:4]) + len_field(7, b"".join(packed[4:]))
    body = {"packed": len_field(7, b"".join(packed)), "unpacked": b"".join(unpacked), "mixed": mixed}
    src = _v1_file(tmp_path / "i", (6,), DT_INT32, body[layout])
    np.testing.assert_array_equal(ckptmap.load(src)["x"], ints)
    big = np.array([1, 2**64 - 1, 5], np.uint64)  # uint64_val is field 17: two-byte tags
    fields = b"".join(tag(17, 0) + encode_varint(int(v)) for v in big)
    np.testing.assert_array_equal(ckptmap.load(_v1_file(tmp_path / "u", (3,), 23, fields))["x"], big)
