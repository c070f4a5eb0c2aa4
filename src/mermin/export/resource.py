"""The OTLP resource of every span: who is reporting (SCHEMA.md "resource")."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from mermin import __version__

__all__ = ["MACHINE_ID_PATHS", "NODE_NAME_ENV", "build_resource"]

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
# the Helm chart sets K8S_NODE_NAME from spec.nodeName; POD_NODE_NAME is the original's name
NODE_NAME_ENV = ("K8S_NODE_NAME", "POD_NODE_NAME", "NODE_NAME")


def _machine_id(paths: tuple[str, ...]) -> str | None:
    for path in paths:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return None


def build_resource(
    extra: Mapping[str, str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    machine_id_paths: tuple[str, ...] = MACHINE_ID_PATHS,
) -> dict[str, str]:
    """service.name=mermin, service.version, host.name, host.id (machine-id), k8s.node.name
    (environment), then `extra` (e.g. k8s.cluster.uid / k8s.cluster.name) on top. Empty
    values are left out."""
    env = os.environ if env is None else env
    res: dict[str, str] = {
        "service.name": "mermin",
        "service.version": __version__,
        "host.name": socket.gethostname(),
    }
    host_id = _machine_id(machine_id_paths)
    if host_id:
        res["host.id"] = host_id
    node = next((env[k] for k in NODE_NAME_ENV if env.get(k)), None)
    if node:
        res["k8s.node.name"] = node
    for key, value in (extra or {}).items():
        if value:
            res[key] = str(value)
    return {k: v for k, v in res.items() if v}
