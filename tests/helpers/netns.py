"""Network namespaces, veth pairs, bridges and processes for tests, always cleaned up.

Everything goes through iproute2 (`ip`), which is what an operator would type and what the
kernel tests need to be robust against. A `Topology` records everything it creates and removes
it in reverse order on exit, also when the test fails or a command raised half-way:

    from tests.helpers.netns import Topology

    with Topology(prefix="ml") as topo:
        ns1, ns2 = topo.netns(), topo.netns()
        host1, pod1 = topo.veth(peer_ns=ns1)           # host1 in root, pod1 inside ns1
        topo.addr(pod1, "10.1.0.1/24", ns=ns1)
        topo.addr(pod1, "fd00:1::1/64", ns=ns1)        # IPv6: added with `nodad`
        server = topo.spawn_in(ns1, ["python3", "-c", "..."])   # killed on exit
        out = topo.run_in(ns2, ["ping", "-c", "3", "10.1.0.1"]).stdout

Names are `<prefix><6 random hex chars><suffix>`, at most 15 characters (IFNAMSIZ - 1), so
parallel tests and several engineers' prefixes never collide. Interfaces are brought up when
created; every new namespace gets `lo` up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CommandError",
    "Topology",
    "ip",
    "netns",
    "ping",
    "run_in",
    "spawn_in",
    "unique_name",
    "wait_for_port",
]

IFNAMSIZ = 16


def unique_name(prefix: str, suffix: str = "") -> str:
    """A name `prefix + 6 hex + suffix` that fits an interface name (15 chars)."""
    name = f"{prefix}{secrets.token_hex(3)}{suffix}"
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"name {name!r} is longer than {IFNAMSIZ - 1} characters")
    return name


class CommandError(subprocess.CalledProcessError):
    """A failed command; unlike its base class, the message includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()}"


def _ns_argv(ns: str | None, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)


