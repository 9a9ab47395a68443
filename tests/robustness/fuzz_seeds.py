"""Small valid checkpoints of every format ckptmap reads, built with the real frameworks, as
material for test_fuzz.py to damage.

A `Target` is one checkpoint on disk (`files`) plus the bytes a test may change: `parts`, which
`assemble` turns back into the damaged file. For most targets the one part is a whole file, so
damage hits everything, checksums included. "Resealed" targets split a file into its records (the
values of a TF table, the members of a zip, a safetensors header and its data) and reassemble it
with valid checksums and lengths, so damage gets past the checksums into the parsers behind them.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ckptmap.formats.sstable import TableReader, TableWriter

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@dataclass(frozen=True)
class Target:
    name: str
    files: dict[str, bytes] = field(repr=False)  # the valid checkpoint: relative path -> contents
    mutated: str  # the file that `assemble` rebuilds
    load: str  # what to hand to ckptmap.load
    parts: tuple[bytes, ...] = field(repr=False)
    assemble: Callable[[list[bytes]], bytes] = field(repr=False)

    def write(self, folder: Path, parts: list[bytes]) -> Path:
        """The checkpoint with the mutated file rebuilt from `parts`, in `folder`; its load path."""
        for rel, data in self.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.assemble(parts) if rel == self.mutated else data)
        return folder / self.load


def _whole(name: str, files: dict[str, bytes], mutated: str, load: str) -> Target:
    return Target(name, files, mutated, load, (files[mutated],), lambda parts: parts[0])


def _table(name: str, files: dict[str, bytes], mutated: str, load: str, path: Path) -> Target:
    """A TF table (.index or V1 file) whose values are the parts; keys stay, blocks get new CRCs."""
    items = [(bytes(k), bytes(v)) for k, v in TableReader(path).items()]
    keys = [k for k, _ in items]

    def assemble(values: list[bytes]) -> bytes:
        out = io.BytesIO()
        writer = TableWriter(out)
        for key, value in zip(keys, values, strict=True):
            writer.add(key, value)
        writer.finish()
        return out.getvalue()

    return Target(name, files, mutated, load, tuple(v for _, v in items), assemble)


def _zip(name: str, files: dict[str, bytes], mutated: str) -> Target:
    """A zip whose members' contents are the parts; names stay, CRCs and sizes are recomputed."""
    with zipfile.ZipFile(io.BytesIO(files[mutated])) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]

    def assemble(contents: list[bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for (member, _), data in zip(members, contents, strict=True):
                z.writestr(member, data)
        return out.getvalue()

    return Target(name, files, mutated, mutated, tuple(d for _, d in members), assemble)


def _safetensors_parts(name: str, files: dict[str, bytes], mutated: str) -> Target:
    raw = files[mutated]
    n = int.from_bytes(raw[:8], "little")

    def assemble(parts: list[bytes]) -> bytes:
        return len(parts[0]).to_bytes(8, "little") + parts[0] + parts[1]

    return Target(name, files, mutated, mutated, (raw[8 : 8 + n], raw[8 + n :]), assemble)


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tf_checkpoints(folder: Path) -> dict[str, Path]:
    import tensorflow as tf

    v1 = tf.compat.v1
    paths = {}
    for version, sub in ((v1.train.SaverDef.V2, "tf"), (v1.train.SaverDef.V1, "v1")):
        (folder / sub).mkdir()
        with tf.Graph().as_default():
            v1.get_variable("rnn/lstm_cell/kernel", initializer=np.arange(24, dtype=np.float32).reshape(3, 8))
            v1.get_variable("step", initializer=np.int64(7))
            v1.Variable(np.array([b"gru", b""], dtype=object), name="names", dtype=tf.string)
            if version == v1.train.SaverDef.V2:  # V1's writer does not take partitioned variables
                v1.get_variable(
                    "embedding",
                    shape=[6, 2],
                    partitioner=v1.fixed_size_partitioner(3),
                    initializer=v1.constant_initializer(0.5),
                )
            with v1.Session() as session:
                session.run(v1.global_variables_initializer())
                saver = v1.train.Saver(write_version=version)
                prefix = saver.save(session, str(folder / sub / "model.ckpt"), write_meta_graph=False)
                paths[sub] = Path(prefix)
    (folder / "tf2").mkdir()
    checkpoint = tf.train.Checkpoint(
        dense=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)), step=tf.Variable(3, dtype=tf.int64)
    )
    paths["tf2"] = Path(checkpoint.write(str(folder / "tf2" / "ckpt")))
    return paths


