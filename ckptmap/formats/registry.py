"""The table of formats, and how a path finds its format.

Each row names a module that implements the format protocol:

    sniff(path: Path) -> bool          reads at most a few header bytes; False means "not mine"
    read(path: Path) -> Checkpoint     lazy: reads the index/header only
    files(path: Path, ckpt: Checkpoint | None = None) -> list[Path]
                                       (writers) the files `write` creates for this destination
    written_names(ckpt) -> dict[str, str]  (writers whose row has `fixes_names`) names the writer
                                       changes on the way out, as reading the file back shows them
    write(ckpt: Checkpoint, path: Path, *, progress=None) -> list[Path]
                                       (writers) atomic (see ckptmap.atomic), streaming one tensor at a
                                       time; `progress(n)` is called with the bytes each tensor added;
                                       `max_shard_bytes=` too where the row says `shards`,
                                       `template=` (the file `--into` names) where it says `template`
    unplaced(ckpt, **options) -> dict[str, str]
                                       (optional) tensors the output has no place for, with why

Each row also says what the rest of ckptmap asks about a format without importing its module: the
framework that restores it (the API's and the hooks' choice of mapping, `verify`'s backends), its
label (`inspect`), an example name and what its writer does (`convert --help`, `--shard-size`).
tests/formats/test_registry.py holds every row to its module.

Modules are imported on first use, so listing formats imports nothing heavy. A format is chosen
by explicit name, else by trying the formats whose suffixes fit the path first and then all the
others; when none accepts the file the error lists what was tried. Adding a format is one module
plus one row here.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import CkptmapError, FormatError, SourceNotFoundError, UnsupportedError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..tree import Checkpoint


@dataclass(frozen=True, kw_only=True)
class FormatSpec:
    """One format: where its code is, which framework it belongs to, and what its writer does."""

    name: str
    module: str
    description: str
    # The framework whose own restore reads it (torch.load + load_state_dict, Keras load_weights,
    # tf.compat.v1.train.Saver): the side of a mapping it is on, and where `verify` restores it.
    framework: str
    # The library whose files these are, whose reader opens them as they are: tf1.restore hands a
    # "tensorflow" file straight to the Saver; "keras" files name tensors as canonical Keras names.
    library: str
    label: str  # what `inspect` calls it
    example: str  # a name a file (or TF prefix) in this format has
    suffixes: tuple[str, ...] = ()
    writable: bool = False
    shards: bool = False  # the writer spreads data over several files (`convert --shard-size`)
    fixes_names: str = ""  # what the writer renames on the way out (its `written_names`); "" for nothing
    preferred: bool = False  # the format written for `framework` when a destination's name does not say
    # The writer fills an existing file of the format (`convert --into`, its `template=`) rather than
    # making one: what that file gives, for help and errors; "" for writers that need none.
    template: str = ""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


FORMATS: tuple[FormatSpec, ...] = (
    # tf2 before tf: both are V2 bundles; tf2's sniff wants the object graph, tf's wants none.
    FormatSpec(
        name="tf2",
        module="ckptmap.formats.tf2_object",
        description="TF2 object-based checkpoint (tf.train.Checkpoint, tf-keras save_weights)",
        framework="keras",  # tf-keras' load_weights restores it by object path
        library="tensorflow",
        label="TF2 object-based checkpoint",
        example="ckpt-1",
        writable=True,
        fixes_names="Keras layers renamed layer_with_weights-<k>: TF2 checkpoints store no layer names",
    ),
    FormatSpec(
        name="tf",
        module="ckptmap.formats.tf_bundle",
        description="TensorFlow checkpoint (V2 bundle: .index + .data shards)",
        framework="tf1",
        library="tensorflow",
        label="TensorFlow checkpoint",
        example="model.ckpt",
        suffixes=(".index", ".ckpt"),
        writable=True,
        shards=True,
        preferred=True,
    ),
    FormatSpec(
        name="tf-v1",
        module="ckptmap.formats.tf_v1",
        description="TensorFlow V1 single-file checkpoint (TF <= 1.0)",
        framework="tf1",
        library="tensorflow",
        label="TensorFlow V1 checkpoint",
        example="model.ckpt-1000",
    ),
    FormatSpec(
        name="torch",
        module="ckptmap.formats.torch_zip",
        description="PyTorch torch.save file (zip)",
        framework="torch",
        library="torch",
        label="PyTorch file",
        example="model.pt",
        suffixes=(".pt", ".pth", ".bin"),
        writable=True,
        preferred=True,
    ),
    FormatSpec(
        name="torch-legacy",
        module="ckptmap.formats.torch_legacy",
        description="PyTorch torch.save file (legacy, pre-1.6)",
        framework="torch",
        library="torch",
        label="PyTorch legacy file",
        example="model.pth",
        suffixes=(".pt", ".pth", ".bin"),
    ),
    FormatSpec(
        name="safetensors",
        module="ckptmap.formats.safetensors_file",
        description="safetensors",
        framework="torch",  # written with torch's names, for safetensors.torch.load_file
        library="safetensors",
        label="safetensors file",
        example="model.safetensors",
        suffixes=(".safetensors",),
        writable=True,
    ),
    FormatSpec(
        name="keras3",
        module="ckptmap.formats.keras3_h5",
        description="Keras 3 weights (model.save_weights: .weights.h5)",
        framework="keras",
        library="keras",
        label="Keras 3 weights file",
        example="model.weights.h5",
        suffixes=(".weights.h5",),
        writable=True,
        preferred=True,
    ),
    FormatSpec(
        name="keras-archive",
        module="ckptmap.formats.keras_archive",
        description="Keras 3 model archive (.keras)",
        framework="keras",
        library="keras",
        label="Keras 3 model archive",
        example="model.keras",
        suffixes=(".keras",),
    ),
    FormatSpec(
        name="savedmodel",
        module="ckptmap.formats.saved_model",
        description="TF SavedModel directory (tf-keras model.save(dir), TF Hub): its variables",
        framework="keras",  # a Keras model's layers, restored by object path as tf2
        library="tensorflow",
        label="TF SavedModel",
        example="saved_model_dir",
    ),
    FormatSpec(
        name="onnx",
        module="ckptmap.formats.onnx_model",
        description="ONNX model (.onnx): its initializers; written into an existing model",
        framework="onnx",  # onnxruntime runs it
        library="onnx",
        label="ONNX model",
        example="model.onnx",
        suffixes=(".onnx",),
        writable=True,
        template="the graph: ckptmap replaces its initializers and keeps everything else",
        fixes_names="RNN weights go to the model's own nodes (LSTM_589) in layer and graph order when its "
        "node names are not torch.onnx's",
        preferred=True,
    ),
    FormatSpec(
        name="flax",
        module="ckptmap.formats.flax_msgpack",
        description="Flax msgpack parameters (flax.serialization.to_bytes)",
        framework="flax",
        library="flax",
        label="Flax msgpack file",
        example="params.msgpack",
        suffixes=(".msgpack",),
        writable=True,
        preferred=True,
    ),
    FormatSpec(
        name="orbax",
        module="ckptmap.formats.orbax_checkpoint",
        description="orbax PyTree checkpoint directory (Flax/JAX; read through tensorstore)",
        framework="flax",
        library="flax",
        label="orbax checkpoint",
        example="checkpoint_dir",
    ),
    FormatSpec(
        name="keras2",
        module="ckptmap.formats.keras2_h5",
        description="Keras 2 / tf-keras HDF5 weights (.h5)",
        framework="keras",
        library="keras",
        label="Keras 2 HDF5 weights file",
        example="model.h5",
        suffixes=(".h5", ".hdf5"),
        writable=True,
    ),
)

_BY_NAME = {f.name: f for f in FORMATS}


def spec(name: str) -> FormatSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UsageError(f"Unknown format '{name}'; known formats: {', '.join(_BY_NAME)}.") from None


def writable_formats() -> list[str]:
    return [f.name for f in FORMATS if f.writable]


def sharding_formats() -> list[str]:
    return [f.name for f in FORMATS if f.shards]


def label(name: str) -> str:
    """What `inspect` calls format `name` (a name the table does not know is shown as it is)."""
    found = _BY_NAME.get(name)
    return found.label if found else name


def framework_of(name: str) -> str:
    """The framework whose own restore reads format `name` (tf1, torch, keras)."""
    found = _BY_NAME.get(name)
    if found is None:
        raise UnsupportedError(f"No framework here restores '{name}' checkpoints.")
    return found.framework


def formats_of(framework: str) -> tuple[str, ...]:
    """The formats `framework`'s own restore reads."""
    return tuple(f.name for f in FORMATS if f.framework == framework)


