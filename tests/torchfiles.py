"""Hand-made PyTorch files for tests that attack or damage them."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

from ckptmap.formats import torch_legacy


class Call:
    """Pickles as `func(*args)`: the REDUCE opcode every pickle exploit uses."""

    def __init__(self, func: Callable, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def legacy_file(path: Path, pickled: bytes) -> Path:
    """A torch.save file of the format before 1.6 (`_legacy_save`) whose object is `pickled`."""
    headers = (torch_legacy.MAGIC_NUMBER, torch_legacy.PROTOCOL_VERSION, {"little_endian": True})
    head = b"".join(pickle.dumps(h, protocol=2) for h in headers)
    path.write_bytes(head + pickled + pickle.dumps([], protocol=2))
    return path
