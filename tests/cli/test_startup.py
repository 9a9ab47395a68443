"""A command imports only what it uses: checked by the modules a real `ckptmap` process has
loaded when it ends, not by timing it (issue 12: start-up).

numpy takes ~0.1 s to import and ml_dtypes 0.7 ~0.9 s; TensorFlow, PyTorch and Keras seconds.
`inspect` of a TF checkpoint answers from its index with plain Python, so it needs none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
FRAMEWORKS = {"tensorflow", "torch", "keras", "tf_keras", "jax"}
HEAVY = FRAMEWORKS | {"ml_dtypes", "h5py"}

# Runs the CLI as the console script does, then reports sys.modules from an atexit hook, which
# runs after the command's own sys.exit.
_PROBE = """
import atexit, json, os, sys
def report():
    with open(os.environ["MODULES_OUT"], "w") as f:
        json.dump(sorted(m for m in sys.modules if "." not in m), f)
atexit.register(report)
from ckptmap.cli import main
main(sys.argv[1:])
"""


def loaded(tmp_path: Path, *args: object) -> set[str]:
    """The top-level modules a `ckptmap ARGS...` process had imported when it ended."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1) and "Error" not in done.stderr, done.stderr  # 1: diff differs
    return set(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """float32 checkpoints in the formats a plain conversion reads, and one bfloat16 file."""
    from safetensors.numpy import save_file

    import ckptmap

    d = tmp_path_factory.mktemp("startup")
    ckptmap.convert(SAMPLES / "torch_lstm.pt", d / "lstm.safetensors")
    import ml_dtypes

    save_file({"w": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)}, str(d / "bf16.safetensors"))
    return {"safetensors": d / "lstm.safetensors", "bf16": d / "bf16.safetensors"}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["convert", "--help"],
        ["mappings"],
        ["mappings", "tf1-to-torch"],
        ["inspect", SAMPLES / "tf1_lstm2"],
        ["inspect", SAMPLES / "tf10_oldnames"],  # old names: the legacy mapping is loaded
        ["inspect", SAMPLES / "torch_lstm.pt"],
        ["diff", SAMPLES / "tf1_lstm2", SAMPLES / "tf1_gru"],
        ["convert", SAMPLES / "tf1_lstm2", "lstm.pt", "-m", "tf1-to-torch"],
        ["convert", SAMPLES / "torch_lstm.pt", "tf/model.ckpt", "-m", "torch-to-tf1"],
        ["convert", SAMPLES / "torch_lstm.pt", "lstm.safetensors"],
    ],
    ids=lambda a: " ".join(str(x).replace(str(SAMPLES), "samples") for x in a),
)
def test_commands_import_no_framework_ml_dtypes_or_h5py(tmp_path: Path, args: list[object]) -> None:
    assert loaded(tmp_path, *args) & HEAVY == set()


@pytest.mark.parametrize(
    "args", [["--help"], ["mappings", "tf1-to-torch"], ["inspect", SAMPLES / "tf1_lstm2"]], ids=str
)
def test_help_and_inspect_of_a_tf_checkpoint_import_no_numpy(tmp_path: Path, args: list[object]) -> None:
    modules = loaded(tmp_path, *args)
    if args[0] == "mappings":  # the rule engine computes with numpy; describing a mapping needs it
        assert "yaml" in modules
        return
    assert {"numpy", "yaml", "rich"} & modules == set()


def test_inspect_of_a_safetensors_file_imports_no_framework(tmp_path: Path, files) -> None:
    assert loaded(tmp_path, "inspect", files["safetensors"]) & HEAVY == set()


def test_ml_dtypes_loads_when_a_bfloat16_tensor_is_converted(tmp_path: Path, files) -> None:
    # The other side of the checks above: the probe does see a module that a command needs.
    assert "ml_dtypes" in loaded(tmp_path, "convert", files["bf16"], "bf16.pt")
    assert "ml_dtypes" not in loaded(tmp_path, "inspect", files["bf16"])


def test_h5py_loads_for_an_hdf5_file_only(tmp_path: Path, files) -> None:
    keras_file = tmp_path / "lstm.h5"
    import ckptmap

    ckptmap.convert(SAMPLES / "torch_lstm.pt", keras_file, mapping="torch-to-keras")
    assert "h5py" in loaded(tmp_path, "inspect", keras_file)