def frameworks() -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.framework for f in FORMATS))


def preferred(framework: str) -> FormatSpec:
    """The format written for `framework` when nothing else says which (convert, verify)."""
    for f in FORMATS:
        if f.framework == framework and f.preferred:
            return f
    raise UsageError(f"No format is written for '{framework}'; frameworks: {', '.join(frameworks())}.")


def of_library(library: str) -> frozenset[str]:
    """The formats that are `library`'s own files (tensorflow, torch, safetensors, keras)."""
    return frozenset(f.name for f in FORMATS if f.library == library)


def detect(path: Path) -> FormatSpec:
    """The format of the checkpoint at `path` (a file, a TF prefix, or a directory)."""
    return resolve(path)[0]


def resolve(path: Path) -> tuple[FormatSpec, Path]:
    """The format and the path to read: `path` itself, or the one checkpoint file in a directory."""
    if not os.path.lexists(path) and not _has_prefix_files(path):
        raise SourceNotFoundError(f"{path}: no such file, directory or checkpoint prefix.")
    # Before any sniffer opens it: a FIFO blocks the open, a device reads forever, a link loop or a
    # broken link is named as what it is. A TF prefix is not a file; its .index must be one.
    _refuse_special(path if os.path.lexists(path) else Path(f"{path}.index"))
    found = _sniff(path)
    if found is not None:
        return found, path
    if path.is_dir():
        inside = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        readable = [(fmt, p) for p in inside if (fmt := _sniff(p)) is not None]
        if len(readable) == 1:
            return readable[0]
        if not readable:
            _explain(path)  # a TF checkpoint whose index is damaged
        names = ", ".join(p.name for _, p in readable) or ", ".join(p.name for p in inside[:8]) or "none"
        what = "several checkpoints" if readable else "no checkpoint ckptmap can read"
        raise FormatError(f"{path}: a directory with {what}; name one file (files: {names}).")
    if path.is_file() and path.stat().st_size == 0:
        raise FormatError(f"{path}: the file is empty.")
    _explain(path)
    tried = ", ".join(f.description for f in FORMATS)
    raise FormatError(f"{path}: not a checkpoint ckptmap can read (tried: {tried}).")


