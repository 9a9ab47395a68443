"""Load any checkpoint ckptmap reads into a Keras model (Keras 3, or tf-keras), through a mapping.

    import ckptmap.keras
    report = ckptmap.keras.load_into(model, "encoder.pt", "torch-to-keras", freeze=["bidirectional*"])

The model's variables are named the way ckptmap names Keras weights (`<layer>/cell/kernel`,
`<layer>/forward_layer/cell/bias`; formats/keras_names.py), from each variable's own path, so the
layer names of the model are what the checkpoint's names must match; values go in with the
variables' own `assign`.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .formats.keras2_names import INDEX, canonical_names
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


def load_into(
    model: Any,
    source: Source,
    mapping: Any = None,
    *,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    strict: bool = True,
    freeze: Sequence[str] = (),
) -> LoadReport:
    """Map `source` and assign it to `model`'s variables.

    `mapping`: a built-in name, a YAML path, a `ckptmap.Mapping` or a list; None uses the built-in
    mapping from the checkpoint's framework to Keras (none for Keras files). `strict=True` raises
    `ckptmap.MappingError`, assigning nothing, when a variable has no value in the checkpoint or a
    checkpoint tensor has no variable, naming the closest names of the same shape. `freeze` takes
    glob patterns of layer names and sets `layer.trainable = False` on them.

    >>> ckptmap.keras.load_into(model, "lstm.pt", "torch-to-keras")     # doctest: +SKIP
    """
    src, mapped, plan = prepare(source, "keras", mapping, params, rename)
    variables = model_variables(model)
    report = LoadReport(f"Keras model '{model.name}'", describe(source), plan.mappings)
    report.notes = notes_of(src, plan)
    provided = {e.name: e for e in mapped.weights()}
    check(
        report,
        model={n: tuple(v.shape) for n, v in variables.items()},
        provided={n: e.shape for n, e in provided.items()},
    )
    if strict:
        hint = "pass strict=False to load what fits, or a mapping"
        if any(model_shape == (2, *ckpt_shape) for _, model_shape, ckpt_shape in report.mismatched):
            hint = (
                "a GRU bias of [N] belongs to a GRU(reset_after=False), as TF1's GRUCell: build the layer so"
            )
        refuse_incomplete(report, what="model variables", hint=hint)
    mismatched = {name for name, _, _ in report.mismatched}
    for name, variable in variables.items():
        if name in provided and name not in mismatched:
            variable.assign(provided[name].read())
            report.loaded.append(name)
    converted = computed(plan)
    report.converted = [n for n in report.loaded if n in converted]
    for name in matching((layer.name for layer in model.layers), freeze, "layer of the model"):
        model.get_layer(name).trainable = False
        report.frozen.append(name)
    return report


def align(model: Any, source: Source, *, accept_order: bool = False) -> Alignment:
    """Draft the mapping that loads `source` into the Keras `model` (its weights' canonical names
    and shapes), checked by running it; `load_into(model, source, alignment.mapping())` loads it."""
    from .alignment import align as draft
    from .alignment import model_checkpoint

    tensors = {name: (tuple(v.shape), _dtype(v)) for name, v in model_variables(model).items()}
    target = model_checkpoint(tensors, format="keras3", label=f"Keras model '{model.name}'")
    return draft(source, target, accept_order=accept_order)


def _dtype(variable: Any) -> str:
    dtype = variable.dtype
    return str(getattr(dtype, "name", dtype))  # Keras 3: "float32"; tf-keras: tf.float32


def model_variables(model: Any) -> dict[str, Any]:
    """Each variable of `model` under its canonical Keras name (Keras 3 `path`, tf-keras `name`)."""
    out = {}
    for layer in model.layers:
        weights = list(layer.weights)
        if not weights:
            continue
        paths = [(INDEX.sub("", getattr(w, "path", None) or w.name), tuple(w.shape)) for w in weights]
        for name, variable in zip(canonical_names(layer.name, paths), weights, strict=True):
            out[name] = variable
    return out
