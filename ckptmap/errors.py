"""The one error hierarchy of ckptmap.

Every problem a user can cause (a bad file, a bad mapping, a bad option) is a `CkptmapError`
whose message is one line naming the file or tensor and what is wrong. The CLI prints it and
exits with code 2; library callers catch it. Each subclass also inherits the matching builtin,
so `except ValueError` in caller code keeps working.
"""

from __future__ import annotations


class CkptmapError(Exception):
    """Base of every error ckptmap raises on purpose. `hint` is an optional second line;
    `exit_code` is what the CLI exits with (2: bad input or usage)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(_escape_breaks(message))
        self.hint = _escape_breaks(hint) if hint is not None else None


def _escape_breaks(text: str) -> str:
    # Names quoted from a damaged file may hold line breaks; shown escaped, a message stays one line.
    return str(text).translate(_ESCAPED_BREAKS)


# Every character str.splitlines breaks at, as its escape (\n, \x0b, \u2028, ...).
_ESCAPED_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: object) -> str:
    """Text from a library (an h5py, zipfile or pickle error) for quoting in a message: its runs of
    whitespace, line breaks included, become single spaces."""
    return " ".join(str(text).split())


class FormatError(CkptmapError, ValueError):
    """A file is not a checkpoint ckptmap can read, or it is damaged (truncated, bad checksum)."""


class SourceNotFoundError(CkptmapError, FileNotFoundError):
    """A path names nothing on disk, or a checkpoint misses one of its files (a data shard)."""


class UnsupportedError(CkptmapError, NotImplementedError):
    """A valid request ckptmap cannot serve: a dtype, a format feature, a missing optional extra."""


class RuleError(CkptmapError, ValueError):
    """A mapping file is invalid; the message names the rule and its line in the YAML."""


class MappingError(CkptmapError, ValueError):
    """A valid mapping cannot be applied to this checkpoint (shapes, leftovers, refusals)."""


class WriteError(CkptmapError, OSError):
    """An output could not be written; nothing is left behind under the final name."""


class UsageError(CkptmapError, ValueError):
    """Options that contradict each other or name something that does not exist."""


class NothingDoneError(CkptmapError):
    """A valid request that would do nothing useful: a mapping that converts no RNN of a checkpoint
    that has some, or is written for another framework. Exit 1: nothing is wrong with the input,
    but the user did not get what they asked for (`--allow-noop` accepts it)."""

    exit_code = 1
