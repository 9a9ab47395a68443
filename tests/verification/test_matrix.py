"""The equivalence matrix: every built-in mapping x cell kind x 1-2 layers x direction, through
`verify`, each with the verdict the mathematics says it must get."""

from __future__ import annotations

import pytest

import ckptmap
from ckptmap.cell_kinds import KINDS
from ckptmap.verification.report import APPROXIMATE, EQUAL
from ckptmap.verification.run import verify
from tests.verification.conftest import tf1_source, torch_source

SHAPES = [(1, False), (2, False), (1, True), (2, True)]
TORCH_KINDS = tuple(k.name for k in KINDS if k.counterpart("torch") and k.counterpart("tf1"))


def _case(mapping: str, kind: str) -> str:
    if kind == "gru" and mapping in ("tf1-to-torch", "torch-to-tf1"):
        return APPROXIMATE  # TF1's GRUCell resets before the recurrent matmul, nn.GRU after it
    return EQUAL


MATRIX = [
    (mapping, kind, layers, bi)
    for mapping, kinds in (
        ("tf1-to-torch", ("gru", "lstm", "basic_lstm", "rnn")),
        ("torch-to-tf1", TORCH_KINDS),  # PyTorch has no BasicLSTMCell to start from
        ("tf1-legacy-names", ("gru", "lstm", "basic_lstm", "rnn")),
    )
    for kind in kinds
    for layers, bi in SHAPES
]


@pytest.mark.parametrize(
    ("mapping", "kind", "layers", "bidirectional"),
    MATRIX,
    ids=[f"{m}-{k}-{n}{'-bi' if b else ''}" for m, k, n, b in MATRIX],
)
def test_every_builtin_mapping_verifies_with_its_expected_verdict(
    tmp_path, mapping, kind, layers, bidirectional
):
    options = {"layers": layers, "bidirectional": bidirectional}
    if mapping == "torch-to-tf1":
        src = torch_source(tmp_path / "src.pt", kind, zero_b_hn=True, **options)
        dst = tmp_path / "dst" / "model.ckpt"
    else:
        src = tf1_source(
            tmp_path / "src" / "model.ckpt", kind, legacy=mapping == "tf1-legacy-names", **options
        )
        dst = tmp_path / ("dst.pt" if mapping == "tf1-to-torch" else "dst/model.ckpt")
    ckptmap.convert(src, dst, mapping=mapping)
    report = verify(src, dst, mapping=mapping)
    [pair] = report.pairs
    expected = _case(mapping, kind)
    assert pair.verdict == expected, (pair.message, [vars(c) for c in pair.cases])
    assert report.ok and report.exit_code == 0
    assert pair.first_step_abs is not None and pair.first_step_abs <= pair.tolerance
    if expected == APPROXIMATE:
        assert "reset gate" in pair.approximate and pair.max_abs > 1e-4  # measured, and truly not exact
        assert verify(src, dst, mapping=mapping, strict=True).exit_code == 1
    else:
        assert pair.max_abs <= 1e-5
