"""Network namespace handling: find the host namespace and move the calling thread into it.

Design: `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only. Sockets keep
the namespace they were created in, and the kernel resolves an ifindex (TCX `bpf_link_create`,
`if_indextoname`) in the namespace of the calling thread. So Mermin does not move the whole
process: the interface manager owns one thread (the netlink watcher thread) that enters the
target namespace first and then does *everything* that names interfaces: the netlink
subscription, link dumps, attach and detach. The rest of the agent (health/metrics servers,
Kubernetes client, exporters) stays in the pod's own namespace, so kubelet probes to the pod IP
and cluster DNS keep working when the pod does not use hostNetwork.

"host" means the namespace of PID 1 as seen from our PID namespace: the node's namespace when the
pod runs with hostPID (the original's approach), our own namespace otherwise (no change).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from mermin.errors import DatapathError, PermissionDeniedError

__all__ = [
    "CLONE_NEWNET",
    "HOST_NETNS_PATH",
    "enter_host_netns",
    "enter_netns",
    "netns_id",
    "resolve_netns",
    "same_netns",
    "setns",
    "thread_netns_path",
]

log = logging.getLogger("mermin.interfaces")

CLONE_NEWNET = 0x40000000
HOST_NETNS_PATH = "/proc/1/ns/net"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def thread_netns_path() -> str:
    """The namespace file of the calling thread (threads may differ from the process)."""
    return "/proc/thread-self/ns/net"


def netns_id(path: str) -> tuple[int, int]:
    """Identity of a namespace file: (st_dev, st_ino) of the nsfs inode it refers to."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def same_netns(path: str) -> bool:
    """True when `path` is the calling thread's current network namespace."""
    return netns_id(path) == netns_id(thread_netns_path())


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DatapathError(
            f"network namespace {path} does not exist: check discovery.instrument.netns"
        ) from None
    except PermissionError:
        raise PermissionDeniedError(
            f"cannot open network namespace {path}: run as root (CAP_SYS_ADMIN; in a pod "
            "hostPID and privileged)"
        ) from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise PermissionDeniedError(
                    f"setns into {path} refused: CAP_SYS_ADMIN is needed to change the "
                    "network namespace"
                )
            raise DatapathError(f"setns into {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextmanager
def enter_netns(path: str | None) -> Iterator[None]:
    """Run the body with the calling thread in `path` (None: stay), then come back."""
    if path is None:
        yield
        return
    back = os.open(thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(path)
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:  # pragma: no cover - kernel refused
                raise DatapathError(
                    f"could not return to the original network namespace: "
                    f"{os.strerror(ctypes.get_errno())}"
                )
    finally:
        os.close(back)


def resolve_netns(setting: str) -> str | None:
    """Turn the `netns` setting into a path to enter, or None to stay where we are.

    `host`: /proc/1/ns/net when it differs from ours; when it cannot be read (no privilege on
    PID 1, as in some sandboxes) a warning is logged and the agent stays in its namespace.
    `current`: None. Anything else is a path; None when it already is our namespace.
    """
    if setting == "current":
        return None
    if setting == "host":
        try:
            return None if same_netns(HOST_NETNS_PATH) else HOST_NETNS_PATH
        except OSError as err:
            log.warning(
                "cannot read %s (%s): instrumenting the agent's own network namespace; run "
                "with hostPID (or hostNetwork) and privileges to see the node's interfaces",
                HOST_NETNS_PATH,
                err.strerror,
            )
            return None
    try:
        return None if same_netns(setting) else setting
    except FileNotFoundError:
        raise DatapathError(
            f"network namespace {setting} does not exist: check discovery.instrument.netns"
        ) from None
    except PermissionError:
        raise PermissionDeniedError(
            f"cannot read network namespace {setting}: run as root"
        ) from None


def enter_host_netns() -> None:
    """Deliberately does nothing; kept because the agent skeleton calls it.

    Moving the agent's main thread (and so every thread it starts later) into the host
    namespace would also move the health and metrics servers: kubelet probes and Prometheus
    scrapes to the pod IP would then fail in a pod that has hostPID but not hostNetwork. The
    InterfaceManager instead enters the namespace chosen by `discovery.instrument.netns` in its
    own thread, where every netlink, attach and detach call runs.
    """
    log.debug("enter_host_netns: the interface manager thread enters the namespace itself")
