"""The table container of TF checkpoints: our writer and reader agree, damage is caught, and the
bits TF relies on (masked CRCs, OrderedCode slice keys, snappy blocks of old writers) match."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import google_crc32c
import pytest

from ckptmap.errors import FormatError
from ckptmap.formats import sstable
from ckptmap.formats.protowire import TensorSlice, _ordered_signed
from ckptmap.formats.sstable import TableReader, TableWriter, mask_crc, snappy_decompress, unmask_crc


def _write_table(path: Path, items: list[tuple[bytes, bytes]], **options: int) -> None:
    with open(path, "wb") as f:
        writer = TableWriter(f, **options)
        for key, value in items:
            writer.add(key, value)
        writer.finish()


def _items(n: int) -> list[tuple[bytes, bytes]]:
    # Shared prefixes exercise prefix compression; varied value sizes move block boundaries.
    return [(f"scope/layer_{i:04d}/kernel".encode(), bytes([i % 251]) * (i % 97)) for i in range(n)]


def test_roundtrip_many_blocks_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "t.index"
    items = [(b"", b"header"), *_items(500)]
    _write_table(path, items, block_size=512, restart_interval=4)
    table = TableReader(path)
    assert len(table.index) > 10  # really several blocks
    assert [(k, bytes(v)) for k, v in table.items()] == items
    for key, value in items[::37]:
        assert bytes(table.get(key)) == value
    assert table.get(b"scope/layer_0000/kernelX") is None
    assert table.get(b"\xff") is None
    assert table.first_entry() == (b"", b"header")


def test_empty_table_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.index"
    _write_table(path, [])
    assert list(TableReader(path).items()) == []
    assert TableReader(path).first_entry() is None


def test_writer_rejects_unsorted_keys() -> None:
    writer = TableWriter(io.BytesIO())
    writer.add(b"b", b"")
    with pytest.raises(ValueError, match="out of order"):
        writer.add(b"a", b"")


def test_mask_matches_tensorflow_and_inverts() -> None:
    # crc32c.h: Mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
    crc = google_crc32c.value(b"checkpoint")
    assert mask_crc(crc) == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert unmask_crc(mask_crc(crc)) == crc


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x80"),
        (-1, b"\x7f"),
        (63, b"\xbf"),
        (64, b"\xc0\x40"),
        (0x424242, b"\xf0\x42\x42\x42"),  # example 1 in ordered_code.cc
        (-0x800, b"\x38\x00"),  # example 2 in ordered_code.cc
    ],
)
def test_ordered_code_signed_numbers_match_tensorflow_examples(value: int, encoded: bytes) -> None:
    assert _ordered_signed(value) == encoded


def test_slice_key_escapes_names_like_ordered_code() -> None:
    key = TensorSlice(((0, 5), (0, -1))).key(b"a\x00b\xffc")
    assert key == b"\x00" + b"a\x00\xffb\xff\x00c\x00\x01" + b"\x01\x02" + b"\x80\x85" + b"\x80\x7f"


def test_snappy_literals_and_overlapping_copies() -> None:
    # "abc" literal, then a 1-byte-offset copy of 7 bytes reaching back 3 (it overlaps itself),
    # then a 2-byte-offset copy of 4 bytes reaching back 10.
    stream = b"\x0e" + b"\x08abc" + b"\x0d\x03" + b"\x0e\x0a\x00"
    assert snappy_decompress(stream) == b"abcabcabca" + b"abca"


def _snappy_literal(data: bytes) -> bytes:
    """Valid snappy that only uses literals (enough to build a compressed block by hand)."""
    out = bytearray(sstable.encode_varint(len(data)))
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        out += bytes([61 << 2]) + (len(chunk) - 1).to_bytes(2, "little") + chunk
    return bytes(out)


def test_reads_snappy_compressed_blocks(tmp_path: Path) -> None:
    # TF's table format allows snappy blocks (type 1); build one by hand around a real block.
    plain = tmp_path / "plain"
    items = _items(20)
    _write_table(plain, items)
    raw = plain.read_bytes()
    table = TableReader(plain)
    (offset, size) = table.index[0][1]
    block = _snappy_literal(raw[offset : offset + size])
    crc = mask_crc(google_crc32c.extend(google_crc32c.value(block), b"\x01"))
    out = io.BytesIO()
    out.write(block + b"\x01" + struct.pack("<I", crc))
    writer = TableWriter(out)
    writer.offset = out.tell()
    index = sstable._BlockBuilder(1)
    index.add(table.index[0][0], sstable._encode_handle(0, len(block)))
    meta = writer._write_block(sstable._BlockBuilder(16).finish())
    handle = writer._write_block(index.finish())
    out.write((meta + handle).ljust(40, b"\0") + struct.pack("<Q", sstable.MAGIC))
    compressed = tmp_path / "compressed"
    compressed.write_bytes(out.getvalue())
    assert [(k, bytes(v)) for k, v in TableReader(compressed).items()] == items


def test_flipped_byte_fails_the_block_checksum(tmp_path: Path) -> None:
    path = tmp_path / "t.index"
    _write_table(path, _items(30))
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"t\.index: damaged table \(checksum mismatch"):
        list(TableReader(path).items())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x00" * 20, "too short"),
        (b"\x00" * 100, "wrong magic number"),
    ],
    ids=["empty", "short", "no-magic"],
)
def test_not_a_table_is_a_one_line_format_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "junk.index"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as err:
        TableReader(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_table_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "t.index"
    _write_table(path, _items(200), block_size=256)
    data = path.read_bytes()
    # Keep the footer but drop the middle: the index then points past the end of the file.
    path.write_bytes(data[:100] + data[-48:])
    with pytest.raises(FormatError, match=str(path)):
        list(TableReader(path).items())


def test_get_refuses_an_index_out_of_order(tmp_path: Path) -> None:
    # The index of a sound table, rewritten with its blocks in reverse: `get` bisected those keys
    # as if sorted and could miss a key that is there (here the first one), so it raises like
    # `items()` now.
    path = tmp_path / "t.index"
    items = _items(200)
    _write_table(path, items, block_size=256)
    table = TableReader(path)
    assert len(table.index) > 3
    last_offset, last_size = table.index[-1][1]
    out = io.BytesIO()
    out.write(path.read_bytes()[: last_offset + last_size + sstable.TRAILER_SIZE])  # the data blocks
    writer = TableWriter(out)
    writer.offset = out.tell()
    index = sstable._BlockBuilder(1)
    for key, (offset, size) in reversed(table.index):
        index.add(key, sstable._encode_handle(offset, size))
    meta = writer._write_block(sstable._BlockBuilder(16).finish())
    handle = writer._write_block(index.finish())
    out.write((meta + handle).ljust(40, b"\0") + struct.pack("<Q", sstable.MAGIC))
    path.write_bytes(out.getvalue())
    damaged = TableReader(path)  # opening still works: sniffing sees a (damaged) TF table
    for reader in (lambda: damaged.get(items[0][0]), lambda: list(damaged.items())):
        with pytest.raises(FormatError, match=r"t\.index: damaged table index \(the index names overlapping"):
            reader()
