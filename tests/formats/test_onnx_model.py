"""Reading ONNX models without the onnx package: names, values against onnx's own loader,
external data, recognition of stacks, and crafted files."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ckptmap
from ckptmap.errors import FormatError
from tests.clirun import run


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """torch.onnx's export of a 2-layer bidirectional LSTM at `enc` under a Linear `fc`."""

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True)
            self.fc = torch.nn.Linear(14, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.enc(x)[0])

    path = tmp_path_factory.mktemp("onnx") / "tagger.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tagger().eval(), (torch.randn(3, 2, 5),), str(path), dynamo=False)
    return path


def _onnx_arrays(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_rnn_weights_are_named_by_node_and_direction_and_read_as_onnx_reads_them(exported):
    ckpt = ckptmap.load(exported)
    assert ckpt.format == "onnx"
    arrays = _onnx_arrays(exported)
    placed = ckpt.metadata["initializers"]
    rnn_names = [n for n in ckpt if n.startswith("enc/")]
    assert sorted(rnn_names) == sorted(
        f"enc/{node}/{d}/{r}" for node in ("LSTM", "LSTM_1") for d in ("forward", "reverse") for r in "WRB"
    )
    for name in ckpt:
        initializer, index = placed[name]
        expected = arrays[initializer] if index is None else arrays[initializer][index]
        np.testing.assert_array_equal(ckpt[name], expected)
    assert ckpt.entries["enc/LSTM_1/reverse/W"].shape == (28, 14)
    assert "fc/bias" in ckpt  # torch's dotted name, as its state dict's canonical name
    [rnn] = ckpt.rnns
    assert (rnn.kind, rnn.scope, rnn.layers, rnn.bidirectional, rnn.input_size, rnn.units) == (
        "lstm", "enc", 2, True, 5, 7,
    )  # fmt: skip


def test_reading_and_recognizing_import_no_onnx(exported):
    code = (
        "import sys, ckptmap; c = ckptmap.load(sys.argv[1]); assert c.rnns; c['enc/LSTM/forward/W'];"
        "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, 'imported onnx'"
    )
    subprocess.run([sys.executable, "-c", code, str(exported)], check=True)


def test_external_data_is_read_beside_the_model_and_escapes_are_refused(exported, tmp_path):
    model = onnx.load(str(exported))
    out = tmp_path / "ext.onnx"
    onnx.save_model(model, str(out), save_as_external_data=True, location="ext.data", size_threshold=0)
    ckpt = ckptmap.load(out)
    assert tmp_path / "ext.data" in ckpt.files
    original = ckptmap.load(exported)
    for name in original:
        np.testing.assert_array_equal(ckpt[name], original[name])
    # The same model pointing outside its directory, or through a link: refused, nothing read.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ext.data").write_bytes((tmp_path / "ext.data").read_bytes())
    (tmp_path / "link.data").symlink_to(outside / "ext.data")
    escapes = [
        ("../outside/ext.data", "not a file beside"),
        (str(outside / "ext.data"), "not a file beside"),
        ("link.data", "symbolic link"),
    ]
    for location, problem in escapes:
        crafted = onnx.load(str(out), load_external_data=False)
        for init in crafted.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        path = tmp_path / "crafted.onnx"
        onnx.save_model(crafted, str(path))
        with pytest.raises(FormatError, match=problem):
            ckptmap.load(path)["enc/LSTM/forward/W"]


def test_typed_data_fields_are_read_like_raw_data(tmp_path):
    values = {
        "f32": (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, TensorProto.FLOAT),
        "f16": (np.array([1.5, -2.0, 65504.0], np.float16), TensorProto.FLOAT16),
        "i64": (np.array([-3, 0, 1 << 40], np.int64), TensorProto.INT64),
        "i32": (np.array([-7, 7], np.int32), TensorProto.INT32),
        "f64": (np.array([0.1, -0.2]), TensorProto.DOUBLE),
    }
    inits = [
        helper.make_tensor(k, code, v.shape, v.ravel().tolist(), raw=False) for k, (v, code) in values.items()
    ]
    graph = helper.make_graph([], "typed", [], [], inits)
    path = tmp_path / "typed.onnx"
    onnx.save(helper.make_model(graph), str(path))
    ckpt = ckptmap.load(path)
    for name, (expected, _) in values.items():
        got = ckpt[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_nodes_that_read_the_same_input_are_separate_rnns_and_a_chain_is_one(tmp_path):
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    names = ("/g0/GRU", "/g/GRU", "/g/GRU_1")  # the first two read x; the third reads the second's Y
    for k, source in enumerate(["x", "x", "y_1"]):
        inputs = 3 if source == "x" else 4
        inits += [
            numpy_helper.from_array(rng.standard_normal((1, 12, inputs)).astype(np.float32), f"W{k}"),
            numpy_helper.from_array(rng.standard_normal((1, 12, 4)).astype(np.float32), f"R{k}"),
        ]
        squeeze = [helper.make_node("Squeeze", [f"y_{k}", "axis"], [f"s_{k}"])] if source != "x" else []
        nodes += [helper.make_node("GRU", [source if source == "x" else f"s_{k - 1}", f"W{k}", f"R{k}"],
                                   [f"y_{k}"], name=names[k], hidden_size=4)]  # fmt: skip
        nodes += squeeze
    nodes.insert(2, helper.make_node("Squeeze", ["y_1", "axis"], ["s_1"]))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 3])], [], inits
    )
    path = tmp_path / "three.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    rnns = ckptmap.load(path).rnns
    assert [(r.scope, r.layers) for r in rnns] == [("g0", 1), ("g", 2)]
    assert [c.scope for c in rnns[1].cells] == ["g/GRU", "g/GRU_1"]
    assert rnns[0].reset_after is False  # linear_before_reset defaults to 0


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("truncated", None, "not a valid ONNX model"),
        ("huge-length", b"\x08\x07\x3a\xff\xff\xff\xff\x0f", "runs past the end"),
        ("not-a-model", b"\x08\x07\x12\x02ab", "no graph"),
        ("tensor-bytes", None, "needs"),
    ],
)
def test_crafted_files_fail_with_one_line_naming_the_file(exported, tmp_path, capsys, name, data, message):
    path = tmp_path / f"{name}.onnx"
    if name == "truncated":
        data = exported.read_bytes()[:-100]
    if name == "tensor-bytes":  # raw_data shorter than its dims say
        model = onnx.load(str(exported))
        model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
        data = model.SerializeToString()
    path.write_bytes(data)
    code, out, err = (
        run(capsys, "inspect", path, "--all")
        if name != "tensor-bytes"
        else run(capsys, "diff", path, exported, "--values")
    )
    assert code == 2 and str(path) in err and message in err and "Traceback" not in err + out


