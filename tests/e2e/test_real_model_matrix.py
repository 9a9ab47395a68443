"""The real-model matrix: every model of the corpus (tests/realmodels.py) converts to every other
framework with the built-in mappings in one command, and `ckptmap verify` restores both sides with
the frameworks' own loaders and compares each RNN. Each cell of the matrix ends exact, declared
approximate, or refused with its reason before anything is written: never an internal error, and
never a stop on a head layer.
"""

from __future__ import annotations

import pytest

from tests.clirun import run
from tests.realmodels import Source, build_all

# Target file name per framework: the output format follows from it.
TARGETS = {"tf1": "tf/model.ckpt", "torch": "model.pt", "keras": "model.weights.h5"}
MAPPINGS = {
    ("tf1", "torch"): "tf1-to-torch",
    ("tf1", "keras"): "tf1-to-keras",
    ("torch", "tf1"): "torch-to-tf1",
    ("torch", "keras"): "torch-to-keras",
    ("keras", "torch"): "keras-to-torch",
    ("keras", "tf1"): "keras-to-tf1",
}
# Cells of the matrix that are refused, and why: none today.
REFUSED: dict[tuple[str, str], str] = {}
# Cells that convert with a declared approximation the frameworks show is not close: verify says
# which RNN differs and exits 1. A Keras GRU (reset_after=True) with a trained recurrent bias
# computes something a TF1 GRUCell cannot.
DIFFERS: dict[tuple[str, str], str] = {("keras3-mixed", "tf1"): "GRU at gru"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Source]:
    return {s.name: s for s in build_all(tmp_path_factory.mktemp("corpus"))}


CASES = [
    (name, target)
    for name, framework in [
        ("tf1-lm", "tf1"),
        ("tf1-seq2seq", "tf1"),
        ("keras3-mixed", "keras"),
        ("torch-lm-state", "torch"),
        ("torch-lm-module", "torch"),
    ]
    for target in TARGETS
    if target != framework
]


@pytest.mark.parametrize(("name", "target"), CASES, ids=[f"{n}-to-{t}" for n, t in CASES])
def test_every_real_model_converts_and_verifies(corpus, tmp_path, capsys, name, target):
    source = corpus[name]
    mapping = MAPPINGS[(source.framework, target)]
    dst = tmp_path / TARGETS[target]
    code, out, err = run(capsys, "convert", source.path, dst, "-m", mapping)
    assert "Internal error" not in err
    if (name, target) in REFUSED:
        assert code == 2 and REFUSED[(name, target)] in err and not dst.parent.exists()
        return
    assert code == 0, err
    assert "cannot place" not in err
    code, out, err = run(capsys, "verify", source.path, dst, "-m", mapping)
    assert "Internal error" not in err and "\x1b" not in out + err
    if (name, target) in DIFFERS:
        differing = [line for line in out.splitlines() if line.rstrip().endswith("DIFFERS")]
        assert code == 1 and len(differing) == 1 and DIFFERS[(name, target)] in differing[0], out
        assert "declares it approximate" in out and "FAILED:" in out
        return
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("OK: "), out
