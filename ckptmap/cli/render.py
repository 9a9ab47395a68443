"""Text rendering shared by the commands: sizes, aligned tables, the scope tree.

They live in `ckptmap.display`, where the API's `__str__` methods use them too; this module keeps
the names the commands know them by.
"""

from __future__ import annotations

from ..display import number, shape, size, table, tree

__all__ = ["number", "shape", "size", "table", "tree"]
