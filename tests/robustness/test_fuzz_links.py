"""Links and special files wherever ckptmap takes a path: a source checkpoint, a mapping file, a
batch manifest, what its globs match, and batch's lock and state files.

Hypothesis builds small trees where each of these is a regular file or one of the shapes of
damage: a FIFO (an open blocks), a link to one or a chain of links to one, a device, a socket, a
broken link, a link loop, a hard link, a directory named like the file, a link to a directory,
and a `**` tree holding a link to its parent. A worker process (WORKER below) loads the
checkpoint and reads every tensor, loads the mapping, loads the manifest, and opens its state and
lock; every outcome must be success or one CkptmapError line, within TIMEOUT seconds each.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
TORCH = SAMPLES / "torch_lstm.pt"
TIMEOUT = 10.0  # seconds per request; each takes milliseconds when nothing blocks
EXAMPLES = int(os.environ.get("CKPTMAP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    derandomize=not EXAMPLES,
    deadline=timedelta(seconds=4 * TIMEOUT + 20),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")

# One JSON request per line: {"op": "load" | "mapping" | "manifest" | "state", "path": ...}; one answer per
# line: {"outcome": "ok" | "ckptmap" | "other", "message": ...}.
WORKER = """
import json, sys, traceback
from pathlib import Path
import ckptmap
from ckptmap.batch import manifest, state
from ckptmap.errors import CkptmapError

def serve(op, path):
    if op == "load":
        ckpt = ckptmap.load(path)
        for name in ckpt:
            ckpt[name]
    elif op == "mapping":
        ckptmap.mapping(path)
    elif op == "manifest":
        manifest.load(path)
    else:  # what a batch does next with the manifest's path: its state, then its lock
        state.State.load(Path(path))
        with state.exclusive(Path(path)):
            pass

print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    try:
        serve(request["op"], request["path"])
        answer = {"outcome": "ok"}
    except CkptmapError as e:
        answer = {"outcome": "ckptmap", "message": str(e)}
    except BaseException as e:
        answer = {"outcome": "other", "message": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
"""


class Worker:
    """The worker process; restarted after it hangs."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def ask(self, op: str, path: Path) -> dict[str, str]:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, "path": str(path)}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        if not ready:
            self.close()
            return {"outcome": "hang", "message": f"{op} {path}: no answer in {TIMEOUT} s"}
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


SHAPES = (
    "regular",
    "fifo",
    "link to fifo",
    "links to fifo",
    "device",
    "socket",
    "broken link",
    "link loop",
    "hard link",
    "directory",
    "link to directory",
)


def make(path: Path, shape: str, content: bytes, spare: Path) -> None:
    """`path` as `shape`; `spare` is a directory outside the tree for link targets."""
    if shape == "regular":
        path.write_bytes(content)
    elif shape == "fifo":
        os.mkfifo(path)
    elif shape in ("link to fifo", "links to fifo"):
        target = spare / f"pipe-{path.name}"
        if not target.exists():
            os.mkfifo(target)
        if shape == "links to fifo":
            os.symlink(target, spare / f"via-{path.name}")
            target = spare / f"via-{path.name}"
        os.symlink(target, path)
    elif shape == "device":
        os.symlink("/dev/zero", path)
    elif shape == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif shape == "broken link":
        os.symlink(spare / "gone", path)
    elif shape == "link loop":
        os.symlink(path.name, path)
    elif shape == "hard link":
        original = spare / f"original-{path.name}"
        original.write_bytes(content)
        os.link(original, path)
    elif shape == "directory":  # named like a file; holds a checkpoint, so it may be one
        path.mkdir()
        shutil.copy(TORCH, path / "inside.pt")
    else:  # link to directory
        target = spare / f"dir-{path.name}"
        target.mkdir()
        shutil.copy(TORCH, target / "inside.pt")
        os.symlink(target, path)


MANIFEST = b"""\
defaults:
  mapping: map.yaml
jobs:
  - {src: 'runs/**/*.pt', dst: 'out/{dir}/{stem}.safetensors'}
"""
# Half of them regular, so that a manifest often gets as far as its globs' matches.
shape = st.one_of(st.just("regular"), st.sampled_from(SHAPES))
state_shape = st.sampled_from(("absent", "damaged", *SHAPES))


@FUZZ
@given(
    source=shape,
    mapping=shape,
    manifest=shape,
    matches=st.lists(shape, min_size=1, max_size=4),
    loop=st.booleans(),
    state=state_shape,
    lock=state_shape,
)
def test_links_and_special_files_read_or_fail_in_one_line_in_time(
    worker, source, mapping, manifest, matches, loop, state, lock
):
    with tempfile.TemporaryDirectory() as folder:
        root, spare = Path(folder) / "tree", Path(folder) / "spare"
        (root / "runs" / "sub").mkdir(parents=True)
        spare.mkdir()
        checkpoint = TORCH.read_bytes()
        make(root / "model.pt", source, checkpoint, spare)
        make(root / "map.yaml", mapping, b"rules:\n  - rename: {'^old/': 'new/'}\n", spare)
        make(root / "m.yaml", manifest, MANIFEST, spare)
        for i, match in enumerate(matches):
            make(root / "runs" / ("sub" if i % 2 else "") / f"c{i}.pt", match, checkpoint, spare)
        if loop:  # `**` must not walk runs/sub/up/sub/up/...
            os.symlink("..", root / "runs" / "sub" / "up")
        for name, how in (("m.yaml.state.json", state), ("m.yaml.lock", lock)):
            if how != "absent":
                content = b'{"version": 1, "outputs": {"x": [' if how == "damaged" else b""
                make(root / name, "regular" if how == "damaged" else how, content, spare)
        for op, path in (
            ("load", root / "model.pt"),
            ("mapping", root / "map.yaml"),
            ("manifest", root / "m.yaml"),
            ("state", root / "m.yaml"),
        ):
            answer = worker.ask(op, path)
            assert answer["outcome"] in ("ok", "ckptmap"), answer["message"]
            if answer["outcome"] == "ckptmap":
                message = answer["message"]
                assert "\n" not in message and str(root) in message, message
