"""`ckptmap align`: drafting the mapping from a checkpoint to a model's own names, with the real
frameworks on both sides. The source is a TF1 seq2seq (embedding, a 2-layer LSTM encoder, a GRU
decoder, two attention projections of the same shape, an output layer) and the target a PyTorch
module of the same architecture written by hand with other names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptmap
import ckptmap.torch
from tests.clirun import run
from tests.frameworks import tf1

V, E, H = 11, 5, 6


def tf1_seq2seq(prefix: Path, projections: tuple[str, str] = ("dense", "dense_1")) -> Path:
    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.set_random_seed(0)
        ids = v1.placeholder(tf.int32, [None, None])
        inputs = v1.nn.embedding_lookup(v1.get_variable("embedding", [V, E]), ids)
        with v1.variable_scope("seq2seq/encoder"):
            cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(H) for _ in range(2)])
            encoded, _ = v1.nn.dynamic_rnn(cell, inputs, dtype=tf.float32)
        with v1.variable_scope("seq2seq/decoder"):
            decoded, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.GRUCell(H), encoded, dtype=tf.float32)
        with v1.variable_scope("seq2seq/attention"):
            a = v1.layers.dense(decoded, H, name=projections[0])
            b = v1.layers.dense(decoded, H, name=projections[1])
        v1.layers.dense(a + b, V, name="output")
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(prefix))
    return prefix


def torch_seq2seq(projections: tuple[str, str] = ("proj_a", "proj_b"), extra: bool = False):
    import torch

    module = torch.nn.Module()
    module.emb = torch.nn.Embedding(V, E)
    module.enc = torch.nn.LSTM(E, H, 2, batch_first=True)
    module.dec = torch.nn.GRU(H, H, batch_first=True)
    for name in projections:
        setattr(module, name, torch.nn.Linear(H, H))
    module.out = torch.nn.Linear(H, V)
    if extra:
        module.gate = torch.nn.Linear(7, 7)
    return module


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return tf1_seq2seq(tmp_path_factory.mktemp("s2s") / "model.ckpt")


@pytest.fixture
def target(tmp_path) -> Path:
    import torch

    torch.save(torch_seq2seq().state_dict(), tmp_path / "fresh.pt")
    return tmp_path / "fresh.pt"


def test_look_alikes_are_flagged_and_the_draft_is_written(source, target, tmp_path, capsys):
    code, out, _ = run(capsys, "align", source, target, "-o", tmp_path / "m.yaml")
    assert code == 1 and "UNSURE: 4 pair(s) only order decided" in out
    guessed = [line.split()[1] for line in out.splitlines() if line.startswith("  GUESSED")]
    assert sorted(guessed) == [
        f"seq2seq/attention/{d}/{r}" for d in ("dense", "dense_1") for r in ("bias", "kernel")
    ]
    text = (tmp_path / "m.yaml").read_text()
    assert "# GUESSED (4)" in text and "- include: tf1-to-torch" in text
    assert "^seq2seq/encoder/: enc/" in text and "^seq2seq/decoder/: dec/" in text
    # A kernel and the bias beside it go to one Linear, never split between two.
    draft = ckptmap.align(source, target)
    targets = {p.source: p.target for p in draft.tensors}
    assert (
        targets["seq2seq/attention/dense/kernel"].split("/")[0]
        == targets["seq2seq/attention/dense/bias"].split("/")[0]
    )


def test_accepted_order_applies_loads_strictly_and_verifies(source, target, tmp_path, capsys):
    import torch

    code, out, err = run(capsys, "align", source, target, "--accept-order", "--apply", tmp_path / "out.pt")
    assert code == 0, out + err
    assert (
        out.splitlines()[-1]
        == "OK: 1 equal, 1 approximate (max abs error " + out.splitlines()[-1].split("error ")[1]
    )
    module = torch_seq2seq()
    module.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True), strict=True)
    tf_values = ckptmap.load(source)
    np.testing.assert_array_equal(module.out.weight.detach().numpy(), tf_values["output/kernel"].T)
    np.testing.assert_array_equal(module.emb.weight.detach().numpy(), tf_values["embedding"])


def test_torch_align_drafts_what_load_into_loads(source):
    module = torch_seq2seq()
    alignment = ckptmap.torch.align(module, source)
    assert not alignment.ok and len(alignment.ambiguous) == 4
    alignment = ckptmap.torch.align(module, source, accept_order=True)
    assert alignment.ok and not alignment.problems and not alignment.unplaced_target
    report = ckptmap.torch.load_into(module, source, alignment.mapping())
    assert len(report.loaded) == len(module.state_dict())
    np.testing.assert_array_equal(
        module.proj_a.bias.detach().numpy(), ckptmap.load(source)["seq2seq/attention/dense/bias"]
    )


def test_names_decide_between_look_alikes(tmp_path):
    # The TF projections are `query` and `key`, the module's `key` and `query`, in the other order.
    src = tf1_seq2seq(tmp_path / "qk.ckpt", projections=("query", "key"))
    alignment = ckptmap.torch.align(torch_seq2seq(projections=("key", "query")), src)
    assert alignment.ok and not alignment.ambiguous
    assert alignment.renames()["seq2seq/attention/query/kernel"] == "query/weight"


def test_a_target_tensor_no_source_fits_is_reported(source, tmp_path, capsys):
    import torch

    torch.save(torch_seq2seq(extra=True).state_dict(), tmp_path / "more.pt")
    code, out, _ = run(capsys, "align", source, tmp_path / "more.pt", "--accept-order")
    assert code == 1 and "not filled: gate/weight" in out and "INCOMPLETE" in out


def test_a_keras_model_aligns_to_a_torch_module(tmp_path, capsys):
    import keras
    import torch

    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.GRU(5, return_sequences=True, name="gru"),
            keras.layers.Dense(3, name="dense"),
        ]
    )
    model.save_weights(tmp_path / "k.weights.h5")
    module = torch.nn.Module()
    module.encoder = torch.nn.GRU(4, 5, batch_first=True)
    module.head = torch.nn.Linear(5, 3)
    torch.save(module.state_dict(), tmp_path / "t.pt")
    code, out, err = run(
        capsys, "align", tmp_path / "k.weights.h5", tmp_path / "t.pt", "--apply", tmp_path / "o.pt"
    )
    assert code == 0, out + err
    assert out.splitlines()[-1] == "OK: 1 equal."
    module.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True), strict=True)
    np.testing.assert_array_equal(
        module.head.weight.detach().numpy(), model.get_layer("dense").kernel.numpy().T
    )


def test_an_include_among_the_rules_runs_after_the_renames_before_it(source, tmp_path):
    (tmp_path / "m.yaml").write_text(
        "name: m\nrules:\n  - rename: {'^seq2seq/encoder/': 'enc/'}\n  - include: tf1-to-torch\n"
    )
    out = ckptmap.mapping(tmp_path / "m.yaml").apply(ckptmap.load(source))
    assert "enc/weight_ih_l0" in out and "seq2seq/encoder/weight_ih_l0" not in out
    (tmp_path / "bad.yaml").write_text("name: m\nrules:\n  - include: tf1-to-torch\n    name: x\n")
    with pytest.raises(ckptmap.RuleError, match="an 'include' rule names one mapping and nothing else"):
        ckptmap.mapping(tmp_path / "bad.yaml")


REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_checkpoints is not here")
def test_the_same_real_seq2seq_under_tf_1_1_and_tf_1_2_names(capsys):
    # cmusphinx/g2p-seq2seq saved by TF 1.1 (`gru_cell/gates/weights`, not read as cells) and by TF
    # 1.2 (`.../kernel`): every weight must go where tf1-legacy-names, the known answer, puts it.
    old, new = REAL / "g2p_attseq2seq_gru_weights_tf11", REAL / "g2p_attseq2seq_gru_kernel_tf12"
    alignment = ckptmap.align(old, new)
    truth = {
        t.sources[0]: t.name for t in ckptmap.mapping("tf1-legacy-names").plan(ckptmap.load(old)).targets
    }
    assert alignment.ok and not alignment.ambiguous
    assert len(alignment.tensors) == 23
    assert all(truth[p.source] == p.target for p in alignment.tensors)


def g2p_in_torch():
    """cmusphinx/g2p-seq2seq's attention seq2seq (TF 1.2, tf.contrib.seq2seq style) written by hand
    in PyTorch with its own names: a bidirectional GRU encoder, a GRU decoder reading the target
    embedding and the attention (6 wide), the attention's keys, query and mix layers, the logits."""
    import torch

    model = torch.nn.Module()
    model.encoder, model.decoder = torch.nn.Module(), torch.nn.Module()
    model.encoder.embed = torch.nn.Embedding(6, 2)
    model.encoder.rnn = torch.nn.GRU(2, 2, bidirectional=True, batch_first=True)
    model.decoder.embed = torch.nn.Embedding(6, 2)
    model.decoder.rnn = torch.nn.GRU(6, 2, batch_first=True)
    model.decoder.keys = torch.nn.Linear(4, 2)
    model.decoder.query = torch.nn.Linear(2, 2)
    model.decoder.mix = torch.nn.Linear(6, 2)
    model.decoder.out = torch.nn.Linear(2, 6)
    return model


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_checkpoints is not here")
def test_a_real_tf1_attention_seq2seq_loads_into_a_hand_written_module(tmp_path, capsys):
    import torch

    src = REAL / "g2p_attseq2seq_gru_kernel_tf12"
    model = g2p_in_torch()
    alignment = ckptmap.torch.align(model, src)
    assert alignment.ok, str(alignment)
    renames = alignment.renames()
    prefix = "model/att_seq2seq/"
    assert renames[prefix + "encode/source_embedding/W"] == "encoder/embed/weight"  # names decided
    assert renames[prefix + "decode/attention/att_keys/weights"] == "decoder/keys/weight"
    report = ckptmap.torch.load_into(model, src, alignment.mapping())  # strict
    assert len(report.loaded) == len(model.state_dict())
    torch.save(model.state_dict(), tmp_path / "g2p.pt")
    (tmp_path / "m.yaml").write_text(alignment.mapping_text)
    code, out, err = run(capsys, "verify", src, tmp_path / "g2p.pt", "-m", tmp_path / "m.yaml")
    assert code == 0 and out.splitlines()[-1].startswith("OK: 2 approximate"), out + err


