"""What every writer promises, whatever its format: a source that fails part way (an error, or
Ctrl-C) leaves no output, no hidden temporaries, no new directory, and whatever was at the
destination before exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ckptmap.errors import WriteError
from ckptmap.formats import registry
from ckptmap.tree import Checkpoint, TensorEntry
from tests.onnxfiles import writer_options

# format -> a destination name it writes: every writer, from the table of formats.
DESTINATIONS = {f.name: f.example for f in registry.FORMATS if f.writable}
FAILURES = [RuntimeError("source vanished"), KeyboardInterrupt()]


def _checkpoint(bias: Callable[[], np.ndarray]) -> Checkpoint:
    kernel = TensorEntry("dense/kernel", (3,), "float32", "a", lambda: np.arange(3, dtype=np.float32))
    return Checkpoint([kernel, TensorEntry("dense/bias", (3,), "float32", "b", bias)], format="test")


def _failing(exc: BaseException) -> Checkpoint:
    def fail() -> np.ndarray:
        raise exc

    return _checkpoint(fail)


@pytest.fixture(scope="module")
def write(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Checkpoint, Path], None]:
    """`write(fmt, ckpt, path)` with what each writer needs: a template for the formats written
    into an existing file, kept outside the folders under test."""
    folder = tmp_path_factory.mktemp("templates")
    names = {"dense/kernel": ((3,), "float32"), "dense/bias": ((3,), "float32")}
    options = {f.name: writer_options(f, folder, names) for f in registry.FORMATS if f.writable}

    def run(fmt: str, ckpt: Checkpoint, path: Path) -> None:
        registry.spec(fmt).load().write(ckpt, path, **options[fmt])

    return run


def _raises(fmt: str, exc: BaseException) -> pytest.RaisesContext:
    # The Keras 3 writer reports a RuntimeError inside its h5py block, a source's included, as
    # a WriteError that carries the source's message.
    if fmt == "keras3" and isinstance(exc, RuntimeError):
        return pytest.raises(WriteError, match=str(exc))
    return pytest.raises(type(exc), match=str(exc) or None)


@pytest.mark.parametrize("exc", FAILURES, ids=["error", "ctrl-c"])
@pytest.mark.parametrize("fmt", DESTINATIONS)
def test_failed_write_leaves_no_files(write, tmp_path: Path, fmt: str, exc: BaseException) -> None:
    name = DESTINATIONS[fmt]
    with _raises(fmt, exc):
        write(fmt, _failing(exc), tmp_path / "new_dir" / name)
    with _raises(fmt, exc):
        write(fmt, _failing(exc), tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # no outputs, no hidden temporaries, no new directory


@pytest.mark.parametrize("fmt", DESTINATIONS)
def test_a_failed_write_over_a_checkpoint_leaves_it_as_it_was(write, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / DESTINATIONS[fmt]
    write(fmt, _checkpoint(lambda: np.ones(3, np.float32)), path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before  # the checkpoint that must survive is there
    failure = RuntimeError("source vanished")
    with _raises(fmt, failure):
        write(fmt, _failing(failure), path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
