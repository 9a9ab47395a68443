"""Choose what a `torch.save` file exposes: a state dict, one nested in a training checkpoint,
or the parameters and buffers of a pickled module, taken apart without running any of its code.

Works on what `torch_pickle.unpickle` returns; every choice made on the user's behalf is a note.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedError
from .torch_pickle import Inert, TensorRef, UnsupportedTensor, is_module

# Keys under which training scripts nest the model's state dict, most specific first.
CONVENTIONAL_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                     "module", "weights", "params", "parameters")  # fmt: skip
_SCALARS = (int, float, str, bool, type(None))


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
    if is_module(root):
        note = f"the file holds a pickled {root.class_path}; {_MODULE_NOTE}"
        return Selection(_checked(_module_tensors(root), source), [note], {})
    top = _as_mapping(root)
    if top is None:
        raise FormatError(f"{source}: the file holds {_describe(root)}, not a state dict; it has no tensors.")
    found = list(_candidates(top, ()))
    if not top:
        return Selection({}, [], {})  # an empty state dict, e.g. of a module without parameters
    if not found:
        keys = ", ".join(str(k) for k in list(top)[:8]) or "none"
        raise FormatError(f"{source}: the file holds no tensors (top-level keys: {keys}).")

    def score(c: _Candidate) -> tuple[bool, int, int]:
        return (bool(c[0]) and c[0][-1] in CONVENTIONAL_KEYS, len(c[1]), -len(c[0]))

    path, tensors, skipped, module = max(found, key=score)
    notes = []
    if path:
        others = [str(k) for k in top if k != path[0]]
        also = f" (also present: {_listing(others)})" if others else ""
        what = f"pickled {module}" if module else "state dict"
        where = " → ".join(f"'{p}'" for p in path)
        notes.append(f"picked the {what} under {where}{also}" + (f"; {_MODULE_NOTE}" if module else ""))
    if skipped:
        notes.append(f"skipped {len(skipped)} entries that are not tensors: {_listing(skipped)}")
    metadata = {str(k): v for k, v in top.items() if isinstance(k, str) and isinstance(v, _SCALARS)}
    return Selection(_checked(tensors, source), notes, metadata)


_MODULE_NOTE = "its parameters and buffers were read without running any of its code"
_TENSORS = (TensorRef, UnsupportedTensor)


_Candidate = tuple[tuple[str, ...], dict[str, Any], list[str], str | None]


def _candidates(mapping: dict[Any, Any], path: tuple[str, ...]) -> Iterator[_Candidate]:
    """(path, tensors, skipped keys, module class) for every mapping of names to tensors, 3 levels deep."""
    direct = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, _TENSORS)}
    if direct:
        skipped = [str(k) for k, v in mapping.items() if k not in direct and not _as_mapping(v)]
        yield path, direct, skipped, None
    if len(path) >= 2:
        return
    for key, value in mapping.items():
        if not isinstance(key, str):
            continue
        if is_module(value):
            yield (*path, key), _module_tensors(value), [], value.class_path
        elif (inner := _as_mapping(value)) is not None:
            yield from _candidates(inner, (*path, key))


def _module_tensors(module: Inert) -> dict[str, Any]:
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
        dropped = dropped if isinstance(dropped, set | frozenset | list | tuple) else set()
        for name, value in _items(state.get("_parameters")):
            if isinstance(value, _TENSORS):
                out[prefix + name] = value
        for name, value in _items(state.get("_buffers")):
            if isinstance(value, _TENSORS) and name not in dropped:
                out[prefix + name] = value
        children = [(f"{prefix}{name}.", m) for name, m in _items(state.get("_modules")) if is_module(m)]
        stack.extend(reversed(children))  # depth-first, in registration order
    return out


def _checked(tensors: dict[str, Any], source: str | Path) -> dict[str, TensorRef]:
    for key, value in tensors.items():
        if isinstance(value, UnsupportedTensor):
            raise UnsupportedError(
                f"{source}: tensor '{key}' is a kind ckptmap cannot read ({value.rebuild})."
            )
    return tensors


def _items(value: Any) -> list[tuple[str, Any]]:
    mapping = _as_mapping(value)
    return [(k, v) for k, v in mapping.items() if isinstance(k, str)] if mapping else []


def _as_mapping(value: Any) -> dict[Any, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, list | tuple):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, Inert) and value.items and not is_module(value):
        return value.items  # a pickled dict subclass
    return None


def _listing(names: list[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _describe(value: Any) -> str:
    return f"a pickled {value.class_path}" if isinstance(value, Inert) else f"a {type(value).__name__}"
