"""Format "tf": TensorFlow's V2 checkpoint bundle, read and written without TensorFlow.

A bundle is `prefix.index`, a table (see `sstable`) whose "" key holds a BundleHeaderProto and
whose other keys hold one BundleEntryProto per tensor, plus `prefix.data-0000i-of-0000n` files
holding the raw bytes the entries point at (tensorflow/core/util/tensor_bundle/tensor_bundle.cc).
Reading parses the index only; each tensor is a zero-copy view of the mmapped shard, its CRC32C
checked when it is read; its pages leave the process's memory when the array is freed.
Partitioned variables (TF1 partitioners, TF2 sharding policies) have a full-tensor entry that
lists slices, each stored under its own OrderedCode key; they are assembled on read and only the
full tensor is shown. Writing streams tensor by tensor into the data shard(s), then writes the
index and the `checkpoint` state file, all through AtomicFiles.
"""

from __future__ import annotations

import itertools
import mmap
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c

from .. import dtypes, lazy
from ..atomic import AtomicFiles
from ..errors import CkptmapError, FormatError, SourceNotFoundError, UnsupportedError, WriteError
from ..tree import Checkpoint, TensorEntry, canonical_tf_name
from . import tf_paths
from .protowire import BundleEntry, BundleHeader, WireError, check_tiling, encode_varint, read_varint
from .rawio import open_output, view_of
from .sstable import TableReader, TableWriter, mask_crc, unmask_crc
from .stream import BlockStream

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy.module("numpy")

FORMAT = "tf"
_UINT32_MAX = 0xFFFFFFFF
_INT32_MAX = 0x7FFFFFFF
_BUNDLE_VERSION = 1  # kTensorBundleVersion: what this reader understands, and what it writes
OBJECT_GRAPH_KEY = b"_CHECKPOINTABLE_OBJECT_GRAPH"  # TF2 object-based checkpoints (format "tf2")


def sniff(path: Path) -> bool:
    """True when `path` resolves to a V2 bundle whose index starts with a BundleHeaderProto and
    holds no TF2 object graph (those are format "tf2"; `read` still reads them)."""
    table = index_table(path)
    try:
        return table is not None and table.get(OBJECT_GRAPH_KEY) is None
    except CkptmapError:
        return False


