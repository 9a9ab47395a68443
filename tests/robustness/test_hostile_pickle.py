"""Pickles built to exhaust memory or time rather than to run code (issue 12, part 3).

Each is a few hundred bytes that the C unpickler, an allow-listed callable, a message or the
state-dict selection would turn into gigabytes or hours. They run through the CLI in a child
process under a timeout and an address-space limit, and must end as one `Error:` line naming
the file and the problem, exit 2, with nothing written. The message is checked too: under the
memory limit the old code also exited 2, but with a MemoryError it never meant to catch.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from ckptmap.formats import torch_legacy, torch_pickle
from tests.robustness.test_bad_input import assert_refused_process, run_cli
from tests.torchfiles import legacy_file

LIMIT = 1 << 30  # address space of the child: the attacks below ask for 2-64 GB
SECONDS = 30  # each refusal takes well under a second; the unfixed code ran for hours


def ustr(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def state_dict(value: bytes) -> bytes:
    """A protocol-2 pickle of {"x": <value>}, `value` being opcodes that push one object."""
    return b"\x80\x02}(" + ustr("x") + value + b"u."


def shared_lists(depth: int, width: int = 2, first: bytes = b"") -> bytes:
    """A list holding `first` and `width` references to the list below it, `depth` levels: repr(),
    str() and naive walks take width**depth steps; the pickle takes 2 * width bytes per level."""
    ops = b"]q\x000"  # [] memoized as 0, then popped: each level is taken from the memo
    for level in range(1, depth + 1):
        ops += b"](" + first + (b"h" + bytes([level - 1])) * width + b"eq" + bytes([level]) + b"0"
    return ops + b"h" + bytes([depth])


# A float32 tensor of one element on storage "0" (which `as_zip` adds), memoized as 200.
STORAGE = b"(" + ustr("storage") + b"ctorch\nFloatStorage\n" + ustr("0") + ustr("cpu") + b"K\x01tQ"
TENSOR = (
    b"ctorch._utils\n_rebuild_tensor_v2\n(" + STORAGE
    + b"K\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRq\xc8"
)  # fmt: skip


def shared_tuples(depth: int) -> bytes:
    """t = (t, t), `depth` times: hashing it (as a dict key) takes 2**depth steps in C."""
    ops = b"K\x01q\x00"
    for level in range(1, depth + 1):
        ops += b"h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"\x86q" + bytes([level])
    return ops


def as_zip(path: Path, pickled: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/data/0", b"\0" * 4)
    return path


def refused(tmp_path: Path, pickled: bytes, words: str, *, container: str = "zip") -> None:
    src = tmp_path / "hostile.pt"
    as_zip(src, pickled) if container == "zip" else legacy_file(src, pickled)
    out = tmp_path / "out"
    done = run_cli("convert", src, out / "x.safetensors", timeout=SECONDS, memory=LIMIT)
    line = assert_refused_process(done, src)
    assert words in line, line
    assert not out.exists() or not list(out.iterdir())


# ----------------------------------------------------------------- what the C unpickler would spend

# name -> (opcodes pushing the value of "x", words of the refusal)
UNPICKLER = {
    # 13 bytes: the C unpickler grows its memo to 2 * index entries and zeroes them (4 GB).
    "long_binput_huge_index": (b"Nr\x00\x00\x00\x10", "memo index 268435456"),
    "long_binput_max_index": (b"Nr\xff\xff\xff\xff", "memo index 4294967295"),
    "text_put_huge_index": (b"Np268435456\n", "memo index 268435456"),
    "long_binget_never_stored": (b"j\xff\xff\xff\xff", "memo index 4294967295 is read before"),
    # Lengths far beyond the data: the C unpickler allocates them before reading.
    "binbytes8_beyond_the_data": (b"\x8e" + struct.pack("<Q", 1 << 33) + b"abc", "runs past"),
    "binunicode8_beyond_the_data": (b"\x8d" + struct.pack("<Q", 1 << 33) + b"abc", "runs past"),
    "bytearray8_beyond_the_data": (b"\x96" + struct.pack("<Q", 1 << 33) + b"abc", "runs past"),
    "frame_beyond_the_data": (b"\x95" + struct.pack("<Q", 1 << 40) + b"N", "FRAME is longer"),
    # A tuple nested 100000 deep as a dict key: C's tuple hash recurses without a limit.
    "deep_tuple_key": (b"}(" + b")" + b"\x85" * 100_000 + b"Ku", "nested 101 deep"),
    # t = (t, t) 64 times as a dict key: 2**64 steps to hash.
    "exponential_tuple_key": (b"}(" + shared_tuples(64) + b"Ku", "hashing it could run for hours"),
    # 100000 distinct ints that all hash to 0 (k * (2**61 - 1)): each insertion compares them all.
    "colliding_int_keys": (
        b"}("
        + b"".join(
            b"\x8a\x0a" + (k * ((1 << 61) - 1)).to_bytes(10, "little") + b"N" for k in range(1, 100_001)
        )
        + b"u",
        "colliding hashes",
    ),
}


@pytest.mark.parametrize("case", UNPICKLER, ids=list(UNPICKLER))
def test_the_unpickler_is_bounded_before_it_runs(tmp_path: Path, case: str) -> None:
    ops, words = UNPICKLER[case]
    refused(tmp_path, state_dict(ops), words)


def test_a_legacy_file_is_scanned_the_same_way(tmp_path: Path) -> None:
    # The legacy reader parses several pickles in a row from the mapped file.
    refused(tmp_path, state_dict(b"Nr\x00\x00\x00\x10"), "memo index", container="legacy")


# --------------------------------------------------------------------------- the legacy-format sniff


def test_the_legacy_sniff_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    # A file starting with 0x80 was unpickled (512 bytes) just to tell its format.
    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("sniff unpickled the file")

    monkeypatch.setattr(torch_pickle._Unpickler, "load", no)
    (tmp_path / "a.pt").write_bytes(b"\x80\x02Nr\x00\x00\x00\x10." + b"\0" * 600)
    assert torch_legacy.sniff(tmp_path / "a.pt") is False
    legacy_file(tmp_path / "b.pt", state_dict(b"N"))
    assert torch_legacy.sniff(tmp_path / "b.pt") is True


# ---------------------------------------------------- str() and repr() of values shared through the memo

# A 2**40-node list (the pickle is ~400 bytes) handed where a short value belongs: printing it
# for the message, or str() in a stand-in, ran for hours.
HUGE = shared_lists(40)
STR_REPR = {
    "torch_device": (b"ctorch\ndevice\n(" + HUGE + b"tR", "torch.device"),
    "layout": (b"ctorch.serialization\n_get_layout\n(" + HUGE + b"tR", "layout"),
    "rebuild_tensor_offset": (
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + STORAGE + HUGE + b"))tR",
        "offset a list",
    ),
    "rebuild_tensor_shape": (
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + STORAGE + b"K\x00" + HUGE + b")tR",
        "shape is not a tuple of non-negative ints",
    ),
    "persistent_id": (b"(" + ustr("storage") + HUGE + b"tQ", "not a flat tuple"),
    "reconstructor_base": (b"ccopyreg\n_reconstructor\n(N" + HUGE + b"NtR", "__init__"),
    "newobj_class": (b"ccopyreg\n__newobj__\n(" + HUGE + b"tR", "reconstructs a list"),
}


@pytest.mark.parametrize("case", STR_REPR, ids=list(STR_REPR))
def test_values_from_the_file_are_never_printed(tmp_path: Path, case: str) -> None:
    ops, words = STR_REPR[case]
    refused(tmp_path, state_dict(ops), words)


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_shared_list_as_a_persistent_id_field(tmp_path: Path, container: str) -> None:
    refused(
        tmp_path, state_dict(b"(" + ustr("storage") + HUGE + b"tQ"), "not a flat tuple", container=container
    )


# ------------------------------------------------------------------------ the state-dict selection


def test_a_list_shared_at_every_level_is_walked_once(tmp_path: Path) -> None:
    # Three levels of lists, each a tensor and 1000 references to the list below: the old walk
    # built 1000**3 entries. Each list is now visited once, and the file reads (it is valid).
    src = as_zip(tmp_path / "shared.pt", state_dict(TENSOR + b"0" + shared_lists(3, 1000, first=b"h\xc8")))
    done = run_cli("convert", src, tmp_path / "x.safetensors", timeout=SECONDS, memory=LIMIT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.safetensors").exists()


def test_tensors_that_view_one_storage_many_times_are_refused(tmp_path: Path) -> None:
    # 200 tensors over one 1 MiB storage: reading them writes 200 MiB from a 1 MiB file.
    import torch

    src = tmp_path / "aliased.pt"
    x = torch.zeros(1 << 18)
    torch.save({f"v{i}": x for i in range(200)}, src)
    out = tmp_path / "out"
    done = run_cli("convert", src, out / "x.safetensors", timeout=SECONDS, memory=4 * LIMIT)
    line = assert_refused_process(done, src)
    assert "refusing to read the same bytes that many times" in line, line
    assert not out.exists() or not list(out.iterdir())
    torch.save({"a": x, "tied": x}, src)  # tied weights, the usual aliasing, still read
    done = run_cli("convert", src, out / "x.safetensors", timeout=SECONDS, memory=4 * LIMIT)
    assert done.returncode == 0, done.stderr
