"""Target-name templates: `{group}`, `{group|default}`, `{group?text}`, `{group:flat}`.

A rule's regex captures parts of a source name; its target names reuse them. Optional groups
need a fallback: `{layer|0}` gives the captured layer or 0, `{rev?_reverse}` gives `_reverse`
only when `rev` took part in the match. `{scope:flat}` is the group with its `/` turned into `_`
(empty when the group did not take part): a scope path as one Keras layer name, since in a Keras
name `/` would nest models. `{0}` is the whole matched name; `{{` and `}}` are braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass

# The longest target name a template may make (`{0}{0}{0}...` repeats a name each time) is the
# longest name the rules take at all.
from .regexes import MAX_NAME_CHARS

_FIELD = re.compile(r"\{\{|\}\}|\{(?P<name>\w+)(?:(?P<kind>[|?:])(?P<arg>[^{}]*))?\}")
_TRANSFORMS = {"flat": lambda text: text.replace("/", "_")}


class TemplateError(Exception):
    pass


@dataclass(frozen=True)
class Template:
    text: str

    def fields(self) -> set[str]:
        return {m["name"] for m in _FIELD.finditer(self.text) if m["name"]}

    def check(self, groups: Set[str]) -> None:
        """Every field must name a group of the rule's regex (or `0`)."""
        unknown = sorted(self.fields() - set(groups) - {"0"})
        if unknown:
            have = ", ".join(sorted(groups)) or "none"
            raise TemplateError(
                f"template '{self.text}' uses {', '.join(unknown)}, not a group of the match (groups: {have})"
            )
        for m in _FIELD.finditer(self.text):
            if m["kind"] == ":" and m["arg"] not in _TRANSFORMS:
                raise TemplateError(
                    f"template '{self.text}': unknown transform '{m['arg']}' "
                    f"(known: {', '.join(_TRANSFORMS)})"
                )
        rest = _FIELD.sub("", self.text)
        if "{" in rest or "}" in rest:
            raise TemplateError(
                f"template '{self.text}' has an unbalanced brace (write {{{{ or }}}} for a literal)"
            )

    def render(self, groups: Mapping[str, str | None]) -> str:
        def field(m: re.Match[str]) -> str:
            token = m.group(0)
            if token in ("{{", "}}"):
                return token[0]
            value = groups.get(m["name"])
            if m["kind"] == "?":
                return m["arg"] if value is not None else ""
            if m["kind"] == ":":
                return _TRANSFORMS[m["arg"]](value or "")
            if value is None:
                if m["kind"] == "|":
                    return m["arg"]
                raise TemplateError(
                    f"template '{self.text}': group '{m['name']}' did not take part in the match; "
                    f"write {{{m['name']}|default}}"
                )
            return value

        longest = max((len(v) for v in groups.values() if v is not None), default=0)
        if len(self.text) + self.text.count("{") * longest <= MAX_NAME_CHARS:
            return _FIELD.sub(field, self.text)  # cannot outgrow the limit
        made = [len(self.text)]  # the literal text, and what each field adds

        def counted(m: re.Match[str]) -> str:
            text = field(m)
            made[0] += len(text)
            if made[0] > MAX_NAME_CHARS:
                shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
                raise TemplateError(f"template '{shown}' makes a name over {MAX_NAME_CHARS} characters")
            return text

        return _FIELD.sub(counted, self.text)
