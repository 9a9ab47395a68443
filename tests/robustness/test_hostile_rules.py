"""Hostile mappings (issue 12, part 3): sizes, regexes and expressions a mapping file or a crafted
checkpoint uses to make ckptmap fill a disk, exhaust memory, or run for minutes.

Each runs `ckptmap convert` in a process of its own under a timeout, an address-space limit and a
file-size limit, so that a regression fails the test instead of the machine: exit 2, one `Error:`
line naming the mapping file (where the fault is) and no traceback, "Internal error" or output.
Before the fix these hung (regexes), wrote until the limit (zeros, growth), or crashed with an
internal error (RecursionError, MemoryError, ZeroDivisionError, a 5000-digit literal).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptmap.rules import regexes

MEMORY = 1 << 30  # address space: a few hundred MB of work above the interpreter and numpy
FILE_SIZE = 64 << 20  # no output file may grow past this (the old code filled the disk)
TIMEOUT = 30  # seconds; the fixed code answers each case in about one


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))

    return subprocess.run(
        [sys.executable, "-m", "ckptmap", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=limits,
    )


def refused(tmp_path: Path, mapping: str, tensors: dict[str, np.ndarray], *extra: object) -> str:
    """Convert a safetensors file of `tensors` with the mapping text; it must be refused with one
    line naming the mapping file, and write nothing. Returns that line."""
    src, spec, out = tmp_path / "in.safetensors", tmp_path / "m.yaml", tmp_path / "out"
    save_file(tensors, str(src))
    spec.write_text(mapping)
    done = cli("convert", src, out / "x.safetensors", "-m", spec, *extra)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr[-2000:]
    assert "Internal error" not in done.stderr and not done.stdout
    assert "m.yaml" in lines[0], lines[0]
    assert not out.exists() or not list(out.iterdir())
    return lines[0]


def make(expr: str, target: str = "y") -> str:
    """A mapping whose one rule turns tensor `w` into `target` by `expr`."""
    return f"rules:\n  - match: w\n    to: {{'{target}': '{expr}'}}\n"


W = {"w": np.arange(8, dtype=np.float32)}


# ------------------------------------------------------------------- sizes a mapping makes (case 1)


@pytest.mark.parametrize(
    "expr",
    [
        "zeros([1e21])",  # a float that is a whole number, past int64
        "zeros(1000000000000)",  # 4 TB of float32: once written to the disk block by block
        "zeros([65536, 65536, 65536])",  # 1 PB
        "zeros([9223372036854775807, 4])",  # a product that overflows int64
        # Refused before the fix too; pinned so the new size checks keep them one line:
        "zeros([-3])",
        "zeros([1.5])",
        "zeros([True])",
        "zeros([1e308 * 10])",  # inf
        "cat(src | reshape([-1]), zeros([300000000]))",  # 1.2 GB of zeros beside 32 bytes
    ],
)
def test_a_size_a_mapping_cannot_hold_is_refused(tmp_path: Path, expr: str) -> None:
    refused(tmp_path, make(expr), W)


def test_a_reshape_whose_int64_product_wraps_to_zero_is_refused(tmp_path: Path) -> None:
    # 2**32 * 2**32 is 0 in int64, as many elements as the empty source: the old check passed it.
    line = refused(tmp_path, make("src | reshape([4294967296, 4294967296])"), {"w": np.zeros(0, np.float32)})
    assert "reshape" in line


def test_many_targets_of_zeros_are_refused_together(tmp_path: Path) -> None:
    # Each 256 MiB target is under the allowance; five of them are over it.
    targets = ", ".join(f"'y{i}': 'zeros([67108864])'" for i in range(5))
    line = refused(tmp_path, f"rules:\n  - match: w\n    to: {{'w': src, {targets}}}\n", W)
    assert "more than their sources" in line


def test_a_cat_of_a_source_with_itself_cannot_grow_past_the_allowance(tmp_path: Path) -> None:
    big = {"w": np.zeros(1 << 22, dtype=np.float32)}  # 16 MiB, 70 times: 1.1 GiB
    line = refused(tmp_path, make("cat(" + ", ".join(["src"] * 70) + ")"), big)
    assert "bytes" in line


# -------------------------------------------------------------------------------- regexes (case 2)


@pytest.mark.parametrize("pattern", ["(a+)+$", "(.*)*x", "(.*a){20}", "(a|a)*b", "(a?){30}a{30}"])
def test_a_regex_that_backtracks_exponentially_is_refused_when_it_loads(tmp_path: Path, pattern: str) -> None:
    # The checkpoint names the attack: `re` takes 2^30 steps on these against 30 a's and a '!'.
    names = {"a" * 30 + "!": np.zeros(1, np.float32), "w": np.zeros(1, np.float32)}
    mapping = f"rules:\n  - match: '{pattern}'\n    to: x\n"
    line = refused(tmp_path, mapping, names)
    assert "m.yaml:2" in line and "backtrack" in line, line


def test_a_rename_regex_that_backtracks_is_refused(tmp_path: Path) -> None:
    names = {"a" * 30 + "!": np.zeros(1, np.float32)}
    line = refused(tmp_path, "rules:\n  - rename: {'(a+)+!$': b}\n", names)
    assert "m.yaml:2" in line and "backtrack" in line, line


def test_a_polynomial_regex_refuses_a_name_too_long_for_it(tmp_path: Path) -> None:
    # `.*.*.*x` is fine on real names; on 5000 a's `re` takes ~2e10 steps (minutes).
    names = {"a" * 5000: np.zeros(1, np.float32)}
    line = refused(tmp_path, "rules:\n  - match: '.*.*.*x'\n    to: y\n", names)
    assert "5000 characters is too long" in line and "m.yaml:2" in line, line


def test_a_name_of_many_slashes_is_refused_for_a_chain_of_dot_stars_that_loads(tmp_path: Path) -> None:
    # `(.*)/(.*)/(.*)/(.*)/k` loads (real names have a few slashes: ~s^3 * n steps on s of them);
    # on 3000 slashes `re` would try ~3000^4 ways (hours): the bound for this very name refuses it.
    names = {"/" * 3000: np.zeros(1, np.float32)}
    line = refused(tmp_path, "rules:\n  - match: '(.*)/(.*)/(.*)/(.*)/k'\n    to: y\n", names)
    assert "3000 characters is too long" in line and "m.yaml:2" in line, line


def test_regex_matching_of_one_run_stops_at_its_deadline() -> None:
    # Many names each just under the bound: the time the run spends matching ends them.
    pattern = regexes.compile(".*.*x")
    budget = regexes.Budget(seconds=-1)  # already spent
    with pytest.raises(regexes.NameTooLong, match="took over"):
        pattern.fullmatch("a" * 10, budget)


def test_patterns_of_the_built_in_mappings_and_common_rules_are_accepted() -> None:
    for text in [r"(?P<p>.*)/lstm_cell/kernel", r"(?P<pre>.*)q_(?P<k>\d+)(?P<rev>_r)?", r"^lstm_1\.(\w+)_l0"]:
        assert regexes.compile(text).max_chars >= 1000
    legacy = r"(^|/)MultiRNNCell/Cell(\d+)/(?=(?:basic_lstm_cell|basic_rnn_cell|gru_cell|lstm_cell)/)"
    assert regexes.compile(legacy, search=True).max_chars >= 1000


# ------------------------------------------------------------ other unbounded work (case 3)


@pytest.mark.parametrize(
    "expr",
    [
        "src" + " | T" * 100_000,  # RecursionError in the parser: was "Internal error"
        "-" * 100_000 + "1",  # MemoryError in the parser
        "zeros([" + "9" * 5000 + "])",  # past int()'s 4300 digits: a SyntaxError already (a pin)
        "src | add(1e0 * " + "9" * 400 + ")",  # an int too large for a float
        "zeros([5 % 0])",  # ZeroDivisionError
        "src" + " | T" * 60,  # fine text, too deep a tree to walk by recursion
    ],
)
def test_an_expression_that_broke_the_evaluator_is_one_error_line(tmp_path: Path, expr: str) -> None:
    refused(tmp_path, make(expr), W)


def test_a_split_into_a_billion_parts_makes_no_list_of_them(tmp_path: Path) -> None:
    # A zero-length axis splits into any number of parts; the old code listed them all (8 GB).
    src, spec, out = tmp_path / "in.safetensors", tmp_path / "m.yaml", tmp_path / "out" / "x.safetensors"
    save_file({"w": np.zeros((0, 4), np.float32)}, str(src))
    spec.write_text(make("src | split(0, 1000000000, 999999999)"))
    done = cli("convert", src, out, "-m", spec)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists()


def test_a_template_repeating_the_name_is_refused(tmp_path: Path) -> None:
    # 20000 copies of a 10000-character name: a 200 MB target name per tensor.
    names = {"w" * 10_000: np.zeros(1, np.float32)}
    line = refused(tmp_path, "rules:\n  - match: 'w+'\n    to: '" + "{0}" * 20_000 + "'\n", names)
    assert "characters" in line


def test_a_rename_whose_replacement_multiplies_the_name_is_refused(tmp_path: Path) -> None:
    # An empty match at every one of 10000 positions, each replaced by 10000 characters: 100 MB.
    names = {"w" * 10_000: np.zeros(1, np.float32)}
    line = refused(tmp_path, "rules:\n  - rename: {'': '" + "x" * 10_000 + "'}\n", names)
    assert "characters" in line
