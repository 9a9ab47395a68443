"""ONNX and Flax: ckptmap against what a user would do instead, side by side in one run.

    python bench/new_formats.py [--units 1024] [--layers 4] [--repeats 5] [--out FILE.md]

Makes (once, in bench/data/) a stacked LSTM exported by `torch.onnx.export` and the same sizes as a
Flax linen tree saved by `flax.serialization.to_bytes`, then times, each tool in its own process,
warm cache, taking turns (bench/run.py's `measure`):

- inspect: `ckptmap inspect` vs `onnx.load` listing the initializers, and vs
  `flax.serialization.msgpack_restore` listing the leaves;
- convert to PyTorch: `ckptmap convert -m onnx-to-torch` / `-m flax-to-torch` vs a hand-written
  loop with the libraries (onnx.numpy_helper / msgpack_restore, reorder, `torch.save`) vs `cp` and
  `cp` + `sync` of the bytes ckptmap writes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH, CP, CP_SYNC, MB, Tool, machine, measure, packages

DATA = BENCH / "data"
HAND = r"""
import sys, numpy as np, torch
kind, src, dst = sys.argv[1:4]
state = {}
if kind == "onnx":
    import onnx
    from onnx import numpy_helper
    model = onnx.load(src)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    order = [0, 2, 3, 1]  # ONNX i, o, f, c -> PyTorch i, f, g, o
    def blocks(a):
        return np.concatenate([np.split(a, 4)[k] for k in order])
    for k, node in enumerate(nodes):
        w, r, b = (arrays[node.input[j]][0] for j in (1, 2, 3))
        state[f"weight_ih_l{k}"] = torch.from_numpy(blocks(w))
        state[f"weight_hh_l{k}"] = torch.from_numpy(blocks(r))
        state[f"bias_ih_l{k}"] = torch.from_numpy(blocks(b[: len(b) // 2]))
        state[f"bias_hh_l{k}"] = torch.from_numpy(blocks(b[len(b) // 2 :]))
else:
    from flax import serialization
    tree = serialization.msgpack_restore(open(src, "rb").read())["params"]
    for k in range(len(tree)):
        cell = tree[f"RNN_{k}"]["cell"]
        ins, hs = ("ii", "if", "ig", "io"), ("hi", "hf", "hg", "ho")
        state[f"weight_ih_l{k}"] = torch.from_numpy(np.concatenate([cell[g]["kernel"].T for g in ins]))
        state[f"weight_hh_l{k}"] = torch.from_numpy(np.concatenate([cell[g]["kernel"].T for g in hs]))
        state[f"bias_ih_l{k}"] = torch.from_numpy(np.concatenate([cell[g]["bias"] for g in hs]))
        state[f"bias_hh_l{k}"] = torch.zeros_like(state[f"bias_ih_l{k}"])
torch.save(state, dst)
"""
LIST = r"""
import sys
kind, src = sys.argv[1:3]
if kind == "onnx":
    import onnx
    for i in onnx.load(src).graph.initializer:
        print(i.name, list(i.dims))
else:
    from flax import serialization, traverse_util
    tree = serialization.msgpack_restore(open(src, "rb").read())
    for name, leaf in traverse_util.flatten_dict(tree, sep="/").items():
        print(name, leaf.shape)
"""


def make_data(units: int, layers: int) -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    onnx_path, flax_path = DATA / f"lstm{layers}x{units}.onnx", DATA / f"lstm{layers}x{units}.msgpack"
    if not onnx_path.exists():
        code = (
            "import sys, torch, warnings; warnings.simplefilter('ignore');"
            f"m = torch.nn.LSTM({units}, {units}, num_layers={layers}).eval();"
            f"torch.onnx.export(m, (torch.randn(2, 1, {units}),), sys.argv[1], dynamo=False)"
        )
        subprocess.run([sys.executable, "-c", code, str(onnx_path)], check=True)
    if not flax_path.exists():
        tmp = DATA / "tmp.pt"
        convert = [sys.executable, "-m", "ckptmap", "convert", "--overwrite"]
        subprocess.run(
            [*convert, str(onnx_path), str(tmp), "-m", "onnx-to-torch"], check=True, stdout=subprocess.DEVNULL
        )
        # One nn.RNN(LSTMCell) per layer, `params/RNN_<k>/cell`, as torch-to-flax names a stack.
        subprocess.run(
            [*convert, str(tmp), str(flax_path), "-m", "torch-to-flax"], check=True, stdout=subprocess.DEVNULL
        )
        tmp.unlink()
    return onnx_path, flax_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DATA / "new-formats.md")
    args = parser.parse_args()
    onnx_path, flax_path = make_data(args.units, args.layers)
    ckptmap = [sys.executable, "-m", "ckptmap"]
    py = sys.executable
    lines = ["# ckptmap benchmark: ONNX and Flax", "", *machine(), ""]
    for kind, src, mapping in (("onnx", onnx_path, "onnx-to-torch"), ("flax", flax_path, "flax-to-torch")):
        size = src.stat().st_size / MB
        print(f"inspect {src.name}", file=sys.stderr)
        results = measure(
            [Tool("ckptmap inspect", [*ckptmap, "inspect", str(src)]),
             Tool(f"{kind} library: load + list", [py, "-c", LIST, kind, str(src)])],
            max(args.repeats, 7), [],
        )  # fmt: skip
        lines += _table(f"inspect {src.name} ({size:.0f} MB)", results)
        out = DATA / f"{kind}-out.pt"
        ref = DATA / f"{kind}-ref.pt"
        subprocess.run([*ckptmap, "convert", str(src), str(ref), "-m", mapping, "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        copy = DATA / f"{kind}-copy.pt"
        print(f"convert {src.name}", file=sys.stderr)
        results = measure(
            [Tool("ckptmap convert", [*ckptmap, "convert", str(src), str(out), "-m", mapping, "--overwrite"],
                  output=out),
             Tool("hand-written (library + torch.save)", [py, "-c", HAND, kind, str(src), str(out)],
                  output=out),
             Tool(CP_SYNC, ["sh", "-c", f'cp "{ref}" "{copy}" && sync'], output=copy),
             Tool(CP, ["cp", str(ref), str(copy)], output=copy)],
            args.repeats, [],
        )  # fmt: skip
        lines += _table(f"{src.name} -> PyTorch ({ref.stat().st_size / MB:.0f} MB written)", results)
        ref.unlink()
    lines += ["## Packages", "", "```", *packages(), "```", ""]
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())


def _table(title: str, results: list) -> list[str]:
    first = results[0]
    lines = [
        f"## {title}",
        "",
        "| tool | wall s | wall / ckptmap's | CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.tool.label} | {r.median_s:.2f} | {r.median_s / first.median_s:.2f}x | "
            f"{r.median_cpu:.2f} | {r.median_rss / MB:.0f} |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    shutil.which("cp") or sys.exit("cp is needed")
    main()