def run_in(
    ns: str | None,
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside namespace `ns` (None: the current one); text output captured.

    Raises `subprocess.CalledProcessError` with stderr in the message when `check` and it fails.
    """
    text_input = input.decode() if isinstance(input, bytes) else input
    proc = subprocess.run(
        _ns_argv(ns, cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=text_input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr)
    return proc


def spawn_in(ns: str | None, cmd: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Start `cmd` inside `ns` in its own process group (so it can be killed with its children).

    The caller owns the process; prefer `Topology.spawn_in`, which kills it on exit.
    """
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(_ns_argv(ns, cmd), start_new_session=True, **popen_kwargs)


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run `ip ARGS...` (inside `ns` with `ip -n`) and return its stdout."""
    argv = ["ip", *(("-n", ns) if ns else ()), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_for_port(ns: str | None, port: int, *, proto: str = "tcp", timeout: float = 10.0) -> None:
    """Wait until something listens on `port` (tcp or udp) inside `ns` (uses `ss`)."""
    flag = "-ltnH" if proto == "tcp" else "-lunH"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run_in(ns, ["ss", flag, f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {proto} port {port} in netns {ns} after {timeout}s")


_PING = r"""
import os, socket, struct, sys, time
addr, count, size, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
v6 = ":" in addr
fam, proto = (socket.AF_INET6, 58) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
req, rep = (128, 129) if v6 else (8, 0)
s = socket.socket(fam, socket.SOCK_RAW, proto)
s.settimeout(2.0)
ident = os.getpid() & 0xFFFF
def csum(b):
    b += b"\0" * (len(b) & 1)
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
got = 0
for seq in range(1, count + 1):
    body = struct.pack("!HH", ident, seq) + b"m" * size
    hdr = struct.pack("!BBH", req, 0, 0)
    if not v6:  # the kernel fills the ICMPv6 checksum itself
        hdr = struct.pack("!BBH", req, 0, csum(hdr + body))
    s.sendto(hdr + body, (addr, 0))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            data = s.recv(65535)
        except TimeoutError:
            break
        icmp = data if v6 else data[(data[0] & 15) * 4:]
        if icmp[0] == rep and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
            got += 1
            break
    if seq < count:
        time.sleep(interval)
print(got)
"""


def ping(
    ns: str | None, addr: str, *, count: int = 3, size: int = 56, interval: float = 0.05
) -> int:
    """Send `count` ICMP/ICMPv6 echo requests with `size` payload bytes from `ns` to `addr`.

    Waits for each reply (2 s at most) and returns how many replies arrived. The machine has
    no `ping` binary; this is the same exchange from a raw socket: one request and one reply
    per sequence number, each IP packet `20|40 + 8 + size` bytes.
    """
    argv = [sys.executable, "-c", _PING, addr, str(count), str(size), str(interval)]
    return int(run_in(ns, argv, timeout=10 + count * (2.0 + interval)).stdout.strip())


def _kill(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Terminate a process group, then kill it if it does not exit within `grace` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Topology:
    """Creates namespaces, links and processes, and removes all of them on `close()`.

    Use as a context manager (or call `close()` in a `finally`). Cleanup order: processes,
    then links in the root namespace, then namespaces (which take their links with them).
    Cleanup never raises; what it could not remove is collected in `leftovers`.
    """

    prefix: str = "ml"
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # root-namespace links we created
    processes: list[subprocess.Popen] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything created, newest first. Idempotent."""
        for proc in reversed(self.processes):
            _kill(proc)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
        self.processes.clear()
        for link in reversed(self.links):
            if _link_exists(link, None):
                proc = subprocess.run(["ip", "link", "del", link], capture_output=True, text=True)
                if proc.returncode != 0 and _link_exists(link, None):
                    self.leftovers.append(f"link {link}: {proc.stderr.strip()}")
        self.links.clear()
        for ns in reversed(self.namespaces):
            proc = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if proc.returncode != 0 and os.path.exists(f"/run/netns/{ns}"):
                self.leftovers.append(f"netns {ns}: {proc.stderr.strip()}")
        self.namespaces.clear()

    # -- building blocks ----------------------------------------------------------------------
    def netns(self, name: str | None = None) -> str:
        """Create a network namespace with `lo` up; returns its name."""
        name = name or unique_name(self.prefix, "n")
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", ns=name)
        # Quiet IPv6 (no router solicitations, no DAD delays) so counts are deterministic.
        for key in ("accept_ra=0", "dad_transmits=0", "router_solicitations=0"):
            run_in(name, ["sysctl", "-qw", f"net.ipv6.conf.default.{key}"], check=False)
            run_in(name, ["sysctl", "-qw", f"net.ipv6.conf.all.{key}"], check=False)
        return name

    def veth(
        self,
        name: str | None = None,
        peer: str | None = None,
        *,
        ns: str | None = None,
        peer_ns: str | None = None,
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """Create a veth pair `name` (in `ns`) <-> `peer` (in `peer_ns`), both up.

        `None` namespaces mean the root namespace. Returns `(name, peer)`.
        """
        name = name or unique_name(self.prefix, "a")
        peer = peer or unique_name(self.prefix, "b")
        ip("link", "add", name, "type", "veth", "peer", "name", peer)
        self.links.append(name)  # deleting one end deletes both
        try:
            if ns:
                ip("link", "set", name, "netns", ns)
                self.links.remove(name)  # goes away with the namespace
            if peer_ns:
                ip("link", "set", peer, "netns", peer_ns)
            for link, where in ((name, ns), (peer, peer_ns)):
                if mtu:
                    ip("link", "set", link, "mtu", str(mtu), ns=where)
                self._quiet_ipv6(link, where)
                ip("link", "set", link, "up", ns=where)
        except Exception:
            if not ns:
                with contextlib.suppress(Exception):
                    ip("link", "del", name)
                with contextlib.suppress(ValueError):
                    self.links.remove(name)
            raise
        return name, peer

    def bridge(self, name: str | None = None, *, ns: str | None = None) -> str:
        """Create a bridge (no STP, no forwarding delay, no multicast snooping), up."""
        name = name or unique_name(self.prefix, "br")
        ip(
            "link", "add", name, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
            ns=ns,
        )  # fmt: skip
        if not ns:
            self.links.append(name)
        self._quiet_ipv6(name, ns)
        ip("link", "set", name, "up", ns=ns)
        return name

    def link_set(self, link: str, *args: str, ns: str | None = None) -> None:
        """`ip link set dev LINK ARGS...` (e.g. "mtu", "1400" or "gso_max_segs", "1")."""
        ip("link", "set", "dev", link, *args, ns=ns)

    def enslave(self, link: str, bridge: str, *, ns: str | None = None) -> None:
        """Attach `link` to `bridge` (both in `ns`)."""
        ip("link", "set", link, "master", bridge, ns=ns)

    def addr(self, link: str, cidr: str, *, ns: str | None = None) -> None:
        """Add an IPv4 or IPv6 address (IPv6 with `nodad`, usable at once)."""
        extra = ("nodad",) if ":" in cidr else ()
        ip("addr", "add", cidr, "dev", link, *extra, ns=ns)

    def route(self, *args: str, ns: str | None = None) -> None:
        """`ip route add ARGS...` (v4 or v6, chosen by `ip` from the prefix)."""
        family = ("-6",) if any(":" in a for a in args) else ()
        ip(*family, "route", "add", *args, ns=ns)

    def run_in(self, ns: str | None, cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """`run_in(ns, cmd)`: run to completion, output captured (see module function)."""
        return run_in(ns, cmd, **kwargs)

    def spawn_in(self, ns: str | None, cmd: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        """Start a process in `ns`; it and its children are killed on `close()`."""
        proc = spawn_in(ns, cmd, **popen_kwargs)
        self.processes.append(proc)
        return proc

    @staticmethod
    def ifindex(link: str, ns: str | None = None) -> int:
        """Interface index of `link` in `ns`."""
        if ns is None:
            return socket.if_nametoindex(link)
        out = run_in(ns, ["cat", f"/sys/class/net/{link}/ifindex"]).stdout
        return int(out.strip())

    @staticmethod
    def _quiet_ipv6(link: str, ns: str | None) -> None:
        for key in ("accept_ra=0", "dad_transmits=0", "router_solicitations=0"):
            run_in(ns, ["sysctl", "-qw", f"net.ipv6.conf.{link}.{key}"], check=False)


def _link_exists(link: str, ns: str | None) -> bool:
    argv = ["ip", *(("-n", ns) if ns else ()), "link", "show", "dev", link]
    return subprocess.run(argv, capture_output=True).returncode == 0


@contextlib.contextmanager
def netns(prefix: str = "ml") -> Iterator[str]:
    """A single throw-away namespace: `with netns() as ns: run_in(ns, [...])`."""
    with Topology(prefix=prefix) as topo:
        yield topo.netns()
