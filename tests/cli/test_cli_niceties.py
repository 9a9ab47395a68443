"""What a user expects of a CLI (issue 13): --version, diff --values, inspect that hides optimizer
state and takes several paths, a readable `mappings NAME`, "did you mean", and remote URLs named
as such."""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckptmap
from ckptmap import value_diff
from ckptmap.rules import mapping as mapping_lib
from tests.cli.test_startup import HEAVY, loaded
from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
LSTM2 = SAMPLES / "tf1_lstm2"
TORCH_LSTM = SAMPLES / "torch_lstm.pt"


# --version


def test_version_prints_the_installed_version(capsys):
    code, out, err = run(capsys, "--version")
    assert (code, out, err) == (0, f"ckptmap {importlib.metadata.version('ckptmap')}\n", "")


def test_version_imports_no_numpy_or_yaml(tmp_path):
    assert {"numpy", "yaml", "rich"} & loaded(tmp_path, "--version") == set()


# diff --values


def _safetensors(path: Path, **tensors: np.ndarray) -> Path:
    save_file(tensors, str(path))
    return path


def test_diff_values_finds_the_one_tensor_a_forget_bias_changed(capsys, tmp_path):
    # Two real conversions that differ only in forget_bias: bias_ih of each layer moves by 0.5 in
    # its f gate, every weight matrix is the same.
    a, b = tmp_path / "fb1.pt", tmp_path / "fb05.pt"
    ckptmap.convert(LSTM2, a, mapping="tf1-to-torch", params={"forget_bias": 1.0})
    ckptmap.convert(LSTM2, b, mapping="tf1-to-torch", params={"forget_bias": 0.5})
    code, out, _ = run(capsys, "diff", a, b)
    assert code == 0 and "Same names, shapes and dtypes." in out  # without --values: alike
    code, out, _ = run(capsys, "diff", a, b, "--values")
    assert code == 1 and "Values of 8 tensors in both: 6 identical, 2 DIFFER" in out
    assert re.search(r"bias_ih_l0\s+5\.0e-01\s+\S+\s+\d+\.\d\s+DIFFERS", out)  # max abs, rel, SQNR dB
    assert re.search(r"bias_ih_l1\s+5\.0e-01\s+\S+\s+\d+\.\d\s+DIFFERS", out)
    assert "weight_ih_l0" not in out  # identical tensors are counted, not listed
    code, out, _ = run(capsys, "diff", a, b, "--values", "--tolerance", "0.6")
    assert code == 0 and "Same names, shapes, dtypes and values (within tolerance 0.6)." in out


def test_diff_values_of_a_tf_checkpoint_and_its_copy_are_identical(capsys, tmp_path):
    ckptmap.convert(LSTM2, tmp_path / "copy" / "model.ckpt")
    code, out, _ = run(capsys, "diff", LSTM2, tmp_path / "copy", "--values")
    assert code == 0 and "Values of 15 tensors in both: 15 identical" in out
    assert out.endswith("Same names, shapes, dtypes and values.\n")


def test_diff_values_json_has_every_tensor_and_strict_json(capsys, tmp_path):
    a = _safetensors(
        tmp_path / "a.safetensors",
        w=np.arange(12, dtype=np.float32).reshape(3, 4),
        nan=np.array([np.nan, 1.0, np.inf], np.float32),
        big=np.array([2**60 + 1], np.int64),
        only_a=np.zeros(2, np.float32),
    )
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    w[1, 2] += 0.25
    b = _safetensors(
        tmp_path / "b.safetensors",
        w=w,
        nan=np.array([np.nan, np.nan, np.inf], np.float32),  # NaN against 1.0: an infinite difference
        big=np.array([2**60], np.int64),  # one apart, where float64 cannot tell them apart
    )
    code, out, _ = run(capsys, "diff", a, b, "--values", "--json")
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert code == 1 and data["only_in_a"] == ["only_a"] and data["tolerance"] == 0.0
    values = {v["name"]: v for v in data["values"]}
    assert values["w"] == {
        "name": "w",
        "max_abs": 0.25,
        "max_rel": 0.25 / 11,
        "identical": False,
        "equal": False,
        # sum of w^2 = 0^2 + ... + 11^2 = 506 over noise 0.25^2
        "sqnr_db": pytest.approx(10 * math.log10(506 / 0.0625)),
    }
    assert values["nan"]["max_abs"] is None and not values["nan"]["equal"]
    assert values["big"]["max_abs"] == 1.0 and not values["big"]["identical"]


def test_diff_values_treats_nan_against_nan_and_inf_against_inf_as_equal(tmp_path):
    x = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    a = _safetensors(tmp_path / "a.safetensors", x=x)
    b = _safetensors(tmp_path / "b.safetensors", x=x.copy())
    report = ckptmap.diff(a, b, values=True)
    assert report.same and report.values[0].identical


