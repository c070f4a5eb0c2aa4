"""Load the configuration: file (HCL or YAML) + environment + command line -> `Config`.

Precedence, highest first (docs/configuration.md has the same table):

    | source                         | keys                                           |
    |--------------------------------|------------------------------------------------|
    | command-line flag              | --config, --log-level, --auto-reload           |
    | environment variable           | MERMIN_CONFIG_PATH, MERMIN_LOG_LEVEL,          |
    |                                | MERMIN_CONFIG_AUTO_RELOAD                      |
    | config file                    | every key                                      |
    | built-in default               | every key (`Config()`)                         |

Every mistake raises `ConfigError` (exit code 2) whose message has one line per problem:
`FILE:LINE: key.path: what was expected, got what` (`.problems` holds the lines).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from mermin.config.hcl_reader import Lines, Path, read_hcl
from mermin.config.problems import dotted, format_problems
from mermin.config.schema import Config
from mermin.config.yaml_reader import read_yaml
from mermin.errors import ConfigError

__all__ = [
    "ENV_AUTO_RELOAD",
    "ENV_CONFIG_PATH",
    "ENV_LOG_LEVEL",
    "ENV_OVERRIDES",
    "FORMATS",
    "config_error",
    "load_config",
    "parse_config",
    "read_config_file",
    "resolve_config_path",
    "validate_config",
]

ENV_CONFIG_PATH = "MERMIN_CONFIG_PATH"
ENV_LOG_LEVEL = "MERMIN_LOG_LEVEL"
ENV_AUTO_RELOAD = "MERMIN_CONFIG_AUTO_RELOAD"

ENV_OVERRIDES: dict[str, str] = {ENV_LOG_LEVEL: "log_level", ENV_AUTO_RELOAD: "auto_reload"}
"""Environment variable -> config key it overrides (above the file, below the flag)."""

_FLAGS = {"log_level": "--log-level", "auto_reload": "--auto-reload"}
FORMATS = {".hcl": "hcl", ".yaml": "yaml", ".yml": "yaml"}


def config_error(problems: list[str]) -> ConfigError:
    """One ConfigError carrying every problem line (`.problems`)."""
    error = ConfigError("\n".join(problems))
    error.problems = list(problems)  # type: ignore[attr-defined]
    return error


def resolve_config_path(
    cli_path: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The config file to use: --config, else $MERMIN_CONFIG_PATH, else None (defaults)."""
    env = os.environ if environ is None else environ
    return cli_path or env.get(ENV_CONFIG_PATH) or None


def read_config_file(
    path: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], Lines]:
    """Read and parse one config file, chosen by extension, into (data, key-path -> line)."""
    fmt = FORMATS.get(FsPath(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: unknown config format {FsPath(path).suffix or '(no extension)'!r}; "
            "name the file .hcl, .yaml or .yml"
        )
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if fmt == "hcl":
        return read_hcl(text, path, environ)
    return read_yaml(text, path)


def parse_config(
    text: str,
    *,
    fmt: str = "hcl",
    name: str = "config",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate config `text` alone (no env/CLI overrides): for tests and tools."""
    data, lines = read_hcl(text, name, environ) if fmt == "hcl" else read_yaml(text, name)
    return validate_config(data, name=name, lines=lines, origins={})


def load_config(
    path: str | None = None,
    *,
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config from defaults < file < environment < command line.

    `path` None means $MERMIN_CONFIG_PATH, else built-in defaults. `cli_overrides` maps config
    keys (dotted for nested ones: "span.poll_interval") to values given on the command line;
    None values are ignored. `environ` defaults to os.environ (also used by HCL's env()).
    """
    env = os.environ if environ is None else environ
    path = resolve_config_path(path, env)
    data: dict[str, Any] = {}
    lines: Lines = {}
    if path:
        data, lines = read_config_file(path, env)
    origins: dict[Path, str] = {}
    for var, key in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is not None and value.strip() != "":
            _set(data, key, value.strip())
            origins[tuple(key.split("."))] = f"environment {var}={value.strip()!r}"
    for key, value in (cli_overrides or {}).items():
        if value is not None:
            _set(data, key, value)
            flag = _FLAGS.get(key, key)
            origins[tuple(key.split("."))] = f"command line {flag}"
    return validate_config(data, name=path or "config", lines=lines, origins=origins)


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


def validate_config(
    data: dict[str, Any], *, name: str, lines: Lines, origins: Mapping[Path, str]
) -> Config:
    """Validate parsed `data` into a Config; ConfigError with one line per problem."""
    if "attributes" in data and data["attributes"] in ({}, None):
        # `attributes {}` turns Kubernetes attribution off (absent: defaults), as the original
        data = {**data, "attributes": {"source": None, "destination": None}}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = format_problems(exc, Config, data, name=name, lines=lines, origins=origins)
        raise config_error(problems) from None
    except (ValueError, TypeError) as exc:  # a block validator that raised outside pydantic
        raise config_error([f"{name}: {dotted(())}: {exc}"]) from None
