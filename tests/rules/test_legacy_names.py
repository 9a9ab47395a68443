"""tf1-legacy-names on whole legacy models: each TF 0.x and TF 1.0/1.1 name lands on the TF >= 1.2 name.

The name lists are built the way TensorFlow's code composed scopes, once per spelling:

- TF 0.x (r0.12 tensorflow/python/ops/rnn.py, rnn_cell.py, seq2seq.py): rnn.rnn/dynamic_rnn under
  "RNN", cells and wrappers under `type(self).__name__`, MultiRNNCell's "Cell%d", GRUCell's
  "Gates"/"Candidate", linear() making `Linear/Matrix` and `Linear/Bias`, LSTMCell's W_0, B, W_P_0.
- TF 1.0/1.1 (contrib/rnn/python/ops/core_rnn_cell_impl.py, contrib/legacy_seq2seq): snake_case
  scopes ("rnn", "multi_rnn_cell/cell_%d", "embedding_wrapper", ...), _linear() making
  `weights`/`biases` in the scope it is called in, LSTMCell's projection under "projection".
- TF >= 1.2: `kernel`/`bias` (contrib/rnn/python/tools/checkpoint_convert.py's table).

attention_decoder keeps its scopes in every version: AttnW_%d, AttnV_%d, the input linear map,
"Attention_%d" and "AttnOutputProjection". Two anchors hold the builders to reality: the TF 1.0
spelling of embedding_attention_seq2seq gives exactly the names of cmusphinx/g2p-seq2seq's TF 1.0
checkpoint, and the TF >= 1.2 spelling of plain cells gives the names tf.compat.v1 creates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import ckptmap
from ckptmap.rules.mapping import load
from ckptmap.tree import Checkpoint, TensorEntry

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"


@dataclass(frozen=True)
class Spelling:
    version: str
    rnn: str
    birnn_fw: str  # bidirectional_dynamic_rnn's forward scope
    multi: str  # MultiRNNCell's scope for layer k
    cells: dict[str, str]
    gru: tuple[str, str]  # GRUCell's gates and candidate scopes
    linear: tuple[str, str]  # what a linear map with bias names its matrix and bias
    lstm: tuple[str, str, str]  # LSTMCell's matrix, bias and projection
    wrappers: dict[str, str]


TF0 = Spelling(
    "tf0",
    rnn="RNN",
    birnn_fw="BiRNN/FW",
    multi="MultiRNNCell/Cell{}",
    cells={"gru": "GRUCell", "lstm": "LSTMCell", "basic_lstm": "BasicLSTMCell", "rnn": "BasicRNNCell"},
    gru=("Gates", "Candidate"),
    linear=("Linear/Matrix", "Linear/Bias"),
    lstm=("W_0", "B", "W_P_0"),  # _get_concat_variable("W", ..., num_unit_shards=1) makes W_0
    wrappers={
        "embedding": "EmbeddingWrapper",
        "input": "InputProjectionWrapper",
        "output": "OutputProjectionWrapper",
    },
)
TF10 = Spelling(
    "tf10",
    rnn="rnn",
    birnn_fw="bidirectional_rnn/fw",
    multi="multi_rnn_cell/cell_{}",
    cells={"gru": "gru_cell", "lstm": "lstm_cell", "basic_lstm": "basic_lstm_cell", "rnn": "basic_rnn_cell"},
    gru=("gates", "candidate"),
    linear=("weights", "biases"),
    lstm=("weights", "biases", "projection/weights"),  # the projection's _linear has no bias
    wrappers={
        "embedding": "embedding_wrapper",
        "input": "input_projection_wrapper",
        "output": "output_projection_wrapper",
    },
)
TF12 = Spelling(
    "tf12",
    rnn=TF10.rnn,
    birnn_fw=TF10.birnn_fw,
    multi=TF10.multi,
    cells=TF10.cells,
    gru=TF10.gru,
    linear=("kernel", "bias"),
    lstm=("kernel", "bias", "projection/kernel"),
    wrappers=TF10.wrappers,
)


# --- what each piece of a model creates, relative to the scope it is called in -----------------------


def cell(sp: Spelling, kind: str, *, proj: bool = False) -> list[str]:
    scope = sp.cells[kind]
    if kind == "gru":
        return [f"{scope}/{part}/{leaf}" for part in sp.gru for leaf in sp.linear]
    if kind == "lstm":
        return [f"{scope}/{leaf}" for leaf in (sp.lstm if proj else sp.lstm[:2])]
    return [f"{scope}/{leaf}" for leaf in sp.linear]


def multi(sp: Spelling, layers: list[list[str]]) -> list[str]:
    return [f"{sp.multi.format(k)}/{name}" for k, names in enumerate(layers) for name in names]


def linear(sp: Spelling, scope: str) -> list[str]:
    return [f"{scope}/{leaf}" for leaf in sp.linear]


def embedding(sp: Spelling) -> list[str]:
    # EmbeddingWrapper embeds under its own scope, then calls its cell outside it (a sibling).
    return [f"{sp.wrappers['embedding']}/embedding"]


def under(scope: str, names: list[str]) -> list[str]:
    return [f"{scope}/{name}" for name in names]


# --- representative models -----------------------------------------------------------------------


def attention_decoder(sp: Spelling, decoder_cell: list[str], *, projected: bool, heads: int) -> list[str]:
    """seq2seq.attention_decoder; `projected`: the cell is OutputProjectionWrapper(cell), as
    embedding_attention_seq2seq makes it when given no output_projection."""
    names = [n for a in range(heads) for n in (f"AttnW_{a}", f"AttnV_{a}")]
    names += list(sp.linear)  # x = linear([inp] + attns, input_size, True), in attention_decoder itself
    names += decoder_cell
    if projected:
        names += linear(sp, sp.wrappers["output"])
    for a in range(heads):
        names += linear(sp, f"Attention_{a}")
    names += linear(sp, "AttnOutputProjection")
    return under("attention_decoder", names)


def embedding_attention_seq2seq(
    sp: Spelling, stack: list[str], *, projected: bool = True, heads: int = 1
) -> list[str]:
    """Encoder rnn.rnn(EmbeddingWrapper(cell)); decoder embedding_attention_decoder."""
    encoder = under(sp.rnn, embedding(sp) + stack)
    decoder = ["embedding", *attention_decoder(sp, stack, projected=projected, heads=heads)]
    return under("embedding_attention_seq2seq", encoder + under("embedding_attention_decoder", decoder))


def embedding_rnn_seq2seq(sp: Spelling, stack: list[str]) -> list[str]:
    """Without an output_projection the decoder cell is OutputProjectionWrapper(cell), run by
    embedding_rnn_decoder -> rnn_decoder."""
    encoder = under(sp.rnn, embedding(sp) + stack)
    decoder = ["embedding", *under("rnn_decoder", stack + linear(sp, sp.wrappers["output"]))]
    return under("embedding_rnn_seq2seq", encoder + under("embedding_rnn_decoder", decoder))


def wrapped_rnn(sp: Spelling) -> list[str]:
    """dynamic_rnn(EmbeddingWrapper(InputProjectionWrapper(OutputProjectionWrapper(LSTMCell(num_proj))))):
    each wrapper's variables beside the cell it calls."""
    names = embedding(sp) + linear(sp, sp.wrappers["input"]) + cell(sp, "lstm", proj=True)
    return under(f"tagger/{sp.rnn}", names + linear(sp, sp.wrappers["output"]))


