"""ONNX end to end: models exported by torch.onnx, converted with the built-in mappings, checked by
running the original and the converted models in their own runtimes (onnxruntime, PyTorch's
load_state_dict(strict=True), Keras' load_weights)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ckptmap
from tests.clirun import run

ATOL = 1e-5


def _export(module: torch.nn.Module, x: torch.Tensor, path: Path, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, input_names=["x"], **kwargs)
    return path


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


class Tagger(torch.nn.Module):
    """A 2-layer bidirectional LSTM under a Linear head, batch first, as a tagger has."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x)[0])


@pytest.fixture(scope="module")
def gru_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 6, num_layers=2)
    return _export(gru, torch.randn(4, 2, 5), tmp_path_factory.mktemp("gru") / "gru.onnx")


def test_an_exported_gru_converts_to_pytorch_exactly(gru_onnx, tmp_path, capsys):
    code, _, err = run(capsys, "convert", gru_onnx, tmp_path / "gru.pt", "-m", "onnx-to-torch")
    assert code == 0, err
    module = torch.nn.GRU(5, 6, num_layers=2)
    module.load_state_dict(torch.load(tmp_path / "gru.pt", weights_only=True), strict=True)
    x = np.random.default_rng(1).standard_normal((4, 2, 5)).astype(np.float32)
    expected = _ort(gru_onnx, x)[0]
    got, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=ATOL)


def test_an_exported_gru_converts_to_keras_gru_reset_after_exactly(gru_onnx, tmp_path, capsys):
    import keras

    code, _, err = run(capsys, "convert", gru_onnx, tmp_path / "gru.weights.h5", "-m", "onnx-to-keras")
    assert code == 0, err
    # torch.onnx names the nodes /GRU and /GRU_1: Keras layers `gru` and `gru_1`, stacked.
    inputs = keras.Input((None, 5))
    hidden = keras.layers.GRU(6, return_sequences=True, reset_after=True, name="gru")(inputs)
    outputs = keras.layers.GRU(6, return_sequences=True, reset_after=True, name="gru_1")(hidden)
    model = keras.Model(inputs, outputs)
    model.load_weights(tmp_path / "gru.weights.h5")
    x = np.random.default_rng(2).standard_normal((4, 2, 5)).astype(np.float32)
    expected = _ort(gru_onnx, x)[0]  # [steps, batch, units]
    got = np.asarray(model(x.transpose(1, 0, 2))).transpose(1, 0, 2)
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_verify_runs_the_onnx_side_in_onnxruntime(gru_onnx, tmp_path, capsys):
    run(capsys, "convert", gru_onnx, tmp_path / "gru.pt", "-m", "onnx-to-torch")
    code, out, _ = run(capsys, "verify", gru_onnx, tmp_path / "gru.pt")
    assert code == 0 and "EQUAL" in out and "GRU at (root)" in out
    # A wrong gate order is caught: swap two gate blocks of the written file.
    state = torch.load(tmp_path / "gru.pt", weights_only=True)
    w = state["weight_hh_l1"]
    state["weight_hh_l1"] = torch.cat([w[6:12], w[:6], w[12:]])
    torch.save(state, tmp_path / "swapped.pt")
    code, out, _ = run(capsys, "verify", gru_onnx, tmp_path / "swapped.pt")
    assert code == 1 and "DIFFERS" in out