def index_table(path: Path) -> TableReader | None:
    """The index of the V2 bundle `path` resolves to, if its first entry is a BundleHeaderProto;
    None for anything else. Reads only the table's footer, index block and first entry."""
    try:
        found = tf_paths.resolve(path)
        if found.kind != "v2":
            return None
        table = TableReader(tf_paths.index_path(found.path))
        first = table.first_entry()
        if first is None or first[0] != b"":
            return None
        BundleHeader.decode(memoryview(first[1]))  # V1 files start with a SavedTensorSlices instead
        return table
    except (CkptmapError, OSError, WireError):
        return None


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a bundle lazily: only the index is read here.

    >>> ckpt = read(Path("runs/exp1/model.ckpt-1600"))     # doctest: +SKIP
    >>> ckpt["rnn/lstm_cell/kernel"].shape                   # doctest: +SKIP
    (300, 1024)
    """
    found = tf_paths.resolve(path)
    if found.kind != "v2":
        raise FormatError(f"{found.path}: not a V2 checkpoint (no .index file); try format 'tf-v1'.")
    bundle = _Bundle(found.path)
    entries, notes = [], []
    for key, entry in bundle.entries.items():
        if key.startswith(b"\x00"):
            continue  # a stored slice (EncodeTensorNameSlice key); read through its full tensor
        name = key.decode("utf-8", "backslashreplace")
        try:
            dtype = dtypes.from_tf_enum(entry.dtype)
        except UnsupportedError:
            notes.append(f"Skipped '{name}': TensorFlow dtype code {entry.dtype} is not supported.")
            continue
        loader = partial(bundle.load_sliced if entry.slices else bundle.load, name, key, entry)
        entries.append(TensorEntry(canonical_tf_name(name), entry.shape, dtype.name, name, loader))
    return Checkpoint(
        entries,
        format=FORMAT,
        path=found.path,
        files=[bundle.index, *bundle.data],
        notes=notes,
        metadata={"num_shards": len(bundle.data)},
    )


class _Bundle:
    """The parsed index and lazily mmapped data shards of one bundle."""

    def __init__(self, prefix: Path) -> None:
        self.index = tf_paths.index_path(prefix)
        table = TableReader(self.index)
        try:
            items = iter(table.items())
            key, value = next(items, (None, memoryview(b"")))
            if key != b"":
                raise WireError("the header entry is missing")
            header = BundleHeader.decode(value)
            self.entries = {k: BundleEntry.decode(v) for k, v in items}
        except WireError as e:
            raise FormatError(f"{self.index}: damaged checkpoint index ({e}).") from e
        if header.min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in header.bad_consumers:
            raise UnsupportedError(
                f"{self.index}: written by a newer TensorFlow (format version "
                f"{header.producer}, needs a reader >= {header.min_consumer})."
            )
        if not 1 <= header.num_shards <= _INT32_MAX:  # num_shards is an int32
            raise FormatError(f"{self.index}: damaged checkpoint index (num_shards={header.num_shards}).")
        self.big_endian = header.big_endian
        self.data = _data_shards(self.index, prefix, header.num_shards)
        _refuse_aliasing(self.index, self.entries)
        self._maps: dict[int, mmap.mmap | None] = {}

    def _bytes(self, name: str, entry: BundleEntry) -> np.ndarray:
        """The entry's bytes as a read-only uint8 view of the mmapped shard (see `rawio.view_of`)."""
        if not 0 <= entry.shard_id < len(self.data):
            raise FormatError(
                f"Tensor '{name}' in {self.index}: points at shard {entry.shard_id} of {len(self.data)}."
            )
        if entry.shard_id not in self._maps:
            self._maps[entry.shard_id] = _map_file(self.data[entry.shard_id])
        mapped = self._maps[entry.shard_id]
        size = len(mapped) if mapped is not None else 0
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > size:
            raise FormatError(
                f"Tensor '{name}': {self.data[entry.shard_id]} is truncated "
                f"(needs {entry.offset + entry.size} bytes, has {size})."
            )
        if mapped is None or entry.size == 0:
            return np.zeros(0, np.uint8)
        return view_of(mapped, entry.offset, entry.size)

    def load(self, name: str, key: bytes, entry: BundleEntry) -> np.ndarray:
        """One stored tensor, checked against its CRC32C (BundleReader::GetValue)."""
        try:
            dtype = dtypes.from_tf_enum(entry.dtype)
        except UnsupportedError as e:  # a stored slice; read() already skipped whole tensors like it
            raise UnsupportedError(f"Tensor '{name}' in {self.index}: {e}") from None
        count = int(np.prod(entry.shape, dtype=np.int64))
        raw = self._bytes(name, entry)
        if dtype.name == "string":
            array, crc = _decode_strings(raw, count, self.big_endian, name, self.data[entry.shard_id])
        else:
            if entry.size != count * dtype.itemsize:
                raise FormatError(
                    f"Tensor '{name}' in {self.index}: {entry.size} bytes stored, "
                    f"{count * dtype.itemsize} expected for {entry.shape} {dtype.name}."
                )
            crc = google_crc32c.value(raw)  # on the file's bytes, before any byte swap
            array = _from_raw(raw, dtype.numpy, self.big_endian)
        if crc != unmask_crc(entry.crc32c):
            raise FormatError(
                f"Tensor '{name}' in {self.data[entry.shard_id]}: checksum mismatch; the file is damaged."
            )
        return array.reshape(entry.shape)

    def load_sliced(self, name: str, key: bytes, entry: BundleEntry) -> np.ndarray:
        """A partitioned tensor, assembled from its stored slices (BundleReader::GetSliceValue).

        The slices are read (zero-copy views) before the output is allocated, so a damaged
        index cannot make us allocate a tensor its data does not back."""
        parts = []
        for piece in entry.slices:
            try:
                region = piece.region(entry.shape)
            except WireError as e:
                raise FormatError(f"Tensor '{name}' in {self.index}: bad slice ({e}).") from e
            stored = self.entries.get(piece.key(key))
            where = f"Tensor '{name}' in {self.index}: slice {_describe(region)}"
            if stored is None:
                raise FormatError(f"{where} is missing.")
            if stored.shape != tuple(r.stop - r.start for r in region):
                raise FormatError(f"{where} is stored with shape {stored.shape}.")
            if stored.dtype != entry.dtype:
                raise FormatError(f"{where} is stored with TensorFlow dtype code {stored.dtype}.")
            parts.append((region, self.load(f"{name}[{_describe(region)}]", key, stored)))
        try:
            check_tiling([region for region, _ in parts], entry.shape)  # np.empty below shows any gap
        except WireError as e:
            raise FormatError(f"Tensor '{name}' in {self.index}: {e}.") from None
        out = np.empty(entry.shape, dtype=dtypes.from_tf_enum(entry.dtype).numpy)
        for region, part in parts:
            out[region] = part
        return out


