"""Helpers for the interface tests: ip commands, unique veths, a recording attacher."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable

PREFIX = "mi"


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip` (optionally `ip -n NETNS`)."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    """Run many `ip` commands in one process (`ip -batch -`), fast for hundreds of links."""
    cmd = ["ip", *(["-n", netns] if netns else []), "-force", "-batch", "-"]
    subprocess.run(cmd, input="\n".join(lines) + "\n", check=True, capture_output=True, text=True)


def unique(tag: str = "") -> str:
    """A unique short name with our prefix (interface names are at most 15 bytes)."""
    return f"{PREFIX}{tag}{secrets.token_hex(3)}"


def wait_until(cond: Callable[[], bool], timeout: float = 2.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def ifindex(name: str, netns: str | None = None) -> int:
    out = ip("-o", "link", "show", "dev", name, netns=netns).stdout
    return int(out.split(":", 1)[0])


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Links:
    """Creates veth pairs (and remembers them); deletes what is left at the end."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.made: list[str] = []

    def veth(self, name: str | None = None, peer: str | None = None, up: bool = True) -> str:
        name = name or unique()
        peer = peer or unique("q")  # never matches a test tag ("mit...")
        ip("link", "add", name, "type", "veth", "peer", "name", peer, netns=self.netns)
        self.made.append(name)
        if up:
            ip("link", "set", name, "up", netns=self.netns)
        return name

    def delete(self, name: str) -> None:
        ip("link", "del", name, netns=self.netns)

    def cleanup(self) -> None:
        existing = ip("-o", "link", "show", netns=self.netns, check=False).stdout
        left = [n for n in self.made if f" {n}@" in existing or f" {n}:" in existing]
        if left:
            cmd = ["ip", *(["-n", self.netns] if self.netns else []), "-force", "-batch", "-"]
            lines = "".join(f"link del {n}\n" for n in left)
            subprocess.run(cmd, input=lines, capture_output=True, text=True, check=False)


def thread_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


class RecordingAttacher:
    """Stands in for mermin.datapath.attach.Attacher: records calls, checks them like the kernel.

    Like a real TCX attach, `attach` resolves the ifindex in the calling thread's namespace and
    fails when it does not exist there. Names in `fail_names` fail to attach.
    """

    def __init__(self, fail_names: tuple[str, ...] = (), fail_detach: bool = False) -> None:
        self.fail_names = fail_names
        self.fail_detach = fail_detach
        self.calls: list[tuple] = []
        self.attached: dict[int, str] = {}
        self.netns_seen: set[tuple[int, int]] = set()
        self.lock = threading.Lock()
        self.orphan_cleanups = 0

    def attach(self, ifindex: int, ifname: str) -> None:
        with self.lock:
            self.netns_seen.add(thread_netns())
            self.calls.append(("attach", ifindex, ifname))
            if ifname in self.fail_names:
                raise OSError(95, f"attach refused for {ifname}")
            if socket.if_indextoname(ifindex) != ifname:  # raises OSError (ENXIO) when absent
                raise OSError(19, f"ifindex {ifindex} is not {ifname}")
            self.attached[ifindex] = ifname

    def detach(self, ifindex: int) -> None:
        with self.lock:
            self.calls.append(("detach", ifindex))
            self.attached.pop(ifindex, None)
            if self.fail_detach:
                raise OSError(19, "detach failed")

    def detach_all(self) -> None:
        with self.lock:
            self.calls.append(("detach_all",))
            self.attached.clear()

    def cleanup_orphans(self) -> None:
        self.orphan_cleanups += 1

    def names(self) -> set[str]:
        with self.lock:
            return set(self.attached.values())
