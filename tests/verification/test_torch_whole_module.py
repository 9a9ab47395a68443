"""A whole pickled PyTorch module (`torch.save(model)`) verifies, without unpickling it with torch.

`torch.load(weights_only=True)` refuses such a file, and loading it any other way would run its
code. Verification restores it through ckptmap's own reader into a fresh module of the recognized
shape with `load_state_dict(strict=True)`, and says so.
"""

from __future__ import annotations

import pickle

import pytest
import torch

import ckptmap
from ckptmap.verification.outcome import framework_message
from ckptmap.verification.report import APPROXIMATE, EQUAL
from ckptmap.verification.run import verify, verify_into
from tests.clirun import run

GRU_UNITS = 5


class Net(torch.nn.Module):
    """A module class of the test's own: torch's weights_only loader allows no such global."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(7, 3)
        self.encoder = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
        self.decoder = torch.nn.GRU(8, GRU_UNITS, batch_first=True)
        self.head = torch.nn.Linear(GRU_UNITS, 2)


@pytest.fixture
def whole_module(tmp_path):
    """torch.save of the whole model, distinct weights; the GRU's b_hn is zero, so that its TF1
    conversion is approximate as declared (TF1's GRUCell has no place for b_hn)."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)
        model.decoder.bias_hh_l0[2 * GRU_UNITS :] = 0
    torch.save(model, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_identity_verify_of_a_pickled_module_is_equal(capsys, whole_module):
    code, out, err = run(capsys, "verify", whole_module, whole_module)
    assert code == 0, out + err
    assert "OK: 2 equal." in out and "NO RESTORE" not in out
    assert "read by ckptmap, which runs none of the pickle's code" in out
    assert "\x1b" not in out + err


def test_pickled_module_verifies_against_its_tf1_conversion(capsys, tmp_path, whole_module):
    ckptmap.convert(whole_module, tmp_path / "tf" / "model.ckpt", mapping="torch-to-tf1")
    report = verify(whole_module, tmp_path / "tf")
    assert {p.source.kind: p.verdict for p in report.pairs} == {"lstm": EQUAL, "gru": APPROXIMATE}
    assert report.ok and all(p.notes for p in report.pairs)  # the source came through ckptmap's reader
    code, out, _ = run(capsys, "verify", whole_module, tmp_path / "tf")
    assert code == 0 and "OK: 1 equal, 1 approximate (max abs error " in out
    assert "allowed by torch-to-tf1 rule 'gru')." in out


def test_pickled_module_restores_into_fresh_torch_modules(whole_module):
    report = verify_into(whole_module, "torch")
    assert report.ok and len(report.results) == 2
    assert all("weights_only=True" in " ".join(r.notes) for r in report.results)


def test_framework_messages_lose_terminal_escapes(whole_module):
    # torch's own refusal of a pickled module puts bold text (ESC [1m ... ESC [0m) in its message.
    with pytest.raises(pickle.UnpicklingError) as refused:
        torch.load(whole_module, weights_only=True)
    raw, clean = str(refused.value), framework_message(refused.value)
    assert "\x1b[1m" in raw and "\n" in raw
    assert "\x1b" not in clean and "\n" not in clean and "\t" not in clean
    assert clean.startswith("UnpicklingError: Weights only load failed.")
    assert clean.endswith(" ...") and len(clean) < 450  # shortened at a word, and says so
    assert framework_message("bold \x1b[1mtext\x1b[0m\r\x07 here") == "bold text here"
