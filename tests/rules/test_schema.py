"""Mapping files are validated when they load; every message names the rule and its line."""

from __future__ import annotations

import re
import textwrap

import pytest

from ckptmap.errors import RuleError, UsageError
from ckptmap.rules import mapping as mapping_lib
from ckptmap.rules.schema import parse


def _parse(text: str):
    return parse(textwrap.dedent(text), "m.yaml")


def test_every_builtin_mapping_loads_and_is_listed():
    names = {b.name for b in mapping_lib.builtins()}
    assert {"tf1-to-torch", "torch-to-tf1", "tf1-legacy-names"} <= names
    for name in names:
        assert mapping_lib.load(name).spec.rules
    assert all(b.description for b in mapping_lib.builtins())


def test_unknown_top_level_key_names_its_line():
    with pytest.raises(RuleError, match=r"m.yaml:3: unknown key 'rulez'"):
        _parse("""
            name: x
            rulez: []
        """)


def test_yaml_with_tabs_names_the_line():
    with pytest.raises(RuleError, match=r"m.yaml:3: not valid YAML"):
        parse("rules:\n  - match: a\n\t to: b\n", "m.yaml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- match: '(a'\n  to: b", r"rule 1 \(m.yaml:2\): line 2: bad regex '\(a'"),
        ("- match: a\n  to: b\n  frobnicate: 1", r"unknown key 'frobnicate' in rule 1"),
        ("- match: a", r"rule 1 .*exactly one of 'to', 'drop' or 'refuse'"),
        ("- match: a\n  to: b\n  drop: why", r"exactly one of 'to', 'drop' or 'refuse' \(has to, drop\)"),
        ("- match: '(?P<x>a)'\n  to: '{y}'", r"uses y, not a group of the match"),
        ("- match: a\n  to: {b: 'src | frob(1)'}", r"unknown operation 'frob'"),
        ("- match: a\n  to: {b: 'src | T | 3'}", r"the right of '\|' must be an operation"),
        ("- match: a\n  to: {b: 'src + __import__(1)'}", r"unknown operation '__import__'"),
        ("- match: a\n  to: {b: 'whatever | T'}", r"unknown name whatever"),
        (
            "- cell: tf1.lstm\n  to: torch.lstm\n  make: {weight_xx: kernel}",
            r"'weight_xx' is not a tensor of a torch.lstm",
        ),
        ("- cell: tf1.lstm\n  to: torch.lstm\n  make: {weight_ih: kernl | T}", r"unknown name kernl"),
        ("- cell: tf1.lsmt\n  drop: x", r"Unknown gate layout 'tf1.lsmt'"),
        ("- cell: tf1.lstm\n  when: {colour: red}\n  drop: x", r"'when' takes"),
        ("- cell: tf1.lstm\n  make: {weight_ih: kernel}", r"needs 'to: <framework>.<cell>'"),
        ("- rename: {'(x': y}", r"bad regex '\(x'"),
        ("- rename: {a: b}\n  drop: x", r"a rename rule takes only 'rename'"),
        ("- match: a\n  when: {ndim: true}\n  to: b", r"'when: ndim' must be a int"),
        ("- match: a\n  when: {peepholes: true}\n  to: b", r"'when' takes ndim, not 'peepholes'"),
        ("- match: a\n  position: middle\n  to: b", r"'position' is first or last, not 'middle'"),
        ("- match: '(?P<x>a)'\n  to: '{x:upper}'", r"unknown transform 'upper'"),
    ],
    ids=[
        "bad-regex",
        "unknown-key",
        "no-action",
        "two-actions",
        "unknown-group",
        "unknown-op",
        "pipe-to-name",
        "no-code",
        "unknown-name",
        "unknown-role",
        "unknown-member",
        "unknown-layout",
        "unknown-when",
        "make-no-to",
        "rename-bad-regex",
        "rename-extra-key",
        "match-when-bool",
        "match-when-cell-fact",
        "bad-position",
        "bad-transform",
    ],
)
def test_invalid_rules_are_rejected_with_rule_and_line(body, message):
    text = "rules:\n" + textwrap.indent(body, "  ")
    with pytest.raises(RuleError, match=message) as err:
        parse(text, "m.yaml")
    assert "m.yaml" in str(err.value)