def wrapped_layers(sp: Spelling) -> list[str]:
    """bidirectional_dynamic_rnn of MultiRNNCell([InputProjectionWrapper(GRUCell), BasicRNNCell]),
    then an OutputProjectionWrapper around a BasicLSTMCell (TF 0.x BiRNN/FW, TF 1.0 bidirectional_rnn/fw)."""
    layers = [linear(sp, sp.wrappers["input"]) + cell(sp, "gru"), cell(sp, "rnn")]
    tail = under(sp.rnn, cell(sp, "basic_lstm") + linear(sp, sp.wrappers["output"]))
    return under("enc", under(sp.birnn_fw, multi(sp, layers))) + under("dec", tail)


def gru2(sp: Spelling) -> list[str]:
    return multi(sp, [cell(sp, "gru"), cell(sp, "gru")])


MODELS: dict[str, Callable[[Spelling], list[str]]] = {
    # The model: MultiRNNCell of GRUs, output projection wrapper, one attention head.
    "attention-seq2seq-gru2": lambda sp: embedding_attention_seq2seq(sp, gru2(sp)),
    # LSTMs with an output_projection given (no wrapper) and two attention heads.
    "attention-seq2seq-lstm2-heads2": lambda sp: embedding_attention_seq2seq(
        sp, multi(sp, [cell(sp, "lstm"), cell(sp, "lstm", proj=True)]), projected=False, heads=2
    ),
    "rnn-seq2seq-basic-lstm": lambda sp: embedding_rnn_seq2seq(sp, cell(sp, "basic_lstm")),
    "wrapped-lstm": wrapped_rnn,
    "wrapped-layers": wrapped_layers,
}


def checkpoint(names: list[str]) -> Checkpoint:
    """Distinct values per tensor (and per element), plus an Adam slot for each variable."""

    def entry(i: int, name: str) -> TensorEntry:
        shape = (2, 3)
        data = np.arange(6, dtype=np.float32).reshape(shape) + 100 * i
        return TensorEntry(name, shape, "float32", name, lambda: data)

    return Checkpoint(
        [entry(i, n) for i, n in enumerate(names + [f"{n}/Adam" for n in names])], format="test"
    )


