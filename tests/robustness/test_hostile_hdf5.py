"""Hostile Keras files (issue 12, part 3): HDF5 structure and .keras archives crafted to hang
ckptmap, read other files, or make it allocate what the file does not hold. Each must fail fast,
on one line with exit 2, or read correctly where it is valid. Cases that once hung or exhausted
memory run the CLI in a subprocess under a timeout and an address-space limit.
"""

from __future__ import annotations

import itertools
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptmap
from ckptmap.errors import CkptmapError, FormatError
from ckptmap.tree import Checkpoint, TensorEntry
from tests.robustness.test_bad_input import assert_refused_process, run_cli

MEMORY = 1 << 30  # the CLI needs ~300 MB; a bomb needs gigabytes
BIG = 1 << 20  # the one heap object every crafted reference points at


def _h5(path: Path, build: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


def _keras2(f: h5py.File) -> h5py.Group:
    """A valid Keras 2 layer `dense` with one weight."""
    f.attrs["layer_names"] = np.array([b"dense"])
    group = f.create_group("dense")
    group.attrs["weight_names"] = np.array([b"dense/kernel:0"])
    group.create_dataset("dense/kernel:0", data=np.arange(6.0, dtype=np.float32).reshape(3, 2))
    return group


def _keras3(f: h5py.File) -> h5py.Group:
    """A valid Keras 3 layer `dense` with one variable; returns its `vars` group."""
    variables = f.create_group("layers/dense/vars")
    variables.create_dataset("0", data=np.arange(6.0, dtype=np.float32).reshape(3, 2))
    return variables


def _refused(path: Path, *args: object, memory: int | None = MEMORY) -> str:
    """`ckptmap inspect PATH` in its own process: exit 2, one Error line naming PATH."""
    return assert_refused_process(run_cli("inspect", path, *args, timeout=60, memory=memory), path)


# ------------------------------------------------------------------------------- links (case 1)


@pytest.mark.parametrize(
    ("name", "build"),
    [
        # Keras 3 reads the `name` attribute of layers/<x>/vars before walking the layer.
        ("vars.weights.h5", lambda f, fifo: f.create_group("layers/dense_1").__setitem__(
            "vars", h5py.ExternalLink(str(fifo), "/"))),
        # h5py's visititems skipped links under optimizer_weights silently.
        ("optimizer.h5", lambda f, fifo: f.create_group("optimizer_weights").__setitem__(
            "adam", h5py.ExternalLink(str(fifo), "/"))),
        ("optimizer_soft.h5", lambda f, fifo: f.create_group("optimizer_weights").__setitem__(
            "adam", h5py.SoftLink("/dense/dense/kernel:0"))),
    ],
    ids=["keras3_vars_external", "keras2_optimizer_external", "keras2_optimizer_soft"],
)  # fmt: skip
def test_a_link_anywhere_in_the_walk_is_refused_before_it_is_followed(
    tmp_path: Path, name: str, build
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it blocks forever: following the link would hang

    def make(f: h5py.File) -> None:
        (_keras3 if name.endswith(".weights.h5") else _keras2)(f)
        build(f, fifo)

    line = _refused(_h5(tmp_path / name, make))
    assert "follows no links" in line and ("adam" in line or "vars" in line)


# --------------------------------------------------------------------- hard-link graphs (case 2)


def _dag(f: h5py.File, root: str, depth: int = 40) -> None:
    """Each level links twice to the next: a walk that follows both visits 2**depth groups."""
    levels = [f.require_group(root)] + [f.create_group(f"level{i}") for i in range(depth)]
    for upper, lower in itertools.pairwise(levels):
        upper["a"], upper["b"] = lower, lower


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("dag.weights.h5", lambda f: (_keras3(f), _dag(f, "layers/deep"))),
        ("dag.h5", lambda f: (_keras2(f), _dag(f, "optimizer_weights"))),
    ],
    ids=["keras3_layers", "keras2_optimizer"],
)
def test_a_hard_link_dag_is_refused_without_walking_it(tmp_path: Path, name: str, build) -> None:
    line = _refused(_h5(tmp_path / name, build))
    assert "reached twice" in line


def test_keras2_layers_aliasing_one_group_are_refused(tmp_path: Path) -> None:
    # Two layer names hard-linked to one group: the same weights twice, from bytes stored once.
    def build(f: h5py.File) -> None:
        _keras2(f)
        f["dense_1"] = f["dense"]
        f.attrs["layer_names"] = np.array([b"dense", b"dense_1"])

    with pytest.raises(FormatError, match="reached twice"):
        ckptmap.load(_h5(tmp_path / "alias.h5", build))


def test_keras2_layer_names_listing_a_layer_twice_is_refused(tmp_path: Path) -> None:
    def build(f: h5py.File) -> None:
        _keras2(f)
        f.attrs["layer_names"] = np.array([b"dense", b"dense"])

    with pytest.raises(FormatError, match="lists 'dense' more than once"):
        ckptmap.load(_h5(tmp_path / "twice.h5", build))


