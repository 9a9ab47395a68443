"""ckptmap's benchmark: inspect and convert multi-GB checkpoints, against the frameworks' own ways and `cp`.

    python bench/run.py [--size-gb 2] [--repeats 3] [--cache warm|cold|both] [--only inspect|convert]

Makes its data with the real frameworks on first use (bench/make_data.py; cached in bench/data/,
which git ignores): a TF1 LSTM language model saved by `tf.compat.v1.train.Saver` (4 x 2048 LSTM,
embedding, softmax, Adam slots) and a seq2seq state dict saved by `torch.save`, each about
`--size-gb`, plus a TF1 checkpoint of 5000 small variables. Then, each tool in its own subprocess:

- inspect: `ckptmap inspect` vs TensorFlow's `inspect_checkpoint` tool vs listing with `torch.load`;
- convert: TF1 -> PyTorch, PyTorch -> safetensors, PyTorch -> TF1: `ckptmap convert` vs the
  hand-written way (bench/handwritten.py) vs `cp` of the source files (the ceiling).

It reports medians over `--repeats` runs (at least 7 for inspect) of wall time, throughput (MB of
source tensors the conversion moves, per second; for `cp`, MB copied per second), that throughput
against cp's, the time cp takes over the tool's (the same checkpoint, whatever part of it the
conversion keeps) and peak RSS (of the process and its children, from `wait4`), and writes the
tables as Markdown to `--out` (bench/data/last-run.md). ckptmap fsyncs what it writes before
moving it into place, and cp does not, so "cp + sync" is there too: copying with the same
durability.

Caches: "warm" runs each command once untimed first, so the source files and the tools' own code
are in the page cache. "cold" evicts the source checkpoint's files from the page cache before every
run (posix_fadvise DONTNEED, which the kernel may decline for pages in use; not checked); library code
stays cached, and on a VM the host may still cache the disk image, so cold reads are an optimistic
stand-in for a cold disk. Outputs are deleted and dirty pages synced before every run; each run's
own writes end in the page cache, as they do for users.

`--ckptmap-src DIR` runs another checkout's ckptmap (`PYTHONPATH=DIR python -m ckptmap`) next to
this one, for before/after tables.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MB = 2**20
INSPECT_REPEATS = 7  # runs of a fraction of a second vary by tens of percent on a shared VM


@dataclass
class Tool:
    label: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    output: Path | None = None  # deleted before each run
    moved: int = 0  # bytes of source data the command moves (throughput = moved / seconds)


@dataclass
class Result:
    tool: Tool
    seconds: list[float]
    rss: list[int]  # bytes
    cpu: list[float]  # user + system seconds

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    @property
    def median_rss(self) -> float:
        return statistics.median(self.rss)


# --- running one command -------------------------------------------------------------------------


def run_once(tool: Tool, evict: list[Path]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds of one run of `tool`, in its own process tree."""
    if tool.output is not None:
        _remove(tool.output)
    for path in evict:
        _evict(path)
    os.sync()  # earlier runs' dirty pages are not flushed on this run's clock
    env = {**os.environ, **tool.env}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # installed packages have .pyc files; so do the tools here
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        # From a neutral directory, so `python -m ckptmap` cannot pick up the checkout it runs in.
        proc = subprocess.Popen(tool.cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=BENCH / "data")
        # wait4 gives this child's own rusage; ru_maxrss covers it and its waited-for children.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{tool.label} failed (exit {proc.returncode}): {' '.join(tool.cmd)}\n{tail}")
    return seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def measure(tools: list[Tool], repeats: int, evict: list[Path]) -> list[Result]:
    """Each tool once untimed (warm-up), then `repeats` rounds of every tool in turn, so that
    whatever else the machine does at the time weighs on all of them alike."""
    for tool in tools:
        run_once(tool, [])
    results = [Result(tool, [], [], []) for tool in tools]
    for _ in range(repeats):
        for result in results:
            seconds, rss, cpu = run_once(result.tool, evict)
            result.seconds.append(seconds)
            result.rss.append(rss)
            result.cpu.append(cpu)
    for result in results:
        if result.tool.output is not None:
            _remove(result.tool.output)
        print(
            f"  {result.tool.label:<40} {result.median_s:7.2f} s (runs {_runs(result.seconds)}), "
            f"{result.median_cpu:6.2f} s CPU, {result.median_rss / MB:6.0f} MB",
            file=sys.stderr,
        )
    return results


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _evict(path: Path) -> None:
    """Drop a file's pages from the page cache (clean pages only, which is all a source has)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- data ----------------------------------------------------------------------------------------


@dataclass
class Data:
    tf1: Path  # prefix
    torch: Path
    many: Path  # prefix

    @staticmethod
    def files(prefix_or_file: Path) -> list[Path]:
        if prefix_or_file.suffix == ".pt":
            return [prefix_or_file]
        return sorted(prefix_or_file.parent.glob(prefix_or_file.name + ".*"))


def ensure_data(size_gb: float) -> Data:
    tag = f"{size_gb:g}gb"
    data = Data(
        BENCH / "data" / f"tf1-{tag}" / "model.ckpt",
        BENCH / "data" / f"torch-{tag}.pt",
        BENCH / "data" / "tf1-many" / "model.ckpt",
    )
    jobs = [
        (data.tf1, ["tf1", str(data.tf1), "--size-gb", str(size_gb)], Path(str(data.tf1) + ".index")),
        (data.torch, ["torch", str(data.torch), "--size-gb", str(size_gb)], data.torch),
        (data.many, ["tf1-many", str(data.many), "--variables", "5000"], Path(str(data.many) + ".index")),
    ]
    for target, args, marker in jobs:
        if marker.exists():
            continue
        print(f"making {target} (once; cached in bench/data/) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(BENCH / "make_data.py"), *args],
            check=True,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
    return data


def source_bytes(src: Path, mapping: str | None) -> tuple[int, int, int]:
    """(bytes of source tensors a conversion reads, total tensor bytes, largest tensor), from
    ckptmap's own plan (computed in a subprocess so this process stays small)."""
    code = (
        "import sys, json, ckptmap\n"
        "from ckptmap.api import apply, resolve_mappings\n"
        "ckpt = ckptmap.load(sys.argv[1])\n"
        "ms = resolve_mappings(sys.argv[2:] or None, {})\n"
        "_, plan = apply(ckpt, ms)\n"
        "used = {s for t in plan.targets for s in t.sources}\n"
        "sizes = [e.nbytes for e in ckpt.entries.values()]\n"
        "print(json.dumps([sum(ckpt.entries[n].nbytes for n in used), sum(sizes), max(sizes)]))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-P", "-c", code, str(src), *([mapping] if mapping else [])],
            check=True,
            capture_output=True,
            text=True,
            cwd=BENCH / "data",
        ).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"could not plan {src}: {e.stderr[-1000:]}") from None
    moved, total, largest = json.loads(out)
    return moved, total, largest