def test_duplicate_targets_in_one_rule_are_caught_by_yaml():
    text = (
        "rules:\n  - cell: tf1.rnn\n    to: torch.rnn\n    make:\n      bias_ih: bias\n      bias_ih: bias\n"
    )
    with pytest.raises(RuleError, match=r"line 6: 'bias_ih' appears twice"):
        parse(text, "m.yaml")


def test_params_are_typed_by_their_default():
    spec = _parse("""
        params: {forget_bias: 1.0, flag: {default: false, help: a flag}}
        rules: [{match: a, to: b}]
    """)
    assert mapping_lib.resolve_params(spec, {"forget_bias": "0.5", "flag": "true"}) == {
        "forget_bias": 0.5,
        "flag": True,
    }
    with pytest.raises(UsageError, match=r"takes a value like 1\.0"):
        mapping_lib.resolve_params(spec, {"forget_bias": "lots"})
    with pytest.raises(UsageError, match="has no parameter 'forget_bia'; did you mean 'forget_bias'"):
        mapping_lib.resolve_params(spec, {"forget_bia": "1"})


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(UsageError, match=r"did you mean .tf1-to-torch.*Built-in: .*tf1-to-torch"):
        mapping_lib.load("tf1-to-pytorch")


def test_the_readme_example_mapping_is_valid(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = [
        block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "name: my-lstm-to-torch" in block
    ]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    m = mapping_lib.load(path)
    kinds = [type(r).__name__ for r in m.spec.rules]
    included = len(mapping_lib.load("tf1-legacy-names").spec.rules)
    assert kinds == ["RenameRule"] * included + [
        "RenameRule",
        "CellRule",
        "CellRule",
        "MatchRule",
        "MatchRule",
        "MatchRule",
        "MatchRule",
        "MatchRule",
    ]
    assert m.spec.rules[-2].position == "first" and m.spec.rules[-1].unpack == "cudnn"
    assert m.params == {"forget_bias": 1.0}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("match: x\n    unpack: zip\n    to: '{part}'", "'unpack' takes cudnn, not 'zip'"),
        ("match: x\n    unpack: cudnn\n    to: 'y'", "naming each part with {part}"),
        ("match: x\n    unpack: cudnn\n    to: {y: src}", "naming each part with {part}"),
    ],
)
def test_unpack_rules_name_their_unpacker_and_each_part(rule, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        _parse(f"name: t\nrules:\n  - {rule}\n")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "cell: keras.gru\n    to: tf1.gru\n    as: LSTMCell\n    make: {gates_kernel: kernel}",
            "'as: LSTMCell' is not a tf1 class of kind gru (GRUCell, CudnnCompatibleGRUCell, GRUBlockCell",
        ),
        ("cell: keras.gru\n    as: GRUCell\n    drop: no", "'as' names the class of the target of 'make'"),
    ],
)
def test_as_names_a_class_of_the_target_kind(rule, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        _parse(f"name: t\nrules:\n  - {rule}\n")


def test_as_sets_the_class_the_target_is_built_as():
    spec = _parse(
        "name: t\nrules:\n  - cell: keras.gru\n    to: tf1.gru\n    as: CudnnCompatibleGRUCell\n"
        "    make: {gates_kernel: kernel}\n"
    )
    assert spec.rules[0].target_class == "CudnnCompatibleGRUCell"


def test_a_boolean_parameter_is_a_when_condition():
    spec = _parse(
        "name: t\nparams:\n  cudnn: {default: false}\n  size: {default: 1}\nrules:\n"
        "  - cell: torch.gru\n    when: {cudnn: true}\n    drop: asked\n"
    )
    assert spec.rules[0].when == {"cudnn": True}
    with pytest.raises(RuleError, match=r"'when' takes .*cudnn.*not 'size'"):
        _parse(
            "name: t\nparams:\n  cudnn: {default: false}\n  size: {default: 1}\nrules:\n"
            "  - cell: torch.gru\n    when: {size: 1}\n    drop: asked\n"
        )
