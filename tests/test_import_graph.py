"""The package's import graph, read from its own source: no cycles, nothing from `formats/` up
into `cells/` (nor `rules/`, `verification/`), and a CLI that goes through the public API only.

Every `import` and `from ... import` counts, at module level or inside a function or method (a
lazy import is still a dependency), relative ones resolved, and `importlib.import_module("...")`
with a literal name. Two kinds are left out, each for a reason:

- imports under `if TYPE_CHECKING:` never run; annotations may name a type from anywhere (the
  display names `ConversionReport`, whose `__str__` calls the display). The CLI check counts them
  too: the CLI should not even name an internal type.
- modules a table names as strings (the formats in `formats/registry.py`, the verify backends, the
  cell families of `cells/recognize.py`) are plug-ins their host loads by name on first use, and
  a plug-in may read its host's table (tf2_object asks the registry which formats are Keras').
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ckptmap

PACKAGE = Path(ckptmap.__file__).parent

# What the CLI may import (besides its own modules): the API and what the API hands out.
CLI_MAY_IMPORT = {
    "ckptmap": "load, mapping, save, convert, verify, diff, Checkpoint, RNN, the errors",
    "ckptmap.api": "the public functions, and the table of formats (api.formats)",
    "ckptmap.errors": "the exceptions the API raises",
    "ckptmap.display": "the text views of the API's objects: what print(report) shows",
    "ckptmap.batch": "run_batch and its report (README: ckptmap.batch.run_batch)",
    "ckptmap.verification.report": "VerifyReport, IntoReport and their verdicts: what verify returns",
    "ckptmap.rules.schema": "MappingSpec and its rules: what ckptmap.mapping(...).spec holds",
    # Not the API: the crash journal the command's supervisor (cli/supervise.py) keeps for the
    # writes of the process it runs, and recovers from when that process dies outright.
    "ckptmap.atomic": "journal_to, recover, commits: the supervisor's side of atomic writes",
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__.py`)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str], *, typing: bool) -> set[str]:
    """The package's modules that module `name` imports; `typing` counts `if TYPE_CHECKING:` too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = set() if typing else _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(_module(a.name, known) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:  # `from . import api` imports ckptmap.api, not ckptmap
                found.add(_module(f"{base}.{alias.name}", known) or _module(base, known))
        elif _import_module_call(node):
            found.add(_module(node.args[0].value, known))
    return {m for m in found if m and m != name}


def graph(*, typing: bool = False) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, set(known), typing=typing) for name, path in known.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the path that closes it (`[a, b, a]`), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _import_module_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("importlib.import_module", "import_module")
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _module(dotted: str, known: set[str]) -> str | None:
    """The package's module that importing `dotted` loads (`ckptmap.x.y.Name` -> `ckptmap.x.y`)."""
    while dotted:
        if dotted in known:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def test_the_graph_sees_lazy_and_relative_imports_and_skips_type_only_ones() -> None:
    # A builder that found nothing would pass every check below: hold it to edges known to exist.
    edges = graph()
    assert "ckptmap.cells.recognize" in edges["ckptmap.tree"]  # inside the `rnns` property
    assert "ckptmap.verification.run" in edges["ckptmap.api"]  # inside `verify`
    assert "ckptmap.formats.registry" in edges["ckptmap.api"]  # `from .formats import registry`
    assert "ckptmap.rules.engine" in edges["ckptmap.rules.mapping"]  # `from . import engine`
    assert "ckptmap.tree" not in edges["ckptmap.rules.engine"]  # only under TYPE_CHECKING there
    assert "ckptmap.tree" in graph(typing=True)["ckptmap.rules.engine"]


def test_the_cycle_finder_reports_the_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


# Readers and writers sit below recognition, mapping and verification: what they need of the cell
# kinds is in ckptmap/cell_kinds.py, which imports nothing of ckptmap but errors.
ABOVE_FORMATS = ("ckptmap.cells", "ckptmap.rules", "ckptmap.verification")


def test_formats_import_nothing_from_cells_rules_or_verification() -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in graph(typing=True).items()
        if name.startswith("ckptmap.formats.")
        for target in targets
        if any(target == above or target.startswith(f"{above}.") for above in ABOVE_FORMATS)
    )
    assert upward == []


@pytest.mark.parametrize("name", sorted(m for m in modules() if m.startswith("ckptmap.cli")))
def test_the_cli_uses_only_the_public_api(name: str) -> None:
    targets = graph(typing=True)[name]
    internal = sorted(t for t in targets if not t.startswith("ckptmap.cli") and t not in CLI_MAY_IMPORT)
    assert internal == [], f"{name} imports internals; add what it needs to ckptmap.api"