def test_retrained_pytorch_weights_go_into_the_exported_graph(tmp_path, capsys):
    torch.manual_seed(0)
    exported = _export(Tagger(), torch.randn(2, 4, 5), tmp_path / "tagger.onnx")
    torch.manual_seed(7)
    retrained = Tagger()
    torch.save(retrained.state_dict(), tmp_path / "retrained.pt")
    new = tmp_path / "new.onnx"
    # The exporter renamed the Linear weight (onnx::MatMul_<n>, transposed): the model would keep
    # its old value, so the conversion stops and says so ...
    code, _, err = run(
        capsys, "convert", tmp_path / "retrained.pt", new, "-m", "torch-to-onnx", "--into", exported
    )
    assert code == 2 and "fc/weight" in err and "would keep its old value" in err and not new.exists()
    # ... until it is named for the initializer that holds it, transposed by a mapping rule.
    matmul = next(
        i.name for i in onnx.load(str(exported)).graph.initializer if i.name.startswith("onnx::MatMul")
    )
    rules = tmp_path / "fc.yaml"
    rules.write_text(
        "name: fc\nfrom: onnx\nto: onnx\nunmatched: keep\nrules:\n"
        f"  - match: 'fc/weight'\n    to: {{'{matmul}': 'src | T'}}\n"
    )
    code, out, err = run(
        capsys,
        "convert",
        tmp_path / "retrained.pt",
        new,
        "-m",
        "torch-to-onnx",
        "-m",
        rules,
        "--into",
        exported,
    )
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(new)))
    x = np.random.default_rng(3).standard_normal((2, 4, 5)).astype(np.float32)
    with torch.no_grad():
        expected = retrained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(new, x)[0], expected, atol=ATOL)
    assert not np.allclose(_ort(exported, x)[0], expected, atol=1e-3)  # the template's own weights differ
    code, out, _ = run(capsys, "verify", tmp_path / "retrained.pt", new, "-m", "torch-to-onnx")
    assert code == 0 and "EQUAL" in out


def test_writing_onnx_needs_a_template_and_refuses_a_gru_of_the_other_reset_placement(tmp_path, capsys):
    gru = torch.nn.GRU(3, 4)
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    code, _, err = run(capsys, "convert", tmp_path / "gru.pt", tmp_path / "out.onnx", "-m", "torch-to-onnx")
    assert code == 2 and "--into" in err
    template = _hand_made_gru(tmp_path / "lbr0.onnx", linear_before_reset=0)
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "gru.pt",
        tmp_path / "out.onnx",
        "-m",
        "torch-to-onnx",
        "--into",
        template,
    )
    assert code == 2 and "linear_before_reset=0" in err and not (tmp_path / "out.onnx").exists()
    code, _, err = run(capsys, "convert", tmp_path / "gru.pt", tmp_path / "out.pt", "--into", template)
    assert code == 2 and "--into" in err


def test_keras_gru_reset_after_false_goes_into_a_linear_before_reset_0_node(tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, reset_after=False, name="gru")])
    model.layers[0].set_weights([w + 0.1 for w in model.layers[0].get_weights()])  # a nonzero bias
    model.save_weights(tmp_path / "k.weights.h5")
    template = _hand_made_gru(tmp_path / "lbr0.onnx", linear_before_reset=0, node="/gru/GRU")
    new = tmp_path / "new.onnx"
    code, _, err = run(
        capsys, "convert", tmp_path / "k.weights.h5", new, "-m", "keras-to-onnx", "--into", template
    )
    assert code == 0, err
    x = np.random.default_rng(5).standard_normal((6, 2, 3)).astype(np.float32)
    y_h = _ort(new, x)[1][0]  # [batch, units]
    np.testing.assert_allclose(y_h, np.asarray(model(x.transpose(1, 0, 2))), atol=ATOL)
    code, out, _ = run(capsys, "verify", tmp_path / "k.weights.h5", new)
    assert code == 0 and "EQUAL" in out


def test_a_node_with_other_activations_is_recognized_and_not_converted(tmp_path, capsys):
    template = _hand_made_gru(tmp_path / "relu.onnx", linear_before_reset=1, activations=["Sigmoid", "Relu"])
    [rnn] = ckptmap.load(template).rnns
    assert rnn.kind == "gru" and "Relu" in rnn.unsupported
    code, _, err = run(capsys, "convert", template, tmp_path / "out.pt", "-m", "onnx-to-torch")
    assert code == 2 and "Sigmoid, Relu" in err and not (tmp_path / "out.pt").exists()


