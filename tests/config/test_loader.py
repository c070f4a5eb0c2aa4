"""load_config: examples, precedence (CLI > env > file > default), validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mermin.config.loader import load_config, parse_config
from mermin.config.schema import Config
from mermin.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).splitlines()


# -- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.example.hcl", "config.example.yaml", "stdout.hcl",
                                  "otlp.hcl"])  # fmt: skip
def test_every_example_loads(name: str) -> None:
    config = load_config(str(EXAMPLES / name), environ={})
    assert isinstance(config, Config)


def test_hcl_and_yaml_examples_are_the_same_config() -> None:
    hcl = load_config(str(EXAMPLES / "config.example.hcl"), environ={})
    yaml = load_config(str(EXAMPLES / "config.example.yaml"), environ={})
    assert hcl == yaml
    assert hcl.pipeline.flow_capture.flow_stats_capacity == 65536
    assert hcl.discovery.instrument.interfaces[-1] == "/^eni[0-9a-f]+$/"
    assert hcl.filter.destination.port.not_match == ["10250", "10255-10256"]
    assert hcl.filter.network.transport.match == ["tcp", "udp", "icmp*"]
    assert hcl.span.max_record_interval == 60.0
    assert hcl.shutdown_timeout == 10.0
    # the original's flow_store_poll_interval feeds span.poll_interval
    assert hcl.span.poll_interval == 1.0


def test_otlp_example_reads_secrets_from_env() -> None:
    env = {"OTLP_TOKEN": "s3cret", "OTLP_ENDPOINT": "https://collector.example:4317"}
    config = load_config(str(EXAMPLES / "otlp.hcl"), environ=env)
    otlp = config.export.traces.otlp
    assert otlp is not None and otlp.auth is not None and otlp.auth.bearer is not None
    assert otlp.auth.bearer.get_secret_value() == "s3cret"
    assert otlp.endpoint == "https://collector.example:4317"
    assert otlp.headers == {"x-tenant": "cluster-a"}


def test_stdout_example_turns_kubernetes_attribution_off() -> None:
    config = load_config(str(EXAMPLES / "stdout.hcl"), environ={})
    assert config.attributes.source is None and config.attributes.destination is None
    assert Config().attributes.source is not None


def test_no_file_means_defaults() -> None:
    assert load_config(None, environ={}) == Config()


def test_every_block_parses_from_hcl_and_yaml() -> None:
    hcl = """
log_level = "warn"
log_color = true
log_format = "json"
auto_reload = true
shutdown_timeout = "1m30s"
pipeline { flow_capture { flow_stats_capacity = 4096 } }
parser { vxlan_port = 8472 }
discovery "instrument" {
  interfaces = ["/^veth/"]
  auto_discover_interfaces = false
}
discovery "informer" "k8s" { informers_sync_timeout = "10s" }
attributes "source" "k8s" { extract { metadata = ["[*].metadata.name"] } }
filter "flow" { ip_ttl = { match = ["1-64"] } }
span { udp_timeout = "2m" }
export "traces" { stdout = { format = "json" } }
internal "server" { port = 9090 }
"""
    yaml = """
log_level: warn
log_color: true
log_format: json
auto_reload: true
shutdown_timeout: 1m30s
pipeline: {flow_capture: {flow_stats_capacity: 4096}}
parser: {vxlan_port: 8472}
discovery:
  instrument: {interfaces: ["/^veth/"], auto_discover_interfaces: false}
  informer: {k8s: {informers_sync_timeout: 10s}}
