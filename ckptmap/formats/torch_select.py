"""Choose what a `torch.save` file exposes: a state dict, one nested in a training checkpoint,
or the parameters and buffers of a pickled module, taken apart without running any of its code.

Works on what `torch_pickle.unpickle` returns; every choice made on the user's behalf is a note.
The objects come from the file and may share one another through the pickle's memo (a list
holding itself, a dict reached a million ways), so every walk visits each container once, counts
its steps against `MAX_STEPS`, and names keys without str() or repr() of what the file built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedError
from .torch_pickle import Inert, TensorRef, UnsupportedTensor, describe, is_module

# Keys under which training scripts nest the model's state dict, most specific first.
CONVENTIONAL_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                     "module", "weights", "params", "parameters")  # fmt: skip
_SCALARS = (int, float, str, bool, type(None))
MAX_STEPS = 1 << 21  # entries examined while choosing; a real checkpoint needs a few per tensor
# Tensors may share storages (tied weights, views of one flat buffer), but reading N views of
# one storage writes it N times: the file's own bytes bound what reading it may produce.
_ALIASING_FACTOR, _ALIASING_SLACK = 16, 1 << 26


@dataclass
class _Steps:
    """The work budget of one selection, and the containers it has visited."""

    source: str | Path
    left: int = MAX_STEPS
    seen: set[int] = field(default_factory=set)

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise FormatError(
                f"{self.source}: the pickle's objects refer to one another so often that finding its "
                f"tensors takes over {MAX_STEPS} steps; refusing it."
            )

    def first_visit(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True


@dataclass
class Selection:
    """The tensors a file exposes under their state-dict keys, and what was decided to get them."""

    tensors: dict[str, TensorRef]
    notes: list[str]
    metadata: dict[str, Any]


def select(root: Any, source: str | Path) -> Selection:
    """Pick the state dict: the object itself, the best nested one, or a pickled module's tensors.

    Among nested candidates the one under a conventional key wins, then the one with the most
    tensors; the choice is written to `notes` so it never happens silently.
    """
    if isinstance(root, TensorRef):
        return Selection({"tensor": root}, ["the file holds a single tensor, exposed as 'tensor'"], {})
    steps = _Steps(source)
    steps.first_visit(root)
    if is_module(root):
        note = f"the file holds a pickled {_name(root.class_path)}; {_MODULE_NOTE}"
        return Selection(_checked(_module_tensors(root, steps), source), [note], {})
    top = _as_mapping(root, steps)
    if top is None:
        raise FormatError(f"{source}: the file holds {_describe(root)}, not a state dict; it has no tensors.")
    found = list(_candidates(top, (), steps))
    if not top:
        return Selection({}, [], {})  # an empty state dict, e.g. of a module without parameters
    if not found:
        keys = ", ".join(_name(k) for k in list(top)[:8]) or "none"
        raise FormatError(f"{source}: the file holds no tensors (top-level keys: {keys}).")

    def score(c: _Candidate) -> tuple[bool, int, int]:
        return (bool(c[0]) and c[0][-1] in CONVENTIONAL_KEYS, len(c[1]), -len(c[0]))

    path, tensors, skipped, module = max(found, key=score)
    notes = []
    if path:
        others = [_name(k) for k in top if not (type(k) is str and k == path[0])]
        also = f" (also present: {_listing(others)})" if others else ""
        what = f"pickled {_name(module)}" if module else "state dict"
        where = " → ".join(f"'{p}'" for p in path)
        notes.append(f"picked the {what} under {where}{also}" + (f"; {_MODULE_NOTE}" if module else ""))
    if skipped:
        notes.append(f"skipped {len(skipped)} entries that are not tensors: {_listing(skipped)}")
    metadata = {str(k): v for k, v in top.items() if isinstance(k, str) and isinstance(v, _SCALARS)}
    return Selection(_checked(tensors, source), notes, metadata)


_MODULE_NOTE = "its parameters and buffers were read without running any of its code"
_TENSORS = (TensorRef, UnsupportedTensor)


_Candidate = tuple[tuple[str, ...], dict[str, Any], list[str], str | None]


def _candidates(mapping: dict[Any, Any], path: tuple[str, ...], steps: _Steps) -> Iterator[_Candidate]:
    """(path, tensors, skipped keys, module class) for every mapping of names to tensors, 3 levels
    deep; a container reached a second time (the memo shares it) is not walked again."""
    steps.spend(len(mapping))
    direct = {k: v for k, v in mapping.items() if type(k) is str and isinstance(v, _TENSORS)}
    if direct:
        skipped = [_name(k) for k, v in mapping.items() if k not in direct and not _is_mapping(v)]
        yield path, direct, skipped, None
    if len(path) >= 2:
        return
    for key, value in mapping.items():
        walkable = is_module(value) or _is_mapping(value)
        if type(key) is not str or not walkable or not steps.first_visit(value):
            continue
        if is_module(value):
            yield (*path, key), _module_tensors(value, steps), [], value.class_path
        elif (inner := _as_mapping(value, steps)) is not None:
            yield from _candidates(inner, (*path, key), steps)


def _module_tensors(module: Inert, steps: _Steps) -> dict[str, Any]:
    """The names `module.state_dict()` would give, in its order (torch/nn/modules/module.py
    `_save_to_state_dict`: own parameters, persistent buffers, then each child with `name.`)."""
    out: dict[str, Any] = {}
    stack, seen = [("", module)], set()
    while stack:
        prefix, mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        state = mod.state
        dropped = state.get("_non_persistent_buffers_set")
        dropped = _strings(dropped, steps) if isinstance(dropped, set | frozenset | list | tuple) else set()
        for name, value in _items(state.get("_parameters"), steps):
            if isinstance(value, _TENSORS):
                out[prefix + name] = value
        for name, value in _items(state.get("_buffers"), steps):
            if isinstance(value, _TENSORS) and name not in dropped:
                out[prefix + name] = value
        children = [
            (f"{prefix}{name}.", m) for name, m in _items(state.get("_modules"), steps) if is_module(m)
        ]
        stack.extend(reversed(children))  # depth-first, in registration order
    return out


def _checked(tensors: dict[str, Any], source: str | Path) -> dict[str, TensorRef]:
    storages: dict[str, int] = {}
    produced = 0
    for key, value in tensors.items():
        if isinstance(value, UnsupportedTensor):
            raise UnsupportedError(
                f"{source}: tensor '{_name(key)}' is a kind ckptmap cannot read ({value.rebuild})."
            )
        ref = value.storage  # a pre-1.0 storage view reaches `view_offset` elements further
        reach = ref.nbytes + ref.view_offset * ref.itemsize
        storages[ref.key] = max(storages.get(ref.key, 0), reach)
        produced += math.prod(value.shape) * value.dtype.itemsize
    stored = sum(storages.values())
    if produced > _ALIASING_FACTOR * stored + _ALIASING_SLACK:
        raise FormatError(
            f"{source}: its {len(tensors)} tensors view {len(storages)} storages of {stored} bytes over "
            f"and over, {produced} bytes in all; refusing to read the same bytes that many times."
        )
    return tensors


def _items(value: Any, steps: _Steps) -> list[tuple[str, Any]]:
    mapping = _as_mapping(value, steps)
    if not mapping:
        return []
    steps.spend(len(mapping))  # modules may share one dict: each visit of it is paid for
    return [(k, v) for k, v in mapping.items() if type(k) is str]


def _strings(values: Any, steps: _Steps) -> set[str]:
    steps.spend(len(values))
    return {v for v in values if type(v) is str}


def _is_mapping(value: Any) -> bool:
    """What `_as_mapping` would turn into a mapping, told without building it."""
    return isinstance(value, dict | list | tuple) or (
        isinstance(value, Inert) and bool(value.items) and not is_module(value)
    )


def _as_mapping(value: Any, steps: _Steps) -> dict[Any, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, list | tuple):
        steps.spend(len(value))
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, Inert) and value.items and not is_module(value):
        return value.items  # a pickled dict subclass
    return None


def _name(key: Any) -> str:
    """A key for a message: strings (cut short), anything else by its type alone."""
    if type(key) is str:
        return key if len(key) <= 80 else key[:77] + "..."
    return f"<{describe(key)}>"


def _listing(names: list[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _describe(value: Any) -> str:
    return f"a pickled {_name(value.class_path)}" if isinstance(value, Inert) else f"a {type(value).__name__}"
