"""What this node serves and which addresses are its own: sockets and addresses of the host and
of every network namespace on it (pods included), read from /proc.

One process per distinct network namespace is found through `/proc/<pid>/ns/net`; that
process's `/proc/<pid>/net/{tcp,tcp6,udp,udp6}` list the namespace's sockets (LISTEN TCP and
unconnected bound UDP are "listeners"), `net/fib_trie` its local IPv4 addresses and
`net/if_inet6` its IPv6 ones. No setns, no netlink: a read-only scan that works from a pod with
hostPID. Addresses use the flow key's 16-byte form (IPv4 in the first 4 bytes, zero-padded);
the all-zero address is the wildcard (0.0.0.0 or ::).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WILDCARD", "NodeSocketWatcher", "NodeSockets", "parse_proc_net", "scan_node"]

log = logging.getLogger(__name__)

WILDCARD = bytes(16)
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"  # TCP_CLOSE: bound, not connected
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class NodeSockets:
    """A snapshot: listening (addr16, port, protocol) and local addresses (addr16)."""

    listeners: frozenset[tuple[bytes, int, int]] = frozenset()
    local_addrs: frozenset[bytes] = frozenset()
    namespaces: int = 0

    def is_listening(self, addr16: bytes, port: int, protocol: int) -> bool:
        """True if a socket on this node accepts (protocol, addr16, port)."""
        return (addr16, port, protocol) in self.listeners or (
            (WILDCARD, port, protocol) in self.listeners
        )


def _normalize(raw: bytes) -> bytes:
    if len(raw) == 4:
        return raw + bytes(12)
    if raw.startswith(_V4_MAPPED):
        return raw[12:] + bytes(12)
    return raw


def _decode_hex_addr(text: str) -> bytes:
    """/proc/net/{tcp,udp}[6] address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    return _normalize(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))


def parse_proc_net(text: str, protocol: int) -> set[tuple[bytes, int, int]]:
    """Listeners in one /proc/net/{tcp,tcp6,udp,udp6} table."""
    out: set[tuple[bytes, int, int]] = set()
    want = _TCP_LISTEN if protocol == 6 else _UDP_UNCONNECTED
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[3] != want:
            continue
        local, remote = parts[1], parts[2]
        if protocol == 17 and int(remote.rsplit(":", 1)[1], 16) != 0:
            continue
        addr, port = local.rsplit(":", 1)
        out.add((_decode_hex_addr(addr), int(port, 16), protocol))
    return out


def _parse_fib_trie(text: str) -> set[bytes]:
    """Local IPv4 addresses: the `/32 host LOCAL` leaves of /proc/net/fib_trie."""
    out: set[bytes] = set()
    last = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif "/32 host LOCAL" in stripped and last:
            out.add(_normalize(bytes(int(x) for x in last.split("."))))
    return out


def _parse_if_inet6(text: str) -> set[bytes]:
    out: set[bytes] = set()
    for line in text.splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            out.add(bytes.fromhex(parts[0]))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""  # process exited or table absent (IPv6 disabled): nothing to add


def _namespace_pids(proc: Path) -> list[Path]:
    """One /proc/<pid> per distinct network namespace (the host's first when visible)."""
    seen: dict[str, Path] = {}
    pids = sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    candidates = [proc / "self", *pids]
    for pid_dir in candidates:
        try:
            ns = os.readlink(pid_dir / "ns" / "net")
        except OSError:
            continue
        seen.setdefault(ns, pid_dir)
    return list(seen.values())


def scan_node(proc: str | Path = "/proc") -> NodeSockets:
    """Scan every network namespace visible in `proc`."""
    proc = Path(proc)
    listeners: set[tuple[bytes, int, int]] = set()
    local: set[bytes] = set()
    pids = _namespace_pids(proc)
    for pid_dir in pids:
        net = pid_dir / "net"
        for name, protocol in (("tcp", 6), ("tcp6", 6), ("udp", 17), ("udp6", 17)):
            listeners |= parse_proc_net(_read(net / name), protocol)
        local |= _parse_fib_trie(_read(net / "fib_trie"))
        local |= _parse_if_inet6(_read(net / "if_inet6"))
    return NodeSockets(frozenset(listeners), frozenset(local), len(pids))


@dataclass
class _WatcherStats:
    scans: int = 0
    failures: int = 0
    last_scan_seconds: float = 0.0


@dataclass
class NodeSocketWatcher:
    """Keeps a `NodeSockets` snapshot current: `refresh()` now, or a daemon thread every
    `interval` seconds after `start()`. `.current` is swapped atomically, never blocks."""

    proc: str = "/proc"
    interval: float = 10.0
    current: NodeSockets = field(default_factory=NodeSockets)
    stats: _WatcherStats = field(default_factory=_WatcherStats)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> NodeSockets:
        import time

        began = time.perf_counter()
        try:
            self.current = scan_node(self.proc)
        except OSError as exc:
            self.stats.failures += 1
            log.warning("socket scan of %s failed: %s", self.proc, exc)
        self.stats.scans += 1
        self.stats.last_scan_seconds = time.perf_counter() - began
        return self.current

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="mermin-sockets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
