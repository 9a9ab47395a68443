"""The table of formats says what the rest of ckptmap asks about each format; these tests hold
every row to its module and to the frameworks `verify` knows."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from ckptmap.errors import UnsupportedError
from ckptmap.formats import registry
from ckptmap.tree import Checkpoint, TensorEntry
from ckptmap.verification.backends import BACKENDS
from tests.onnxfiles import writer_options

FORMATS = {f.name: f for f in registry.FORMATS}
WRITABLE = [f.name for f in registry.FORMATS if f.writable]
LIBRARIES = {"tensorflow", "torch", "safetensors", "keras", "onnx", "flax"}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_names_its_framework_label_and_example(name: str) -> None:
    fmt = FORMATS[name]
    assert fmt.framework in BACKENDS  # a framework verify restores into
    assert fmt.library in LIBRARIES
    assert fmt.label.strip() and fmt.label != fmt.name
    assert fmt.example.strip() and "/" not in fmt.example
    # The example is a name the format is known by, where the table gives it suffixes.
    assert not fmt.suffixes or fmt.example.lower().endswith(fmt.suffixes)


@pytest.mark.parametrize("name", FORMATS)
def test_the_writer_capabilities_in_the_table_are_the_writers(name: str) -> None:
    fmt = FORMATS[name]
    module = fmt.load()
    assert hasattr(module, "write") == fmt.writable
    if fmt.writable:
        assert ("max_shard_bytes" in inspect.signature(module.write).parameters) == fmt.shards
        assert hasattr(module, "written_names") == bool(fmt.fixes_names)
    else:
        assert not (fmt.shards or fmt.fixes_names or fmt.preferred)


@pytest.mark.parametrize("framework", BACKENDS)
def test_each_framework_has_one_preferred_writable_format_it_restores(framework: str) -> None:
    preferred = [f for f in registry.FORMATS if f.framework == framework and f.preferred]
    assert len(preferred) == 1 and preferred[0].writable
    assert registry.preferred(framework) is preferred[0]
    assert BACKENDS[framework].write_as == preferred[0].name
    assert preferred[0].name in BACKENDS[framework].formats


@pytest.mark.parametrize("name", WRITABLE)
def test_a_checkpoint_written_under_the_example_name_reads_back_as_its_format(
    tmp_path: Path, name: str
) -> None:
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    ckpt = Checkpoint(
        [TensorEntry("dense/kernel", (2, 3), "float32", "dense/kernel", lambda: kernel)], format="test"
    )
    path = tmp_path / FORMATS[name].example
    options = writer_options(FORMATS[name], tmp_path, {"dense/kernel": ((2, 3), "float32")})
    FORMATS[name].load().write(ckpt, path, **options)
    assert registry.detect(path).name == name
    if FORMATS[name].suffixes:  # the name alone picks it as the output format
        assert registry.output_format(path, None).name == name


def test_framework_of_unknown_format_says_none_restores_it() -> None:
    with pytest.raises(UnsupportedError, match="No framework here restores 'npz'"):
        registry.framework_of("npz")


def test_labels_fall_back_to_the_format_name() -> None:
    assert registry.label("tf") == "TensorFlow checkpoint"
    assert registry.label("made-up") == "made-up"