def _hand_made_gru(
    path: Path, *, linear_before_reset: int, node: str = "/GRU", activations: list[str] | None = None
) -> Path:
    """A one-node GRU model [steps, batch, 3] -> Y, Y_h of 4 units, random weights."""
    rng = np.random.default_rng(0)
    weights = {
        "W": rng.standard_normal((1, 12, 3)).astype(np.float32),
        "R": rng.standard_normal((1, 12, 4)).astype(np.float32),
        "B": rng.standard_normal((1, 24)).astype(np.float32),
    }
    extra = {"activations": activations} if activations else {}
    gru = helper.make_node(
        "GRU", ["x", "W", "R", "B"], ["y", "y_h"], name=node, hidden_size=4,
        linear_before_reset=linear_before_reset, **extra,
    )  # fmt: skip
    graph = helper.make_graph(
        [gru],
        "gru",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["steps", "batch", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["steps", 1, "batch", 4]),
            helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, "batch", 4]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def test_weights_go_into_nodes_named_otherwise_in_layer_and_graph_order(tmp_path, capsys):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 6, num_layers=2)
    exported = _export(lstm, torch.randn(3, 2, 4), tmp_path / "lstm.onnx")
    model = onnx.load(str(exported))
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    for node, name in zip(nodes, ("LSTM_589", "LSTM_600"), strict=True):
        node.name = name  # as torch 1.x named them (the real silero-vad model has these)
    onnx.save(model, str(tmp_path / "old.onnx"))
    torch.manual_seed(1)
    retrained = torch.nn.LSTM(4, 6, num_layers=2)
    torch.save(retrained.state_dict(), tmp_path / "retrained.pt")
    new = tmp_path / "new.onnx"
    code, out, err = run(
        capsys,
        "convert",
        tmp_path / "retrained.pt",
        new,
        "-m",
        "torch-to-onnx",
        "--into",
        tmp_path / "old.onnx",
    )
    assert code == 0, err
    x = np.random.default_rng(4).standard_normal((3, 2, 4)).astype(np.float32)
    with torch.no_grad():
        expected = retrained(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(_ort(new, x)[0], expected, atol=ATOL)
    code, out, _ = run(capsys, "verify", tmp_path / "retrained.pt", new, "-m", "torch-to-onnx")
    assert code == 0 and "EQUAL" in out
    # Nodes that do not agree in op or shape are not paired: a GRU has no place in an LSTM model.
    torch.save(torch.nn.GRU(4, 6, num_layers=2).state_dict(), tmp_path / "gru.pt")
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "gru.pt",
        new,
        "-m",
        "torch-to-onnx",
        "--into",
        tmp_path / "old.onnx",
        "--overwrite",
    )
    assert code == 2 and "has no initializer read as 'GRU/forward/W'" in err


def test_the_real_silero_vad_model_converts_and_takes_weights_back(tmp_path, capsys):
    real = Path(__file__).parents[3] / "shared/real_checkpoints/silero_vad_v3_onnx_2lstm/silero_vad.onnx"
    if not real.exists():
        pytest.skip("../shared/real_checkpoints is not beside the checkout")
    [rnn] = ckptmap.load(real).rnns
    assert (rnn.kind, rnn.layers, rnn.units) == ("lstm", 2, 64)
    code, out, err = run(capsys, "convert", real, tmp_path / "vad.pt", "-m", "onnx-to-torch", "--verify")
    assert code == 0 and "EQUAL" in out, err
    code, out, err = run(
        capsys,
        "convert",
        tmp_path / "vad.pt",
        tmp_path / "vad.onnx",
        "-m",
        "torch-to-onnx",
        "--into",
        real,
        "--verify",
    )
    assert code == 0 and "EQUAL" in out, err
    arrays = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(real)).graph.initializer}
    for init in onnx.load(str(tmp_path / "vad.onnx")).graph.initializer:  # the same numbers back
        np.testing.assert_allclose(numpy_helper.to_array(init), arrays[init.name], atol=1e-6)