def test_diff_values_aligns_blocks_of_different_dtypes(monkeypatch, tmp_path):
    # float32 against float16 of the same values: rows per block differ on each side (4 and 2
    # bytes an element), so the comparison must pair elements, not blocks.
    monkeypatch.setattr(value_diff, "BLOCK_BYTES", 100)
    x = np.arange(300 * 7, dtype=np.float32).reshape(300, 7) % 1000
    half = x.astype(np.float16)
    half[299, 6] += 2  # the very last element
    a = _safetensors(tmp_path / "a.safetensors", x=x)
    b = _safetensors(tmp_path / "b.safetensors", x=half)
    report = ckptmap.diff(a, b, values=True)
    assert report.changed == [("x", "[300, 7] float32", "[300, 7] float16")]
    [v] = report.values
    assert v.max_abs == 2.0 and not v.equal


def test_diff_values_reads_block_by_block_not_whole_tensors(tmp_path):
    import tracemalloc

    rows, cols = 2048, 4096  # 32 MB a side; float64 copies of both would take 128 MB
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    a = _safetensors(tmp_path / "a.safetensors", w=x)
    x[-1, -1] += 1
    b = _safetensors(tmp_path / "b.safetensors", w=x)
    del x
    ca, cb = ckptmap.load(a), ckptmap.load(b)
    tracemalloc.start()
    try:
        [v] = value_diff.compare(ca, cb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert v.max_abs == pytest.approx(1.0, abs=1e-6) and not v.equal
    assert peak < 24 * 2**20, f"comparing took {peak / 2**20:.0f} MB: not block by block"


def test_diff_values_and_inspect_of_several_paths_import_no_framework(tmp_path):
    assert loaded(tmp_path, "diff", LSTM2, LSTM2, "--values") & HEAVY == set()
    assert loaded(tmp_path, "inspect", LSTM2, SAMPLES / "tf1_gru") & (HEAVY | {"numpy"}) == set()


def test_diff_tolerance_needs_values_and_a_sane_number(capsys):
    code, _, err = run(capsys, "diff", LSTM2, LSTM2, "--tolerance", "0.1")
    assert code == 2 and err == "Error: --tolerance goes with --values.\n"
    code, _, err = run(capsys, "diff", LSTM2, LSTM2, "--values", "--tolerance", "-1")
    assert code == 2 and "expected a number >= 0" in err


def test_diff_values_still_fails_on_a_name_difference(capsys, tmp_path):
    ckptmap.convert(LSTM2, tmp_path / "ren" / "model.ckpt", rename={"^global_step$": "step"})
    code, out, _ = run(capsys, "diff", LSTM2, tmp_path / "ren", "--values")
    assert code == 1 and "Only in" in out and "14 identical" in out


# inspect


def test_inspect_hides_optimizer_slots_and_bookkeeping_unless_all(capsys):
    code, out, _ = run(capsys, "inspect", LSTM2)
    assert code == 0 and "Adam" not in out and "global_step (bookkeeping)" not in out
    assert "(8 optimizer slots, 3 bookkeeping hidden; --all shows them)" in out
    assert "15 tensors (4 weights)" in out  # the header still counts everything
    code, out, _ = run(capsys, "inspect", LSTM2, "--all")
    assert "Adam_1 (slot)" in out and "global_step (bookkeeping)" in out and "hidden" not in out
    code, out, _ = run(capsys, "inspect", LSTM2, "--json")  # for scripts: every tensor, with its kind
    assert sum(t["kind"] == "slot" for t in json.loads(out)["tensors"]) == 8


def test_inspect_filter_matches_the_names_of_the_file_itself(capsys, tmp_path):
    st = _safetensors(tmp_path / "m.safetensors", **{"rnn.weight_ih_l0": np.zeros((4, 3), np.float32)})
    code, out, _ = run(capsys, "inspect", st, "--filter", r"^rnn\.weight_ih_l0$", "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)["tensors"]] == ["rnn/weight_ih_l0"]
    keras = tmp_path / "m.weights.h5"
    ckptmap.convert(TORCH_LSTM, keras, mapping="torch-to-keras")
    code, out, _ = run(capsys, "inspect", keras, "--filter", "^layers/lstm_1/cell/vars/1$", "--json")
    assert [t["name"] for t in json.loads(out)["tensors"]] == ["lstm_1/cell/recurrent_kernel"]


def test_inspect_several_paths_prints_each_and_exits_2_if_one_fails(capsys, tmp_path):
    missing = tmp_path / "nope.pt"
    code, out, err = run(capsys, "inspect", LSTM2, missing, TORCH_LSTM)
    assert code == 2
    assert f"{LSTM2}: TensorFlow checkpoint" in out and f"{TORCH_LSTM}: PyTorch file" in out
    assert f"Error: {missing}: no such file" in err and "1 of 3 checkpoints could not be read" in err
    code, out, _ = run(capsys, "inspect", LSTM2, TORCH_LSTM, "--json")
    assert code == 0 and [d["format"] for d in json.loads(out)] == ["tf", "torch"]


# mappings NAME


def test_mappings_name_shows_file_params_and_every_rule_with_its_expressions(capsys):
    code, out, _ = run(capsys, "mappings", "tf1-to-torch")
    assert code == 0
    assert re.search(r"file: \S+/tf1-to-torch\.yaml", out)
    assert re.search(r"includes: \S+/tf1-legacy-names\.yaml", out)
    assert "param forget_bias = 1.0" in out
    assert "refuse: LSTM peepholes (LSTMCell use_peepholes=True) have no counterpart in nn.LSTM." in out
    assert "cell tf1.lstm when peepholes=true" in out and "cell tf1.lstm -> torch.lstm" in out
    assert re.search(r"bias_ih\s+=\s+bias \| gates\(tf1\.lstm, torch\.lstm\) \| add\(forget_bias", out)
    assert re.search(r"\{layer\}/weight\s+=\s+src \| T", out)  # a match rule's target and expression
    assert re.search(r"rename\s+\(\^\|/\)lstm_cell/weights\$\s+->\s+\\1lstm_cell/kernel", out)
    assert "approximate: TF1's GRUCell applies the reset gate" in out


def test_mappings_name_shows_a_users_file_with_drop_reasons(capsys, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "name: mine\nrules:\n  - match: 'global_step'\n    drop: the new run counts from zero\n"
        "  - match: '(?P<x>.*)/kernel'\n    to: '{x}/weights'\n"
    )
    code, out, _ = run(capsys, "mappings", mine)
    assert code == 0 and f"file: {mine}" in out
    assert "match global_step" in out and "drop: the new run counts from zero" in out
    assert "-> {x}/weights" in out


# did you mean


def test_a_mistyped_mapping_name_suggests_the_closest(capsys, tmp_path):
    code, out, err = run(capsys, "convert", LSTM2, tmp_path / "o.pt", "-m", "tf1-to-trch")
    assert code == 2 and not out and err.count("\n") == 1
    assert "No built-in mapping named 'tf1-to-trch'; did you mean 'tf1-to-torch'" in err
    builtins = sorted(b.name for b in mapping_lib.builtins())
    assert f"Built-in: {', '.join(builtins)}." in err and "tf1-legacy-names" in builtins
    code, _, err = run(capsys, "mappings", "torch-to-tf")
    assert code == 2 and "did you mean 'torch-to-tf1'" in err


def test_a_mistyped_set_key_suggests_the_parameter(capsys, tmp_path):
    code, out, err = run(
        capsys, "convert", LSTM2, tmp_path / "o.pt", "-m", "tf1-to-torch", "--set", "forget_bia=1"
    )
    assert code == 2 and not out and not (tmp_path / "o.pt").exists()
    assert err == (
        "Error: --set forget_bia: not a parameter of tf1-to-torch; did you mean 'forget_bias' or "
        "'cudnn_forget_bias'? Parameters: cudnn_forget_bias, forget_bias.\n"
    )


# remote URLs


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["inspect", "s3://bucket/run/model.ckpt"], "s3://bucket/run/model.ckpt"),
        (["diff", "hdfs://nn:8020/a.pt", LSTM2], "hdfs://nn:8020/a.pt"),
        (["convert", "https://host/lstm.pt", "lstm.safetensors"], "https://host/lstm.pt"),
        (["convert", LSTM2, "az://container/lstm.pt", "-m", "tf1-to-torch"], "az://container/lstm.pt"),
        # No suffix: the format comes from the mapping's framework, and the name is never parsed.
        (["convert", LSTM2, "gs://bucket/out", "-m", "tf1-to-torch"], "gs://bucket/out"),
    ],
    ids=["inspect-s3", "diff-hdfs", "convert-from-https", "convert-to-az", "convert-to-gs-no-suffix"],
)
def test_remote_urls_are_named_as_unsupported(capsys, monkeypatch, tmp_path, args, url):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and not out
    assert err == (
        f"Error: {url}: remote URLs are not supported yet (issue: object storage); copy it locally first.\n"
    )
    assert list(tmp_path.iterdir()) == []  # no local directory named `gs:` or `az:`


def test_remote_url_through_a_path_object_is_still_recognized():
    # Path("s3://b/k") is "s3:/b/k": the scheme is still known.
    with pytest.raises(ckptmap.UnsupportedError, match=r"^s3://b/model\.pt: remote URLs"):
        ckptmap.load(Path("s3://b/model.pt"))
