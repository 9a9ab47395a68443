"""The module that builds each framework's models for `verify` (which formats a framework restores
is the table of formats' to say: `registry.formats_of`).

Each backend module has `restore_and_run(rnn, ckpt, batches, *, by, options) -> Outcome`:
`by="checkpoint"` restores each tensor from the name the checkpoint gives it (verifying a
conversion), `by="model"` from the name the fresh model looks for (does it restore as it is?).
Frameworks are imported only inside those modules, only when a verification runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from ..errors import UnsupportedError, UsageError
from ..formats import registry


@dataclass(frozen=True)
class Backend:
    framework: str
    module: str
    install: str

    @property
    def formats(self) -> tuple[str, ...]:
        """The checkpoint formats this framework's own restore reads (from the table of formats)."""
        return registry.formats_of(self.framework)

    @property
    def write_as(self) -> str:
        """The format a mapped checkpoint is written in before this framework restores it."""
        return registry.preferred(self.framework).name

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BACKENDS: dict[str, Backend] = {
    "tf1": Backend("tf1", "ckptmap.verification.tf1_model", "pip install 'ckptmap[tf]'"),
    "torch": Backend("torch", "ckptmap.verification.torch_model", "pip install 'ckptmap[torch]'"),
    "keras": Backend("keras", "ckptmap.verification.keras_model", "pip install 'ckptmap[keras,tf]'"),
    "onnx": Backend("onnx", "ckptmap.verification.onnx_model", "pip install 'ckptmap[onnx]'"),
    "flax": Backend("flax", "ckptmap.verification.flax_model", "pip install 'ckptmap[flax]'"),
}


def backend(framework: str) -> Backend:
    try:
        return BACKENDS[framework]
    except KeyError:
        raise UsageError(f"Cannot verify in '{framework}'; frameworks: {', '.join(BACKENDS)}.") from None


def import_framework(name: str, install: str) -> ModuleType:
    try:
        with quiet_stderr():
            return importlib.import_module(name)
    except ImportError as e:
        raise UnsupportedError(
            f"Verifying needs {name}, which is not installed ({e}).", hint=install
        ) from None


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while a framework's C++ side starts up and builds graphs.

    TensorFlow's C++ logging (oneDNN notes, CUDA probes) writes to fd 2 whatever TF_CPP_MIN_LOG_LEVEL
    says; ckptmap's own messages go to stderr too and must stay readable. Failures still surface as
    Python exceptions.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