@pytest.mark.parametrize("old", [TF0, TF10], ids=lambda sp: sp.version)
@pytest.mark.parametrize("model", MODELS)
def test_every_old_name_lands_on_the_tf12_name_of_the_same_variable(model: str, old: Spelling) -> None:
    old_names, new_names = MODELS[model](old), MODELS[model](TF12)
    assert len(set(old_names)) == len(old_names) == len(new_names)
    ckpt = checkpoint(old_names)
    out, plan = load("tf1-legacy-names").run(ckpt)
    assert list(out) == new_names + [f"{n}/Adam" for n in new_names]
    for before, after in zip(old_names, new_names, strict=True):
        np.testing.assert_array_equal(out[after], ckpt[before])
        assert out.entries[f"{after}/Adam"].slot_of == after
    assert not plan.dropped


@pytest.mark.parametrize("model", MODELS)
def test_tf0_and_tf10_spellings_of_one_model_agree_after_renaming(model: str) -> None:
    # The issue: the same seq2seq saved by TF 0.9 and TF 1.0 still differed in 9 of 22 names.
    renamed = [list(load("tf1-legacy-names").run(checkpoint(MODELS[model](sp)))[0]) for sp in (TF0, TF10)]
    assert renamed[0] == renamed[1]


def test_tf12_names_are_left_alone() -> None:
    names = MODELS["attention-seq2seq-gru2"](TF12)
    assert list(load("tf1-legacy-names").run(checkpoint(names))[0]) == names + [f"{n}/Adam" for n in names]


def test_layers_outside_cells_wrappers_and_attention_decoder_keep_their_names() -> None:
    names = [
        "inference/weights",  # a user's dense layer (contrib fully_connected keeps weights/biases)
        "inference/biases",
        "inference/Linear/Matrix",  # a user's own rnn_cell.linear() outside any cell
        "inference/Linear/Bias",
        "RNN/Linear/Matrix",  # ... even under RNN: only a cell's scope makes it a cell variable
        "my_attention_decoder/weights",  # the anchor is the whole scope name
        "attention_decoder/dense/weights",
        "attention_decoder/AttnW_0",  # the same in every version
        "attention_decoder/AttnV_0",
        "embedding_attention_decoder/embedding",
        "EmbeddingWrapperish/embedding",
        # cmusphinx/g2p-seq2seq's TF 1.1 google/seq2seq model: a dense layer under attention_decoder/decoder
        "model/att_seq2seq/decode/attention_decoder/decoder/attention_mix/weights",
    ]
    out, plan = load("tf1-legacy-names").run(checkpoint(names))
    assert list(out) == names + [f"{n}/Adam" for n in names]
    assert not plan.renamed


# --- the builders against real names ---------------------------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_checkpoints is not beside the checkout")
def test_tf10_builder_gives_the_names_of_a_real_tf10_seq2seq_checkpoint() -> None:
    # cmusphinx/g2p-seq2seq under TF 1.0: embedding_attention_seq2seq, one GRUCell, no output_projection.
    real = ckptmap.load(REAL / "g2p_v2_gru_weights_tf10")
    counters = ["Variable", "Variable_1"]  # the model's global_step and learning rate
    assert sorted(real.entries) == sorted([*embedding_attention_seq2seq(TF10, cell(TF10, "gru")), *counters])
    # And it is the checkpoint the user converted: all 22 names, TF 1.2 spelling after renaming.
    renamed = load("tf1-legacy-names").run(real)[0]
    assert sorted(renamed) == sorted([*embedding_attention_seq2seq(TF12, cell(TF12, "gru")), *counters])
    # The comparison: the same model under TF 0.x names lands on the same 22 names.
    tf0 = checkpoint([*embedding_attention_seq2seq(TF0, cell(TF0, "gru")), *counters])
    renamed_tf0 = [n for n in load("tf1-legacy-names").run(tf0)[0] if not n.endswith("/Adam")]
    assert sorted(renamed_tf0) == sorted(renamed)


@pytest.mark.parametrize("kind", ["gru", "lstm", "basic_lstm", "rnn"])
def test_tf12_builder_gives_the_names_tf_compat_v1_creates(kind: str) -> None:
    # Unwrapped cells only: tf.compat.v1 has no EmbeddingWrapper or legacy_seq2seq any more.
    from tests.frameworks import tf1

    tf, v1 = tf1()
    cells = v1.nn.rnn_cell
    make = {
        "gru": lambda: cells.GRUCell(3),
        "lstm": lambda: cells.LSTMCell(3, num_proj=2),
        "basic_lstm": lambda: cells.BasicLSTMCell(3),
        "rnn": lambda: cells.BasicRNNCell(3),
    }[kind]
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 5, 4])
        v1.nn.dynamic_rnn(cells.MultiRNNCell([make(), make()]), x, dtype=tf.float32, scope="enc/rnn")
        created = sorted(v.name[: -len(":0")] for v in v1.global_variables())
    layer = cell(TF12, kind, proj=kind == "lstm")
    assert created == sorted(under("enc/rnn", multi(TF12, [layer, layer])))
