"""Parsing of repeatable KEY=VALUE options shared by the commands."""

from __future__ import annotations

import re

from ..errors import UsageError


def pairs(items: list[str], option: str, *, first: bool) -> dict[str, str]:
    pairs = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{option} '{item}': expected KEY=VALUE.")
        key, value = item.split("=", 1) if first else item.rsplit("=", 1)
        pairs[key] = value
    return pairs


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def size(text: str | None, option: str) -> int | None:
    """`1.5GB`, `500MiB`, `1000000` -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"{option} '{text}': expected a size like 2GB, 500MB or 1000000.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