# ------------------------------------------------------------ variable-length aliasing (case 3)


def _alias_strings(path: Path, count: int) -> Path:
    """Point every element of the one vlen string array in `path` (written as one BIG string,
    then count - 1 one-byte ones) at the BIG heap object: 1 MB stored, count MB to read."""
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<I", BIG))  # disk element: length (4), collection (8), index (4)
    while at != -1 and struct.unpack_from("<I", data, at + 16)[0] != 1:
        at = data.find(struct.pack("<I", BIG), at + 1)
    assert at != -1, "no vlen string array found"
    first = bytes(data[at : at + 16])
    for k in range(1, count):
        data[at + 16 * k : at + 16 * (k + 1)] = first
    path.write_bytes(bytes(data))
    return path


def _strings(count: int) -> list[str]:
    return ["A" * BIG] + ["b"] * (count - 1)


@pytest.mark.parametrize(
    ("name", "attribute", "build"),
    [
        ("names.h5", "layer_names", lambda f: (
            _keras2(f), f.attrs.create("layer_names", _strings(3500), dtype=h5py.string_dtype()))),
        ("weights.h5", "weight_names", lambda f: _keras2(f).attrs.create(
            "weight_names", _strings(3500), dtype=h5py.string_dtype())),
        ("name.weights.h5", "name", lambda f: _keras3(f).attrs.create(
            "name", _strings(3500), dtype=h5py.string_dtype())),
    ],
    ids=["keras2_layer_names", "keras2_weight_names", "keras3_name"],
)  # fmt: skip
def test_strings_aliasing_one_heap_object_are_refused_before_reading(
    tmp_path: Path, name: str, attribute: str, build
) -> None:
    # 3500 references to one 1 MB object: 3.7 GB from a 1.2 MB file (the CLI gets 1 GB).
    src = _alias_strings(_h5(tmp_path / name, build), 3500)
    assert src.stat().st_size < 2 * BIG
    line = _refused(src)
    assert f"attribute '{attribute}'" in line and "bytes to read" in line


def test_a_string_dataset_aliasing_one_heap_object_is_refused(tmp_path: Path) -> None:
    # A string tensor read later, at conversion, would expand the same way.
    def build(f: h5py.File) -> None:
        _keras3(f).create_dataset("1", data=_strings(3500), dtype=h5py.string_dtype())

    src = _alias_strings(_h5(tmp_path / "strings.weights.h5", build), 3500)
    with pytest.raises(FormatError, match="refusing to inflate"):
        ckptmap.load(src)


# ------------------------------------------------------------------- huge layer numbers (case 4)

DIGITS = "9" * 5000  # int() refuses over 4300 digits in Python 3.11+


def test_a_keras3_layer_key_of_thousands_of_digits_is_a_plain_name(tmp_path: Path) -> None:
    def build(f: h5py.File) -> None:
        for key in (f"gru_{DIGITS}", f"gru_{DIGITS}1", "_layer_checkpoint_dependencies"):
            f.create_group(f"layers/{key}/vars").create_dataset("0", data=np.ones(3, np.float32))

    ckpt = ckptmap.load(_h5(tmp_path / "digits.weights.h5", build))
    assert len(ckpt.entries) == 3
    assert sorted(e.key for e in ckpt.entries.values())[0] == "layers/_layer_checkpoint_dependencies/vars/0"


@pytest.mark.parametrize(
    ("name", "dst"),
    [
        (f"layer_with_weights-{DIGITS}/kernel", "out.h5"),  # keras2 sorts TF2 layer edges by number
        (f"dense/vars/{DIGITS}", "out.weights.h5"),  # keras3 numbers vars/<i>
        ("dense/vars/\u00b2", "out.weights.h5"),  # '²'.isdigit() is True, int('²') fails
    ],
    ids=["keras2_layer_edge", "keras3_vars_index", "keras3_superscript_index"],
)
def test_keras_writers_take_any_digits_in_names(tmp_path: Path, name: str, dst: str) -> None:
    arrays = {name: np.ones((2, 2), np.float32), name.replace("9/", "8/", 1): np.zeros((2, 2), np.float32)}
    ckpt = Checkpoint(
        [TensorEntry(n, a.shape, "float32", n, lambda a=a: a) for n, a in arrays.items()],
        format="numpy",
    )
    try:
        ckptmap.save(ckpt, tmp_path / dst)
    except CkptmapError as e:  # refusing is fine, on one line; a ValueError is not
        assert "\n" not in str(e) and "cannot place tensor" in str(e)
    else:
        assert len(ckptmap.load(tmp_path / dst).entries) == len(arrays)


# ----------------------------------------------------------------- .keras zip aliasing (case 5)


