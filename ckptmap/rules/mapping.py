"""`Mapping`: a loaded mapping file with its parameter values, ready to apply.

Built-in mappings ship in the `ckptmap.mappings` package (the repository's `mappings/` folder);
anything else is a path to the user's own YAML file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import RuleError, UsageError
from . import engine, schema
from .plan import Plan

if TYPE_CHECKING:  # pragma: no cover
    from ..tree import Checkpoint


@dataclass(frozen=True)
class BuiltinInfo:
    name: str
    description: str
    source: str | None = None  # framework it reads (`from:`)
    target: str | None = None  # framework it writes (`to:`)


class Mapping:
    """A mapping with its parameters set. `apply` is lazy: no tensor is read until written.

    >>> m = ckptmap.mapping("tf1-to-torch", forget_bias=1.0)          # doctest: +SKIP
    >>> out = m.apply(ckptmap.load("sample_checkpoints/tf1_lstm2"))    # doctest: +SKIP
    """

    def __init__(self, spec: schema.MappingSpec, params: MappingABC[str, Any] | None = None) -> None:
        self.spec = spec
        self.params = resolve_params(spec, params or {})

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    def run(self, ckpt: Checkpoint) -> tuple[Checkpoint, Plan]:
        return engine.run(self.spec, self.params, ckpt)

    def renames_nothing_in(self, names: Iterable[str]) -> bool:
        """True when this mapping is renames only and none of its patterns matches any of `names`:
        running it would hand the checkpoint back unchanged. A quick test, for callers that run a
        mapping only to see what it renames (recognition of old TF names, on every inspect)."""
        return engine.renames_nothing(self.spec, names)

    def apply(self, ckpt: Checkpoint) -> Checkpoint:
        return self.run(ckpt)[0]

    def plan(self, ckpt: Checkpoint) -> Plan:
        return self.run(ckpt)[1]

    def __repr__(self) -> str:
        return f"<Mapping {self.name} {self.params}>"


def load(name_or_path: str | os.PathLike[str], params: MappingABC[str, Any] | None = None) -> Mapping:
    """A built-in mapping by name, or a mapping file by path."""
    return Mapping(load_spec(os.fspath(name_or_path)), params)


def from_text(text: str, label: str, params: MappingABC[str, Any] | None = None) -> Mapping:
    """A mapping from YAML text (what `ckptmap align` drafts); its includes are built-ins or paths."""
    return Mapping(schema.parse(text, label, resolve=lambda name, by: load_spec(name, by)), params)


def load_spec(text: str, including: Path | None = None, _chain: tuple[str, ...] = ()) -> schema.MappingSpec:
    """Parse a mapping by name or path; `including` is the file whose `include:` names it."""
    path = Path(text)
    if including is not None and not path.is_absolute() and os.path.lexists(including.parent / path):
        path = including.parent / path
    key = str(path.resolve()) if path.exists() else text
    if key in _chain:
        raise RuleError(f"Mapping '{text}' includes itself (through {' -> '.join(_chain)}).")

    def resolve(name: str, by: Path | None) -> schema.MappingSpec:
        return load_spec(name, by, (*_chain, key))

    if path.suffix in (".yaml", ".yml") or os.sep in text or os.path.lexists(path):
        if not os.path.lexists(path):
            raise RuleError(f"{path}: no such mapping file.")
        return schema.load_file(path, resolve=resolve)  # says what a broken link or a FIFO is
    builtin = _builtin_dir() / f"{text}.yaml"
    if not builtin.is_file():
        from ..suggest import did_you_mean

        names = [b.name for b in builtins()]
        raise UsageError(
            f"No built-in mapping named '{text}'{did_you_mean(text, names) or '.'} "
            f"Built-in: {', '.join(names)}. A file path works too."
        )
    return schema.parse(builtin.read_text(encoding="utf-8"), f"{text}.yaml", path=builtin, resolve=resolve)


def builtin_name(path: Path) -> str | None:
    """The name of the built-in mapping `path` is, if it is one (None for a user's file)."""
    return path.stem if path.suffix == ".yaml" and path.parent == _builtin_dir() else None


@functools.cache
def builtins() -> tuple[BuiltinInfo, ...]:
    """Built-in mappings, read for their names and descriptions only (once: they are package data)."""
    infos = []
    for entry in sorted(_builtin_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            doc = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
            description = " ".join(str(doc.get("description", "")).split())
            infos.append(
                BuiltinInfo(entry.name[: -len(".yaml")], description, doc.get("from"), doc.get("to"))
            )
    return tuple(infos)


def builtin_for(source: str, target: str) -> str | None:
    """The built-in mapping from one framework to another (`from:`/`to:`): `<from>-to-<to>` first
    (cudnn-opaque also goes from tf1 to torch, but only for what a user asks it for)."""
    fits = [b.name for b in builtins() if (b.source, b.target) == (source, target)]
    name = f"{source}-to-{target}"
    return name if name in fits else next(iter(fits), None)


# Frameworks a conversion between two others goes through when no built-in joins them (ONNX or
# Flax and TF1), the first that joins them taken. PyTorch first: an nn.LSTM keeps a stack one RNN,
# where Keras splits it into layers. (An ONNX GRU with linear_before_reset=0 goes to TF1's GRUCell
# exactly only through Keras' GRU(reset_after=False): `-m onnx-to-keras -m keras-to-tf1`.)
HUBS = ("torch", "keras")


def builtin_chain(source: str, target: str) -> tuple[str, ...]:
    """The built-in mappings from one framework to another: the one that joins them, else two
    through the first of `HUBS` both have one with (`onnx-to-torch`, `torch-to-tf1`); () if none."""
    direct = builtin_for(source, target)
    if direct or source == target:  # within a framework, only what is written for it (tf1-legacy-names)
        return (direct,) if direct else ()
    for hub in HUBS:
        first, second = builtin_for(source, hub), builtin_for(hub, target)
        if first and second and hub not in (source, target):
            return (first, second)
    return ()


def resolve_params(spec: schema.MappingSpec, given: MappingABC[str, Any]) -> dict[str, Any]:
    """Defaults overridden by `given`; strings (from `--set`) are parsed as YAML scalars."""
    values = {name: p.default for name, p in spec.params.items()}
    for name, raw in given.items():
        if name not in spec.params:
            from ..suggest import did_you_mean

            known = ", ".join(spec.params) or "none"
            hint = did_you_mean(name, spec.params) or "."
            raise UsageError(f"Mapping {spec.name} has no parameter '{name}'{hint} Parameters: {known}.")
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        default = spec.params[name].default
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise UsageError(
                f"Parameter '{name}' of {spec.name} takes a value like {default!r}, not {raw!r}."
            )
        values[name] = float(value) if isinstance(default, float) else value
    return values


def _builtin_dir() -> Path:
    return Path(str(resources.files("ckptmap.mappings")))