def _data_shards(index: Path, prefix: Path, count: int) -> list[Path]:
    """The `count` data shards of the bundle, each checked to be a regular file.

    The count comes from the index, so it is checked against the shards present before all its
    paths are built: a damaged count of 10**9 costs one directory listing, not 10**9 paths. A
    directory that can be entered but not listed (mode 0o311, as on shared model stores) is
    probed shard by shard instead, stopping at the first one missing: again at most one path more
    than there are shards."""
    head, tail = f"{prefix.name}.data-", f"-of-{count:05d}"
    try:
        with os.scandir(prefix.parent) as listing:
            present = {e.name for e in listing if e.name.startswith(head) and e.name.endswith(tail)}
        names = (tf_paths.data_path(prefix, i, count).name for i in range(count))
        missing = next((name for name in names if name not in present), None)  # <= len(present) + 1 steps
        found, here = len(present), f", {len(present)} are here"
    except PermissionError:
        (missing, found), here = _first_missing(prefix, count), ""  # shards after it are not looked for
    except OSError as e:
        raise FormatError(f"{index}: cannot list its directory ({e.strerror or e}).") from None
    if missing is not None:
        said = f" (the index lists {count} shards{here})" if count > found + 1 else ""
        raise SourceNotFoundError(f"{index}: its data shard {missing} is missing{said}.")
    shards = [tf_paths.data_path(prefix, i, count) for i in range(count)]
    for shard in shards:
        if not shard.is_file():  # follows links: a link to a regular file is fine, a FIFO is not
            raise FormatError(f"{index}: its data shard {shard.name} is not a regular file.")
    return shards


def _first_missing(prefix: Path, count: int) -> tuple[str | None, int]:
    """The name of the first of `count` shards that does not exist, found by a stat of each in
    turn (for a directory that cannot be listed), and how many exist before it."""
    for i in range(count):
        shard = tf_paths.data_path(prefix, i, count)
        if not os.path.lexists(shard):
            return shard.name, i
    return None, count


def _refuse_aliasing(index: Path, entries: dict[bytes, BundleEntry]) -> None:
    """Refuse entries whose bytes overlap in a shard. TF writes each tensor and slice once, so
    shared bytes are damage or an attack: a few KB pointed at by many slices or entries would
    assemble gigabytes. One sort of the (shard, offset) ranges: O(n log n) in entries."""
    spans = sorted((e.shard_id, e.offset, e.offset + e.size, key) for key, e in entries.items() if e.size > 0)
    for (shard, _, end, key), (next_shard, start, _, next_key) in itertools.pairwise(spans):
        if shard == next_shard and start < end:
            raise FormatError(
                f"{index}: tensors '{_key_text(key)}' and '{_key_text(next_key)}' point at the same bytes "
                f"of data shard {shard} (offset {start}); refusing aliased data."
            )


def _key_text(key: bytes) -> str:
    """A table key for a message: slice keys are binary (OrderedCode), names may be long."""
    text = key[:80].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(key) <= 80 else text + "..."


def _map_file(path: Path) -> mmap.mmap | None:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None  # mmap refuses empty files; all tensors may be empty
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _from_raw(raw: np.ndarray, dtype: np.dtype, big_endian: bool) -> np.ndarray:
    if not big_endian or dtype.itemsize == 1:
        return raw.view(dtype)
    # Swap each component (both halves of a complex number); works for bfloat16 too.
    part = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
    return np.ascontiguousarray(raw.reshape(-1, part)[:, ::-1]).reshape(-1).view(dtype)


def _decode_strings(raw: np.ndarray, count: int, big: bool, name: str, file: Path) -> tuple[np.ndarray, int]:
    """ReadStringTensor: varint64 lengths, masked CRC of the lengths, then the bytes. The CRC
    covers each length as a uint32 (uint64 if larger) in the writer's byte order, not the varints."""
    if raw.size == 0 and count == 0:  # else the entry's shape alone would decide the allocation
        return np.empty(0, dtype=object), 0
    if raw.size < count + 4:  # at least one varint byte per element, then the length checksum
        raise FormatError(f"Tensor '{name}' in {file}: string data does not fit its entry.")
    view = memoryview(raw)
    lengths, pos = [], 0
    try:
        for _ in range(count):
            length, pos = read_varint(view, pos)
            lengths.append(length)
    except WireError as e:
        raise FormatError(f"Tensor '{name}' in {file}: damaged string lengths ({e}).") from e
    order = ">" if big else "<"
    crc = 0
    for length in lengths:
        width = "I" if length <= _UINT32_MAX else "Q"
        crc = google_crc32c.extend(crc, np.array(length, dtype=order + width).tobytes())
    stored = raw[pos : pos + 4].tobytes()
    if len(stored) < 4 or pos + 4 + sum(lengths) != raw.size:
        raise FormatError(f"Tensor '{name}' in {file}: string data does not fit its entry.")
    if unmask_crc(int(np.frombuffer(stored, order + "u4")[0])) != crc:
        raise FormatError(
            f"Tensor '{name}' in {file}: checksum mismatch in string lengths; the file is damaged."
        )
    crc = google_crc32c.extend(crc, stored)
    pos += 4
    crc = google_crc32c.extend(crc, raw[pos:].tobytes())
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = bytes(view[pos : pos + length])
        pos += length
    return out, crc


