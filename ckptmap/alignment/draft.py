"""The mapping `ckptmap align` drafts, as YAML a person reads and edits.

Rules in this order: each paired weight outside the RNNs renamed (or transposed) to its target
name, which takes it; each paired RNN's tensors moved to the target RNN's scope; then the built-in
mapping between the two frameworks, placed there with `- include:`, whose cell rules convert the
RNNs (the built-in conversions, not re-derived). The comments at the top say what is sure, what
only order decided, and what has no place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml

from .pairing import Pair


def mapping_yaml(
    *,
    name: str,
    source_framework: str,
    target_framework: str,
    builtin: str | None,
    rnn_moves: Sequence[tuple[Pair, dict[str, str]]],
    tensors: Sequence[Pair],
    unplaced_source: Sequence[str],
    unplaced_target: Sequence[str],
    source_names: Sequence[str] = (),
) -> str:
    """The drafted mapping. `rnn_moves`: each RNN pair with its renames (source name, or scope
    prefix ending in `/`, -> what the built-in mapping turns into the target's names)."""
    lines = [
        "# Drafted by `ckptmap align`. Check it, edit it, then convert with -m <this file> --verify.",
        "#",
    ]
    sure = [p for p, _ in rnn_moves if not p.ambiguous] + [p for p in tensors if not p.ambiguous]
    guessed = [p for p, _ in rnn_moves if p.ambiguous] + [p for p in tensors if p.ambiguous]
    lines.append(f"# Sure ({len(sure)}): names and shapes agree and nothing else could take their place.")
    lines += [f"#   {p.source} -> {p.target}{' (transposed)' if p.transpose else ''}" for p in sure]
    if guessed:
        lines.append(
            f"# GUESSED ({len(guessed)}): look-alikes that only their order told apart; check these."
        )
        lines += [f"#   {p.source} -> {p.target}: {p.how}" for p in guessed]
    if unplaced_source:
        lines.append(
            f"# Not placed, dropped ({len(unplaced_source)}): source tensors with no target of their shape."
        )
        lines += [f"#   {n}" for n in unplaced_source]
    if unplaced_target:
        lines.append(f"# Not filled ({len(unplaced_target)}): target tensors no source tensor fits.")
        lines += [f"#   {n}" for n in unplaced_target]
    doc = {
        "name": name,
        "description": f"Drafted by ckptmap align: {source_framework} to {target_framework}.",
        "from": source_framework,
        "to": target_framework,
        "unmatched": "drop",
        "slots": "drop",
        "bookkeeping": "drop",
    }
    rules: list[dict] = []
    moved = _whole_layers(tensors, source_names)
    for (old_layer, new_layer), ambiguous in moved.items():  # a layer that moves whole: one rule
        rules.append(
            {
                "name": f"{new_layer}{' (GUESSED)' if ambiguous else ''}",
                **_move(f"{old_layer}/", f"{new_layer}/"),
            }
        )
    for pair in tensors:
        if (_layer(pair.source), _layer(pair.target)) in moved:
            continue
        rule = {
            "name": f"{pair.target}{' (GUESSED)' if pair.ambiguous else ''}",
            "match": re.escape(pair.source),
        }
        rule["to"] = {_template(pair.target): "src | T"} if pair.transpose else _template(pair.target)
        rules.append(rule)
    for pair, renames in rnn_moves:
        label = f"RNN {pair.source} -> {pair.target}{' (GUESSED)' if pair.ambiguous else ''}"
        if not renames:
            continue
        if builtin:  # moved, then converted by the built-in mapping's cell rules
            rules.append(
                {"name": label, "rename": {_pattern(a): _replacement(b) for a, b in renames.items()}}
            )
        else:  # same framework: moved, and taken as they are
            rules += [{"name": label, **_move(a, b)} for a, b in renames.items()]
    if builtin:
        rules.append({"include": builtin})
    doc["rules"] = rules
    body = yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True)
    return "\n".join(lines) + "\n" + body


def _layer(name: str) -> str:
    return name.rpartition("/")[0]


def _whole_layers(tensors: Sequence[Pair], source_names: Sequence[str]) -> dict[tuple[str, str], bool]:
    """(source layer, target layer) -> flagged, for layers whose every tensor keeps its own name
    under the new scope (no transpose): those are one scope rename, not a rule per tensor."""
    groups: dict[tuple[str, str], list[Pair]] = {}
    for pair in tensors:
        groups.setdefault((_layer(pair.source), _layer(pair.target)), []).append(pair)
    under: dict[str, int] = {}
    for name in source_names:
        for k in range(1, name.count("/") + 1):
            prefix = name.rsplit("/", k)[0]
            under[prefix] = under.get(prefix, 0) + 1
    return {
        (a, b): any(p.ambiguous for p in pairs)
        for (a, b), pairs in groups.items()
        if a
        and b
        and under.get(a) == len(pairs)
        and all(not p.transpose and p.source[len(a) :] == p.target[len(b) :] for p in pairs)
    }


def _move(old: str, new: str) -> dict:
    """A match rule that takes a tensor (or every tensor under a scope ending in `/`) to `new`."""
    if old.endswith("/"):
        return {"match": f"{re.escape(old)}(?P<rest>.+)", "to": _template(new) + "{rest}"}
    return {"match": re.escape(old), "to": _template(new)}


def _pattern(name: str) -> str:
    """A source name, or a scope prefix ending in `/`, as the regex of a rename."""
    return f"^{re.escape(name)}" if name.endswith("/") else f"^{re.escape(name)}$"


def _template(name: str) -> str:
    """A target name as a template: braces doubled (templates fill `{group}`)."""
    return name.replace("{", "{{").replace("}", "}}")


def _replacement(name: str) -> str:
    """A target name as an re.sub replacement: backslashes doubled."""
    return name.replace("\\", "\\\\")
