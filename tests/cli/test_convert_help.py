"""`convert --help` names the formats ckptmap writes from the table of formats, so a new writer
shows there without an edit (it once listed three formats of six)."""

from __future__ import annotations

import re

import pytest

from ckptmap.formats import registry
from tests.clirun import run


def _option_help(help_text: str, option: str) -> str:
    """The help of one option, on one line: from `option` to the next option."""
    flat = " ".join(help_text.split())
    found = re.search(rf"(?:^| ){re.escape(option)} <\w+> (.*?)(?= -[-\w])", flat)
    assert found, f"{option} is not in the help"
    return found.group(1)


def test_convert_help_lists_every_writable_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "convert", "--help")
    to = _option_help(out, "--to")
    assert code == 0
    for fmt in registry.FORMATS:
        listed = re.search(rf"(?:^|[ :,]){re.escape(fmt.name)} \(", to) is not None
        assert listed == fmt.writable, f"{fmt.name}: writable={fmt.writable}, listed={listed}"
        if fmt.writable:
            assert fmt.example in to and fmt.label in to


def test_convert_help_names_the_formats_whose_writer_shards(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "convert", "--help")
    shard = _option_help(out, "--shard-size")
    assert registry.sharding_formats() and all(name in shard.split() for name in registry.sharding_formats())
