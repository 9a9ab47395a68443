"""Fresh Keras models for a recognized RNN, restored with Keras's own loaders.

The model is what Keras code builds: GRU / LSTM / SimpleRNN layers (in Bidirectional when
bidirectional), one per layer, named as in the checkpoint, with initial states fed through extra
inputs. Restoring uses the loader of the file's format:

    keras3, keras-archive   Keras 3 model.load_weights(.weights.h5; an archive's weights file)
    keras2                  tf-keras model.load_weights(.h5, by_name=True)
    tf2                     tf-keras layers under tf.train.Checkpoint(<object path>=layer).read(prefix)

Keras 3 files key layers by class and position (`layers/gru`, `layers/gru_1`; see
formats/keras3_h5.py), so the model holds every recurrent layer of the file, each on its own input,
created in the file's per-class order: load_weights then finds each layer where Keras would.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cell_kinds import gate_count, kind
from ..cells import keras_cells
from ..cells.model import RNN
from ..errors import UnsupportedError
from ..formats.keras_names import CUDNN_CLASSES, LAYER_CLASSES, RNN_CELL_ROLES
from ..tree import Checkpoint
from .backends import backend, import_framework, quiet_stderr
from .cases import Batch, Run
from .outcome import Outcome, framework_message

_KEY = re.compile(r"layers/(?P<cls>[a-z_]+?)(?:_(?P<n>\d+))?/")


@dataclass
class _Layer:
    """One Keras layer to build: which RNN (and which of its layers), and its place in a Keras 3 file."""

    rnn: RNN
    layer: int
    name: str
    position: tuple[int, str] = (0, "")  # (index within its class, class key)
    ours: bool = False
    keras_layer: Any = None  # the built layer


def restore_and_run(
    rnn: RNN, ckpt: Checkpoint, batches: list[Batch], *, by: str, options: dict[str, Any]
) -> Outcome:
    keras3 = ckpt.format in ("keras3", "keras-archive")
    keras = _keras(keras3)
    outcome = Outcome("keras", [])
    _check_names(rnn, ckpt, outcome)
    if outcome.missing or outcome.mismatched:
        return outcome
    plan = _plan(rnn, ckpt, keras3)
    with quiet_stderr():
        model, parts = _build(keras, plan, plain_names=ckpt.format != "tf2")
        try:
            _restore(ckpt, model, [p for p in parts if p.ours])
        except Exception as e:  # the framework's own loader refused: report its words
            outcome.error = framework_message(e)
            return outcome
        for batch in batches:
            outcome.runs.append(_run(rnn, plan, model, batch))
    return outcome


def _keras(keras3: bool) -> Any:
    if keras3:
        return import_framework("keras", backend("keras").install)
    import_framework("tensorflow", backend("tf1").install)
    return import_framework("tf_keras", backend("tf1").install)


def _as_keras(rnn: RNN) -> RNN:
    return rnn if rnn.framework == "keras" else replace(rnn, framework="keras", cells=())


def _check_names(rnn: RNN, ckpt: Checkpoint, outcome: Outcome) -> None:
    """What the model will read, checked against the checkpoint before any framework is involved."""
    gates = gate_count(rnn.kind) * rnn.units
    model = _as_keras(rnn)
    for layer in range(rnn.layers):
        inputs = rnn.input_size if layer == 0 else rnn.units * rnn.directions
        bias = (2, gates) if rnn.reset_after else (gates,)  # reset_after: a GRU's two biases
        if rnn.cell_type in CUDNN_CLASSES.values() and ckpt.format == "keras2":
            bias = (2 * gates,)  # tf-keras' load_weights converts a CuDNN layer's weights itself
        shapes = {"kernel": (inputs, gates), "recurrent_kernel": (rnn.units, gates), "bias": bias}
        for reverse in (False, True) if rnn.bidirectional else (False,):
            for role in RNN_CELL_ROLES if rnn.bias else RNN_CELL_ROLES[:2]:
                name = keras_cells.member_name(model, layer, reverse, role)
                outcome.expected.append(name)
                entry = ckpt.entries.get(name)
                if entry is None:
                    outcome.missing.append((name, shapes[role]))
                elif entry.shape != shapes[role]:
                    outcome.mismatched.append((name, shapes[role], entry.shape))


def _plan(rnn: RNN, ckpt: Checkpoint, keras3: bool) -> list[_Layer]:
    """The layers to build, in creation order: ours, and for Keras 3 files every other recurrent layer."""
    model = _as_keras(rnn)
    ours = [_Layer(rnn, k, keras_cells.layer_name(model, k), ours=True) for k in range(rnn.layers)]
    if not keras3:
        return ours
    own = {name for cell in rnn.cells for name in cell.members.values()}
    others = [_Layer(other, 0, other.scope) for other in ckpt.rnns
              if other.framework == "keras" and not own.intersection(other.tensor_names)]  # fmt: skip
    for part in ours + others:
        cell = part.rnn.cell(part.layer) if part.rnn.cells else None
        key = ckpt.entries[cell.members["kernel"]].key if cell else ""
        m = _KEY.match(key)
        if m is None or "/layers/" in key:
            raise UnsupportedError(f"{ckpt.path}: cannot place layer '{part.name}' (key '{key}'); verifying "
                                   "layers inside nested Keras models is not supported.")  # fmt: skip
        part.position = (int(m["n"] or 0), m["cls"])
    return sorted(ours + others, key=lambda p: p.position)


def _build(keras: Any, plan: list[_Layer], *, plain_names: bool) -> tuple[Any, list[_Layer]]:
    inputs, outputs = [], []
    sequence = None
    for i, part in enumerate(plan):
        rnn = part.rnn
        if part.ours and sequence is not None and part.layer > 0:
            source = sequence
        else:
            source = keras.Input(
                shape=(None, rnn.input_size if part.layer == 0 else rnn.units * rnn.directions)
            )
            inputs.append(source)
        initial = []
        for _ in range(rnn.directions):
            for _ in _state_parts(rnn):
                state = keras.Input(shape=(rnn.units,))
                inputs.append(state)
                initial.append(state)
        name = part.name if plain_names else f"rnn_{i}"  # TF2 object paths are not valid layer names
        cls = getattr(keras.layers, LAYER_CLASSES[rnn.kind])
        extra = {"reset_after": bool(rnn.reset_after)} if "reset_after" in kind(rnn.kind).facts else {}
        inner = cls(rnn.units, return_sequences=True, return_state=True, use_bias=rnn.bias, **extra,
                    **({} if rnn.bidirectional else {"name": name}))  # fmt: skip
        layer = keras.layers.Bidirectional(inner, name=name) if rnn.bidirectional else inner
        result = layer(source, initial_state=initial)
        outputs.extend(result)
        if part.ours:
            sequence = result[0]
        part.keras_layer = layer
    return keras.Model(inputs, outputs), plan


def _restore(ckpt: Checkpoint, model: Any, ours: list[_Layer]) -> None:
    path = Path(str(ckpt.path))
    if ckpt.format == "keras-archive":
        with tempfile.TemporaryDirectory(prefix="ckptmap-keras-") as tmp, zipfile.ZipFile(path) as archive:
            weights = Path(tmp) / "model.weights.h5"
            weights.write_bytes(archive.read("model.weights.h5"))
            model.load_weights(str(weights))
    elif ckpt.format == "keras3":
        model.load_weights(str(path))
    elif ckpt.format == "keras2":
        model.load_weights(str(path), by_name=True)
    else:  # tf2, savedmodel: the checkpoint's object paths lead to the layers
        import tensorflow as tf

        # A SavedModel's layers carry their names here; its checkpoint keeps the edges they came from.
        edges = ckpt.metadata.get("layer_edges", {})
        path = Path(ckpt.metadata.get("variables", path))
        tree: dict[str, Any] = {}
        for part in ours:
            *outer, leaf = edges.get(part.name, part.name).split("/")
            node = tree
            for component in outer:
                node = node.setdefault(component, {})
            node[leaf] = part.keras_layer

        def checkpoint(node: dict[str, Any]) -> Any:
            return tf.train.Checkpoint(
                **{k: checkpoint(v) if isinstance(v, dict) else v for k, v in node.items()}
            )

        checkpoint(tree).read(str(path)).assert_existing_objects_matched()


def _run(rnn: RNN, plan: list[_Layer], model: Any, batch: Batch) -> Run:
    """Feed our layers the batch (other layers zeros) and read back our outputs and final states."""
    parts = _state_parts(rnn)
    feeds, ours_outputs, position = [], [], 0
    for part in plan:
        width = len(_state_parts(part.rnn)) * part.rnn.directions  # each layer has its own state inputs
        if part.ours:
            if part.layer == 0:
                feeds.append(batch.x)
            for reverse in (False, True) if rnn.bidirectional else (False,):
                feeds.extend(batch.states[(part.layer, reverse)][p] for p in parts)
            ours_outputs.append((part.layer, position))
        else:
            n = batch.x.shape[0]
            feeds.append(np.zeros((n, 1, part.rnn.input_size), np.float32))
            feeds.extend(np.zeros((n, part.rnn.units), np.float32) for _ in range(width))
        position += 1 + width
    results = [np.asarray(r) for r in model(feeds, training=False)]
    states = {}
    for layer, at in ours_outputs:
        finals = results[at + 1 : at + 1 + len(parts) * rnn.directions]
        for d, reverse in enumerate((False, True) if rnn.bidirectional else (False,)):
            states[(layer, reverse)] = {p: finals[d * len(parts) + j] for j, p in enumerate(parts)}
    last = max(ours_outputs)[1]
    return Run(results[last], states)


def _state_parts(rnn: RNN) -> tuple[str, ...]:
    return kind(rnn.kind).state
