"""Fresh nn.LSTM / nn.GRU / nn.RNN modules, restored with load_state_dict(strict=True).

The state dict comes from torch's own loader for the file: `torch.load(weights_only=True)` for
torch.save files (the nested dict of a training checkpoint is found by its keys) and
`safetensors.torch.load_file` for safetensors. A whole pickled module (`torch.save(model)`) is
refused by `weights_only=True`, and unpickling it any other way would run its code: its tensors
come from ckptmap's own reader, which took the pickle apart without running anything.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..cell_kinds import default_class, kind
from ..cells.model import RNN
from ..tree import Checkpoint
from .backends import backend, import_framework
from .cases import Batch, Run
from .outcome import Outcome, framework_message

_PARAM = re.compile(
    r"(?P<role>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)(?P<rev>_reverse)?"
)


def restore_and_run(
    rnn: RNN, ckpt: Checkpoint, batches: list[Batch], *, by: str, options: dict[str, Any]
) -> Outcome:
    torch = import_framework("torch", backend("torch").install)
    module = _module(torch, rnn)
    prefix = f"{rnn.scope}/" if rnn.scope else ""
    local = module.state_dict()
    outcome = Outcome("torch", [prefix + k for k in local])
    sources = {k: _source_key(rnn, ckpt, prefix, k, by) for k in local}
    try:
        state = _load(torch, ckpt, [s for s in sources.values() if s is not None], outcome)
    except Exception as e:  # the framework's own loader refused the file
        outcome.error = framework_message(e)
        return outcome
    chosen = {}
    for k, key in sources.items():
        if key is None or key not in state:
            outcome.missing.append((prefix + k, tuple(local[k].shape)))
        elif tuple(state[key].shape) != tuple(local[k].shape):
            outcome.mismatched.append((prefix + k, tuple(local[k].shape), tuple(state[key].shape)))
        else:
            chosen[k] = state[key]
    if outcome.missing or outcome.mismatched:
        return outcome
    try:
        module.load_state_dict(chosen, strict=True)
    except RuntimeError as e:
        outcome.error = framework_message(e)
        return outcome
    directions = 2 if rnn.bidirectional else 1
    carries_c = "c" in kind(rnn.kind).state  # nn.LSTM takes and returns (h, c)
    with torch.no_grad():
        for batch in batches:
            keys = [(layer, d == 1) for layer in range(rnn.layers) for d in range(directions)]
            h0 = torch.from_numpy(np.stack([batch.states[k]["h"] for k in keys])).to(
                module.weight_ih_l0.dtype
            )
            initial: Any = h0
            if carries_c:
                c0 = torch.from_numpy(np.stack([batch.states[k]["c"] for k in keys])).to(h0.dtype)
                initial = (h0, c0)
            y, final = module(torch.from_numpy(batch.x).to(h0.dtype), initial)
            hn, cn = final if carries_c else (final, None)
            states = {
                k: {"h": hn[i].float().numpy(), **({"c": cn[i].float().numpy()} if cn is not None else {})}
                for i, k in enumerate(keys)
            }
            outcome.runs.append(Run(y.float().numpy(), states))
    return outcome


def _module(torch: Any, rnn: RNN) -> Any:
    cls = getattr(torch.nn, default_class("torch", rnn.kind).removeprefix("nn."))
    extra = {"proj_size": rnn.proj} if rnn.proj else {}
    dtype = getattr(torch, rnn.dtype) if rnn.dtype in ("float16", "bfloat16", "float64") else torch.float32
    return cls(
        rnn.input_size,
        rnn.units,
        num_layers=rnn.layers,
        bias=rnn.bias,
        batch_first=True,
        bidirectional=rnn.bidirectional,
        dtype=dtype,
        **extra,
    )


def _source_key(rnn: RNN, ckpt: Checkpoint, prefix: str, local: str, by: str) -> str | None:
    """The key in the file that `local` (a parameter of the fresh module) is read from."""
    if by == "model":
        return (prefix + local).replace("/", ".")
    m = _PARAM.fullmatch(local)
    assert m, local
    canonical = rnn.cell(int(m["layer"]), bool(m["rev"])).members.get(m["role"])
    entry = ckpt.entries.get(canonical) if canonical else None
    return entry.key if entry else None


def _load(torch: Any, ckpt: Checkpoint, keys: list[str], outcome: Outcome) -> Mapping[str, Any]:
    if ckpt.format == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(ckpt.path))
    try:
        loaded = torch.load(str(ckpt.path), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:  # weights_only refuses the file: a pickled module, or other objects
        outcome.notes.append(
            f"torch.load(weights_only=True) refuses {Path(str(ckpt.path)).name} (it pickles objects, not "
            "only tensors); its tensors were read by ckptmap, which runs none of the pickle's code"
        )
        return _from_reader(torch, ckpt, set(keys))
    return _best_mapping(loaded, set(keys)) or {}


def _from_reader(torch: Any, ckpt: Checkpoint, keys: set[str]) -> dict[str, Any]:
    """The tensors ckptmap's own (never executing) pickle reader found, by their keys in the file."""
    from ..torch import tensor_from_numpy

    return {e.key: tensor_from_numpy(torch, e.read()) for e in ckpt.entries.values() if e.key in keys}


def _best_mapping(obj: Any, keys: set[str], depth: int = 0) -> Mapping[str, Any] | None:
    """The (possibly nested) dict holding the most of `keys`: a training checkpoint nests its state dict."""
    if not isinstance(obj, Mapping) or depth > 3:
        return None
    best, score = obj, len(keys.intersection(obj))
    for value in obj.values():
        inner = _best_mapping(value, keys, depth + 1)
        if inner is not None and len(keys.intersection(inner)) > score:
            best, score = inner, len(keys.intersection(inner))
    return best
