"""TF2 object-based checkpoints ("tf2") against real TensorFlow and tf-keras: `save_weights(prefix)`
and `tf.train.Checkpoint` output is read exactly in model order with slots marked from the object
graph; checkpoints ckptmap writes (from Keras .h5 files, TF2 checkpoints or plain numpy entries) are
restored by fresh models with equal outputs; damaged graphs fail on one line; writes are atomic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tfkeras_models as km  # tests/formats is on sys.path
from test_tf_bundle import tf_tensors  # tests/formats is on sys.path

from ckptmap.errors import CkptmapError, FormatError
from ckptmap.formats import keras2_h5, object_graph, registry, tf2_object, tf_bundle, tf_paths
from ckptmap.tree import Checkpoint, TensorEntry

KINDS = list(km.BUILDERS)


def tf_graph(prefix: Path):
    """The object graph as TensorFlow's own protobuf class parses it."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf_tensors(prefix)[object_graph.GRAPH_KEY])
    return graph


@pytest.mark.parametrize("kind", KINDS)
def test_save_weights_checkpoint_reads_exactly_in_model_order(tmp_path: Path, kind: str) -> None:
    model = km.build(kind)
    prefix = tmp_path / "weights"
    model.save_weights(str(prefix))
    assert tf2_object.sniff(prefix) and not tf_bundle.sniff(prefix)
    assert registry.detect(prefix).name == "tf2" and registry.detect(tmp_path).name == "tf2"
    ckpt = tf2_object.read(prefix)
    names = km.canonical_names(model, tf2=True)
    assert ckpt.format == "tf2" and sorted(ckpt.names) == sorted(names)
    # Layers in model order (`layer_with_weights-2` before `-10`); inside a layer, the graph's
    # order, which is creation order (a nested BatchNormalization's statistics follow its beta).
    assert [n.split("/")[0] for n in ckpt.names] == [n.split("/")[0] for n in names]
    expected = tf_tensors(prefix)
    for name, value in zip(names, km.legacy_weights(model), strict=True):
        entry = ckpt.entries[name]
        assert entry.key == f"{name}/.ATTRIBUTES/VARIABLE_VALUE" and entry.kind == "weight"
        np.testing.assert_array_equal(ckpt[name], value, err_msg=name)
        np.testing.assert_array_equal(expected[entry.key], value, err_msg=name)
    assert ckpt.metadata["root_children"][:2] == ["layer-0", "layer_with_weights-0"]


def test_optimizer_slots_are_marked_from_the_object_graph(tmp_path: Path) -> None:
    import tensorflow as tf
    import tf_keras as keras

    model = km.build("lstm")
    legacy = keras.optimizers.legacy.Adam()  # keeps Adam's m/v as slot variables in the graph
    model.compile(legacy, "mse")
    model.fit(km.tokens(), np.zeros((2, 2), np.float32), verbose=0)
    prefix = Path(tf.train.Checkpoint(model=model, optimizer=legacy).save(str(tmp_path / "ckpt")))
    ckpt = tf2_object.read(prefix)
    kernel = "model/layer_with_weights-1/cell/kernel"
    slot = f"{kernel}/.OPTIMIZER_SLOT/optimizer/m"
    assert ckpt.entries[kernel].kind == "weight"
    assert ckpt.entries[slot].kind == "slot" and ckpt.entries[slot].slot_of == kernel
    assert ckpt.entries["save_counter"].kind == "bookkeeping"
    assert ckpt.entries["optimizer/iter"].kind == "bookkeeping"
    assert ckpt.metadata["slot_variables"] == 2 * len(model.weights)
    assert ckpt.metadata["root_children"] == ["model", "optimizer", "save_counter"]
    expected = tf_tensors(prefix)
    for entry in ckpt.entries.values():
        np.testing.assert_array_equal(entry.read(), expected[entry.key], err_msg=entry.name)
    # Written back, TF sees the same values and the slots as slot variables again.
    out = tmp_path / "out" / "ckpt"
    tf2_object.write(ckpt, out)
    written = tf_tensors(out)
    assert set(written) == set(expected)
    for key, value in expected.items():
        if key != object_graph.GRAPH_KEY:
            np.testing.assert_array_equal(written[key], value, err_msg=key)
    slots = [s for node in tf_graph(out).nodes for s in node.slot_variables]
    assert len(slots) == 2 * len(model.weights) and {s.slot_name for s in slots} == {"m", "v"}
    assert tf2_object.read(out).entries[slot].slot_of == kernel


@pytest.mark.parametrize("kind", KINDS)
def test_keras_h5_written_as_tf2_restores_with_load_weights(tmp_path: Path, kind: str) -> None:
    model = km.build(kind)
    model.save_weights(str(tmp_path / "w.h5"))
    source = keras2_h5.read(tmp_path / "w.h5")
    prefix = tmp_path / "tf2" / "weights"
    seen: list[int] = []
    written = tf2_object.write(source, prefix, progress=seen.append)
    assert written == tf2_object.files(prefix) and all(p.exists() for p in written)
    assert len(seen) == len(source) and sum(seen) == source.nbytes
    assert sorted(tf2_object.read(prefix).names) == sorted(km.canonical_names(model, tf2=True))
    fresh = km.build(kind, seed=None)
    fresh.load_weights(str(prefix)).assert_existing_objects_matched()
    np.testing.assert_array_equal(km.outputs(fresh), km.outputs(model))
    assert "save_counter" not in tf_tensors(prefix)  # the root is a Keras model: it has no counter


