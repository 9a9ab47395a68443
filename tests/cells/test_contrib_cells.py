"""TF 1.x contrib cells, which TensorFlow 2 can no longer build: checkpoints are written with
`get_variable` under the names and shapes TF 1.15's sources give each class (cited per case), then
read back. Kinds with no counterpart are named by `inspect` and refused by cross-framework mappings
with the reason; twins of LSTMCell / GRUCell convert as those do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap
from tests.clirun import run
from tests.frameworks import tf1

I, N = 3, 4  # input size, units  # noqa: E741

# (class, variables under the cell scope with their shapes), from TF 1.15's
# tensorflow/contrib/rnn/python/ops/rnn_cell.py (scope: the class name in snake case, or the `name`).
NO_COUNTERPART = {
    # NASCell.build: recurrent_kernel [num_proj or units, 8 units], kernel [input, 8 units].
    "NASCell": ("nas_cell", {"recurrent_kernel": (N, 8 * N), "kernel": (I, 8 * N)}),
    # UGRNNCell.call: _Linear([inputs, state], 2 * units, True).
    "UGRNNCell": ("ugrnn_cell", {"kernel": (I + N, 2 * N), "bias": (2 * N,)}),
    # IndRNNCell.build: kernel_w [input, units], kernel_u [1, units], bias [units].
    "IndRNNCell": ("ind_rnn_cell", {"kernel_w": (I, N), "kernel_u": (1, N), "bias": (N,)}),
    # LayerNormBasicLSTMCell (layer_norm=True): _linear without bias, _norm's gamma/beta per scope.
    "LayerNormBasicLSTMCell": (
        "layer_norm_basic_lstm_cell",
        {
            "kernel": (I + N, 4 * N),
            **{
                f"{s}/{v}": (N,)
                for s in ("input", "transform", "forget", "output", "state")
                for v in ("gamma", "beta")
            },
        },
    ),
    # IntersectionRNNCell(num_in_proj=N) over an input of another size: in_projection first.
    "IntersectionRNNCell": (
        "intersection_rnn_cell",
        {
            "in_projection/kernel": (I, N),
            "in_projection/bias": (N,),
            "kernel": (2 * N, 4 * N),
            "bias": (4 * N,),
        },
    ),
    # PhasedLSTMCell (use_peepholes=False): three _Linear maps over [x, h] and the time gate.
    "PhasedLSTMCell": (
        "phased_lstm_cell",
        {
            "mask_gates/kernel": (I + N, 2 * N),
            "mask_gates/bias": (2 * N,),
            "new_input/kernel": (I + N, N),
            "new_input/bias": (N,),
            "output_gate/kernel": (I + N, N),
            "output_gate/bias": (N,),
            "period": (N,),
            "phase": (N,),
            "ratio_on": (N,),
        },
    ),
    # CoupledInputForgetGateLSTMCell: _get_concat_variable("W", ...) is W_0 even unsharded; B [3 units].
    "CoupledInputForgetGateLSTMCell": (
        "coupled_input_forget_gate_lstm_cell",
        {"W_0": (I + N, 3 * N), "B": (3 * N,), "W_F_diag": (N,), "W_O_diag": (N,)},
    ),
    # GridLSTMCell(feature_size=I): block 0's frequency weights W_f_0_0 [I + 2 units, 4 units], B_f_0.
    "GridLSTMCell": ("grid_lstm_cell", {"W_f_0_0": (I + 2 * N, 4 * N), "B_f_0": (4 * N,)}),
}


def save(prefix: Path, variables: dict[str, tuple[int, ...] | np.ndarray]) -> Path:
    tf, v1 = tf1()
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), v1.Session() as sess:
        for name, value in variables.items():
            array = value if isinstance(value, np.ndarray) else rng.normal(0, 0.5, value).astype(np.float32)
            v1.get_variable(name, initializer=array)
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(prefix))
    return prefix


@pytest.fixture(scope="module")
def contrib_checkpoints(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for cls, (scope, shapes) in NO_COUNTERPART.items():
        variables = {f"model/rnn/{scope}/{path}": shape for path, shape in shapes.items()}
        out[cls] = save(tmp_path_factory.mktemp(cls) / "model.ckpt", variables)
    return out


@pytest.mark.parametrize("cls", list(NO_COUNTERPART))
def test_a_cell_with_no_counterpart_is_named_with_its_sizes(contrib_checkpoints, cls, capsys):
    (rnn,) = ckptmap.load(contrib_checkpoints[cls]).rnns
    assert (rnn.cell_type, rnn.scope, rnn.input_size, rnn.units, rnn.layers) == (cls, "model", I, N, 1)
    code, out, _ = run(capsys, "inspect", contrib_checkpoints[cls])
    assert code == 0 and f"{cls} at model: input {I}, units {N}, 1 layer" in out


@pytest.mark.parametrize("mapping", ["tf1-to-torch", "tf1-to-keras"])
@pytest.mark.parametrize("cls", ["NASCell", "LayerNormBasicLSTMCell", "IndRNNCell"])
def test_cross_framework_mappings_refuse_it_with_the_reason(
    contrib_checkpoints, cls, mapping, tmp_path, capsys
):
    dst = tmp_path / ("m.pt" if mapping == "tf1-to-torch" else "m.weights.h5")
    code, _, err = run(capsys, "convert", contrib_checkpoints[cls], dst, "-m", mapping)
    framework = "torch" if mapping == "tf1-to-torch" else "keras"
    assert code == 2 and not dst.exists() and not list(tmp_path.iterdir())
    assert f"{cls} at model: input {I}, units {N}" in err and f"has no counterpart in {framework}" in err
    reason = {"NASCell": "architecture search", "LayerNormBasicLSTMCell": "layer normalization"}
    assert reason.get(cls, "diagonal recurrent matrix") in err


def test_a_two_layer_nas_cell_and_its_tf_1_2_scope(tmp_path):
    # TF 1.2's NASCell opened `nas_rnn` and named its weights weights/recurrent_weights
    # (contrib/rnn/python/tools/checkpoint_convert.py's table); tf1-legacy-names renames them.
    variables = {
        f"rnn/multi_rnn_cell/cell_{k}/nas_rnn/{name}": (size, 8 * N)
        for k, size in enumerate((I, N))
        for name, size in (("weights", size), ("recurrent_weights", N))
    }
    prefix = save(tmp_path / "old.ckpt", variables)
    assert ckptmap.load(prefix).rnns == []  # TF 1.1 names: not yet a cell
    out = tmp_path / "new.ckpt"
    ckptmap.convert(prefix, out, mapping="tf1-legacy-names")
    (rnn,) = ckptmap.load(out).rnns
    assert (rnn.cell_type, rnn.layers, rnn.input_size, rnn.units) == ("NASCell", 2, I, N)


def test_legacy_names_rename_a_tf_1_1_ugrnn_cell(tmp_path):
    prefix = save(
        tmp_path / "old.ckpt", {"rnn/ugrnn_cell/weights": (I + N, 2 * N), "rnn/ugrnn_cell/biases": (2 * N,)}
    )
    out = tmp_path / "new.ckpt"
    ckptmap.convert(prefix, out, mapping="tf1-legacy-names")
    assert sorted(ckptmap.load(out)) == ["rnn/ugrnn_cell/bias", "rnn/ugrnn_cell/kernel"]
    assert [r.cell_type for r in ckptmap.load(out).rnns] == ["UGRNNCell"]


# --- twins of LSTMCell and GRUCell -----------------------------------------------------------


def gru_cell_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A real GRUCell checkpoint and its values."""
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.set_random_seed(0)
        cell = v1.nn.rnn_cell.GRUCell(N)
        v1.nn.dynamic_rnn(cell, v1.placeholder(tf.float32, [None, None, I]), dtype=tf.float32)
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(tmp_path / "gru.ckpt"))
        values = {v.op.name: sess.run(v) for v in v1.global_variables()}
    return tmp_path / "gru.ckpt", values


