"""Checkpoints other people's projects wrote (../shared/real_checkpoints, when present) through the
built-in mapping to every other framework, each then verified with the frameworks' own loaders.

Each case has one expected outcome: `verified` (verify exits 0: every RNN equal, or approximate as
the mapping declares and within what that allows), `differs` (a declared approximation that the
frameworks show is not close: verify says so and exits 1), or a refusal whose reason is given
before anything is written. Never an internal error, never a stop on a layer around the RNNs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import run

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_checkpoints"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_checkpoints is not here")

TARGETS = {"tf1": "tf/model.ckpt", "torch": "model.pt", "keras": "model.weights.h5"}
APPROXIMATE_GRU_BIAS = "differs"  # a GRU whose recurrent candidate bias is not zero cannot be TF1's

# (folder, file in it or "" for the folder, source framework) -> {target: expected outcome}
CASES: dict[tuple[str, str, str], dict[str, str]] = {
    ("aplain_basiclstm_weights_tf11", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("dinornn_tf2_keras_gru_2shards", "", "keras"): {"torch": "verified", "tf1": APPROXIMATE_GRU_BIAS},
    ("fracogno_bilstm_multirnn", "", "tf1"): {
        "torch": "refused: each direction is stacked on its own",
        "keras": "refused: each direction is stacked on its own",
    },
    ("g2p_attseq2seq_gru_kernel_tf12", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("g2p_attseq2seq_gru_weights_tf11", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("g2p_v2_gru_weights_tf10", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("keras211_gru_simplernn_weightsonly", "model_gru.h5", "keras"): {"torch": "verified", "tf1": "verified"},
    ("keras3_gru_resetafter_h5", "gru_model.h5", "keras"): {"torch": "verified", "tf1": APPROXIMATE_GRU_BIAS},
    ("keras3_lstm_weights_only_h5", "lstm_model.weights.h5", "keras"): {
        "torch": "verified",
        "tf1": "verified",
    },
    ("kokkini_peephole_lstm_customname", "", "tf1"): {
        "torch": "refused: LSTM peepholes",
        "keras": "refused: LSTM peepholes",
    },
    ("poembot_v1_multilstm_oldnames", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("sunrepe_multilstm_kernel_small", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("tidigits_multigru_weights_tf11", "", "tf1"): {"torch": "verified", "keras": "verified"},
    ("torch_bilstm2_zip", "bilstm.pt", "torch"): {"keras": "verified", "tf1": "verified"},
    ("torch_gru_legacy", "gru.pt", "torch"): {"keras": "verified", "tf1": APPROXIMATE_GRU_BIAS},
}
PARAMS = [
    (folder, file, framework, target, expected)
    for (folder, file, framework), targets in CASES.items()
    for target, expected in targets.items()
]


@needs_real
@pytest.mark.parametrize(
    ("folder", "file", "framework", "target", "expected"),
    PARAMS,
    ids=[f"{p[0]}-to-{p[3]}" for p in PARAMS],
)
def test_real_checkpoint_converts_and_verifies(capsys, tmp_path, folder, file, framework, target, expected):
    src = REAL / folder / file if file else REAL / folder
    dst = tmp_path / TARGETS[target]
    mapping = f"{framework}-to-{target}"
    code, _, err = run(capsys, "convert", src, dst, "-m", mapping)
    assert "Internal error" not in err
    if expected.startswith("refused: "):
        assert code == 2 and expected.removeprefix("refused: ") in err
        assert not dst.exists()
        return
    assert code == 0, err
    code, out, err = run(capsys, "verify", src, dst, "-m", mapping)
    assert "Internal error" not in err and "\x1b" not in out + err
    assert code == (0 if expected == "verified" else 1), out + err
