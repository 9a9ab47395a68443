"""The wheel must carry every subpackage and the built-in mappings."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ckptmap").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["ckptmap.mappings"] == "mappings"
    assert config["package-data"]["ckptmap.mappings"] == ["*.yaml"]


def test_every_report_template_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["ckptmap.reports"]
    folder = ROOT / "ckptmap" / "reports"
    templates = [p.relative_to(folder) for p in (folder / "templates").iterdir()]
    assert templates and all(any(t.match(g) for g in globs) for t in templates)
