"""Modules imported on first use, so a command pays only for what it touches.

`inspect` of a TF checkpoint reads an index with plain Python; importing numpy first (~0.1 s)
would take most of its time. A module-level `np = lazy.module("numpy")` keeps the name usable
everywhere, and imports numpy when code first reaches for an attribute. Unlike
`importlib.util.LazyLoader`, nothing is put in `sys.modules` before the real import, so what a
process has imported stays true.

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = lazy.module("numpy")
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands in for a module until an attribute is first read, then holds the module's names."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names not in __dict__: the first use, or a name the module makes on
        # demand (numpy.testing). Copying the namespace makes later reads plain dict hits.
        module = importlib.import_module(self._lazy_name)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


def module(name: str) -> Any:
    """A stand-in for module `name` that imports it on first attribute access."""
    return LazyModule(name)