def _keras_files(folder: Path) -> None:
    import keras  # Keras 3
    import tf_keras

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(2), keras.layers.Dense(1)])
    model.save_weights(folder / "k3.weights.h5")
    model.save(folder / "m.keras")
    old = tf_keras.Sequential([tf_keras.Input((None, 3)), tf_keras.layers.LSTM(2), tf_keras.layers.Dense(1)])
    old.save_weights(str(folder / "k2.h5"))


def _torch_files(folder: Path) -> None:
    import torch

    lstm = torch.nn.LSTM(3, 2)
    state = {**lstm.state_dict(), "steps": torch.tensor(5), "view": torch.arange(6.0).reshape(2, 3).t()}
    torch.save(state, folder / "t.pt")
    torch.save(state, folder / "tl.pt", _use_new_zipfile_serialization=False)


def _safetensors_file(folder: Path) -> None:
    from safetensors.numpy import save_file

    save_file(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64)},
        str(folder / "s.safetensors"),
        metadata={"format": "pt"},
    )


class Targets(dict[str, Target]):
    def __repr__(self) -> str:  # Hypothesis prints test arguments; the bytes would be pages long
        return f"<{len(self)} fuzz targets>"


def build(folder: Path) -> Targets:
    """Every target, from checkpoints written into `folder` by TensorFlow, Keras, torch, safetensors."""
    tf_paths = _tf_checkpoints(folder)
    _keras_files(folder)
    _torch_files(folder)
    _safetensors_file(folder)
    targets: list[Target] = []
    for sub in ("tf", "tf2"):
        files = _read_tree(folder / sub)
        prefix = tf_paths[sub].name
        data = next(k for k in files if ".data-" in k)
        targets.append(_whole(f"{sub}-index", files, f"{prefix}.index", prefix))
        targets.append(_whole(f"{sub}-data", files, data, prefix))
    tf_files = _read_tree(folder / "tf")
    index = folder / "tf" / "model.ckpt.index"
    targets.append(_table("tf-index-resealed", tf_files, "model.ckpt.index", "model.ckpt", index))
    v1_files = _read_tree(folder / "v1")
    targets.append(_whole("tf-v1", v1_files, "model.ckpt", "model.ckpt"))
    v1_file = folder / "v1" / "model.ckpt"
    targets.append(_table("tf-v1-resealed", v1_files, "model.ckpt", "model.ckpt", v1_file))
    singles = {"torch-zip": "t.pt", "torch-legacy": "tl.pt", "safetensors": "s.safetensors",
               "keras3": "k3.weights.h5", "keras-archive": "m.keras", "keras2": "k2.h5"}  # fmt: skip
    for name, file in singles.items():
        targets.append(_whole(name, {file: (folder / file).read_bytes()}, file, file))
    targets.append(_zip("torch-zip-resealed", {"t.pt": (folder / "t.pt").read_bytes()}, "t.pt"))
    targets.append(_zip("keras-archive-resealed", {"m.keras": (folder / "m.keras").read_bytes()}, "m.keras"))
    st = {"s.safetensors": (folder / "s.safetensors").read_bytes()}
    targets.append(_safetensors_parts("safetensors-resealed", st, "s.safetensors"))
    return Targets((t.name, t) for t in targets)


NAMES = [
    "tf-index",
    "tf-data",
    "tf2-index",
    "tf2-data",
    "tf-index-resealed",
    "tf-v1",
    "tf-v1-resealed",
    "torch-zip",
    "torch-legacy",
    "safetensors",
    "keras3",
    "keras-archive",
    "keras2",
    "torch-zip-resealed",
    "keras-archive-resealed",
    "safetensors-resealed",
]