attributes: {source: {k8s: {extract: {metadata: ["[*].metadata.name"]}}}}
filter: {flow: {ip_ttl: {match: ["1-64"]}}}
span: {udp_timeout: 2m}
export: {traces: {stdout: {format: json}}}
internal: {server: {port: 9090}}
"""
    a = parse_config(hcl, fmt="hcl", name="a.hcl", environ={})
    b = parse_config(yaml, fmt="yaml", name="b.yaml")
    assert a == b
    assert a.log_level == "warn" and a.log_color and a.log_format == "json" and a.auto_reload
    assert a.shutdown_timeout == 90.0
    assert a.pipeline.flow_capture.flow_stats_capacity == 4096
    assert a.parser.vxlan_port == 8472
    assert a.discovery.instrument.auto_discover_interfaces is False
    assert a.discovery.instrument.interfaces == ["/^veth/"]
    assert a.discovery.informer.k8s.informers_sync_timeout == 10.0
    assert a.attributes.destination is None  # one direction written: the other is off
    assert a.filter.flow.ip_ttl.match == ["1-64"]
    assert a.span.udp_timeout == 120.0
    assert a.internal.server.port == 9090


# -- precedence --------------------------------------------------------------------------------


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", 'log_level = "debug"\nauto_reload = false\n')
    assert load_config(path, environ={}).log_level == "debug"  # file > default
    env = {"MERMIN_LOG_LEVEL": "warn", "MERMIN_CONFIG_AUTO_RELOAD": "true"}
    config = load_config(path, environ=env)
    assert (config.log_level, config.auto_reload) == ("warn", True)  # env > file
    config = load_config(path, environ=env, cli_overrides={"log_level": "error"})
    assert (config.log_level, config.auto_reload) == ("error", True)  # cli > env
    assert load_config(None, environ={}).log_level == "info"  # default


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", "log_level: trace\n")
    assert load_config(None, environ={"MERMIN_CONFIG_PATH": path}).log_level == "trace"
    other = _write(tmp_path, "d.yaml", "log_level: error\n")
    assert load_config(other, environ={"MERMIN_CONFIG_PATH": path}).log_level == "error"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"MERMIN_CONFIG_AUTO_RELOAD": "maybe"})
    assert _problems(info) == [
        "environment MERMIN_CONFIG_AUTO_RELOAD='maybe': auto_reload: expected a valid boolean, "
        "got 'maybe'"
    ]


def test_bad_cli_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^command line --log-level: log_level: expected "):
        load_config(None, environ={}, cli_overrides={"log_level": "loud"})


def test_log_level_is_case_insensitive_with_aliases() -> None:
    assert load_config(None, environ={"MERMIN_LOG_LEVEL": "WARNING"}).log_level == "warn"


# -- validation messages -----------------------------------------------------------------------


def test_unknown_key_with_suggestion_and_line_hcl(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", 'log_level = "info"\n\nspan {\n  udp_timout = "5s"\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _problems(info) == [
        f"{path}:4: span.udp_timout: unknown key 'udp_timout'; did you mean 'udp_timeout'?"
    ]
    assert info.value.exit_code == 2


def test_unknown_key_with_suggestion_and_line_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", "discovery:\n  instrument:\n    interfacess: [eth0]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _problems(info) == [
        f"{path}:3: discovery.instrument.interfacess: unknown key 'interfacess'; "
        "did you mean 'interfaces'?"
    ]


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", "parser {\n  zzz = 1\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _problems(info) == [
        f"{path}:2: parser.zzz: unknown key 'zzz'; valid keys here: geneve_port, vxlan_port, "
        "wireguard_port"
    ]


def test_filter_attribute_in_the_wrong_block_says_where_it_belongs(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", 'filter "source" {\n  transport = { match = ["tcp"] }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _problems(info) == [
        f"{path}:2: filter.source.transport: unknown key 'transport'; 'transport' is an "
        'attribute of filter "network"'
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", "parser:\n  geneve_port: abc\nauto_reload: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _problems(info) == [
        f"{path}:2: parser.geneve_port: expected a valid integer, got 'abc'",
        f"{path}:3: auto_reload: expected a valid boolean, got 3",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("parser { vxlan_port = 0 }", "parser.vxlan_port: expected a value at least 1, got 0"),
        ("parser { wireguard_port = 65536 }",
         "parser.wireguard_port: expected a value at most 65535, got 65536"),
        ("pipeline { flow_capture { flow_stats_capacity = 0 } }",
         "pipeline.flow_capture.flow_stats_capacity: expected a value greater than 0, got 0"),
        ('shutdown_timeout = "-1s"', "shutdown_timeout: invalid duration '-1s'"),
        ("shutdown_timeout = -1", "shutdown_timeout: a duration cannot be negative"),
        ('span { tcp_timeout = "5 parsecs" }', "span.tcp_timeout: invalid duration '5 parsecs'"),
        ('filter "destination" { port = { match = ["70000"] } }',
         "filter.destination.port.match: port '70000' out of range 0-65535"),
        ('filter "source" { address = { not_match = ["10.0.0.0/33"] } }',
         "filter.source.address.not_match: invalid address '10.0.0.0/33'"),
        ('log_format = "xml"', "log_format: expected 'text' or 'json', got 'xml'"),
    ],
)  # fmt: skip
def test_out_of_range_and_invalid_values(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, "c.hcl", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert len(_problems(info)) == 1
    assert _problems(info)[0].startswith(f"{path}:1: {expected}")


def test_several_problems_give_several_lines_in_file_order(tmp_path: Path) -> None:
    text = 'log_levl = "debug"\nparser {\n  vxlan_port = 70000\n}\nspan {\n  udp_timout = 1\n}\n'
    path = _write(tmp_path, "c.hcl", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    lines = _problems(info)
    assert [line.split(":")[1] for line in lines] == ["1", "3", "6"]
    assert info.value.problems == lines  # type: ignore[attr-defined]


def test_repeated_block_is_reported_not_merged(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", "parser {\n}\nparser {\n}\n")
    with pytest.raises(ConfigError, match=r"parser: expected a valid dictionary.*written twice"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.hcl", None, "config file not found"),
        ("c.toml", "a = 1", "unknown config format '.toml'; name the file .hcl, .yaml or .yml"),
        ("c.hcl", b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_file_problems(tmp_path: Path, name: str, content: object, expected: str) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(str(path), environ={})


def test_syntax_error_through_load_config(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.hcl", 'log_level = "info"\nspan {\n  tcp_timeout = \n}\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3:\d+: syntax error: "):
        load_config(path, environ={})


def test_original_only_pipeline_keys_are_accepted() -> None:
    text = """
