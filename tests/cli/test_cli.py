"""The command line: output on stdout, one-line errors on stderr, exit codes 0/1/2, nothing
written on failure. Commands run in-process through `main`; a few run as real subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import run

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
LSTM2 = str(SAMPLES / "tf1_lstm2")


def test_inspect_shows_tree_rnns_and_what_is_not_a_weight(capsys):
    code, out, err = run(capsys, "inspect", LSTM2)
    assert code == 0 and not err
    assert "cell_0/lstm_cell/" in out and "kernel" in out and "[11, 32]" in out
    assert "LSTMCell at (root): input 3, units 8, 2 layers, unidirectional" in out
    assert "8 optimizer slots; 3 bookkeeping (beta1_power, beta2_power, global_step)" in out


def test_inspect_json_lists_tensors_and_rnns(capsys):
    code, out, _ = run(capsys, "inspect", LSTM2, "--json")
    data = json.loads(out)
    assert code == 0 and data["format"] == "tf"
    kernel = next(t for t in data["tensors"] if t["name"] == "rnn/multi_rnn_cell/cell_1/lstm_cell/kernel")
    assert kernel == {
        "name": kernel["name"],
        "shape": [16, 32],
        "dtype": "float32",
        "kind": "weight",
        "key": kernel["name"],
        "bytes": 2048,
    }
    [rnn] = data["rnns"]
    assert (rnn["kind"], rnn["layers"], rnn["units"], rnn["direction"]) == ("lstm", 2, 8, "unidirectional")


def test_inspect_filter_and_bad_regex(capsys):
    code, out, _ = run(capsys, "inspect", LSTM2, "--filter", "cell_1.*kernel$", "--json")
    assert [t["name"] for t in json.loads(out)["tensors"]] == ["rnn/multi_rnn_cell/cell_1/lstm_cell/kernel"]
    code, out, err = run(capsys, "inspect", LSTM2, "--filter", "(")
    assert code == 2 and not out and err.startswith("Error: --filter '(': bad regex")


def test_inspect_points_out_old_tf_names(capsys):
    _, out, _ = run(capsys, "inspect", SAMPLES / "tf10_oldnames")
    assert "RNNs under TF <= 1.1 names (2)" in out and "GRUCell at encoder" in out


def test_convert_tf1_to_torch_reports_and_writes(capsys, tmp_path):
    dst = tmp_path / "out" / "lstm.pt"  # the parent directory does not exist yet
    code, out, err = run(capsys, "convert", LSTM2, dst, "--mapping", "tf1-to-torch")
    assert code == 0 and not err
    assert "8 tensors written" in out and "8 converted" in out and "dropped 11" in out
    assert dst.is_file()


def test_dry_run_prints_the_plan_and_writes_nothing(capsys, tmp_path):
    dst = tmp_path / "lstm.pt"
    code, out, _ = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", "--dry-run")
    assert code == 0 and not dst.exists() and not list(tmp_path.iterdir())
    assert "Plan for" in out
    assert "weight_ih_l1" in out and "<- rnn/multi_rnn_cell/cell_1/lstm_cell/kernel" in out
    assert "gates(tf1.lstm, torch.lstm)" in out


def test_convert_json_report(capsys, tmp_path):
    code, out, _ = run(
        capsys, "convert", SAMPLES / "tf1_gru", tmp_path / "g.pt", "-m", "tf1-to-torch", "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["destination_format"] == "torch" and not report["plan"]["exact"]
    assert "reset gate" in report["plan"]["approximations"][0]["reason"]


def test_set_and_rename_and_to(capsys, tmp_path):
    dst = tmp_path / "x"
    code, out, _ = run(
        capsys,
        "convert",
        LSTM2,
        dst,
        "-m",
        "tf1-to-torch",
        "--set",
        "forget_bias=0.5",
        "--rename",
        "^=lstm.",
        "--to",
        "safetensors",
        "--json",
    )
    report = json.loads(out)
    assert code == 0 and report["plan"]["params"] == {"forget_bias": 0.5, "cudnn_forget_bias": 0.0}
    assert report["plan"]["targets"][0]["name"] == "lstm.weight_ih_l0"
    from safetensors.numpy import load_file

    assert "lstm.weight_ih_l0" in load_file(dst)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "forget_bias"], "--set 'forget_bias': expected KEY=VALUE"),
        (["--set", "forget=1"], "--set forget: not a parameter of tf1-to-torch"),
        (["--set", "forget_bias=lots"], "Parameter 'forget_bias' of tf1-to-torch takes a value like 1.0"),
        (["--rename", "(=x"], "--rename '(=x': bad regex"),
        (["--to", "caffe"], "Unknown format 'caffe'"),
    ],
    ids=["set-no-value", "set-unknown", "set-bad-type", "rename-bad-regex", "to-unknown"],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, args, message):
    dst = tmp_path / "out.pt"
    code, out, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch", *args)
    assert code == 2 and not out and not dst.exists()
    assert err.startswith(f"Error: {message}") and err.count("\n") == 1


def test_unknown_mapping_and_bad_mapping_file(capsys, tmp_path):
    code, _, err = run(capsys, "convert", LSTM2, tmp_path / "o.pt", "-m", "tf-to-pytorch")
    assert code == 2 and "No built-in mapping named 'tf-to-pytorch'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - match: a\n    to: {b: 'src | frob'}\n")
    code, _, err = run(capsys, "convert", LSTM2, tmp_path / "o.pt", "-m", bad)
    assert code == 2 and f"{bad}:2" in err and "unknown operation 'frob'" in err
    assert not (tmp_path / "o.pt").exists()


def test_a_refused_conversion_writes_nothing(capsys, tmp_path):
    # A peephole LSTM cannot become an nn.LSTM; the whole run stops before writing.
    from tests.frameworks import save_tf1_rnn

    save_tf1_rnn(tmp_path / "src" / "model.ckpt", "lstm", 3, 4, peepholes=True)
    code, _, err = run(capsys, "convert", tmp_path / "src", tmp_path / "dst" / "p.pt", "-m", "tf1-to-torch")
    assert code == 2 and "refused: LSTM peepholes" in err
    assert not (tmp_path / "dst").exists()


def test_writing_over_the_source_is_refused(capsys, tmp_path):
    src = tmp_path / "lstm.pt"
    shutil.copy(SAMPLES / "torch_lstm.pt", src)
    before = src.read_bytes()
    code, _, err = run(capsys, "convert", src, src)
    assert code == 2 and "refusing to write over the source" in err
    assert src.read_bytes() == before


def test_destination_that_cannot_be_created_exits_2_and_leaves_nothing(capsys, tmp_path):
    # A file where a directory should be: fails for root too, unlike a read-only directory.
    (tmp_path / "plain_file").write_text("x")
    dst = tmp_path / "new_dir" / "plain_file" / "x.pt"
    (tmp_path / "new_dir").mkdir()
    (tmp_path / "new_dir" / "plain_file").write_text("x")
    code, out, err = run(capsys, "convert", LSTM2, dst, "-m", "tf1-to-torch")
    assert code == 2 and not out and "cannot create the output directory" in err
    assert sorted(p.name for p in (tmp_path / "new_dir").iterdir()) == ["plain_file"]


def test_identity_conversion_tf_to_tf_keeps_everything(capsys, tmp_path):
    code, out, _ = run(capsys, "convert", LSTM2, tmp_path / "copy" / "model.ckpt")
    assert code == 0 and "15 kept" in out
    code, out, _ = run(capsys, "diff", LSTM2, tmp_path / "copy")
    assert code == 0 and "Same names, shapes and dtypes." in out


def test_diff_exit_1_and_lists_differences(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "convert",
        LSTM2,
        tmp_path / "ren" / "model.ckpt",
        "--rename",
        "cell_1/lstm_cell/kernel$=cell_1/lstm_cell/weights",
    )
    code, out, _ = run(capsys, "diff", LSTM2, tmp_path / "ren", "--json")
    data = json.loads(out)
    assert code == 1
    assert data["only_in_a"] == ["rnn/multi_rnn_cell/cell_1/lstm_cell/kernel"]
    assert data["only_in_b"] == ["rnn/multi_rnn_cell/cell_1/lstm_cell/weights"]
    code, out, _ = run(capsys, "diff", SAMPLES / "tf1_gru", SAMPLES / "tf1_bigru")
    assert code == 1 and "Only in" in out


def test_missing_files_and_garbage_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", tmp_path / "nope")
    assert code == 2 and err == f"Error: {tmp_path / 'nope'}: no such file, directory or checkpoint prefix.\n"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all")
    code, _, err = run(capsys, "inspect", junk)
    assert code == 2 and "not a checkpoint ckptmap can read" in err
    code, _, err = run(capsys, "diff", junk, LSTM2)
    assert code == 2


def test_mappings_lists_and_describes(capsys):
    code, out, _ = run(capsys, "mappings")
    assert code == 0 and all(n in out for n in ("tf1-to-torch", "torch-to-tf1", "tf1-legacy-names"))
    code, out, _ = run(capsys, "mappings", "tf1-to-torch")
    assert "param forget_bias = 1.0" in out and "[approximate]" in out


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptmap", *args], capture_output=True, text=True, timeout=120
    )


def test_errors_have_no_traceback_unless_debug(tmp_path):
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"\0" * 100)
    quiet = _subprocess("inspect", str(junk))
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and quiet.stderr.startswith("Error:")
    loud = _subprocess("inspect", str(junk), "--debug")
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_commands_that_need_no_framework_import_none(tmp_path):
    runs = [
        ["inspect", LSTM2],
        ["convert", LSTM2, str(tmp_path / "x.pt"), "-m", "tf1-to-torch"],
        ["mappings"],
        ["diff", LSTM2, LSTM2],
    ]
    code = (
        "import sys; from ckptmap.cli import main\n"
        f"for args in {runs!r}:\n"
        "    try: main(args)\n"
        "    except SystemExit as e: assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules and 'torch' not in sys.modules, 'a framework was imported'\n"
        # typer >= 0.29 imports pydantic to check every argument: 0.1 s more per command (pyproject).
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