def _explain(path: Path) -> None:
    """When no format accepts `path` but its name or layout says which one it should be (a TF
    prefix with its .index, a .safetensors name), let that format's reader raise its own error:
    "truncated" or "wrong magic number" says more than "not a checkpoint"."""
    from . import tf_paths

    if path.is_dir() or _has_prefix_files(path) or tf_paths.strip_suffix(path) != path:
        tf_dir = path.is_dir() and ((path / tf_paths.STATE_FILE).is_file() or any(path.glob("*.index")))
        try:
            found = tf_paths.resolve(path)
        except CkptmapError:
            if tf_dir:  # a `checkpoint` file naming what is not there, several .index files
                raise
            return
        if found.kind == "v2":
            spec("tf").load().read(found.path)
        return
    # `.ckpt` also names V1 files, which tf-v1 sniffs; `.pt` is claimed by two formats.
    claims = [(f, _suffix_match(f, path)) for f in FORMATS if f.name != "tf"]
    best = max(n for _, n in claims)
    claimed = [f for f, n in claims if n and n == best]
    if len(claimed) == 1:
        claimed[0].load().read(path)


def _sniff(path: Path) -> FormatSpec | None:
    ordered = sorted(FORMATS, key=lambda f: -_suffix_match(f, path))  # stable: table order among equals
    return next((f for f in ordered if f.load().sniff(path)), None)