# --- the comparisons -----------------------------------------------------------------------------


def ckptmap_tools(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, command prefix, env) for this checkout's ckptmap and, with --ckptmap-src, another's."""
    tools = [("ckptmap", [sys.executable, "-P", "-m", "ckptmap"], {})]
    if args.ckptmap_src:
        src = str(Path(args.ckptmap_src).resolve())
        tools.append(
            (
                f"ckptmap ({args.ckptmap_src_label})",
                [sys.executable, "-P", "-m", "ckptmap"],
                {"PYTHONPATH": src},
            )
        )
    return tools


def inspect_section(data: Data, args: argparse.Namespace) -> list[tuple[str, str, list[Result]]]:
    hand = [sys.executable, str(BENCH / "handwritten.py")]
    tf_tool = [sys.executable, "-m", "tensorflow.python.tools.inspect_checkpoint"]
    tf_env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    cases = [
        (
            f"TF1 checkpoint, {_gb(data.tf1)}",
            data.tf1,
            [Tool("TensorFlow inspect_checkpoint", [*tf_tool, f"--file_name={data.tf1}"], tf_env)],
        ),
        (
            f"PyTorch file, {_gb(data.torch)}",
            data.torch,
            [
                Tool("torch.load + list", [*hand, "list-torch", str(data.torch)]),
                Tool("torch.load(mmap=True) + list", [*hand, "list-torch", str(data.torch), "--mmap"]),
            ],
        ),
        (
            "TF1 checkpoint, 5000 variables",
            data.many,
            [Tool("TensorFlow inspect_checkpoint", [*tf_tool, f"--file_name={data.many}"], tf_env)],
        ),
    ]
    sections = []
    for title, src, others in cases:
        print(f"inspect: {title}", file=sys.stderr)
        ours = [Tool(label, [*cmd, "inspect", str(src)], env) for label, cmd, env in ckptmap_tools(args)]
        for cache in caches(args):
            evict = Data.files(src) if cache == "cold" else []
            tools = [*ours, *(others if not args.ckptmap_only else [])]
            results = measure(tools, max(args.repeats, INSPECT_REPEATS), evict)
            sections.append((f"{title} ({cache} cache)", src.name, results))
    return sections


def convert_section(data: Data, args: argparse.Namespace) -> list[tuple[str, int, list[Result]]]:
    out = BENCH / "data" / "out"
    out.mkdir(exist_ok=True)
    hand = [sys.executable, str(BENCH / "handwritten.py")]
    cases = [
        ("TF1 -> PyTorch", data.tf1, "tf1-to-torch", out / "tf1.pt", "tf1-to-torch", out / "tf1-hand.pt"),
        (
            "PyTorch -> safetensors",
            data.torch,
            None,
            out / "torch.safetensors",
            "torch-to-safetensors",
            out / "torch-hand.safetensors",
        ),
        (
            "PyTorch -> TF1",
            data.torch,
            "torch-to-tf1",
            out / "tf" / "model.ckpt",
            "torch-to-tf1",
            out / "tf-hand" / "model.ckpt",
        ),
    ]
    sections = []
    for title, src, mapping, dst, hand_kind, hand_dst in cases:
        moved, _, largest = source_bytes(src, mapping)
        files = Data.files(src)
        copied = sum(f.stat().st_size for f in files)
        print(
            f"convert: {title} ({moved / MB:.0f} MB of tensors, largest {largest / MB:.0f} MB)",
            file=sys.stderr,
        )
        m = ["-m", mapping] if mapping else []
        tools = [
            Tool(label, [*cmd, "convert", str(src), str(dst), *m], env, _out(dst), moved)
            for label, cmd, env in ckptmap_tools(args)
        ]
        hand_dst.parent.mkdir(exist_ok=True)
        if not args.ckptmap_only:
            tools.append(
                Tool(
                    "hand-written",
                    [*hand, hand_kind, str(src), str(hand_dst)],
                    {"TF_CPP_MIN_LOG_LEVEL": "2"},
                    _out(hand_dst),
                    moved,
                )
            )
        cp_dst, sources = out / "cp", [str(f) for f in files]
        tools.append(  # ckptmap fsyncs its output before moving it into place; cp alone does not
            Tool(
                "cp + sync (durable ceiling)",
                ["sh", "-c", 'mkdir -p "$0" && cp "$@" "$0" && exec sync "$0"/*', str(cp_dst), *sources],
                {},
                cp_dst,
                copied,
            )
        )
        tools.append(
            Tool(
                "cp (ceiling)",
                ["sh", "-c", 'mkdir -p "$0" && exec cp "$@" "$0"', str(cp_dst), *sources],
                {},
                cp_dst,
                copied,
            )
        )
        for cache in caches(args):
            evict = files if cache == "cold" else []
            results = measure(tools, args.repeats, evict)
            sections.append((f"{title} ({cache} cache)", largest, results))
    shutil.rmtree(out, ignore_errors=True)
    return sections


def _out(dst: Path) -> Path:
    return dst.parent if dst.suffix == ".ckpt" else dst


def caches(args: argparse.Namespace) -> list[str]:
    return ["warm", "cold"] if args.cache == "both" else [args.cache]


def _gb(src: Path) -> str:
    return f"{sum(f.stat().st_size for f in Data.files(src)) / 2**30:.2f} GB"


# --- report --------------------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    disk = shutil.disk_usage(BENCH)
    mount = _mount_of(BENCH)
    versions = {}
    for dist in ("tensorflow", "torch", "safetensors", "numpy", "typer", "isal", "ckptmap"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return [
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {mem / 2**20:.0f} GB",
        f"- Disk: {mount} ({disk.total / 2**30:.0f} GB, {disk.free / 2**30:.0f} GB free)",
        f"- Kernel: {platform.release()}; Python {platform.python_version()}",
        "- "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f" (git {commit}{' + uncommitted changes' if dirty else ''})",
        f"- Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def _mount_of(path: Path) -> str:
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, fstype, *_ = line.split()
        if str(path).startswith(point) and len(point) > len(best[0]):
            best = (point, device, fstype)
    return f"{best[1]} {best[2]} mounted at {best[0]}"


def render(header: list[str], inspect: list, convert: list, args: argparse.Namespace) -> str:
    lines = [
        "# ckptmap benchmark run",
        "",
        *header,
        "",
        f"Medians of {args.repeats} runs ({max(args.repeats, INSPECT_REPEATS)} for inspect), tools taking "
        "turns; each in its own process; "
        "peak RSS from wait4 (process and children).",
        "",
    ]
    if inspect:
        lines += ["## inspect", ""]
        for title, _, results in inspect:
            # The framework's own tool (the first that is not ckptmap) is what inspect is compared with.
            reference = next((r for r in results if not r.tool.label.startswith("ckptmap")), results[0])
            lines += [
                f"### {title}",
                "",
                "| tool | wall s | vs " + reference.tool.label + " | CPU s | peak RSS MB |",
                "|---|---:|---:|---:|---:|",
            ]
            for r in results:
                speedup = reference.median_s / r.median_s
                lines.append(
                    f"| {r.tool.label} | {r.median_s:.2f} | {speedup:.1f}x | {r.median_cpu:.2f} | "
                    f"{r.median_rss / MB:.0f} |"
                )
            lines.append("")
    if convert:
        lines += ["## convert", ""]
        for title, largest, results in convert:
            cp = next(r for r in results if r.tool.label == "cp (ceiling)")
            cp_rate = cp.tool.moved / cp.median_s
            lines += [
                f"### {title}",
                "",
                f"Largest tensor {largest / MB:.0f} MB; "
                f"RSS bound (largest + 200 MB) {largest / MB + 200:.0f} MB.",
                "",
                "| tool | wall s | data MB | MB/s | MB/s vs cp | time vs cp | CPU s | peak RSS MB |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in results:
                rate = r.tool.moved / r.median_s
                lines.append(
                    f"| {r.tool.label} | {r.median_s:.2f} | {r.tool.moved / MB:.0f} | {rate / MB:.0f} | "
                    f"{rate / cp_rate:.2f} | {cp.median_s / r.median_s:.2f} | {r.median_cpu:.2f} | "
                    f"{r.median_rss / MB:.0f} |"
                )
            lines.append("")
    lines.append(f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each generated checkpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--only", choices=["inspect", "convert"])
    parser.add_argument("--ckptmap-src", help="another checkout to compare with (PYTHONPATH)")
    parser.add_argument("--ckptmap-src-label", default="baseline")
    parser.add_argument(
        "--ckptmap-only",
        action="store_true",
        help="skip the frameworks' tools and hand-written paths (quick before/after runs)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "data" / "last-run.md")
    args = parser.parse_args()
    data = ensure_data(args.size_gb)
    header = machine()
    inspect = inspect_section(data, args) if args.only in (None, "inspect") else []
    convert = convert_section(data, args) if args.only in (None, "convert") else []
    report = render(header, inspect, convert, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
