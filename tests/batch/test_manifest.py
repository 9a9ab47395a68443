"""Batch manifests: defaults, globs and placeholders, and one-line `file:line` errors before anything
runs. Sources are placeholder files: validation reads no checkpoint, so none needs to be real."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ckptmap.batch import ManifestError, load_manifest
from ckptmap.cli import main


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """runs/a/lstm.pt, runs/a/b/gru.weights.h5, runs/c/ (a TF bundle), exp/one/ (a directory source)."""
    for name in (
        "runs/a/lstm.pt",
        "runs/a/b/gru.weights.h5",
        "runs/c/model.ckpt.index",
        "runs/c/model.ckpt.data-00000-of-00001",
        "runs/c/checkpoint",
        "exp/one/x.pt",
        "flat/lstm.pt",
        "flat/gru.pt",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not read by validation")
    return tmp_path


def manifest(tree: Path, text: str, name: str = "m.yaml") -> Path:
    path = tree / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def destinations(path: Path) -> dict[str, str]:
    return {job.source_text: job.destination_text for job in load_manifest(path).jobs}


def test_jobs_take_defaults_and_their_own_keys_replace_them(tree):
    path = manifest(
        tree,
        """
        defaults:
          mapping: tf1-to-torch
          set: {forget_bias: 0.5}
          verify: true
        jobs:
          - {src: runs/c/model.ckpt.index, dst: out/c.pt}
          - {src: flat/lstm.pt, dst: out/lstm.safetensors, mapping: [], set: {}, verify: false}
        """,
    )
    first, second = load_manifest(path).jobs
    assert (first.id, first.line, first.mapping, first.params, first.verify) == (
        "1",
        6,
        ("tf1-to-torch",),
        {"forget_bias": 0.5},
        True,
    )
    assert (second.mapping, second.params, second.verify) == ((), {}, False)
    assert first.destination == tree / "out" / "c.pt" and first.destination_text == "out/c.pt"


def test_relative_paths_are_relative_to_the_manifest_not_the_working_directory(
    tree, tmp_path_factory, monkeypatch
):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    mapping = tree / "maps" / "mine.yaml"
    mapping.parent.mkdir()
    mapping.write_text("params: {scale: 1.0}\nrules:\n  - rename: {'^': 'x/'}\n")
    path = manifest(
        tree, "jobs:\n  - {src: flat/lstm.pt, dst: out/l.pt, mapping: maps/mine.yaml, set: {scale: 2}}\n"
    )
    [job] = load_manifest(path).jobs
    assert job.source == tree / "flat" / "lstm.pt" and job.destination == tree / "out" / "l.pt"
    assert job.mapping == (str(mapping),)


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("runs/**/*.pt", "out/{dir}/{stem}.safetensors", {"runs/a/lstm.pt": "out/a/lstm.safetensors"}),
        # `.weights.h5` is one extension: the stem is `gru`, not `gru.weights`.
        ("runs/**/*.h5", "out/{dir}/{stem}.pt", {"runs/a/b/gru.weights.h5": "out/a/b/gru.pt"}),
        (
            "runs/*/model.ckpt.index",
            "out/{parent}/{name}.pt",
            {"runs/c/model.ckpt.index": "out/c/model.ckpt.pt"},
        ),
        ("exp/*", "out/{name}.pt", {"exp/one": "out/one.pt"}),
        (
            "flat/*.pt",
            "out/{dir}/{parent}_{stem}.pt",
            {"flat/lstm.pt": "out/flat_lstm.pt", "flat/gru.pt": "out/flat_gru.pt"},
        ),
        ("flat/lstm.pt", "out/{stem}{{1}}.pt", {"flat/lstm.pt": "out/lstm{1}.pt"}),  # braces escaped
    ],
    ids=[
        "dir-recursive",
        "weights-h5-stem",
        "tf-prefix-name",
        "directory-match",
        "dir-is-dot-at-base",
        "braces",
    ],
)
def test_placeholders_give_each_match_its_destination(tree, src, dst, expected):
    path = manifest(tree, f"jobs:\n  - {{src: '{src}', dst: '{dst}'}}\n")
    assert destinations(path) == expected


def test_a_tf_bundle_matched_piece_by_piece_is_one_job(tree):
    # `runs/c/*` matches the index, the data shard and TF's `checkpoint` state file: one checkpoint.
    path = manifest(tree, "jobs:\n  - {src: 'runs/c/*', dst: 'out/{stem}.pt'}\n")
    [job] = load_manifest(path).jobs
    assert job.source_text == "runs/c/model.ckpt.index" and job.destination_text == "out/model.pt"


def test_glob_matches_get_numbered_ids_and_keep_the_entry_line(tree):
    path = manifest(
        tree, "jobs:\n  - {src: flat/x.pt, dst: a.pt}\n  - src: flat/*.pt\n    dst: 'o/{stem}.pt'\n"
    )
    path.parent.joinpath("flat/x.pt").write_bytes(b"x")
    jobs = load_manifest(path).jobs
    assert [(j.id, j.line, j.source_text) for j in jobs] == [
        ("1", 2, "flat/x.pt"),
        ("2.1", 3, "flat/gru.pt"),
        ("2.2", 3, "flat/lstm.pt"),
        ("2.3", 3, "flat/x.pt"),
    ]


J = "jobs:\n  - "  # most cases are one job


def case(id_: str, text: str, message: str):
    return pytest.param(text, message, id=id_)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        case("tab", J + "src: flat/lstm.pt\n\tdst: x.pt\n", r":3: not valid YAML \(found character '\\t'"),
        case(
            "unknown-job-key", J + "{src: a.pt, dst: x.pt, mapin: m}\n", r":2: unknown key 'mapin' in job 1"
        ),
        case("unknown-top-key", "job:\n  - {src: a, dst: x.pt}\n", r":1: unknown key 'job' in the manifest"),
        case("src-in-defaults", "defaults:\n  src: a.pt\njobs: []\n", r":2: unknown key 'src' in defaults"),
        case("no-jobs", "jobs: []\n", r":1: 'jobs' must be a non-empty list"),
        case("not-a-mapping", "- a\n", r": a manifest is a YAML mapping"),
        case("no-src", J + "dst: x.pt\n", r":2: job 1 has no 'src'"),
        case(
            "no-dst", J + "{src: flat/lstm.pt, dst: x.pt}\n  - src: flat/gru.pt\n", r":3: job 2 has no 'dst'"
        ),
        case("duplicate-key", J + "{src: a, src: b, dst: x.pt}\n", r":2: 'src' appears twice"),
        case(
            "verify-type",
            J + "src: flat/lstm.pt\n    dst: x.pt\n    verify: maybe\n",
            r":4: 'verify' is true",
        ),
        case(
            "mapping-type",
            J + "{src: flat/lstm.pt, dst: x.pt, mapping: 3}\n",
            r":2: 'mapping' is a mapping name",
        ),
        case("set-type", J + "{src: flat/lstm.pt, dst: x.pt, set: [1]}\n", r":2: 'set' maps parameter names"),
        case(
            "rename-regex",
            J + "{src: flat/lstm.pt, dst: x.pt, rename: {'(': x}}\n",
            r":2: rename '\(': bad regex",
        ),
        case(
            "to-unknown",
            J + "{src: flat/lstm.pt, dst: x.pt, to: caffe}\n",
            r":2: 'to' is one of tf2, tf, torch",
        ),
        case("dst-type", J + "{src: flat/lstm.pt, dst: 5}\n", r":2: 'dst' must be a path"),
        case(
            "to-a-format-written-into-a-model",
            J + "{src: flat/lstm.pt, dst: x.onnx}\n",
            r":2: onnx output is written into an existing model \(convert --into\); a batch job cannot",
        ),
        case(
            "no-format", J + "{src: flat/lstm.pt, dst: out/noext}\n", r":2: .*cannot tell the output format"
        ),
        case(
            "glob-matches-nothing",
            J + "src: 'nope/*.pt'\n    dst: x.pt\n",
            r":2: src 'nope/\*\.pt' matches nothing",
        ),
        case("src-missing", J + "{src: flat/nope.pt, dst: x.pt}\n", r":2: src 'flat/nope.pt': no such file"),
        case(
            "unknown-placeholder",
            J + "src: 'flat/*.pt'\n    dst: 'o/{base}.pt'\n",
            r":3: dst 'o/\{base\}.pt': unknown placeholder \{base\}",
        ),
        case(
            "unclosed-brace",
            J + "{src: flat/lstm.pt, dst: 'o/{stem.pt'}\n",
            r":2: dst 'o/\{stem.pt': expected '\}'",
        ),
        case(
            "unknown-mapping",
            J + "{src: flat/lstm.pt, dst: x.pt, mapping: tf-to-pytorch}\n",
            r":2: No built-in mapping named 'tf-to-pytorch'",
        ),
        case(
            "missing-mapping-file",
            J + "{src: flat/lstm.pt, dst: x.pt, mapping: m/n.yaml}\n",
            r":2: .*m/n\.yaml: no such mapping file",
        ),
        case(
            "set-unknown-param",
            "defaults: {mapping: tf1-to-torch}\n"
            + J
            + "src: flat/lstm.pt\n    dst: x.pt\n    set: {forget: 1}\n",
            r":5: set: 'forget' is not a parameter of tf1-to-torch "
            r"\(parameters: cudnn_forget_bias, forget_bias\)",
        ),
        case(
            "set-bad-value-in-defaults",
            "defaults: {mapping: tf1-to-torch, set: {forget_bias: lots}}\n"
            + J
            + "{src: flat/lstm.pt, dst: x.pt}\n",
            r":1: Parameter 'forget_bias' of tf1-to-torch takes a value like 1.0",
        ),
        case(
            "set-without-mapping",
            J + "{src: flat/lstm.pt, dst: x.pt, set: {forget_bias: 1}}\n",
            r":2: set: 'forget_bias' is not a parameter of no mapping",
        ),
        case(
            "two-jobs-one-dst",
            J + "{src: flat/lstm.pt, dst: o.pt}\n  - {src: flat/gru.pt, dst: ./o.pt}\n",
            r":3: job 2 \(flat/gru.pt\) writes o.pt, as job 1 \(flat/lstm.pt, line 2\) does\.$",
        ),
        case(
            "two-matches-one-dst",
            J + "src: 'flat/*.pt'\n    dst: out/one.safetensors\n",
            r":3: job 1.2 \(flat/lstm.pt\) writes out/one.safetensors, as job 1.1 .*"
            r"put \{dir\}, \{parent\} or \{stem\} in dst",
        ),
        # A TF prefix and its .index name the same output files.
        case(
            "tf-prefix-and-index",
            J + "{src: flat/lstm.pt, dst: t/m.ckpt}\n  - {src: flat/gru.pt, dst: t/m.ckpt.index}\n",
            r":3: job 2 .* writes t/m.ckpt.data",
        ),
        case(
            "dst-is-src",
            J + "{src: flat/lstm.pt, dst: flat/lstm.pt}\n",
            r":2: job 1 would write flat/lstm.pt, inside its own source",
        ),
        case(
            "dst-is-another-jobs-src",
            J + "{src: flat/lstm.pt, dst: o.pt}\n  - {src: o.pt, dst: p.pt}\n",
            r":2: job 1 would write o.pt, inside the source of job 2",
        ),
        case(
            "dst-over-tf-source",
            J + "{src: runs/c/model.ckpt.index, dst: runs/c/model.ckpt, to: tf}\n",
            r":2: job 1 would write runs/c/model.ckpt.data-00000-of-00001, inside its own source",
        ),
        # Written into a directory source, the directory would then hold two checkpoints.
        case(
            "dst-in-directory-source",
            J + "{src: exp/one, dst: exp/one/y.pt}\n",
            r":2: job 1 would write exp/one/y.pt, inside its own source \(exp/one\)",
        ),
    ],
)
def test_bad_manifests_fail_with_the_file_and_line(tree, text, message):
    if "o.pt, dst: p.pt" in text:
        (tree / "o.pt").write_bytes(b"x")  # a source that is another job's destination
    path = manifest(tree, text)
    with pytest.raises(ManifestError, match=r"m\.yaml" + message) as failed:
        load_manifest(path)
    assert str(failed.value).startswith(str(path)) and "\n" not in str(failed.value)


def test_cli_exits_2_with_one_line_and_runs_nothing(tree, capsys):
    path = manifest(
        tree,
        J + "{src: flat/lstm.pt, dst: out/l.safetensors}\n  - {src: flat/gru.pt, dst: x.pt, verify: 1}\n",
    )
    with pytest.raises(SystemExit) as done:
        main(["batch", str(path)])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and not out
    assert err == f"Error: {path}:3: 'verify' is true or false, not 1.\n"
    assert not (tree / "out").exists() and not (tree / "m.yaml.state.json").exists()


def test_cli_rejects_zero_jobs_and_a_missing_manifest(tree, capsys):
    path = manifest(tree, "jobs:\n  - {src: flat/lstm.pt, dst: out/l.safetensors}\n")
    for args, message in (
        (["batch", str(path), "--jobs", "0"], "Error: --jobs must be at least 1, not 0.\n"),
        (
            ["batch", str(tree / "none.yaml")],
            f"Error: {tree / 'none.yaml'}: cannot read the manifest (No such file or directory).\n",
        ),
    ):
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 2 and capsys.readouterr().err == message


def test_a_manifest_over_one_mib_loads(tree):
    # Manifests written job by job (generated ones) pass 1 MiB at about 9,000 jobs, and were refused
    # as "too large"; they may now take 16 MiB. Long comments make this one large with few jobs.
    pad = "  # " + "x" * 500 + "\n"
    jobs = "".join(f"  - src: runs/a/lstm.pt\n    dst: out/{i:04d}.safetensors\n{pad}" for i in range(2_500))
    path = manifest(tree, "jobs:\n" + jobs)
    assert 1 << 20 < path.stat().st_size < 16 << 20
    loaded = load_manifest(path).jobs
    assert len(loaded) == 2_500
    assert (loaded[-1].line, loaded[-1].destination_text) == (2 + 3 * 2_499, "out/2499.safetensors")


def test_a_manifest_over_sixteen_mib_is_refused(tree):
    path = tree / "m.yaml"
    with open(path, "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: nothing to write
    with pytest.raises(ManifestError, match=r"m\.yaml: more than 16 MiB, too large for a manifest"):
        load_manifest(path)
