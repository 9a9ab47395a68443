"""The evaluation corpus of `ckptmap align`: pairs of checkpoints of one model with a known
correspondence, built with the real frameworks, and the score of align on each.

    python -m tests.alignment.corpus OUT_DIR      # builds the pairs, prints the score table

Each case gives the source, the target, and the truth: which source tensor each target weight
outside the RNNs comes from, and which source RNN (by scope) each target RNN is. A target tensor is
placed *correctly* when the draft makes it from what the truth says without a flag, *flagged*
when align marked its pair GUESSED (only order decided; right or wrong, a person looks), *wrong*
when it is made from anything else without a flag, and *unplaced* when the draft does not make it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import ckptmap

H, V, E = 6, 11, 5
REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


@dataclass
class Case:
    name: str
    source: Path
    target: Path
    tensors: dict[str, str]  # target weight -> source weight (outside RNNs)
    rnns: dict[str, str] = field(default_factory=dict)  # target RNN scope -> source RNN scope


def tf1_seq2seq_to_torch(out: Path) -> Case:
    """A TF1 seq2seq and the same model written by hand in PyTorch, with other names; its two
    attention projections have the same shapes and names that tell nothing."""
    import torch

    from tests.alignment.test_align import tf1_seq2seq, torch_seq2seq

    src = tf1_seq2seq(out / "s2s.ckpt")
    torch.save(torch_seq2seq().state_dict(), out / "s2s.pt")
    truth = {"emb/weight": "embedding", "out/weight": "output/kernel", "out/bias": "output/bias"}
    for name, tf_name in (("proj_a", "dense"), ("proj_b", "dense_1")):
        truth |= {
            f"{name}/weight": f"seq2seq/attention/{tf_name}/kernel",
            f"{name}/bias": f"seq2seq/attention/{tf_name}/bias",
        }
    return Case("TF1 seq2seq -> hand-written PyTorch", src, out / "s2s.pt", truth,
                {"enc": "seq2seq/encoder", "dec": "seq2seq/decoder"})  # fmt: skip


def tf1_bilstm_to_torch(out: Path) -> Case:
    """A 2-layer stack_bidirectional_dynamic_rnn LSTM with a dense head -> nn.LSTM + nn.Linear."""
    import torch

    from tests.frameworks import tf1

    tf, v1 = tf1()
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, None, E])
        cells = [[v1.nn.rnn_cell.LSTMCell(H) for _ in range(2)] for _ in range(2)]
        outputs = _stack_bidirectional(v1, cells, x)
        v1.layers.dense(outputs, V, name="logits")
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, str(out / "bilstm.ckpt"))
    module = torch.nn.Module()
    module.tagger = torch.nn.LSTM(E, H, 2, bidirectional=True, batch_first=True)
    module.classifier = torch.nn.Linear(2 * H, V)
    torch.save(module.state_dict(), out / "bilstm.pt")
    truth = {"classifier/weight": "logits/kernel", "classifier/bias": "logits/bias"}
    return Case("TF1 stacked bidirectional LSTM -> PyTorch", out / "bilstm.ckpt", out / "bilstm.pt", truth,
                {"tagger": ""})  # fmt: skip


def _stack_bidirectional(v1, cells, x):
    """The scopes of contrib's stack_bidirectional_dynamic_rnn (TF 2 no longer has contrib):
    stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/fw|bw, each layer reading both directions."""
    import tensorflow as tf

    layer = x
    for k in range(2):
        with v1.variable_scope(f"stack_bidirectional_rnn/cell_{k}"):
            (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(cells[0][k], cells[1][k], layer, dtype=tf.float32)
            layer = tf.concat([fw, bw], 2)
    return layer


def keras_mixed_to_torch(out: Path) -> Case:
    """Keras GRU, LSTM and SimpleRNN layers with a Dense head -> PyTorch modules named otherwise."""
    import keras
    import torch

    model = keras.Sequential(
        [
            keras.Input((None, E)),
            keras.layers.GRU(H, return_sequences=True, name="gru"),
            keras.layers.LSTM(H, return_sequences=True, name="lstm"),
            keras.layers.SimpleRNN(H, return_sequences=True, name="simple_rnn"),
            keras.layers.Dense(V, name="dense"),
        ]
    )
    model.save_weights(out / "mixed.weights.h5")
    module = torch.nn.Module()
    module.first = torch.nn.GRU(E, H, batch_first=True)
    module.second = torch.nn.LSTM(H, H, batch_first=True)
    module.third = torch.nn.RNN(H, H, batch_first=True)
    module.head = torch.nn.Linear(H, V)
    torch.save(module.state_dict(), out / "mixed.pt")
    return Case("Keras GRU + LSTM + SimpleRNN -> PyTorch", out / "mixed.weights.h5", out / "mixed.pt",
                {"head/weight": "dense/kernel", "head/bias": "dense/bias"},
                {"first": "gru", "second": "lstm", "third": "simple_rnn"})  # fmt: skip


def torch_refactor(out: Path) -> Case:
    """A PyTorch model before and after a refactor that renamed its modules and reordered them."""
    import torch

    before = torch.nn.Module()
    before.embedding = torch.nn.Embedding(V, E)
    before.encoder_rnn = torch.nn.GRU(E, H, 2, bidirectional=True, batch_first=True)
    before.encoder_proj = torch.nn.Linear(2 * H, H)
    before.decoder_rnn = torch.nn.LSTM(H, H, batch_first=True)
    before.decoder_out = torch.nn.Linear(H, V)
    after = torch.nn.Module()
    after.dec = torch.nn.Module()
    after.dec.lstm = torch.nn.LSTM(H, H, batch_first=True)
    after.dec.head = torch.nn.Linear(H, V)
    after.enc = torch.nn.Module()
    after.enc.gru = torch.nn.GRU(E, H, 2, bidirectional=True, batch_first=True)
    after.enc.down = torch.nn.Linear(2 * H, H)
    after.tokens = torch.nn.Embedding(V, E)
    torch.save(before.state_dict(), out / "before.pt")
    torch.save(after.state_dict(), out / "after.pt")
    truth = {"tokens/weight": "embedding/weight", "enc/down/weight": "encoder_proj/weight",
             "enc/down/bias": "encoder_proj/bias", "dec/head/weight": "decoder_out/weight",
             "dec/head/bias": "decoder_out/bias"}  # fmt: skip
    return Case("PyTorch model before and after a refactor", out / "before.pt", out / "after.pt", truth,
                {"enc/gru": "encoder_rnn", "dec/lstm": "decoder_rnn"})  # fmt: skip


def keras_to_its_tf2_checkpoint(out: Path) -> Case:
    """A tf-keras model's weights as an .h5 file (layer names) and as a TF2 checkpoint
    (`layer_with_weights-<k>`: no names at all, only the order of the layers)."""
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.Input((None,)),
            tf_keras.layers.Embedding(V, E, name="embedding"),
            tf_keras.layers.LSTM(H, return_sequences=True, name="lstm"),
            tf_keras.layers.Dense(H, name="dense"),
            tf_keras.layers.Dense(V, name="dense_1"),
        ]
    )
    model.save_weights(str(out / "model.h5"))
    model.save_weights(str(out / "tf2" / "ckpt"))
    truth = {"layer_with_weights-0/embeddings": "embedding/embeddings"}
    for k, layer in ((2, "dense"), (3, "dense_1")):
        truth |= {f"layer_with_weights-{k}/{r}": f"{layer}/{r}" for r in ("kernel", "bias")}
    return Case("tf-keras .h5 -> its TF2 checkpoint", out / "model.h5", out / "tf2" / "ckpt", truth,
                {"layer_with_weights-1": "lstm"})  # fmt: skip


def real_g2p_names(out: Path) -> Case | None:
    """cmusphinx/g2p-seq2seq saved by TF 1.1 and by TF 1.2: the truth is tf1-legacy-names."""
    old, new = REAL / "g2p_attseq2seq_gru_weights_tf11", REAL / "g2p_attseq2seq_gru_kernel_tf12"
    if not old.is_dir():
        return None
    plan = ckptmap.mapping("tf1-legacy-names").plan(ckptmap.load(old))
    weights = {e.name for e in ckptmap.load(new).weights()}
    truth = {t.name: t.sources[0] for t in plan.targets if t.name in weights}
    return Case("real: g2p-seq2seq, TF 1.1 names -> TF 1.2 names", old, new, truth)


def real_g2p_to_torch(out: Path) -> Case | None:
    """The real g2p attention seq2seq (TF 1.2) and the same model written by hand in PyTorch."""
    import torch

    from tests.alignment.test_align import g2p_in_torch

    src = REAL / "g2p_attseq2seq_gru_kernel_tf12"
    if not src.is_dir():
        return None
    torch.save(g2p_in_torch().state_dict(), out / "g2p.pt")
    m = "model/att_seq2seq/"
    layers = {
        "decoder/keys": m + "decode/attention/att_keys",
        "decoder/query": m + "decode/attention/att_query",
        "decoder/mix": m + "decode/attention_decoder/decoder/attention_mix",
        "decoder/out": m + "decode/attention_decoder/decoder/logits",
    }
    truth = {
        "encoder/embed/weight": m + "encode/source_embedding/W",
        "decoder/embed/weight": m + "decode/target_embedding/W",
    }
    for mine, theirs in layers.items():
        truth |= {f"{mine}/weight": f"{theirs}/weights", f"{mine}/bias": f"{theirs}/biases"}
    rnns = {
        "encoder/rnn": m + "encode/bidi_rnn_encoder",
        "decoder/rnn": m + "decode/attention_decoder/decoder",
    }
    return Case(
        "real: g2p attention seq2seq (TF 1.2) -> hand-written PyTorch", src, out / "g2p.pt", truth, rnns
    )


BUILDERS: tuple[Callable[[Path], Case | None], ...] = (
    tf1_seq2seq_to_torch,
    tf1_bilstm_to_torch,
    keras_mixed_to_torch,
    torch_refactor,
    keras_to_its_tf2_checkpoint,
    real_g2p_names,
    real_g2p_to_torch,
)


@dataclass
class Score:
    case: str
    tensors: int
    correct: int = 0
    flagged: int = 0
    wrong: int = 0
    unplaced: int = 0
    rnns_right: bool = True


def score(case: Case) -> Score:
    """How align did on `case` (see the module docstring)."""
    alignment = ckptmap.align(case.source, case.target)
    src = ckptmap.load(case.source)
    dst = ckptmap.load(case.target)
    made = {t.name: t for t in alignment.mapping().plan(src).targets}
    flagged_sources = {p.source for p in alignment.tensors if p.ambiguous}
    flagged_rnns = {p.target for p in alignment.rnns if p.ambiguous}
    rnn_of = {n: (r.scope or "(root)") for r in dst.rnns for n in r.tensor_names}
    src_rnn_of = {n: (r.scope or "(root)") for r in src.rnns for n in r.tensor_names}
    paired = {p.target: p.source for p in alignment.rnns}
    result = Score(case.name, len(dst.weights()))
    for entry in dst.weights():
        t = made.get(entry.name)
        if t is None:
            result.unplaced += 1
            continue
        if rnn_of.get(entry.name) in paired:  # an RNN's tensor: right when its RNN came from the right one
            scope = rnn_of[entry.name]
            want = case.rnns.get(scope, "")
            right = paired.get(scope) == (want or "(root)") and all(
                src_rnn_of.get(s) == (want or "(root)") for s in t.sources
            )
            flagged = scope in flagged_rnns
        else:
            right = t.sources == (case.tensors.get(entry.name),)
            flagged = bool(set(t.sources) & flagged_sources)
        if flagged:
            result.flagged += 1
        elif right:
            result.correct += 1
        else:
            result.wrong += 1
    result.rnns_right = all(paired.get(t) == (s or "(root)") for t, s in case.rnns.items())
    return result


def table(scores: list[Score]) -> str:
    rows = ["| pair | target tensors | correct | flagged | wrong | unplaced | RNNs paired right |",
            "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in scores:
        rows.append(f"| {s.case} | {s.tensors} | {s.correct} | {s.flagged} | {s.wrong} | {s.unplaced} | "
                    f"{'yes' if s.rnns_right else 'NO'} |")  # fmt: skip
    total = sum(s.tensors for s in scores)
    correct = sum(s.correct for s in scores)
    rows.append(f"| all | {total} | {correct} ({100 * correct / total:.1f} %) | "
                f"{sum(s.flagged for s in scores)} | {sum(s.wrong for s in scores)} | "
                f"{sum(s.unplaced for s in scores)} | |")  # fmt: skip
    return "\n".join(rows)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(0)
    cases = [c for build in BUILDERS if (c := build(out)) is not None]
    print(table([score(c) for c in cases]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
