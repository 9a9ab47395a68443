"""Pickles that try to run code, in the spirit of huggingface/safetensors' attacks/ folder.

Each attack is built here (from `__reduce__` or raw opcodes; no binaries in the repo), wrapped as
a bare pickle, a torch zip and a legacy torch file, and must be refused with a `FormatError` while
its marker file stays absent, i.e. nothing ran. The last tests pin what is *not* an attack:
pickled classes ckptmap cannot import are instantiated inertly, never imported or called.
"""

from __future__ import annotations

import argparse
import copyreg
import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptmap.errors import FormatError
from ckptmap.formats import torch_legacy, torch_pickle, torch_zip
from tests.torchfiles import Call, legacy_file


def ustr(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw  # BINUNICODE


def touch(marker: Path) -> str:
    return f"touch {marker}"


def write_py(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


# name -> builder(marker) -> pickle bytes
ATTACKS: dict[str, Callable[[Path], bytes]] = {
    "os_system": lambda m: pickle.dumps(Call(os.system, touch(m)), protocol=2),
    "os_system_protocol4_stack_global": lambda m: pickle.dumps(Call(os.system, touch(m)), protocol=4),
    "os_system_protocol0": lambda m: pickle.dumps(Call(os.system, touch(m)), protocol=0),
    "builtins_exec": lambda m: pickle.dumps(Call(exec, write_py(m)), protocol=2),
    "builtins_eval": lambda m: pickle.dumps(Call(eval, write_py(m)), protocol=2),
    "builtins_open_for_writing": lambda m: pickle.dumps(Call(open, str(m), "w"), protocol=2),
    "subprocess_popen": lambda m: pickle.dumps(Call(subprocess.Popen, ["touch", str(m)]), protocol=2),
    "nested_pickle_loads": lambda m: pickle.dumps(
        Call(pickle.loads, pickle.dumps(Call(os.system, touch(m)))), protocol=2
    ),
    # INST and OBJ (protocols 0/1) call the class they name.
    "inst_opcode": lambda m: b"(S'" + touch(m).encode() + b"'\nios\nsystem\n.",
    "obj_opcode": lambda m: b"(cos\nsystem\nS'" + touch(m).encode() + b"'\no.",
    # getattr(__import__('os'), 'system')(cmd): reaches os.system through allowed-looking builtins.
    "getattr_import_chain": lambda m: (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'"
        + touch(m).encode()
        + b"'\ntR."
    ),
    # The exploit hidden in an otherwise ordinary training checkpoint.
    "inside_a_checkpoint_dict": lambda m: pickle.dumps(
        {"model": {"w": 1.0}, "epoch": 3, "hook": Call(os.system, touch(m))}, protocol=2
    ),
    # Plant os.system as an allowed object's __setstate__, then BUILD it with the command.
    "setstate_injection": lambda m: (
        b"\x80\x02ccollections\nOrderedDict\n)RN}"
        + ustr("__setstate__")
        + b"cos\nsystem\ns\x86b"  # BUILD (None, {"__setstate__": os.system})
        + ustr(touch(m))
        + b"b."  # BUILD with the command: calls the planted __setstate__
    ),
    # Allow-listed torch rebuild functions handed a foreign function.
    "rebuild_from_type_gadget": lambda m: pickle.dumps(
        Call(torch._tensor._rebuild_from_type_v2, os.system, torch.Tensor, (touch(m),), {}), protocol=2
    ),
    "torch_load_gadget": lambda m: pickle.dumps(Call(torch.load, str(m)), protocol=2),
    # copyreg._reconstructor(cls, base, state) calls base.__init__(obj, state) in real pickle.
    "copyreg_reconstructor_runs_base_init": lambda m: pickle.dumps(
        Call(copyreg._reconstructor, subprocess.Popen, subprocess.Popen, ["touch", str(m)]), protocol=2
    ),
    "extension_registry_opcode": lambda m: b"\x80\x02\x82\x01.",
}


def as_zip(data: bytes, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


CONTAINERS: dict[str, Callable[[bytes, Path], object]] = {
    "bare_pickle": lambda data, tmp: torch_pickle.unpickle(data, "attack.pkl"),
    "torch_zip": lambda data, tmp: torch_zip.read(as_zip(data, tmp / "attack.pt")),
    "torch_legacy": lambda data, tmp: torch_legacy.read(legacy_file(tmp / "attack.pt", data)),
}


@pytest.mark.parametrize("container", CONTAINERS, ids=list(CONTAINERS))
@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_attack_is_refused_and_nothing_runs(tmp_path: Path, attack: str, container: str) -> None:
    marker = tmp_path / "pwned"
    data = ATTACKS[attack](marker)
    with pytest.raises(FormatError) as info:
        CONTAINERS[container](data, tmp_path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("attack", "match"),
    [
        ("os_system", r"calls posix\.system, which is not on ckptmap's allow-list"),
        ("builtins_exec", r"calls builtins\.exec"),
        ("getattr_import_chain", r"calls builtins\.(getattr|__import__)"),
        ("inside_a_checkpoint_dict", r"calls posix\.system"),
        ("rebuild_from_type_gadget", "not a known tensor rebuild"),
    ],
)
def test_refusal_names_the_global_it_refused(tmp_path: Path, attack: str, match: str) -> None:
    if os.name != "posix":
        pytest.skip("os.system pickles as posix.system on POSIX only")
    with pytest.raises(FormatError, match=match):
        torch_pickle.unpickle(ATTACKS[attack](tmp_path / "m"), "attack.pkl")


def test_legacy_sniff_never_runs_the_magic_number_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "x.pt").write_bytes(ATTACKS["os_system"](marker))
    assert torch_legacy.sniff(tmp_path / "x.pt") is False
    assert not marker.exists()


def test_storage_ids_cannot_reach_outside_their_storage(tmp_path: Path) -> None:
    # A tensor claiming 10**12 elements of a 2-element storage: refused at index time.
    class Pid:
        def __reduce__(self) -> tuple:
            return torch._utils._rebuild_tensor_v2, (PID, 0, (10**12,), (1,), False, {})

    PID = ("storage", torch.FloatStorage, "0", "cpu", 2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj if obj is PID else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Pid()})
    path = as_zip(buf.getvalue(), tmp_path / "x.pt")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("archive/data/0", b"\0" * 8)
    with pytest.raises(FormatError, match="reaches past its storage '0'"):
        torch_zip.read(path)


# ------------------------------------------------------------------------------ what is not an attack


def test_unknown_classes_are_neither_imported_nor_called(tmp_path: Path, monkeypatch) -> None:
    # A module that would leave a marker if imported, and a class that would if instantiated.
    marker = tmp_path / "imported"
    touch_marker = f"open({str(marker)!r}, 'w').close()"
    source = f"{touch_marker}\nclass Boom:\n    def __new__(cls, *a):\n        {touch_marker}\n"
    (tmp_path / "ckptmap_evil_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"\x80\x02}(X\x01\x00\x00\x00acckptmap_evil_mod\nBoom\n)\x81}bu."  # {"a": NEWOBJ Boom + BUILD}
    obj = torch_pickle.unpickle(data, "x.pkl")
    assert obj["a"].class_path == "ckptmap_evil_mod.Boom"
    assert not marker.exists() and "ckptmap_evil_mod" not in sys.modules


def test_training_extras_numpy_scalars_and_namespaces_are_harmless(tmp_path: Path) -> None:
    # Real checkpoints carry argparse Namespaces and numpy scalars; they are recorded, not run.
    sd = torch.nn.GRU(2, 3).state_dict()
    args = argparse.Namespace(lr=0.1, hidden=3)
    extras = {"args": args, "best": np.float64(0.5), "path": Path("/tmp/run"), "steps": np.arange(3)}
    torch.save({"model": sd, **extras, "epoch": 2}, tmp_path / "c.pt")
    ckpt = torch_zip.read(tmp_path / "c.pt")
    assert list(ckpt) == [k.replace(".", "/") for k in sd]
    assert ckpt.metadata == {"epoch": 2}
    assert ckpt.notes == [
        "picked the state dict under 'model' (also present: args, best, path, steps, epoch)"
    ]
