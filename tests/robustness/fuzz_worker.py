"""A process that reads checkpoints for test_fuzz.py, where a runaway reader cannot take the test
run down: its address space is capped (RLIMIT_AS, a few hundred MB above what it needs after
importing), and the test kills it when a read takes too long.

Protocol: one JSON request per line on stdin, `{"path": ..., "digest": bool}`; one JSON answer per
line on stdout: `{"outcome": "ok" | "ckptmap" | "other", "type", "message", "traceback", "measured",
"peak_kb"}`, where "ckptmap" means a CkptmapError and "other" anything else (MemoryError
included), and `peak_kb` is how much the peak resident memory grew while reading, when `measured`.
With "digest", an "ok" answer also holds `tensors`: name -> `fingerprint` of what was read, so a
test can check the values of a file that is still valid without shipping the arrays back.

Run as `python fuzz_worker.py HEADROOM_MB`; it prints "ready" once the limit is set.
"""

from __future__ import annotations

import gc
import hashlib
import json
import resource
import sys
import traceback
from pathlib import Path

import h5py  # noqa: F401 - imported before the limit, as every reader needs it eventually
import numpy as np

import ckptmap
from ckptmap.errors import CkptmapError
from ckptmap.formats import registry

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def fingerprint(array: np.ndarray) -> list:
    """[dtype, shape, sha256 of the C-order bytes]: equal for equal arrays, small in JSON."""
    if array.dtype == object:  # strings: hash their reprs, in order
        raw = repr(array.reshape(-1).tolist()).encode()
    else:
        raw = np.ascontiguousarray(array).tobytes()
    return [str(array.dtype), list(array.shape), hashlib.sha256(raw).hexdigest()]


def read_everything(path: str, digest: bool = False) -> dict[str, list]:
    ckpt = ckptmap.load(path)
    seen = {}
    for name in ckpt:
        array = ckpt[name]
        if digest:
            seen[name] = fingerprint(np.asarray(array))
    return seen


def main() -> None:
    for spec in registry.FORMATS:  # import every reader before the address space is capped
        spec.load()
    headroom = int(sys.argv[1]) << 20
    size_kb = _status_kb("VmSize")
    if size_kb is None:  # the memory cap is half of what the fuzz test checks: never run without it
        sys.exit("fuzz_worker: no VmSize in /proc/self/status; cannot cap the address space")
    limit = size_kb * 1024 + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        measured = _reset_peak()
        before = _status_kb("VmHWM") if measured else None
        answer: dict[str, object]
        try:
            tensors = read_everything(request["path"], bool(request.get("digest")))
            answer = {"outcome": "ok", "tensors": tensors}
        except CkptmapError as e:
            answer = {"outcome": "ckptmap", "type": type(e).__name__, "message": str(e)}
        except BaseException as e:  # the point is to report anything else, MemoryError included
            answer = {
                "outcome": "other",
                "type": type(e).__name__,
                "message": str(e)[:500],
                "traceback": traceback.format_exc()[-3000:],
            }
        gc.collect()  # HDF5 shares an open file by inode: close it before the next case
        after = _status_kb("VmHWM") if measured else None
        answer["measured"] = before is not None and after is not None
        answer["peak_kb"] = after - before if answer["measured"] else 0
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
