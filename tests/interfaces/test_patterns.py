"""Interface name patterns and the `discovery "instrument"` config block (no kernel needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mermin.config.discovery import InstrumentConfig
from mermin.interfaces.patterns import (
    DEFAULT_INTERFACE_PATTERNS,
    MAX_PATTERN_LENGTH,
    InterfaceMatcher,
    check_pattern,
    compile_pattern,
    glob_to_regex,
)


def match(pattern: str, name: str) -> bool:
    return compile_pattern(pattern)(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("veth1a2b3c", True),
        ("cali0123456789a", True),
        ("cilium_host", True),
        ("cilium_vxlan", True),
        ("lxc12ab", True),
        ("tunl0", True),
        ("ip6tnl0", True),
        ("vxlan.calico", True),
        ("flannel.1", True),
        ("gke3f2a", True),
        ("eni1234abcd", True),
        ("azure0", True),
        ("ovn-k8s-mp0", True),
        ("eth0", False),  # physical NICs are deliberately not in the defaults
        ("ens5", False),
        ("enp0s3", False),
        ("lo", False),
        ("docker0", False),
        ("cni0", False),
        ("ciliumx", False),  # "cilium_*" needs the underscore
        ("xveth0", False),  # globs match the whole name
        ("VETH0", False),  # case-sensitive like Linux
    ],
)
def test_default_patterns(name: str, expected: bool) -> None:
    matcher = InterfaceMatcher.from_config(InstrumentConfig())
    assert matcher.matches(name) is expected
    assert matcher.matches(name) is expected  # cached answer is the same


def test_default_list_is_the_originals() -> None:
    assert InstrumentConfig().interfaces == [
        "veth*", "tunl*", "ip6tnl*", "vxlan*", "flannel*", "cali*",
        "cilium_*", "lxc*", "gke*", "eni*", "azure*", "ovn-k8s*",
    ]  # fmt: skip
    assert tuple(InstrumentConfig().interfaces) == DEFAULT_INTERFACE_PATTERNS


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("veth?", "veth1", True),
        ("veth?", "veth12", False),
        ("eth[0-3]", "eth2", True),
        ("eth[0-3]", "eth4", False),
        ("eth[!0-3]", "eth4", True),
        ("eth[^0-3]", "eth1", False),
        ("[]x]y", "]y", True),
        ("{veth,cali}*", "cali9", True),
        ("{veth,cali}*", "lxc9", False),
        ("a{b,c{d,e}}f", "acef", True),
        ("a{b,c{d,e}}f", "acf", False),
        ("a{,x}b", "ab", True),
        (r"br\*", "br*", True),
        (r"br\*", "br0", False),
        ("ovn-k8s*", "ovn-k8s-mp0", True),
        ("flannel.1", "flannelx1", False),  # '.' is literal in a glob
        ("*", "anything", True),
    ],
)
def test_glob(pattern: str, name: str, expected: bool) -> None:
    assert match(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("/^eth[0-9]+$/", "eth10", True),
        ("/^eth[0-9]+$/", "eth1a", False),
        ("/eth/", "myeth0", True),  # searched anywhere, like Go's MatchString
        ("/^(veth|cali)[0-9a-f]{4,}$/", "cali0a1b", True),
        ("/^(veth|cali)[0-9a-f]{4,}$/", "cali0a1", False),
        ("/^(veth|cali)[0-9a-f]{4,}$/", "cali0x1b", False),
        ("/^ETH/", "eth0", False),  # case-sensitive
        ("/(?i)^ETH/", "eth0", True),  # unless asked otherwise
        ("/a/b/", "xa/bx", True),  # only the outer slashes delimit
    ],
)
def test_regex(pattern: str, name: str, expected: bool) -> None:
    assert match(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("/eth[0-9/", "invalid regular expression in interface pattern '/eth[0-9/'"),
        ("/(/", "'/(/'"),
        ("//", "empty regular expression"),
        ("eth[0-9", "unclosed '['"),
        ("{a,b", "unclosed '{'"),
        ("a}b", "unbalanced '}'"),
        ("eth\\", "lone backslash"),
        ("[z-a]", "bad range"),
        ("", "empty interface pattern"),
        ("  ", "empty interface pattern"),
        ("!", "empty interface pattern"),
        ("x" * (MAX_PATTERN_LENGTH + 1), f"at most {MAX_PATTERN_LENGTH}"),
    ],
)
def test_invalid_patterns_name_the_pattern(pattern: str, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        check_pattern(pattern)
    assert needle in str(info.value)


def test_longest_pattern_accepted() -> None:
    check_pattern("a" * MAX_PATTERN_LENGTH)


def test_glob_translation_is_anchored() -> None:
    assert glob_to_regex("veth*") == r"\A(?:veth.*)\Z"


def test_exclude_wins_over_include() -> None:
    m = InterfaceMatcher(["veth*", "/^eth/"], exclude=["veth-skip*", "/^eth1$/"])
    assert m.matches("veth0")
    assert not m.matches("veth-skip0")
    assert m.matches("eth0")
    assert not m.matches("eth1")


def test_bang_entries_are_exclusions() -> None:
    m = InterfaceMatcher(["veth*", "!veth9*"])
    assert m.include == ("veth*",)
    assert m.exclude == ("veth9*",)
    assert m.matches("veth1") and not m.matches("veth90")
    # inside `exclude` a leading '!' is not a double negation: it still excludes
    assert not InterfaceMatcher(["veth*"], ["!veth1"]).matches("veth1")


def test_only_exclusions_mean_defaults_minus_those() -> None:
    m = InterfaceMatcher.from_config(InstrumentConfig(interfaces=["!cali*"]))
    assert m.matches("veth0")
    assert not m.matches("cali0")
    assert not m.matches("eth0")


def test_empty_interfaces_means_defaults() -> None:
    m = InterfaceMatcher.from_config(InstrumentConfig(interfaces=[]))
    assert m.include == DEFAULT_INTERFACE_PATTERNS


def test_explicit_list_replaces_defaults() -> None:
    m = InterfaceMatcher.from_config(InstrumentConfig(interfaces=["eth0"], exclude=["x"]))
    assert m.matches("eth0") and not m.matches("veth0")
    assert m.exclude == ("x",)


def test_matchers_compare_by_patterns() -> None:
    a = InterfaceMatcher(["veth*"], ["x", "y"])
    assert a == InterfaceMatcher(["veth*"], ["y", "x"])
    assert a != InterfaceMatcher(["cali*"], ["x", "y"])
    assert hash(a) == hash(InterfaceMatcher(["veth*"], ["y", "x"]))


def test_config_defaults() -> None:
    c = InstrumentConfig()
    assert c.auto_discover_interfaces is True
    assert c.tc_priority == 1
    assert c.tcx_order == "first"
    assert c.attach_mode == "auto"
    assert c.exclude == []
    assert c.netns == "host"


def test_every_config_field_has_a_description() -> None:
    for name, field in InstrumentConfig.model_fields.items():
        assert field.description and len(field.description) > 20, name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tc_priority", 0),
        ("tc_priority", 32768),
        ("tcx_order", "middle"),
        ("attach_mode", "xdp"),
        ("interfaces", ["/(/"]),
        ("exclude", ["[abc"]),
        ("netns", "relative/path"),
        ("auto_discover_interfaces", "maybe"),
    ],
)
def test_config_rejects(key: str, value: object) -> None:
    with pytest.raises(ValidationError):
        InstrumentConfig(**{key: value})


def test_config_bad_pattern_message_names_it() -> None:
    with pytest.raises(ValidationError) as info:
        InstrumentConfig(interfaces=["veth*", "/eth[/"])
    assert "'/eth[/'" in str(info.value)


def test_config_accepts_range_edges_and_unknown_key_rejected() -> None:
    assert InstrumentConfig(tc_priority=32767).tc_priority == 32767
    assert InstrumentConfig(netns="/var/run/netns/x").netns == "/var/run/netns/x"
    with pytest.raises(ValidationError):
        InstrumentConfig(interfacez=["veth*"])
