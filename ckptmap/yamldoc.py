"""YAML documents for mapping files and batch manifests: mappings that remember their lines, and
every way a text can fail to be a document (bad syntax, duplicate or unhashable keys, aliases that
expand without bound, nesting too deep for the parser) as one `YAMLProblem` with its line.
`read_file` gets the text: from a regular file only, and at most MAX_BYTES of it (a manifest:
MAX_MANIFEST_BYTES).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .errors import CkptmapError
from .formats.rawio import read_small

# Mappings are a few KB. PyYAML's pure-Python parser reads ~300 KB/s, so this also bounds the
# time to parse one (about 3 s).
MAX_BYTES = 1 << 20
# A manifest with globs is a few lines, but one generated job by job takes ~120 bytes a job: this
# is ~140,000 jobs. Text over MAX_BYTES is parsed by libyaml where PyYAML has it (16 MiB of plain
# jobs: ~7 s, against ~50 s in pure Python), and by the pure-Python parser only to word an error.
MAX_MANIFEST_BYTES = 16 << 20


class LineDict(dict):  # type: ignore[type-arg]
    """A YAML mapping that knows its line and each key's line, for `file:line` messages."""

    line = 0
    key_lines: dict[Any, int]


class YAMLProblem(Exception):
    """`str()` is what is wrong; `line` where (1-based), when known. `in_document` is True for
    problems found in a parsed document (keys, aliases), False for text the parser refused."""

    def __init__(self, problem: str, line: int | None = None, *, in_document: bool = False) -> None:
        super().__init__(problem)
        self.line, self.in_document = line, in_document

    def where(self, label: str) -> str:
        return f"{label}:{self.line}" if self.line else label


def read_file(path: Path, what: str, error: type[CkptmapError], *, limit: int = MAX_BYTES) -> str:
    """The text of the YAML file `path` (a "mapping file", a "manifest"); problems raise `error`.

    A FIFO or a device would block or never end (`-m /dev/zero`), so only regular files are read,
    and never more than `limit` bytes of them.
    """
    data = read_small(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}); a {what} is YAML.") from None


def load(text: str) -> Any:
    """The one document in `text` (None for an empty text), mappings as `LineDict`s."""
    if len(text) > MAX_BYTES and _FastLoader is not None:
        try:  # a sound document, quickly; a broken one is parsed again below for the message
            return _load_with(_FastLoader, text)
        except (yaml.YAMLError, RecursionError):
            pass
    return _load_with(_Loader, text)


def _load_with(loader_class: type, text: str) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, _MAX_EXPANDED + 2 * len(text))
        return loader.construct_document(node)
    except RecursionError:
        raise YAMLProblem("the YAML nests too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise YAMLProblem(f"not valid YAML ({problem})", mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):  # not libyaml's: its errors do not name the character (a tab)
    pass


_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastLoader(yaml.CSafeLoader):  # type: ignore[no-redef]  # for large texts; see `load`
        pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    result = LineDict()
    result.line, result.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise YAMLProblem(f"a key must be a name, not a {type(key).__name__}", line, in_document=True)
        if key in result:
            raise YAMLProblem(f"'{key}' appears twice in one mapping", line, in_document=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


for _class in (_Loader, _FastLoader):
    if _class is not None:
        _class.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Aliases repeat a node without copying it, so a few lines can stand for 10^9 values ("billion
# laughs"), which printing or walking them would expand. Mappings are kilobytes; a document
# without aliases counts at most about twice its length (a node and a character per character),
# so a large manifest is allowed that much more.
_MAX_EXPANDED = 1_000_000


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Refuse a document whose aliases expand to more than `limit` nodes and characters."""
    sizes: dict[int, int] = {}
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:  # post-order without recursion; a node seen before counts with its full size
        node, children_done = pending.pop()
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else (node.value if isinstance(node, yaml.SequenceNode) else [])
        )
        if children_done:
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 1
            sizes[id(node)] = own + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(node)] > limit:
                raise YAMLProblem(
                    f"YAML aliases here expand to more than {limit} values",
                    node.start_mark.line + 1,
                    in_document=True,
                )
        elif id(node) not in sizes:
            sizes[id(node)] = 1  # in progress: an alias to an enclosing node (a cycle) counts once
            pending.append((node, True))
            pending.extend((c, False) for c in children if id(c) not in sizes)