def _suffix_match(fmt: FormatSpec, path: Path) -> int:
    """Length of the longest of `fmt`'s suffixes that `path` ends with (0: none), so `.weights.h5`
    beats `.h5`."""
    name = path.name.lower()
    return max((len(s) for s in fmt.suffixes if name.endswith(s)), default=0)


# Schemes of object stores and remote file systems (fsspec's registry names most of them). A
# `Path` folds `s3://b/k` into `s3:/b/k`, so a path that went through one is known by these.
_OBJECT_STORES = {"s3", "s3a", "s3n", "gs", "gcs", "az", "abfs", "abfss", "adl", "wasb", "wasbs", "oss", "r2"}
_REMOTE_FILE_SYSTEMS = {"http", "https", "ftp", "sftp", "ssh", "hdfs", "webhdfs", "viewfs", "dbfs", "hf"}
REMOTE_SCHEMES = frozenset(_OBJECT_STORES | _REMOTE_FILE_SYSTEMS)


def refuse_remote(path: str | os.PathLike[str]) -> None:
    """Raise for a URL (`s3://...`, `https://...`): without this it would read as a local path
    that does not exist, or be written as a local directory named `s3:`."""
    text = os.fspath(path)
    scheme, sep, _ = text.partition(":/")
    if not (sep and len(scheme) > 1 and scheme[0].isalpha() and scheme.replace("+", "").isalnum()):
        return
    if scheme.lower() == "file":
        local = text[len(scheme) + 1 :].removeprefix("//")
        raise UsageError(f"{text}: a file: URL; give the path itself ({local}).")
    if scheme.lower() in REMOTE_SCHEMES or text.startswith(f"{scheme}://"):
        url = text if text.startswith(f"{scheme}://") else f"{scheme}:/{text[len(scheme) + 1 :]}"
        raise UnsupportedError(
            f"{url}: remote URLs are not supported yet (issue: object storage); copy it locally first."
        )


def read(path: str | Path, *, format: str | None = None) -> Checkpoint:
    refuse_remote(path)
    p = Path(path)
    if format:
        if os.path.lexists(p):  # else a TF prefix, which its reader resolves
            _refuse_special(p)
        return spec(format).load().read(p)
    fmt, target = resolve(p)
    return fmt.load().read(target)


def output_format(path: Path, to: str | None) -> FormatSpec:
    """The format to write: `to` if given, else the destination's suffix."""
    refuse_remote(path)
    if to:
        fmt = spec(to)
        if not fmt.writable:
            raise UsageError(f"ckptmap cannot write '{to}'; it writes: {', '.join(writable_formats())}.")
        return fmt
    best = max((f for f in FORMATS if f.writable), key=lambda f: _suffix_match(f, path))
    if _suffix_match(best, path):
        return best
    raise UsageError(
        f"{path}: cannot tell the output format from the name; use a {written_suffixes()} name, or --to "
        f"{'|'.join(writable_formats())}."
    )


def written_suffixes() -> str:
    """The names writable formats are known by: `.ckpt/.index, .pt/.pth/.bin, ... or .h5/.hdf5`."""
    named = ["/".join(f.suffixes) for f in FORMATS if f.writable and f.suffixes]
    return f"{', '.join(named[:-1])} or {named[-1]}"


def has_known_suffix(path: Path) -> bool:
    """Whether a writable format claims `path` by its name."""
    return any(_suffix_match(f, path) for f in FORMATS if f.writable)


def _refuse_special(path: Path) -> None:
    """Raise unless `path` is a directory or a regular file (links followed); see rawio.regular_file."""
    from .rawio import regular_file  # here: listing formats imports nothing it does not need

    if not path.is_dir():
        regular_file(path)


def _has_prefix_files(path: Path) -> bool:
    # A TF checkpoint is named by a prefix that is not itself a file (`model.ckpt` for
    # `model.ckpt.index` + `model.ckpt.data-00000-of-00001`).
    return os.path.lexists(f"{path}.index")  # a broken link or a FIFO too: `resolve` says what it is