def test_gru_block_cell_converts_as_the_gru_cell_it_equals(tmp_path, capsys):
    # contrib/rnn/python/ops/gru_ops.py GRUBlockCell: w_ru [I + N, 2N] (r, u), b_ru, w_c, b_c under
    # `gru_cell`; GRUBlockCellV2 makes GRUCell's own names. Same arithmetic as GRUCell.
    gru, values = gru_cell_checkpoint(tmp_path)
    block_names = {
        "gates/kernel": "w_ru",
        "gates/bias": "b_ru",
        "candidate/kernel": "w_c",
        "candidate/bias": "b_c",
    }
    block = save(
        tmp_path / "block.ckpt",
        {f"rnn/gru_cell/{block_names[k.removeprefix('rnn/gru_cell/')]}": v for k, v in values.items()},
    )
    assert ckptmap.load(block).rnns == []  # GRUBlockCell's own names: tf1-legacy-names reads them
    for src, dst in ((gru, "a.pt"), (block, "b.pt")):
        code, _, err = run(capsys, "convert", src, tmp_path / dst, "-m", "tf1-to-torch")
        assert code == 0, err
    a, b = ckptmap.load(tmp_path / "a.pt"), ckptmap.load(tmp_path / "b.pt")
    assert list(a) == list(b) and all(np.array_equal(a[n], b[n]) for n in a)


def lstm_reference(kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, forget_bias: float) -> np.ndarray:
    """The block LSTM op (contrib/rnn/python/ops/lstm_ops.py): [i, ci, f, o] = xh * w + b and
    f += forget_bias."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = c = np.zeros((x.shape[0], N), np.float32)
    out = []
    for t in range(x.shape[1]):
        i, ci, f, o = np.split(np.concatenate([x[:, t], h], 1) @ kernel + bias, 4, axis=1)
        c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(ci)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


@pytest.mark.parametrize("scope", ["lstm_fused_cell", "layer_norm_basic_lstm_cell"])
def test_lstm_twins_under_their_own_scopes_convert_exactly_to_nn_lstm(scope, tmp_path, capsys):
    # LSTMBlockFusedCell (`lstm_fused_cell`, called on the whole sequence) and
    # LayerNormBasicLSTMCell(layer_norm=False) hold LSTMCell's kernel and bias.
    import torch

    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.5, (I + N, 4 * N)).astype(np.float32)
    bias = rng.normal(0, 0.5, 4 * N).astype(np.float32)
    prefix = save(tmp_path / "m.ckpt", {f"encoder/{scope}/kernel": kernel, f"encoder/{scope}/bias": bias})
    (rnn,) = ckptmap.load(prefix).rnns
    assert rnn.kind == "lstm" and rnn.scope == "encoder"
    code, _, err = run(capsys, "convert", prefix, tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 0, err
    lstm = torch.nn.LSTM(I, N, batch_first=True)
    state = {
        k.removeprefix("encoder."): v for k, v in torch.load(tmp_path / "m.pt", weights_only=True).items()
    }
    lstm.load_state_dict(state, strict=True)
    x = rng.standard_normal((2, 5, I)).astype(np.float32)
    with torch.no_grad():
        got = lstm(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, lstm_reference(kernel, bias, x, forget_bias=1.0), atol=1e-5)
    code, out, err = run(capsys, "verify", prefix, tmp_path / "m.pt", "-m", "tf1-to-torch")
    assert code == 0 and out.splitlines()[-1] == "OK: 1 equal.", out + err
