"""ckptmap's benchmark: inspect and convert multi-GB checkpoints, against the frameworks' own ways and `cp`.

    python bench/run.py [--size-gb 2] [--repeats 3] [--cache warm|cold|both]
                        [--only inspect|convert|scaling] [--threads 1,2,all]

Makes its data with the real frameworks on first use (bench/make_data.py; cached in bench/data/,
which git ignores): a TF1 LSTM language model saved by `tf.compat.v1.train.Saver` (4 x 2048 LSTM,
embedding, softmax, Adam slots), a seq2seq state dict saved by `torch.save` and a stacked LSTM
saved by Keras 3's `save_weights` (`.weights.h5`), each about `--size-gb`, plus a TF1 checkpoint
of 5000 small variables. Then, each tool in its own subprocess:

- inspect: `ckptmap inspect` vs TensorFlow's `inspect_checkpoint` tool vs listing with `torch.load`.
- convert: TF1 -> PyTorch, PyTorch -> TF1, PyTorch -> safetensors, Keras -> PyTorch and one mapped
  HDF5 write (TF1 -> Keras `.h5`): `ckptmap convert` vs `cp + sync` and `cp` of the conversion's
  own output bytes vs the hand-written way (bench/handwritten.py; none for the HDF5 write).
  ckptmap fsyncs what it writes before moving it into place, so its ceiling is the durable copy of
  the same bytes: `cp` then `sync`. The output of an untimed first conversion is kept as cp's
  source, so cp copies exactly the files, and bytes, the conversion writes. The target (issue 12)
  is time(cp + sync) / time(ckptmap) >= 0.8; time(cp) / time(ckptmap) is shown for information.
  Peak RSS is held against the largest tensor (of the source or the output) + 100 MB.
- scaling: each of those conversions with `CKPTMAP_THREADS` = each of `--threads` (default 1, 2
  and all: the CPUs this process may run on; where "all" is 2, it is said so and run once), taking
  turns, warm cache only (a cold read is disk time no thread count changes), and the speedup over
  one thread. CPU s / wall s shows how many cores a conversion kept busy. `--only scaling` runs
  just this, for a machine with many cores.

Every round runs every tool of a table once, in turn (ckptmap, cp + sync, cp, hand-written, ...),
so that whatever else the machine does at the time weighs on all of them alike; the tables give
medians over `--repeats` rounds (at least 7 for inspect) of wall time, CPU time and peak RSS (of
the process and its children, from `wait4`), and are written as Markdown to `--out`
(bench/data/last-run.md), after the machine's description and the version of every installed
package the run used (also printed when the run starts).

Caches: "warm" runs each command once untimed first, so the source files and the tools' own code
are in the page cache. "cold" evicts the files a command reads (the source checkpoint's; cp's
copy of the output) from the page cache before every run (posix_fadvise DONTNEED, which the
kernel may decline for pages in use; not checked); library code stays cached, and on a VM the
host may still cache the disk image, so cold reads are an optimistic stand-in for a cold disk.
Outputs are deleted and dirty pages synced before every run; each run's own writes end in the
page cache, as they do for users.

`--ckptmap-src DIR` runs another checkout's ckptmap (`PYTHONPATH=DIR python -m ckptmap`) next to
this one, for before/after tables; `--ckptmap-only` leaves out the frameworks' tools and the
hand-written paths (cp stays).
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
SPEED_TARGET = 0.8  # issue 12: ckptmap's time at least 0.8x as fast as cp + sync of the same bytes
RSS_SLACK = 100 * MB  # issue 12: peak RSS <= largest tensor + 100 MB
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass
class Tool:
    label: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    output: Path | None = None  # deleted before each run


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
    keras: Path
    many: Path  # prefix

    @staticmethod
    def files(prefix_or_file: Path) -> list[Path]:
        if prefix_or_file.is_file():
            return [prefix_or_file]
        if prefix_or_file.is_dir():
            return sorted(p for p in prefix_or_file.rglob("*") if p.is_file())
        return sorted(prefix_or_file.parent.glob(prefix_or_file.name + ".*"))


def ensure_data(size_gb: float, only: str | None) -> Data:
    """Make the checkpoints this run needs, once each (they are cached in bench/data/)."""
    tag = f"{size_gb:g}gb"
    data = Data(
        BENCH / "data" / f"tf1-{tag}" / "model.ckpt",
        BENCH / "data" / f"torch-{tag}.pt",
        BENCH / "data" / f"keras-{tag}.weights.h5",
        BENCH / "data" / "tf1-many" / "model.ckpt",
    )
    size = ["--size-gb", str(size_gb)]
    jobs = [
        (data.tf1, ["tf1", str(data.tf1), *size], Path(str(data.tf1) + ".index"), True),
        (data.torch, ["torch", str(data.torch), *size], data.torch, True),
        (data.keras, ["keras", str(data.keras), *size], data.keras, only != "inspect"),
        (
            data.many,
            ["tf1-many", str(data.many), "--variables", "5000"],
            Path(str(data.many) + ".index"),
            only in (None, "inspect"),
        ),
    ]
    for target, args, marker, needed in jobs:
        if not needed or marker.exists():
            continue
        print(f"making {target} (once; cached in bench/data/) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(BENCH / "make_data.py"), *args],
            check=True,
            cwd=REPO,
            stdout=sys.stderr,  # its one-line summary; stdout is the report's
            stderr=subprocess.DEVNULL,
        )
    return data


@dataclass
class Plan:
    """What ckptmap's own plan says a conversion moves (bytes)."""

    read: int  # source tensors the conversion reads
    largest: int  # the largest tensor of the source or of the output: the RSS bound's base


