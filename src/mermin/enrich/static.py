"""Static inventory: names for hosts outside Kubernetes, from a YAML or JSON file.

    # inventory.yaml
    hosts:
      - match: 192.0.2.10                       # an address ...
        attributes: { node.name: db-1, owner.name: postgres, owner.type: BareMetal }
      - match: [198.51.100.0/24, 2001:db8::/64] # ... or CIDRs, one or a list
        attributes: { service.name: storage, namespace.name: infra }

The shorter form `{ "192.0.2.10": {node.name: db-1}, "10.0.0.0/8": {...} }` works too. The most
specific prefix containing an address wins. Attribute keys are written without the
`source.k8s.`/`destination.k8s.` prefix, like the Kubernetes ones, and only fill endpoints the
cluster did not name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import yaml

from mermin.errors import ConfigError
from mermin.flows.record import FlowReport

__all__ = ["Inventory", "StaticEnricher", "StaticStats"]


class Inventory:
    """Longest-prefix match from addresses to attribute dicts."""

    def __init__(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # version -> prefix length -> network address (int) -> attributes
        self._tables: dict[int, dict[int, dict[int, dict[str, str]]]] = {4: {}, 6: {}}
        for cidr, attrs in entries:
            try:
                net = ip_network(str(cidr).strip(), strict=False)
            except ValueError as exc:
                raise ConfigError(f"static inventory: {cidr!r} is not an IP address or CIDR"
                                  ) from exc
            table = self._tables[net.version].setdefault(net.prefixlen, {})
            table[int(net.network_address)] = {str(k): str(v) for k, v in attrs.items()}
        self._lengths = {v: sorted(t, reverse=True) for v, t in self._tables.items()}
        self.size = sum(len(t) for tables in self._tables.values() for t in tables.values())

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        """Read a YAML/JSON file (format in the module docstring)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"static inventory {str(p)!r}: {exc.strerror}; fix "
                              "discovery \"informer\" \"k8s\" { static_inventory }") from exc
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"static inventory {str(p)!r} is not valid YAML/JSON: {exc}"
                              ) from exc
        return cls(cls._entries(data, str(p)))

    @staticmethod
    def _entries(data: Any, where: str) -> list[tuple[str, Mapping[str, Any]]]:
        out: list[tuple[str, Mapping[str, Any]]] = []
        if isinstance(data, Mapping) and "hosts" in data:
            for i, host in enumerate(data["hosts"] or ()):
                if not isinstance(host, Mapping) or "match" not in host:
                    raise ConfigError(f"static inventory {where}: hosts[{i}] needs `match` and "
                                      "`attributes`")
                attrs = host.get("attributes") or {}
                if not isinstance(attrs, Mapping):
                    raise ConfigError(f"static inventory {where}: hosts[{i}].attributes must "
                                      "be a mapping")
                matches = host["match"]
                for m in [matches] if isinstance(matches, str) else matches:
                    out.append((m, attrs))
        elif isinstance(data, Mapping):
            for cidr, attrs in data.items():
                if not isinstance(attrs, Mapping):
                    raise ConfigError(f"static inventory {where}: value of {cidr!r} must be a "
                                      "mapping of attributes")
                out.append((cidr, attrs))
        elif data is not None:
            raise ConfigError(f"static inventory {where}: expected a mapping with `hosts`")
        return out

    def lookup(self, ip: str) -> dict[str, str] | None:
        try:
            addr = ip_address(ip)
        except ValueError:
            return None
        value = int(addr)
        bits = addr.max_prefixlen
        tables = self._tables[addr.version]
        for length in self._lengths[addr.version]:
            hit = tables[length].get((value >> (bits - length)) << (bits - length))
            if hit is not None:
                return hit
        return None


@dataclass
class StaticStats:
    reports: int = 0
    src_named: int = 0
    dst_named: int = 0
    entries: int = 0


class StaticEnricher:
    """Enricher over an `Inventory`; fills only endpoints still without attributes."""

    name = "static"

    def __init__(self, inventory: Inventory | str | Path) -> None:
        self.inventory = inventory if isinstance(inventory, Inventory) \
            else Inventory.load(inventory)
        self.stats = StaticStats(entries=self.inventory.size)
        self._cache: dict[str, dict[str, str] | None] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def ready(self) -> bool:
        return True

    def _get(self, ip: str) -> dict[str, str] | None:
        try:
            return self._cache[ip]
        except KeyError:
            if len(self._cache) > 100_000:
                self._cache.clear()
            hit = self._cache[ip] = self.inventory.lookup(ip)
            return hit

    def enrich(self, reports: Sequence[FlowReport]) -> None:
        stats = self.stats
        stats.reports += len(reports)
        for r in reports:
            if not r.src_k8s:
                a = self._get(r.src_addr)
                if a:
                    r.src_k8s = a.copy()
                    stats.src_named += 1
            if not r.dst_k8s:
                a = self._get(r.dst_addr)
                if a:
                    r.dst_k8s = a.copy()
                    stats.dst_named += 1