def _archive(path: Path, weights: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": []}}')
        for member, data in extra.items():
            z.writestr(member, data)
        z.writestr("model.weights.h5", weights.read_bytes())
    return path


def _point_at(path: Path, member: str, target: str) -> None:
    """Make the central directory entry of `member` point at the local header of `target`."""
    with zipfile.ZipFile(path) as z:
        offset = z.getinfo(target).header_offset
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")
    while entry != -1:
        name_len = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46 : entry + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, entry + 42, offset)
            path.write_bytes(bytes(data))
            return
        entry = data.find(b"PK\x01\x02", entry + 1)
    raise AssertionError(f"{member} not in the central directory")


def test_keras_archive_weights_aliasing_another_member_are_refused(tmp_path: Path) -> None:
    # model.weights.h5's directory entry points at the bytes of shadow.h5 (same size and CRC):
    # the archive lists one stretch of bytes under two names.
    weights = _h5(tmp_path / "w.weights.h5", _keras3)
    src = _archive(tmp_path / "alias.keras", weights, {"shadow.h5": weights.read_bytes()})
    _point_at(src, "model.weights.h5", "shadow.h5")
    with pytest.raises(FormatError, match="overlap"):
        ckptmap.load(src)


def test_keras_archive_listing_a_member_twice_is_refused(tmp_path: Path) -> None:
    weights = _h5(tmp_path / "w.weights.h5", _keras3)
    src = _archive(tmp_path / "twice.keras", weights, {"assets/a.txt": b"abc", "assets/b.txt": b"abc"})
    _point_at(src, "assets/b.txt", "assets/a.txt")  # one local file, two directory entries
    with pytest.raises(FormatError, match="overlap"):
        ckptmap.load(src)


def test_a_valid_keras_archive_with_assets_still_reads(tmp_path: Path) -> None:
    weights = _h5(tmp_path / "w.weights.h5", _keras3)
    src = _archive(tmp_path / "ok.keras", weights, {"assets/a.txt": b"abc", "metadata.json": b"{}"})
    assert list(ckptmap.load(src).entries) == ["dense/kernel"]


# ----------------------------------------------------------------------- decompression bombs


def test_a_chunk_far_larger_than_its_dataset_is_refused(tmp_path: Path) -> None:
    # 16 floats in one gzip chunk of 1 GiB: HDF5 inflates the whole chunk to read them.
    def build(f: h5py.File) -> None:
        _keras3(f).create_dataset(
            "1", data=np.ones(16, np.float32), maxshape=(None,), chunks=(1 << 28,), compression="gzip"
        )

    src = _h5(tmp_path / "chunk.weights.h5", build)
    out = tmp_path / "out"
    done = run_cli("convert", src, out / "x.safetensors", timeout=60, memory=MEMORY)
    assert "chunks of 1073741824 bytes" in assert_refused_process(done, src) and not out.exists()


def test_datasets_declaring_far_more_than_the_file_holds_are_refused(tmp_path: Path) -> None:
    # 20 unallocated datasets of 60 MB each (zeros when read) in a 50 KB file: each passes the
    # per-dataset check, together they would write 1.2 GB.
    def build(f: h5py.File) -> None:
        for i in range(20):
            f.create_group(f"layers/dense_{i}/vars").create_dataset("0", shape=(15 << 20,), dtype="f4")

    with pytest.raises(FormatError, match="times the bytes the file holds"):
        ckptmap.load(_h5(tmp_path / "many.weights.h5", build))


# ------------------------------------------------------------------------------ property test


@st.composite
def _link_graphs(draw: st.DrawFn) -> list[tuple[int, int, str]]:
    """Edges (from group, to group, kind) among 6 groups under `layers`: hard links that may
    share targets or make cycles, soft links, external links to a missing file."""
    kinds = st.sampled_from(["hard", "hard", "hard", "soft", "external"])
    return draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), kinds), max_size=12))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edges=_link_graphs(), keras2=st.booleans())
def test_any_link_structure_reads_or_fails_cleanly(tmp_path: Path, edges, keras2: bool) -> None:
    path = tmp_path / ("g.h5" if keras2 else "g.weights.h5")

    def build(f: h5py.File) -> None:
        (_keras2 if keras2 else _keras3)(f)
        base = f.create_group("optimizer_weights" if keras2 else "layers/net")
        groups = [base.create_group(f"n{i}") for i in range(6)]
        for k, (a, b, kind) in enumerate(edges):
            link = {
                "hard": groups[b],
                "soft": h5py.SoftLink(groups[b].name),
                "external": h5py.ExternalLink(str(tmp_path / "missing.h5"), "/"),
            }[kind]
            groups[a][f"e{k}"] = link

    _h5(path, build)
    try:
        ckpt = ckptmap.load(path)
    except CkptmapError as e:
        assert "\n" not in str(e)
    else:  # nothing but hard links that form a tree: every weight read once
        assert all(kind == "hard" for _, _, kind in edges)
        assert len(ckpt.entries) == 1
