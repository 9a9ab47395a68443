"""Parsing of repeatable KEY=VALUE options shared by the commands."""

from __future__ import annotations

from ..errors import UsageError


def pairs(items: list[str], option: str, *, first: bool) -> dict[str, str]:
    pairs = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{option} '{item}': expected KEY=VALUE.")
        key, value = item.split("=", 1) if first else item.rsplit("=", 1)
        pairs[key] = value
    return pairs