def test_names_with_regex_yaml_and_template_characters_survive_the_draft(tmp_path, capsys):
    import torch

    odd = ["a{b}", "c(1)", "d\\e", "f: #g", "h*i"]
    src = {f"{n}.weight": torch.randn(3, 2 + k) for k, n in enumerate(odd)}
    dst = {f"layer{k}.weight": torch.zeros(3, 2 + k) for k in range(len(odd))}
    torch.save(src, tmp_path / "src.pt")
    torch.save(dst, tmp_path / "dst.pt")
    code, out, err = run(
        capsys, "align", tmp_path / "src.pt", tmp_path / "dst.pt", "--apply", tmp_path / "o.pt"
    )
    assert code == 0, out + err
    result = torch.load(tmp_path / "o.pt", weights_only=True)
    for k, n in enumerate(odd):
        torch.testing.assert_close(result[f"layer{k}.weight"], src[f"{n}.weight"])


def test_thousands_of_alike_variables_pair_by_name_and_a_group_too_large_is_refused(
    tmp_path, capsys, monkeypatch
):
    import torch

    from ckptmap.alignment import pairing

    many = {f"block{k}.proj.weight": torch.zeros(4, 4) for k in range(3000)}
    torch.save(many, tmp_path / "many.pt")
    alignment = ckptmap.align(tmp_path / "many.pt", tmp_path / "many.pt")
    assert alignment.ok and len(alignment.tensors) == 3000
    assert all(p.source == p.target for p in alignment.tensors)
    monkeypatch.setattr(pairing, "MAX_GROUP", 1000)
    code, out, err = run(capsys, "align", tmp_path / "many.pt", tmp_path / "many.pt")
    assert code == 2 and not out and "more than 1000 to pair at once" in err


