"""Running the `ckptmap` command inside the test process, as users run it."""

from __future__ import annotations

import pytest

from ckptmap.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `ckptmap ARGS...`."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def ok(*args: object) -> None:
    """`ckptmap ARGS...`, which must succeed (its output is not captured here)."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)