def plan_of(src: Path, mapping: str | None) -> Plan:
    """From ckptmap's own plan, computed in a subprocess so this process stays small."""
    code = (
        "import sys, json, ckptmap\n"
        "from ckptmap.pipeline import apply, resolve_mappings\n"
        "ckpt = ckptmap.load(sys.argv[1])\n"
        "out, plan = apply(ckpt, resolve_mappings(sys.argv[2:] or None, {}))\n"
        "used = {s for t in plan.targets for s in t.sources}\n"
        "sizes = [e.nbytes for c in (ckpt, out) for e in c.entries.values()]\n"
        "print(json.dumps([sum(ckpt.entries[n].nbytes for n in used), max(sizes)]))\n"
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
    read, largest = json.loads(out)
    return Plan(read, largest)


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
    cases = [
        (
            f"TF1 checkpoint, {_gb(data.tf1)}",
            data.tf1,
            [Tool("TensorFlow inspect_checkpoint", [*tf_tool, f"--file_name={data.tf1}"], TF_ENV)],
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
            [Tool("TensorFlow inspect_checkpoint", [*tf_tool, f"--file_name={data.many}"], TF_ENV)],
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


@dataclass
class Pair:
    """One conversion the bench times: `ckptmap convert src dst -m mapping`."""

    title: str
    src: Path
    mapping: str | None
    dst: Path  # a file, or a TF prefix whose directory is the output
    hand: str | None = None  # bench/handwritten.py's name for the same conversion, if it has one
    hand_dst: Path | None = None

    def convert_cmd(self, prefix: list[str]) -> list[str]:
        return [
            *prefix,
            "convert",
            str(self.src),
            str(self.dst),
            *(["-m", self.mapping] if self.mapping else []),
        ]


def pairs(data: Data, out: Path) -> list[Pair]:
    """The conversions of issue 12, in its order; the last is the mapped HDF5 write."""
    return [
        Pair("TF1 -> PyTorch", data.tf1, "tf1-to-torch", out / "tf1.pt", "tf1-to-torch", out / "tf1-hand.pt"),
        Pair(
            "PyTorch -> TF1",
            data.torch,
            "torch-to-tf1",
            out / "tf" / "model.ckpt",
            "torch-to-tf1",
            out / "tf-hand" / "model.ckpt",
        ),
        Pair(
            "PyTorch -> safetensors",
            data.torch,
            None,
            out / "torch.safetensors",
            "torch-to-safetensors",
            out / "torch-hand.safetensors",
        ),
        Pair(
            "Keras -> PyTorch",
            data.keras,
            "keras-to-torch",
            out / "keras.pt",
            "keras-to-torch",
            out / "keras-hand.pt",
        ),
        Pair("TF1 -> Keras HDF5", data.tf1, "tf1-to-keras", out / "tf1-keras.h5"),
    ]


def _out(dst: Path) -> Path:
    """What a conversion to `dst` creates, and what is deleted before each run."""
    return dst.parent if dst.suffix == ".ckpt" else dst


@dataclass
class ConvertSection:
    pair: Pair
    cache: str
    plan: Plan
    output_bytes: int
    results: list[Result]

    def result(self, label: str) -> Result | None:
        return next((r for r in self.results if r.tool.label == label), None)


CP_SYNC, CP, HAND = "cp + sync (durable ceiling)", "cp", "hand-written"


def convert_section(data: Data, args: argparse.Namespace) -> list[ConvertSection]:
    out = BENCH / "data" / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    hand = [sys.executable, str(BENCH / "handwritten.py")]
    sections = []
    for pair in pairs(data, out):
        plan = plan_of(pair.src, pair.mapping)
        ours = [
            Tool(label, pair.convert_cmd(cmd), env, _out(pair.dst)) for label, cmd, env in ckptmap_tools(args)
        ]
        reference = keep_output(ours[0], out / "reference")
        copied = Data.files(reference)
        output_bytes = sum(f.stat().st_size for f in copied)
        print(
            f"convert: {pair.title} ({plan.read / MB:.0f} MB of tensors read, {output_bytes / MB:.0f} MB "
            f"written, largest tensor {plan.largest / MB:.0f} MB)",
            file=sys.stderr,
        )
        cp_dst, sources = out / "cp", [str(f) for f in copied]
        tools = [
            ours[0],
            Tool(
                CP_SYNC,
                ["sh", "-c", 'mkdir -p "$0" && cp "$@" "$0" && exec sync "$0"/*', str(cp_dst), *sources],
                {},
                cp_dst,
            ),
            Tool(CP, ["sh", "-c", 'mkdir -p "$0" && exec cp "$@" "$0"', str(cp_dst), *sources], {}, cp_dst),
            *ours[1:],
        ]
        if pair.hand and pair.hand_dst and not args.ckptmap_only:
            cmd = [*hand, pair.hand, str(pair.src), str(pair.hand_dst)]
            tools.append(Tool(HAND, cmd, TF_ENV, _out(pair.hand_dst)))
        for cache in caches(args):
            evict = [*Data.files(pair.src), *copied] if cache == "cold" else []
            results = measure(tools, args.repeats, evict)
            sections.append(ConvertSection(pair, cache, plan, output_bytes, results))
        _remove(reference)
    shutil.rmtree(out, ignore_errors=True)
    return sections


def keep_output(tool: Tool, reference: Path) -> Path:
    """Convert once (untimed) and move the output aside as cp's source: the same files and bytes."""
    assert tool.output is not None
    run_once(tool, [])
    _remove(reference)
    kept = reference if tool.output.is_dir() else reference / tool.output.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    tool.output.rename(kept)
    return kept


def thread_counts(spec: str) -> list[tuple[str, int]]:
    """(label, CKPTMAP_THREADS) for `--threads` (e.g. "1,2,all"), each count once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts: list[tuple[str, int]] = []
    for item in spec.split(","):
        item = item.strip()
        n = cores if item == "all" else int(item)
        label = f"all ({n})" if item == "all" else str(n)
        same = next((k for k, (_, seen) in enumerate(counts) if seen == n), None)
        if same is not None:
            print(f"threads: {item} is {n} on this machine, already in the list; run once", file=sys.stderr)
            if item == "all":
                counts[same] = (f"{n} (all)", n)
            continue
        counts.append((label, n))
    return counts


@dataclass
class ScalingSection:
    pair: Pair
    threads: list[tuple[str, int]]
    results: list[Result]


def scaling_section(data: Data, args: argparse.Namespace) -> list[ScalingSection]:
    """This checkout's ckptmap with each thread count, taking turns; warm cache."""
    out = BENCH / "data" / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    threads = args.thread_counts
    prefix = ckptmap_tools(args)[0][1]
    sections = []
    for pair in pairs(data, out):
        print(f"scaling: {pair.title}", file=sys.stderr)
        tools = [
            Tool(
                f"ckptmap, {label} thread{'s' if n > 1 else ''}",
                pair.convert_cmd(prefix),
                {"CKPTMAP_THREADS": str(n)},
                _out(pair.dst),
            )
            for label, n in threads
        ]
        sections.append(ScalingSection(pair, threads, measure(tools, args.repeats, [])))
    shutil.rmtree(out, ignore_errors=True)
    return sections


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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return [
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- CPU: {cpu}, {os.cpu_count()} cores ({usable} usable by this process); RAM {mem / 2**20:.0f} GB",
        f"- Disk: {mount} ({disk.total / 2**30:.0f} GB, {disk.free / 2**30:.0f} GB free)",
        f"- Kernel: {platform.release()}; Python {platform.python_version()} ({sys.executable})",
        f"- ckptmap {_version('ckptmap')} (git {commit}{' + uncommitted changes' if dirty else ''})",
        f"- Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def packages() -> list[str]:
    """`name==version` of every distribution installed in this interpreter's environment, which
    the tools run with (the same interpreter runs them all)."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower(), f"{name}=={dist.version}")
    return [found[k] for k in sorted(found)]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _mount_of(path: Path) -> str:
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, fstype, *_ = line.split()
        if str(path).startswith(point) and len(point) > len(best[0]):
            best = (point, device, fstype)
    return f"{best[1]} {best[2]} mounted at {best[0]}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(
    header: list[str],
    inspect: list,
    convert: list[ConvertSection],
    scaling: list[ScalingSection],
    args: argparse.Namespace,
) -> str:
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
        lines += render_inspect(inspect)
    if convert:
        lines += render_convert(convert)
    if scaling:
        lines += render_scaling(scaling)
    installed = packages()
    lines += [
        f"## Packages ({len(installed)}, installed in the environment of {sys.executable})",
        "",
        "```",
        *installed,
        "```",
        "",
        f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
    return "\n".join(lines) + "\n"


def render_inspect(inspect: list) -> list[str]:
    lines = ["## inspect", ""]
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
    return lines


def render_convert(convert: list[ConvertSection]) -> list[str]:
    lines = [
        "## convert",
        "",
        f"Targets (issue 12): ckptmap's time at least {SPEED_TARGET}x as fast as `cp + sync` of its own "
        "output bytes (time of cp + sync / time of ckptmap); peak RSS at most the largest tensor "
        f"+ {RSS_SLACK // MB} MB. `cp` alone, which leaves its copy in the page cache, is for "
        "information. ckptmap runs with `CKPTMAP_THREADS` unset: as many threads as the CPUs it may use.",
        "",
        "| conversion | cache | ckptmap s | cp + sync s | cp s | cp + sync / ckptmap | "
        f">= {SPEED_TARGET}? | cp / ckptmap | peak RSS MB | bound MB | holds? | vs hand-written |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for s in convert:
        ours, durable, cp, hand = (s.result(label) for label in ("ckptmap", CP_SYNC, CP, HAND))
        assert ours is not None and durable is not None and cp is not None
        ratio = durable.median_s / ours.median_s
        bound = s.plan.largest + RSS_SLACK
        vs_hand = f"{hand.median_s / ours.median_s:.1f}x" if hand else "-"
        lines.append(
            f"| {s.pair.title} | {s.cache} | {ours.median_s:.2f} | {durable.median_s:.2f} | "
            f"{cp.median_s:.2f} | {ratio:.2f} | {_yes(ratio >= SPEED_TARGET)} | "
            f"{cp.median_s / ours.median_s:.2f} | {ours.median_rss / MB:.0f} | {bound / MB:.0f} | "
            f"{_yes(ours.median_rss <= bound)} | {vs_hand} |"
        )
    lines.append("")
    for s in convert:
        durable, cp = s.result(CP_SYNC), s.result(CP)
        assert durable is not None and cp is not None
        lines += [
            f"### {s.pair.title} ({s.cache} cache)",
            "",
            f"`{' '.join(s.results[0].tool.cmd[3:])}`: reads {s.plan.read / MB:.0f} MB of source tensors, "
            f"writes {s.output_bytes / MB:.0f} MB (what cp copies); largest tensor "
            f"{s.plan.largest / MB:.0f} MB, RSS bound {(s.plan.largest + RSS_SLACK) / MB:.0f} MB.",
            "",
            "| tool | wall s | cp + sync / tool | cp / tool | CPU s | CPU / wall | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s.results:
            lines.append(
                f"| {r.tool.label} | {r.median_s:.2f} | {durable.median_s / r.median_s:.2f} | "
                f"{cp.median_s / r.median_s:.2f} | {r.median_cpu:.2f} | {r.median_cpu / r.median_s:.2f} | "
                f"{r.median_rss / MB:.0f} |"
            )
        lines.append("")
    return lines


def render_scaling(scaling: list[ScalingSection]) -> list[str]:
    threads = scaling[0].threads
    names = [f"{label} thr." for label, _ in threads]
    base = threads[0][0]
    columns = [
        "conversion",
        *(f"{n} s" for n in names),
        *(f"speedup {n}" for n in names[1:]),
        *(f"CPU / wall {n}" for n in names),
        *(f"peak RSS MB {n}" for n in names),
    ]
    lines = [
        "## scaling (warm cache)",
        "",
        "ckptmap with `CKPTMAP_THREADS` set to each count, taking turns. Speedup: time with "
        f"{base} thread{'s' if threads[0][1] > 1 else ''} over time with more; CPU / wall: the cores a "
        "conversion kept busy on average.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
    ]
    for s in scaling:
        first = s.results[0].median_s
        cells = [f"{r.median_s:.2f}" for r in s.results]
        cells += [f"{first / r.median_s:.2f}x" for r in s.results[1:]]
        cells += [f"{r.median_cpu / r.median_s:.2f}" for r in s.results]
        cells += [f"{r.median_rss / MB:.0f}" for r in s.results]
        lines.append(f"| {s.pair.title} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each generated checkpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--only", choices=["inspect", "convert", "scaling"])
    parser.add_argument(
        "--threads",
        default="1,2,all",
        help="CKPTMAP_THREADS values for the scaling part, comma-separated; all = the usable CPUs",
    )
    parser.add_argument("--ckptmap-src", help="another checkout to compare with (PYTHONPATH)")
    parser.add_argument("--ckptmap-src-label", default="baseline")
    parser.add_argument(
        "--ckptmap-only",
        action="store_true",
        help="skip the frameworks' tools and hand-written paths (quick before/after runs)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "data" / "last-run.md")
    args = parser.parse_args()
    header = machine()
    print("\n".join([*header, "- Packages:", *(f"    {p}" for p in packages())]), file=sys.stderr)
    args.thread_counts = thread_counts(args.threads)  # a bad --threads fails now, not after the rest
    data = ensure_data(args.size_gb, args.only)
    inspect = inspect_section(data, args) if args.only in (None, "inspect") else []
    convert = convert_section(data, args) if args.only in (None, "convert") else []
    scaling = scaling_section(data, args) if args.only in (None, "scaling") else []
    report = render(header, inspect, convert, scaling, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