def test_a_node_gets_all_its_weights_or_none(tmp_path, capsys):
    template = _export(torch.nn.LSTM(3, 4, bidirectional=True), torch.randn(2, 1, 3), tmp_path / "bi.onnx")
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "uni.pt")
    code, _, err = run(
        capsys, "convert", tmp_path / "uni.pt", tmp_path / "o.onnx", "-m", "torch-to-onnx", "--into", template
    )
    assert code == 2 and "reverse/W" in err and "would keep the template's values" in err
    assert not (tmp_path / "o.onnx").exists()


def test_nodes_of_two_modules_named_otherwise_are_not_paired_by_guess(tmp_path, capsys):
    class EncDec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = torch.nn.LSTM(4, 4)  # declared first: the state dict lists it first
            self.enc = torch.nn.LSTM(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dec(self.enc(x)[0])[0]

    exported = _export(EncDec(), torch.randn(3, 1, 4), tmp_path / "ed.onnx")
    model = onnx.load(str(exported))
    for k, node in enumerate(n for n in model.graph.node if n.op_type == "LSTM"):
        node.name = f"LSTM_{500 + k}"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    torch.save(EncDec().state_dict(), tmp_path / "new.pt")
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "new.pt",
        tmp_path / "o.onnx",
        "-m",
        "torch-to-onnx",
        "--into",
        tmp_path / "renamed.onnx",
    )
    assert code == 2 and "has no initializer read as" in err and not (tmp_path / "o.onnx").exists()


def test_sizes_a_crafted_node_makes_too_large_are_refused_as_a_mapping_error(tmp_path, capsys):
    # A GRU without B whose R claims 2**28 units and holds no data: the zeros B stands for are 6 GB.
    units = 1 << 28
    w, r = (
        TensorProto(name="W", data_type=TensorProto.FLOAT),
        TensorProto(name="R", data_type=TensorProto.FLOAT),
    )
    w.dims.extend([1, 3 * units, 0])
    r.dims.extend([1, 3 * units, units])  # no data: never read, the plan is refused first
    node = helper.make_node("GRU", ["x", "W", "R"], ["y"], name="/GRU", hidden_size=units)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 0])], [], [w, r]
    )
    path = tmp_path / "big.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    code, out, err = run(capsys, "convert", path, tmp_path / "o.pt", "-m", "onnx-to-torch")
    assert code == 2 and "a mapping may add at most" in err and "Traceback" not in out + err


def test_onnx_and_tf1_are_joined_through_pytorch(gru_onnx, tmp_path, capsys):
    assert ckptmap.api.builtin_chain("onnx", "tf1") == ("onnx-to-torch", "torch-to-tf1")
    assert ckptmap.api.builtin_chain("tf1", "onnx") == ("tf1-to-torch", "torch-to-onnx")
    assert ckptmap.api.builtin_chain("torch", "onnx") == ("torch-to-onnx",)
    assert ckptmap.api.builtin_chain("onnx", "onnx") == ()
    torch.manual_seed(0)
    lstm = _export(
        torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True), torch.randn(4, 2, 3), tmp_path / "l.onnx"
    )
    dst = tmp_path / "tf1" / "model.ckpt"
    code, _, err = run(capsys, "convert", lstm, dst)  # no mapping: names unchanged, and the hint says which
    assert "use --mapping onnx-to-torch --mapping torch-to-tf1" in err
    code, _, err = run(
        capsys, "convert", lstm, dst, "-m", "onnx-to-torch", "-m", "torch-to-tf1", "--overwrite"
    )
    assert code == 0, err
    # verify picks the same two mappings itself, restores the TF1 side with a Saver and runs both.
    code, out, _ = run(capsys, "verify", lstm, dst)
    assert code == 0 and "onnx-to-torch, torch-to-tf1" in out and "EQUAL" in out
    # A GRU (linear_before_reset=1) in TF1's GRUCell is approximate, and said so.
    code, out, err = run(
        capsys,
        "convert",
        gru_onnx,
        tmp_path / "g" / "model.ckpt",
        "-m",
        "onnx-to-torch",
        "-m",
        "torch-to-tf1",
    )
    assert code == 0 and "NOT EXACT" in out, err
