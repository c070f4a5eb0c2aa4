"""`mermin config defaults` / `mermin config check` and the HCL writer's round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mermin.cli import main
from mermin.config.commands import defaults
from mermin.config.hcl_writer import dump_hcl, hcl_literal
from mermin.config.loader import load_config, parse_config
from mermin.config.schema import Config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_defaults_round_trip_to_the_default_config() -> None:
    text = defaults()
    assert parse_config(text, fmt="hcl", name="defaults.hcl", environ={}) == Config()
    # every top-level key is written, the labelled blocks with their labels
    for key in Config.model_fields:
        assert f"\n{key}" in text
    for head in ('discovery "instrument" {', 'discovery "informer" "k8s" {',
                 'attributes "source" "k8s" {', 'filter "flow" {', 'export "traces" {',
                 'internal "metrics" {'):  # fmt: skip
        assert head in text


@pytest.mark.parametrize("name", ["config.example.hcl", "config.example.yaml", "otlp.hcl",
                                  "stdout.hcl"])  # fmt: skip
def test_any_config_round_trips_through_hcl(name: str) -> None:
    env = {"OTLP_TOKEN": 'tok"en${x}', "OTLP_ENDPOINT": "https://c.example:4317"}
    config = load_config(str(EXAMPLES / name), environ=env)
    text = dump_hcl(config, reveal_secrets=True)
    assert parse_config(text, fmt="hcl", name="dump.hcl", environ={}) == config


def test_secrets_are_masked_unless_revealed() -> None:
    config = load_config(str(EXAMPLES / "otlp.hcl"), environ={"OTLP_TOKEN": "s3cret"})
    assert "s3cret" not in dump_hcl(config)
    assert "s3cret" in dump_hcl(config, reveal_secrets=True)


def test_literals_escape_what_hcl_would_interpret() -> None:
    assert hcl_literal('a"b\\c\n${x}%{y}') == '"a\\"b\\\\c\\n$${x}%%{y}"'
    assert hcl_literal({"app.kubernetes.io/name": [1, 2.5, True, None]}) == (
        '{\n  "app.kubernetes.io/name" = [1, 2.5, true, null]\n}'
    )


def test_cli_defaults_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "defaults"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "defaults.hcl"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"


def test_cli_check_reports_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("log_levl: info\nparser:\n  vxlan_port: 0\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:1: log_levl: unknown key 'log_levl'; did you mean 'log_level'?",
        f"{path}:3: parser.vxlan_port: expected a value at least 1, got 0",
    ]


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.hcl"
    path.write_text('span {\n  tcp_timeout = "soon"\n}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERMIN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mermin.cli", "config", "check", str(path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"{path}:2: span.tcp_timeout: invalid duration 'soon': use forms like '500ms', '5s', "
        "'1m30s', '2h'"
    )
    assert proc.stdout == ""
