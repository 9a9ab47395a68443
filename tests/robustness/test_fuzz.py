"""Damaged files of every format either read or fail with a one-line CkptmapError naming the file:
never another exception, never a hang, never memory the file does not account for.

Each example takes a small valid checkpoint written by the real framework (see fuzz_seeds.py),
damages it (bit flips, truncation, insertion, zeroed ranges, swapped chunks, planted numbers such
as 2**63-1 written as little- or big-endian integers or as varints), and hands it to a worker
process (fuzz_worker.py) that runs `ckptmap.load(path)` and reads every tensor. The worker's
address space is capped a few hundred MB above its baseline and its peak RSS is measured per
example, so a reader that allocates what a header claims fails the test instead of the machine;
a read that takes longer than TIMEOUT is killed and reported as a hang.

Examples are derandomized (the same ones on every run) so CI is reproducible; raise
CKPTMAP_FUZZ_EXAMPLES for a longer local campaign with fresh random examples.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import fuzz_seeds  # tests/robustness is on sys.path, as tests/formats is for its modules
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptmap.formats.protowire import encode_varint

WORKER = Path(__file__).with_name("fuzz_worker.py")
TIMEOUT = 10.0  # seconds for one read; the slowest valid seed reads in milliseconds
HEADROOM_MB = 384  # address space the worker may add to what it holds after importing
PEAK_MB = 64  # resident memory one read of a file of a few KB may add
EXAMPLES = int(os.environ.get("CKPTMAP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 110,
    derandomize=not EXAMPLES,
    deadline=timedelta(seconds=TIMEOUT + 20),  # a hang is reported by the worker's timeout first
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Worker:
    """The reading process; restarted after it hangs or dies."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(HEADROOM_MB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        return process

    def read(self, path: Path, *, digest: bool = False) -> dict:
        """The worker's answer for `path`; with `digest`, fingerprints of the tensors it read."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"path": str(path), "digest": digest}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            hung = not ready
            self.stop()
            return {"outcome": "hang" if hung else "died", "message": f"reading {path}"}
        return json.loads(line)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> fuzz_seeds.Targets:
    return fuzz_seeds.build(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


# Numbers that sit at the edges of the fields readers trust: lengths, offsets, counts, dims.
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1,
               2**64 - 1]  # fmt: skip


def _encodings(value: int) -> list[bytes]:
    return [value.to_bytes(8, "little"), value.to_bytes(8, "big"), (value & 0xFFFFFFFF).to_bytes(4, "little"),
            encode_varint(value)]  # fmt: skip


# A mutation is (kind, position, length, payload); positions are taken modulo the current size.
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7), st.just(b"")),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0), st.just(b"")),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.just(0), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("zero"), st.integers(0, 1 << 20), st.integers(1, 256), st.just(b"")),
    st.tuples(
        st.just("swap"),
        st.integers(0, 1 << 20),
        st.integers(1, 64),
        st.integers(0, 1 << 20).map(lambda other: other.to_bytes(4, "little")),  # where the other chunk is
    ),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 20), st.just(0), st.binary(min_size=1, max_size=8)),
    st.tuples(
        st.just("overwrite"),
        st.integers(0, 1 << 20),
        st.just(0),
        st.sampled_from(INTERESTING).flatmap(lambda n: st.sampled_from(_encodings(n))),
    ),
)


def damage(data: bytes, mutations: list[tuple[str, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, position, length, payload in mutations:
        if not out and kind != "insert":
            continue
        at = position % (len(out) + 1 if kind == "insert" else len(out))
        if kind == "flip":
            out[at] ^= 1 << length
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = payload
        elif kind == "zero":
            out[at : at + length] = bytes(len(out[at : at + length]))
        elif kind == "swap":
            other = int.from_bytes(payload, "little") % len(out)
            length = min(length, len(out) - at, len(out) - other)
            a, b = bytes(out[at : at + length]), bytes(out[other : other + length])
            out[other : other + length], out[at : at + length] = a, b
        elif kind == "overwrite":
            out[at : at + len(payload)] = payload[: len(out) - at]
    return bytes(out)


def check(answer: dict, folder: Path, what: str) -> None:
    outcome = answer["outcome"]
    assert outcome in ("ok", "ckptmap"), (
        f"{what}: {outcome} {answer.get('type', '')}: {answer.get('message', '')}\n"
        + answer.get("traceback", "")
    )
    message = answer.get("message", "")
    if outcome == "ckptmap":
        assert "\n" not in message, f"{what}: a message of several lines: {message!r}"
        assert str(folder) in message, f"{what}: the message does not name the file: {message!r}"
    assert answer["measured"], f"{what}: the worker could not measure its peak memory"
    assert answer["peak_kb"] <= PEAK_MB << 10, f"{what}: reading used {answer['peak_kb']} KB ({message})"


@pytest.mark.parametrize("name", fuzz_seeds.NAMES)
@FUZZ
@given(data=st.data())
def test_damaged_files_read_or_fail_with_one_line_naming_the_file(
    targets: dict[str, fuzz_seeds.Target], worker: Worker, tmp_path_factory, name: str, data
) -> None:
    target = targets[name]
    parts = list(target.parts)
    # Damage one part (for resealed targets: one record), once or a few times over.
    index = data.draw(st.integers(0, len(parts) - 1), label="part")
    mutations = data.draw(st.lists(mutation, min_size=1, max_size=3), label="mutations")
    parts[index] = damage(parts[index], mutations)
    folder = tmp_path_factory.mktemp(name)
    try:
        path = target.write(folder, parts)
        check(worker.read(path), folder, f"{name}, part {index}, {mutations}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_every_seed_built_is_fuzzed(targets: fuzz_seeds.Targets) -> None:
    assert sorted(targets) == sorted(
        fuzz_seeds.NAMES
    )  # NAMES parametrizes; a seed not in it is never damaged


@pytest.mark.parametrize("name", fuzz_seeds.NAMES)
def test_undamaged_seeds_read(
    targets: dict[str, fuzz_seeds.Target], worker: Worker, tmp_path: Path, name: str
) -> None:
    """The property above is only worth something if the seeds themselves read."""
    answer = worker.read(targets[name].write(tmp_path, list(targets[name].parts)))
    assert answer["outcome"] == "ok", answer
    assert answer["measured"], "the worker cannot measure peak memory here: the memory check would pass blind"
