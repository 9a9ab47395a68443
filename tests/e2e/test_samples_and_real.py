"""The bundled samples (the README's flows) and checkpoints from other people's projects.

Real checkpoints live in ../shared/real_checkpoints (present in CI, never copied into the repo);
their tests skip only where that folder is absent.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import ckptmap
from ckptmap.cli import main
from tests.frameworks import build_tf1_rnn, run_tf1_restored, run_torch, tf1, torch_rnn

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_checkpoints"
REAL = ROOT.parent / "shared" / "real_checkpoints"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason="../shared/real_checkpoints is not beside the checkout"
)
TOL = 1e-5


def cli(*args, code: int = 0) -> None:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert (done.value.code or 0) == code


def torch_module(path: Path, kind: str, input_size: int, units: int, *, prefix: str = "", **options):
    import torch

    state = torch.load(path, weights_only=True, map_location="cpu")  # one real file was saved on "mps"
    module = torch_rnn(kind, input_size, units, **options)
    # Real models hold embeddings and dense layers too; the RNN module gets its own parameters, and
    # strict=True checks that every one of them is there.
    own = re.compile(re.escape(prefix) + r"(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?")
    module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if own.fullmatch(k)}, strict=True)
    return module


def samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tf1_lstm_sample_to_torch_gives_the_tf_outputs(tmp_path):
    io = np.load(SAMPLES / "tf1_lstm2" / "io.npz")
    cli("convert", SAMPLES / "tf1_lstm2", tmp_path / "lstm.pt", "--mapping", "tf1-to-torch")
    module = torch_module(tmp_path / "lstm.pt", "lstm", 3, 8, layers=2)
    np.testing.assert_allclose(run_torch(module, io["x"]), io["y"], atol=TOL, rtol=0)


def test_readme_torch_lstm_sample_to_tf1_gives_the_torch_outputs(tmp_path):
    io = np.load(SAMPLES / "torch_lstm.io.npz")
    cli("convert", SAMPLES / "torch_lstm.pt", tmp_path / "tf" / "model.ckpt", "--mapping", "torch-to-tf1")
    y = run_tf1_restored(tmp_path / "tf" / "model.ckpt", "lstm", 3, 8, io["x"], layers=2)
    np.testing.assert_allclose(y, io["y"], atol=TOL, rtol=0)


def test_old_name_sample_restores_into_modern_cells(tmp_path):
    tf, v1 = tf1()
    io = np.load(SAMPLES / "tf10_oldnames" / "io.npz")
    cli(
        "convert", SAMPLES / "tf10_oldnames", tmp_path / "new" / "model.ckpt", "--mapping", "tf1-legacy-names"
    )
    with tf.Graph().as_default(), v1.Session() as sess:
        x, y = samples_module().oldnames_graph(tf, v1)
        v1.train.Saver().restore(sess, str(tmp_path / "new" / "model.ckpt"))  # every variable must be found
        np.testing.assert_allclose(sess.run(y, {x: io["x"]}), io["y"], atol=TOL, rtol=0)


def test_old_name_sample_converts_to_torch_in_one_step(tmp_path):
    cli("convert", SAMPLES / "tf10_oldnames", tmp_path / "m.pt", "--mapping", "tf1-to-torch")
    names = list(ckptmap.load(tmp_path / "m.pt"))
    assert names == [
        "decoder/weight_ih_l0",
        "decoder/weight_hh_l0",
        "decoder/bias_ih_l0",
        "decoder/bias_hh_l0",
        "dense/bias",
        "dense/weight",  # tf.layers.dense's kernel [in, out] as nn.Linear's weight [out, in]
        *[f"encoder/{r}_l{k}" for k in range(2) for r in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")],
    ]

    old, new = ckptmap.load(SAMPLES / "tf10_oldnames"), ckptmap.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(new["dense/weight"], old["dense/kernel"].T)


def test_bidirectional_gru_sample_first_steps(tmp_path):
    io = np.load(SAMPLES / "tf1_bigru" / "io.npz")
    cli("convert", SAMPLES / "tf1_bigru", tmp_path / "m.pt", "-m", "tf1-to-torch")
    y = run_torch(torch_module(tmp_path / "m.pt", "gru", 3, 4, bidirectional=True), io["x"])
    np.testing.assert_allclose(y[:, 0, :4], io["y"][:, 0, :4], atol=TOL, rtol=0)
    np.testing.assert_allclose(y[:, -1, 4:], io["y"][:, -1, 4:], atol=TOL, rtol=0)


def test_samples_are_what_the_script_makes(tmp_path):
    samples_module().main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(
        p.relative_to(SAMPLES) for p in SAMPLES.rglob("*") if p.is_file() and p.name != "make_samples.py"
    )
    for rel in made:
        if rel.suffix == ".npz":  # outputs of float math; compared with tolerance
            a, b = np.load(tmp_path / rel), np.load(SAMPLES / rel)
            assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a.files), rel
        elif rel.suffix in (".index", ".pt"):
            # Another TensorFlow or PyTorch release may round an initializer's last bit differently
            # (TF 2.21 did), which changes the data bytes and their checksums but not the sample.
            made_ckpt, kept = ckptmap.load(tmp_path / rel), ckptmap.load(SAMPLES / rel)
            assert [(e.name, e.shape, e.dtype) for e in made_ckpt.entries.values()] == [
                (e.name, e.shape, e.dtype) for e in kept.entries.values()
            ], f"{rel} is stale: rerun make_samples"
            for name in kept.entries:
                np.testing.assert_allclose(
                    made_ckpt[name], kept[name], rtol=1e-6, atol=1e-7, err_msg=str(rel)
                )
        elif ".data-" not in rel.name:  # data shards are compared through their index above
            assert (tmp_path / rel).read_bytes() == (SAMPLES / rel).read_bytes(), (
                f"{rel} is stale: rerun make_samples"
            )


# --- real checkpoints from other projects ----------------------------------------------------------------


@needs_real
def test_real_tf11_names_become_exactly_the_tf12_names(tmp_path):
    # cmusphinx/g2p-seq2seq saved the same graph before and after TF 1.2's weights->kernel rename.
    old, new = REAL / "g2p_attseq2seq_gru_weights_tf11", REAL / "g2p_attseq2seq_gru_kernel_tf12"
    cli("convert", old, tmp_path / "renamed" / "model.ckpt", "-m", "tf1-legacy-names")
    cli("diff", tmp_path / "renamed", new)  # exit 0: same names, shapes and dtypes
    renamed, reference = ckptmap.load(tmp_path / "renamed"), ckptmap.load(new)
    assert renamed[
        "model/att_seq2seq/encode/bidi_rnn_encoder/bidirectional_rnn/fw/gru_cell/gates/kernel"
    ].shape == (
        reference[
            "model/att_seq2seq/encode/bidi_rnn_encoder/bidirectional_rnn/fw/gru_cell/gates/kernel"
        ].shape
    )


@needs_real
def test_real_v1_tf0_checkpoint_to_torch_and_to_modern_tf_agree(tmp_path):
    # poem-bot: TF <= 1.0 V1 file, rnnlm/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix, 2 x 128 units.
    tf, v1 = tf1()
    src = REAL / "poembot_v1_multilstm_oldnames"
    xs = np.random.default_rng(0).standard_normal((2, 4, 128)).astype(np.float32)
    cli("convert", src, tmp_path / "m.pt", "-m", "tf1-to-torch")
    cli("convert", src, tmp_path / "tf" / "model.ckpt", "-m", "tf1-legacy-names")
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, 128])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.BasicLSTMCell(128) for _ in range(2)])
        y, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32, scope="rnnlm")
        names = [v.name[:-2] for v in v1.global_variables()]
        v1.train.Saver().restore(sess, str(tmp_path / "tf" / "model.ckpt"))
        y_tf = sess.run(y, {x: xs})
    assert names[0] == "rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/kernel"
    module = torch_module(tmp_path / "m.pt", "lstm", 128, 128, prefix="rnnlm.", layers=2)
    # This model's kernels reach 14 in magnitude, so its 256-term pre-activations round differently
    # in TF's and torch's float32 matmuls (seen: 1.5e-5 with TF 2.21, torch 2.13). A wrong gate
    # or a lost forget bias is off by more than 0.1, so 1e-4 still catches every conversion error.
    np.testing.assert_allclose(run_torch(module, xs), y_tf, atol=1e-4, rtol=0)


@needs_real
def test_real_tf_lstm_to_torch_matches_tf_restoring_the_original(tmp_path):
    # Sunrepe/gpuRNN: rnn/multi_rnn_cell/cell_k/lstm_cell, input 8, 20 units, Adam slots alongside.
    src = REAL / "sunrepe_multilstm_kernel_small"
    xs = np.random.default_rng(1).standard_normal((3, 6, 8)).astype(np.float32)
    prefix = str(ckptmap.load(src).path)
    y_tf = run_tf1_restored(Path(prefix), "lstm", 8, 20, xs, layers=2)
    cli("convert", src, tmp_path / "m.pt", "-m", "tf1-to-torch")
    # A whole model (its softmax matrices `Variable`, `Variable_1` beside the RNN): the RNN that
    # dynamic_rnn made at the root is the module `rnn`.
    module = torch_module(tmp_path / "m.pt", "lstm", 8, 20, prefix="rnn.", layers=2)
    np.testing.assert_allclose(run_torch(module, xs), y_tf, atol=TOL, rtol=0)


@needs_real
def test_real_tf11_gru_stack_restores_after_renaming(tmp_path):
    # Enny1991/TIDIGITS_task: 3 GRU layers named multi_rnn_cell/cell_N/gru_cell/gates/weights.
    src = REAL / "tidigits_multigru_weights_tf11"
    xs = np.random.default_rng(2).standard_normal((2, 5, 39)).astype(np.float32)
    cli("convert", src, tmp_path / "tf" / "model.ckpt", "-m", "tf1-legacy-names")
    y_tf = run_tf1_restored(tmp_path / "tf" / "model.ckpt", "gru", 39, 120, xs, layers=3)
    cli("convert", src, tmp_path / "m.pt", "-m", "tf1-to-torch")
    y = run_torch(torch_module(tmp_path / "m.pt", "gru", 39, 120, prefix="rnn.", layers=3), xs)
    np.testing.assert_allclose(y[:, 0], y_tf[:, 0], atol=TOL, rtol=0)  # GRU: exact on the first step


@needs_real
def test_real_torch_bilstm_to_tf1_matches_torch(tmp_path):
    # Foxbabe1q/Name-Nation-classification: nn.LSTM(57, 128, num_layers=2, bidirectional=True) at `rnn`.
    src = REAL / "torch_bilstm2_zip" / "bilstm.pt"
    xs = np.random.default_rng(3).standard_normal((2, 5, 57)).astype(np.float32)
    y = run_torch(torch_module(src, "lstm", 57, 128, prefix="rnn.", layers=2, bidirectional=True), xs)
    cli("convert", src, tmp_path / "tf" / "model.ckpt", "-m", "torch-to-tf1")
    # The module `rnn` of a whole model (an `fc` head beside it) is what TF1 code builds at the root.
    y_tf = run_tf1_restored(tmp_path / "tf" / "model.ckpt", "lstm", 57, 128, xs, layers=2, bidirectional=True)
    np.testing.assert_allclose(y_tf, y, atol=TOL, rtol=0)


@needs_real
@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("fracogno_bilstm_multirnn", "each direction is stacked on its own"),
        ("kokkini_peephole_lstm_customname", "LSTM peepholes"),
    ],
    ids=["bidirectional-over-multirnncell", "peepholes"],
)
def test_real_checkpoints_that_cannot_become_torch_are_refused(tmp_path, capsys, folder, message):
    cli("convert", REAL / folder, tmp_path / "m.pt", "-m", "tf1-to-torch", code=2)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_tf1_builder_names_match_dynamic_rnn():
    # The e2e tests build TF graphs with tests.frameworks; pin that they make dynamic_rnn's names.
    tf, v1 = tf1()
    with tf.Graph().as_default():
        build_tf1_rnn("gru", 3, 4, layers=2, scope="enc")
        names = {v.name[:-2] for v in v1.global_variables()}
    assert "enc/rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel" in names