def test_nested_checkpoint_round_trips_through_tf_train_checkpoint(tmp_path: Path) -> None:
    import tensorflow as tf

    model = km.build("bidirectional")
    tf.train.Checkpoint(model=model).write(str(tmp_path / "src"))
    ckpt = tf2_object.read(tmp_path / "src")
    assert ckpt.names == [f"model/{n}" for n in km.canonical_names(model, tf2=True)]
    tf2_object.write(ckpt, tmp_path / "out" / "ckpt")
    fresh = km.build("bidirectional", seed=None)
    # The written counter is what lets this assertion pass (restore creates `save_counter`).
    tf.train.Checkpoint(model=fresh).restore(str(tmp_path / "out" / "ckpt")).assert_existing_objects_matched()
    np.testing.assert_array_equal(km.outputs(fresh), km.outputs(model))
    assert tf.train.latest_checkpoint(str(tmp_path / "out")) == str(tmp_path / "out" / "ckpt")


def test_numpy_entries_with_keras_names_become_layer_with_weights(tmp_path: Path) -> None:
    # Plain arrays under canonical Keras names (as a mapping would produce them).
    model = km.build("nested")
    values = dict(zip(km.canonical_names(model), km.legacy_weights(model), strict=True))
    ckpt = Checkpoint(
        [TensorEntry(n, v.shape, "float32", n, lambda v=v: v) for n, v in values.items()], format="numpy"
    )
    assert tf2_object.looks_keras(ckpt)
    paths = tf2_object.object_paths(ckpt)
    assert paths["gru/cell/kernel"] == "layer_with_weights-1/cell/kernel"
    assert paths["inner/inner_bn/moving_mean"] == "layer_with_weights-2/layer_with_weights-1/moving_mean"
    tf2_object.write(ckpt, tmp_path / "weights")
    fresh = km.build("nested", seed=None)
    fresh.load_weights(str(tmp_path / "weights")).assert_existing_objects_matched()
    np.testing.assert_array_equal(km.outputs(fresh), km.outputs(model))


def test_tf_format_reading_of_a_tf2_checkpoint_writes_back_unchanged(tmp_path: Path) -> None:
    # tf_bundle.read keeps the old graph as a tensor; the writer drops it and builds a new one.
    model = km.build("stacked")
    model.save_weights(str(tmp_path / "src"))
    ckpt = tf_bundle.read(tmp_path / "src")
    assert ckpt.format == "tf" and object_graph.GRAPH_KEY in ckpt
    assert not tf2_object.looks_keras(ckpt)
    tf2_object.write(ckpt, tmp_path / "out")
    assert set(tf_tensors(tmp_path / "out")) == set(tf_tensors(tmp_path / "src"))
    fresh = km.build("stacked", seed=None)
    fresh.load_weights(str(tmp_path / "out")).assert_existing_objects_matched()
    np.testing.assert_array_equal(km.outputs(fresh), km.outputs(model))


def _with_graph(tmp_path: Path, graph: bytes) -> Path:
    """A bundle with one variable and the given bytes as its object graph."""
    entries = [
        TensorEntry("w/.ATTRIBUTES/VARIABLE_VALUE", (2,), "float32", "w", lambda: np.ones(2, np.float32)),
        TensorEntry(object_graph.GRAPH_KEY, (), "string", "g", lambda: np.array(graph, dtype=object)),
    ]
    prefix = tmp_path / "ckpt"
    tf_bundle.write(Checkpoint(entries, format="test", classify=False), prefix)
    return prefix


@pytest.mark.parametrize(
    "graph",
    [
        b"\xff\xff\xff garbage",
        object_graph.encode([object_graph.Node(children=[(7, "w")])]),  # an edge to a missing node
        b"",  # no root node
    ],
    ids=["garbage", "dangling-edge", "empty"],
)
def test_damaged_object_graph_is_a_one_line_error(tmp_path: Path, graph: bytes) -> None:
    prefix = _with_graph(tmp_path, graph)
    assert tf2_object.sniff(prefix)
    with pytest.raises(FormatError, match=r"damaged object graph") as err:
        tf2_object.read(prefix)
    assert str(prefix) in str(err.value) and "\n" not in str(err.value)


def test_damaged_index_is_not_sniffed_and_read_names_it(tmp_path: Path) -> None:
    prefix = _with_graph(tmp_path, object_graph.encode([object_graph.Node()]))
    index = tf_paths.index_path(prefix)
    index.write_bytes(index.read_bytes()[:-10])
    assert not tf2_object.sniff(prefix) and not tf_bundle.sniff(prefix)
    with pytest.raises(CkptmapError) as err:
        tf2_object.read(prefix)
    assert str(index) in str(err.value)


def test_bundle_without_graph_is_not_tf2(tmp_path: Path) -> None:
    entry = TensorEntry("w", (2,), "float32", "w", lambda: np.ones(2, np.float32))
    tf_bundle.write(Checkpoint([entry], format="test"), tmp_path / "ckpt")
    assert not tf2_object.sniff(tmp_path / "ckpt") and tf_bundle.sniff(tmp_path / "ckpt")
    with pytest.raises(FormatError, match="try 'tf'"):
        tf2_object.read(tmp_path / "ckpt")


_NO_FRAMEWORKS = """
import sys
from pathlib import Path
import ckptmap
ckpt = ckptmap.load(Path(sys.argv[1]))
assert ckpt.format == "tf2", ckpt.format
sum(float(ckpt[n].sum()) for n in ckpt)
loaded = [m for m in ("tensorflow", "keras", "tf_keras", "torch") if m in sys.modules]
assert not loaded, loaded
"""


def test_reading_imports_no_framework(tmp_path: Path) -> None:
    km.build("gru_reset_before").save_weights(str(tmp_path / "weights"))
    subprocess.run([sys.executable, "-c", _NO_FRAMEWORKS, str(tmp_path / "weights")], check=True)
