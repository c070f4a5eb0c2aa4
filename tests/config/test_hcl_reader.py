"""HCL reading: values, labelled blocks, env(), lines, syntax and expression errors."""

from __future__ import annotations

import pytest

from mermin.config.hcl_reader import read_hcl
from mermin.errors import ConfigError

TEXT = """\
log_level = "debug"
count = -3
ratio = 0.5
flag = true
nothing = null
escaped = "a\\"b\\\\c\\n\\u00e9 $${literal}"
pipeline {
  flow_capture {
    flow_stats_capacity = 100
  }
}
discovery "instrument" {
  interfaces = ["veth*", "/^eth[0-9]+$/"]
}
discovery "informer" "k8s" {
  selectors = [
    { kind = "Pod" },
    { kind = "Service", "match_labels" = { "app.kubernetes.io/name" = "x" } },
  ]
}
attributes "source" "k8s" {
  extract { metadata = ["[*].metadata.name"] }
}
text = <<EOT
line one
EOT
"""


def test_values_and_labelled_blocks_become_nested_dicts() -> None:
    data, _ = read_hcl(TEXT, "t.hcl", {})
    assert data["log_level"] == "debug"
    assert data["count"] == -3 and data["ratio"] == 0.5 and data["flag"] is True
    assert data["nothing"] is None
    assert data["escaped"] == 'a"b\\c\n\u00e9 ${literal}'
    assert data["pipeline"] == {"flow_capture": {"flow_stats_capacity": 100}}
    assert data["discovery"]["instrument"]["interfaces"] == ["veth*", "/^eth[0-9]+$/"]
    selectors = data["discovery"]["informer"]["k8s"]["selectors"]
    assert selectors[1] == {"kind": "Service", "match_labels": {"app.kubernetes.io/name": "x"}}
    extract = {"extract": {"metadata": ["[*].metadata.name"]}}
    assert data["attributes"] == {"source": {"k8s": extract}}
    assert data["text"] == "line one\n"


def test_lines_of_keys_blocks_and_items() -> None:
    _, lines = read_hcl(TEXT, "t.hcl", {})
    assert lines[("log_level",)] == 1
    assert lines[("pipeline",)] == 7
    assert lines[("pipeline", "flow_capture", "flow_stats_capacity")] == 9
    assert lines[("discovery", "instrument")] == 12
    assert lines[("discovery", "instrument", "interfaces", 1)] == 13
    assert lines[("discovery", "informer", "k8s", "selectors", 1, "kind")] == 18


def test_env_function_with_and_without_default() -> None:
    text = 'a = env("MC_A")\nb = env("MC_B", "fallback")\nc = "x-${env("MC_A")}-y"\n'
    data, _ = read_hcl(text, "t.hcl", {"MC_A": "set"})
    assert data == {"a": "set", "b": "fallback", "c": "x-set-y"}
    data, _ = read_hcl(text, "t.hcl", {"MC_A": "1", "MC_B": "from-env"})
    assert data["b"] == "from-env"


def test_env_function_without_default_and_unset_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^t.hcl:2: b: environment variable MC_NOPE is not set"):
        read_hcl('a = 1\nb = env("MC_NOPE")\n', "t.hcl", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a = upper("x")', r"t.hcl:1: a: unknown function upper\(\); only env"),
        ("a = b", r't.hcl:1: a: unquoted name b; write strings in quotes: "b"'),
        ("a = 1 + 2", r"t.hcl:1: a: unsupported expression \(binary op\)"),
        ('a = env("X", "y", "z")', r't.hcl:1: a: use env\("VAR"\) or env\("VAR", "default"\)'),
        ("a = 1\na = 2", r"t.hcl:2: a: duplicate key \(first set at line 1\)"),
        ('a = "\\q"', r"t.hcl:1: invalid escape sequence"),
    ],
)
def test_unsupported_expressions_name_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        read_hcl(text, "t.hcl", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = 1\nb = \n", r"^t.hcl:2:5: syntax error: unexpected end of line; expected"),
        ("a = 1\nblock {\n  x = 1\n", r"^t.hcl:4: syntax error: unexpected end of file"),
        ("a = 1\n  = 3\n", r"^t.hcl:2:\d+: syntax error: unexpected '='"),
        ("a = [1, 2\n", r"^t.hcl:\d+(:\d+)?: syntax error"),
    ],
)
def test_syntax_errors_give_file_line_and_one_line_message(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        read_hcl(text, "t.hcl", {})
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_repeated_block_becomes_a_list() -> None:
    data, _ = read_hcl("x { a = 1 }\nx { a = 2 }\n", "t.hcl", {})
    assert data == {"x": [{"a": 1}, {"a": 2}]}