pipeline {
  flow_capture {
    flow_stats_capacity  = 100000
    flow_events_capacity = 1024
  }
  flow_producer {
    workers                  = 4
    worker_queue_capacity    = 2048
    flow_store_poll_interval = "2s"
    flow_span_queue_capacity = 16384
  }
  k8s_decorator {
    threads                       = 4
    decorated_span_queue_capacity = 32768
  }
}
"""
    config = parse_config(text, fmt="hcl", environ={})
    assert config.pipeline.flow_capture.flow_stats_capacity == 100000
    assert config.pipeline.k8s_decorator.threads == 4
    assert config.span.poll_interval == 2.0


def test_legacy_poll_interval_conflicting_with_span_poll_interval() -> None:
    text = (
        'pipeline {\n  flow_producer {\n    flow_store_poll_interval = "2s"\n  }\n}\n'
        'span {\n  poll_interval = "1s"\n}\n'
    )
    with pytest.raises(
        ConfigError, match=r"^c.hcl:3: pipeline.flow_producer.flow_store_poll_interval: .*disagree"
    ):
        parse_config(text, fmt="hcl", name="c.hcl", environ={})


def test_a_secret_of_the_wrong_type_is_named_but_never_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, "secret.hcl", (
        'export "traces" {\n  otlp = {\n    auth = { bearer = 987654321 }\n'
        '    headers = { "x-api-key" = 4242424242 }\n  }\n}\n'
    ))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "export.traces.otlp.auth.bearer" in text
    assert "987654321" not in text and "4242424242" not in text