def _describe(region: tuple[slice, ...]) -> str:
    return ", ".join(f"{s.start}:{s.stop}" for s in region)


# --- writing -------------------------------------------------------------------------------


def files(
    path: str | os.PathLike[str], ckpt: Checkpoint | None = None, *, max_shard_bytes: int | None = None
) -> list[Path]:
    """The files `write` creates: data shard(s), index, `checkpoint` state file, in write order.

    The shard count depends on the checkpoint only when `max_shard_bytes` is given.
    """
    prefix = tf_paths.output_prefix(path)
    n = len(_plan_shards(ckpt, max_shard_bytes)) if ckpt is not None else 1
    data = [tf_paths.data_path(prefix, i, n) for i in range(n)]
    return [*data, tf_paths.index_path(prefix), prefix.parent / tf_paths.STATE_FILE]


def write(
    ckpt: Checkpoint,
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
    max_shard_bytes: int | None = None,
) -> list[Path]:
    """Write `ckpt` as a V2 bundle at prefix `path`, streaming one tensor at a time.

    Names are written as keys unchanged. `progress(n)` is called after each tensor with the bytes
    that tensor added. With `max_shard_bytes`, tensors are spread over several data shards (a
    tensor larger than the limit gets a shard of its own; tensors are never split).

    >>> write(ckptmap.load("model.pt"), Path("out/model.ckpt"))   # doctest: +SKIP
    """
    prefix = tf_paths.output_prefix(path)
    plan = _plan_shards(ckpt, max_shard_bytes)
    finals = files(prefix, ckpt, max_shard_bytes=max_shard_bytes)
    index, state = finals[-2], finals[-1]
    for entry in ckpt.entries.values():
        if not entry.name or entry.name.startswith("\x00"):
            raise WriteError(f"{index}: tensor name {entry.name!r} cannot be a TensorFlow checkpoint key.")
    written: dict[bytes, BundleEntry] = {}
    with AtomicFiles(finals) as out:
        for shard_id, group in enumerate(plan):
            with open_output(out.temp(finals[shard_id])) as f, BlockStream(f) as stream:
                offset = 0
                for entry in group:
                    tf_entry = _write_tensor(stream, entry, shard_id, offset)
                    written[entry.name.encode("utf-8")] = tf_entry
                    offset += tf_entry.size
                    if progress is not None:
                        progress(tf_entry.size)
        with open(out.temp(index), "wb") as f:
            table = TableWriter(f)
            table.add(b"", BundleHeader(num_shards=len(plan), producer=_BUNDLE_VERSION).encode())
            for key in sorted(written):
                table.add(key, written[key].encode())
            table.finish()
        out.temp(state).write_text(_state_file(state, prefix.name), encoding="utf-8")
    return finals


def _plan_shards(ckpt: Checkpoint, max_shard_bytes: int | None) -> list[list[TensorEntry]]:
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in ckpt.entries.values():
        if max_shard_bytes and shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def _write_tensor(stream: BlockStream, entry: TensorEntry, shard_id: int, offset: int) -> BundleEntry:
    """Queue one tensor as BundleWriter::Add writes it; returns its index entry."""
    dtype = dtypes.by_name(entry.dtype)
    if dtype.name == "string":
        payload, crc = _string_bytes(entry.read())
        stream.write(payload)
        size = len(payload)
    else:
        crc, size = stream.tensor(entry, google_crc32c.extend), entry.nbytes
    return BundleEntry(dtype.tf_enum or 0, entry.shape, shard_id, offset, size, mask_crc(crc))


def _string_bytes(array: np.ndarray) -> tuple[bytes, int]:
    """WriteStringTensor: varint lengths, masked CRC of the lengths, the bytes (see _decode_strings)."""
    items = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
    lengths = b"".join(encode_varint(len(x)) for x in items)
    crc = 0
    for x in items:
        crc = google_crc32c.extend(crc, len(x).to_bytes(4 if len(x) <= _UINT32_MAX else 8, "little"))
    length_crc = mask_crc(crc).to_bytes(4, "little")
    crc = google_crc32c.extend(crc, length_crc)
    for x in items:
        crc = google_crc32c.extend(crc, x)
    return b"".join([lengths, length_crc, *items]), crc


def _state_file(state: Path, basename: str) -> str:
    """The state TF's Saver leaves: ours is the latest; earlier saves it listed are kept."""
    every: list[str] = []
    if state.is_file():
        try:
            every = [p for p in tf_paths.read_state(state).all_model_checkpoint_paths if p != basename]
        except FormatError:
            every = []  # an unreadable state file is replaced, as TF would
    return tf_paths.state_text(basename, [*every, basename])