def test_a_fifo_named_onnx_is_refused_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "inspect", fifo)
    assert code == 2 and "FIFO" in err


def _graph_file(path: Path, nodes, inits=(), inputs=("x",)) -> Path:
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 1, 3]) for i in inputs],
        [],
        list(inits),
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def test_thousands_of_rnn_nodes_are_read_in_linear_time_with_few_notes(tmp_path, capsys):
    import time

    # Unnamed nodes (each needs a made-up name) whose weights are computed (each is a note).
    nodes = [helper.make_node("LSTM", ["x", f"w{k}", f"r{k}"], [f"y{k}"], hidden_size=2) for k in range(6000)]
    path = _graph_file(tmp_path / "many.onnx", nodes)
    started = time.perf_counter()
    code, out, err = run(capsys, "inspect", path)
    assert code == 0 and time.perf_counter() - started < 5, err
    assert sum(line.startswith("Note:") for line in out.splitlines()) <= 8
    assert "and 5995 more RNN nodes like those" in out


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"linear_before_reset": "abc"}, "attribute linear_before_reset is 'abc'"),
        ({"linear_before_reset": [1, 1]}, "attribute linear_before_reset is [1, 1]"),
        ({"direction": "sideways"}, "direction 'sideways'"),
        ({"activations": [1, 2]}, "activations [1, 2]"),
    ],
    ids=["str", "list", "direction", "activations"],
)
def test_crafted_attributes_are_one_line_naming_the_node(tmp_path, capsys, attributes, message):
    inits = [
        numpy_helper.from_array(np.zeros((1, 6, 3), np.float32), "W"),
        numpy_helper.from_array(np.zeros((1, 6, 2), np.float32), "R"),
    ]
    node = helper.make_node("GRU", ["x", "W", "R"], ["y"], name="/g/GRU", hidden_size=2, **attributes)
    path = _graph_file(tmp_path / "attrs.onnx", [node], inits)
    code, out, err = run(capsys, "inspect", path)
    assert code == 2 and f"{path}: GRU node /g/GRU: {message}" in err and "Traceback" not in out + err


def test_initializers_of_types_ckptmap_does_not_read_are_left_out_by_name(tmp_path, capsys):
    q = helper.make_tensor("q", TensorProto.FLOAT8E4M3FN, [2], [1.0, 2.0])
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    path = _graph_file(tmp_path / "f8.onnx", [], [q, w])
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "are left out: q." in out and "w  " in out


def test_an_encoder_feeding_a_decoder_is_two_rnns_not_one_stack(tmp_path, capsys):
    class EncDec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = torch.nn.LSTM(3, 4)
            self.dec = torch.nn.LSTM(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dec(self.enc(x)[0])[0]

    torch.manual_seed(0)
    model = EncDec().eval()
    path = tmp_path / "encdec.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(5, 2, 3),), str(path), dynamo=False)
    assert [(r.scope, r.layers) for r in ckptmap.load(path).rnns] == [("enc", 1), ("dec", 1)]
    code, out, err = run(capsys, "convert", path, tmp_path / "m.pt", "-m", "onnx-to-torch", "--verify")
    assert code == 0 and out.count("EQUAL") == 2, out + err
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert "dec.weight_ih_l0" in state and "enc.weight_ih_l1" not in state


def test_the_names_and_values_a_model_may_hold_are_bounded_all_together(tmp_path, capsys, monkeypatch):
    from ckptmap.formats import onnx_graph

    monkeypatch.setattr(onnx_graph, "MAX_ITEMS", 1000)  # 5 million in use: a small file shows the bound
    node = helper.make_node("Identity", [f"i{k}" for k in range(2000)], ["y"])  # one node, 2000 inputs
    path = _graph_file(tmp_path / "wide.onnx", [node])
    code, _, err = run(capsys, "inspect", path)
    assert code == 2 and "more than 1000 names, values and nodes" in err and str(path) in err
