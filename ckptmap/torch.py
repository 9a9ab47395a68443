"""Load any checkpoint ckptmap reads into a PyTorch module, through a mapping.

    import ckptmap.torch
    report = ckptmap.torch.load_into(model.encoder, "tf1_run/model.ckpt-2000", "tf1-to-torch",
                                     freeze=["weight_*_l0"])
    print(report)

This replaces hand-written slicing of TF weights: the mapping fuses, splits, reorders gates and
folds TF's run-time forget_bias as `ckptmap convert` does, in memory, and the result goes into the
module with its own `load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .restore import (
    LoadReport,
    Source,
    check,
    computed,
    describe,
    matching,
    notes_of,
    prepare,
    refuse_incomplete,
)

if TYPE_CHECKING:
    from .alignment import Alignment

Module = Any  # torch.nn.Module; torch is imported only when a hook runs


def load_into(
    module: Module,
    source: Source,
    mapping: Any = None,
    *,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    strict: bool = True,
    freeze: Sequence[str] = (),
) -> LoadReport:
    """Map `source` and load it into `module` with `module.load_state_dict`.

    `mapping`: a built-in name, a YAML path, a `ckptmap.Mapping` or a list of them; None uses the
    built-in mapping from the checkpoint's framework to PyTorch (none for PyTorch files).
    `strict=True` raises `ckptmap.MappingError` when the module needs a tensor the checkpoint does
    not provide, or the checkpoint holds one the module has no place for, naming the closest names
    of the same shape; the module is left untouched. `freeze` takes glob patterns of parameter
    names (`"weight_*_l0"`) and sets `requires_grad=False` on them.

    >>> report = ckptmap.torch.load_into(torch.nn.LSTM(3, 8, 2, batch_first=True),
    ...                                  "sample_checkpoints/tf1_lstm2", "tf1-to-torch")  # doctest: +SKIP
    """
    import torch

    src, mapped, plan = prepare(source, "torch", mapping, params, rename)
    report = LoadReport(f"{type(module).__name__} module", describe(source), plan.mappings)
    report.notes = notes_of(src, plan)
    own = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    provided = {e.name.replace("/", "."): e for e in mapped.weights()}
    check(report, model=own, provided={k: e.shape for k, e in provided.items()})
    if strict:
        refuse_incomplete(
            report, what="module tensors", hint="pass strict=False to load what fits, or a mapping"
        )
    state = {
        k: tensor_from_numpy(torch, provided[k].read())
        for k in own
        if k in provided and provided[k].shape == own[k]
    }
    module.load_state_dict(state, strict=strict)
    report.loaded = list(state)
    converted = computed(plan)
    report.converted = [k for k, e in provided.items() if e.name in converted and k in state]
    for name in matching((n for n, _ in module.named_parameters()), freeze, "parameter of the module"):
        module.get_parameter(name).requires_grad_(False)
        report.frozen.append(name)
    return report


def align(module: Module, source: Source, *, accept_order: bool = False) -> Alignment:
    """Draft the mapping that loads `source` into `module` (its state dict's names and shapes),
    checked by running it; `ckptmap.torch.load_into(module, source, alignment.mapping())` loads it.

    >>> a = ckptmap.torch.align(model, "tf1_run/model.ckpt")   # doctest: +SKIP
    >>> print(a)                                                # what is sure, what only order decided
    """
    from .alignment import align as draft
    from .alignment import model_checkpoint

    tensors = {
        name.replace(".", "/"): (tuple(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in module.state_dict().items()
    }
    target = model_checkpoint(tensors, format="torch", label=f"{type(module).__name__} module")
    return draft(source, target, accept_order=accept_order)


def tensor_from_numpy(torch: Any, array: np.ndarray) -> Any:
    """A torch tensor owning a copy of `array` (bfloat16 comes from ml_dtypes, which torch does not know)."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


__all__ = ["LoadReport", "load_into"]