def test_the_draft_is_written_whole_and_never_over_a_special_file(source, target, tmp_path, capsys):
    (tmp_path / "dir.yaml").mkdir()
    code, _, err = run(capsys, "align", source, target, "-o", tmp_path / "dir.yaml", "--overwrite")
    assert code == 2 and "not a regular file" in err
    (tmp_path / "old.yaml").write_text("keep me")
    code, _, err = run(capsys, "align", source, target, "-o", tmp_path / "old.yaml")
    assert code == 2 and "--overwrite" in err and (tmp_path / "old.yaml").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dir.yaml",
        "fresh.pt",
        "old.yaml",
    ]  # no temporaries


def test_keras_and_tf1_live_models_align_too(source, tmp_path):
    import keras

    import ckptmap.keras
    import ckptmap.tf1
    from tests.frameworks import tf1

    model = keras.Sequential(
        [keras.Input((None, 4)), keras.layers.LSTM(3, name="enc"), keras.layers.Dense(2, name="out")]
    )
    torch_like = tmp_path / "src.pt"
    import torch

    state = {"encoder.weight_ih_l0": torch.randn(12, 4), "encoder.weight_hh_l0": torch.randn(12, 3),
             "encoder.bias_ih_l0": torch.randn(12), "encoder.bias_hh_l0": torch.randn(12),
             "head.weight": torch.randn(2, 3), "head.bias": torch.randn(2)}  # fmt: skip
    torch.save(state, torch_like)
    alignment = ckptmap.keras.align(model, torch_like)
    assert alignment.ok, str(alignment)
    ckptmap.keras.load_into(model, torch_like, alignment.mapping())
    np.testing.assert_allclose(model.get_layer("out").kernel.numpy(), state["head.weight"].numpy().T)

    tf, v1 = tf1()
    with tf.Graph().as_default():
        ids = v1.placeholder(tf.int32, [None, None])
        inputs = v1.nn.embedding_lookup(v1.get_variable("vocab", [V, E]), ids)
        with v1.variable_scope("model/encoder"):
            cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(H) for _ in range(2)])
            v1.nn.dynamic_rnn(cell, inputs, dtype=tf.float32)
        alignment = ckptmap.tf1.align(source)
        assert [(p.source, p.target) for p in alignment.rnns] == [("seq2seq/encoder", "model/encoder")]
        assert alignment.ok and alignment.renames() == {"embedding": "vocab"}
        assert ckptmap.tf1.align(source, scope="model").renames() == {}  # `vocab` is outside the scope


def test_a_layer_that_moves_whole_is_one_scope_rule(tmp_path):
    from tests.alignment.corpus import torch_refactor

    case = torch_refactor(tmp_path)
    alignment = ckptmap.align(case.source, case.target)
    assert alignment.ok
    text = alignment.mapping_text
    assert "match: encoder_proj/(?P<rest>.+)\n  to: enc/down/{rest}" in text
    assert "match: encoder_proj/weight" not in text  # not a rule per tensor
    out = alignment.mapping().apply(ckptmap.load(case.source))
    assert sorted(out) == sorted(ckptmap.load(case.target))


def test_json_and_an_unsure_apply_writes_nothing(source, target, tmp_path, capsys):
    import json

    code, out, _ = run(capsys, "align", source, target, "--json", "--apply", tmp_path / "o.pt")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and not (tmp_path / "o.pt").exists()
    assert (
        sum(p["ambiguous"] for p in report["tensors"]) == 4 and "include: tf1-to-torch" in report["mapping"]
    )
    code, out, _ = run(capsys, "align", source, target, "--apply", tmp_path / "o.pt")
    assert code == 1 and "not applied: the draft is not sure" in out and not (tmp_path / "o.pt").exists()
