"""Namespace helpers: resolving the `netns` setting and per-thread setns."""

from __future__ import annotations

import socket
import threading

import pytest
from tests.interfaces.support import Links, ifindex, unique

from mermin.errors import DatapathError
from mermin.interfaces.hostns import (
    HOST_NETNS_PATH,
    enter_netns,
    netns_id,
    resolve_netns,
    same_netns,
)

pytestmark = pytest.mark.privileged


def test_resolve_current_and_own_namespace(require_root: None) -> None:
    assert resolve_netns("current") is None
    assert resolve_netns("/proc/self/ns/net") is None  # already ours: nothing to enter
    assert resolve_netns("host") in (None, HOST_NETNS_PATH)  # never raises


def test_resolve_other_and_missing(netns: str) -> None:
    path = f"/var/run/netns/{netns}"
    assert resolve_netns(path) == path
    assert not same_netns(path)
    with pytest.raises(DatapathError, match="does not exist"):
        resolve_netns(f"/var/run/netns/{unique('zz')}")


def test_enter_netns_is_per_thread_and_restores(netns: str) -> None:
    path = f"/var/run/netns/{netns}"
    inside = Links(netns)
    try:
        name = inside.veth()
        idx = ifindex(name, netns=netns)
        mine = netns_id("/proc/thread-self/ns/net")
        seen: dict[str, object] = {}

        def other_thread() -> None:
            seen["ns"] = netns_id("/proc/thread-self/ns/net")

        with enter_netns(path):
            assert netns_id("/proc/thread-self/ns/net") == netns_id(path)
            assert socket.if_indextoname(idx) == name  # ifindex lookups follow the thread
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
        assert netns_id("/proc/thread-self/ns/net") == mine
        # a thread started while we were inside inherits the namespace of its creator
        assert seen["ns"] == netns_id(path)
    finally:
        inside.cleanup()


def test_enter_missing_namespace_fails_cleanly(require_root: None) -> None:
    before = netns_id("/proc/thread-self/ns/net")
    with pytest.raises(DatapathError), enter_netns("/var/run/netns/mi-nope-nope"):
        pass
    assert netns_id("/proc/thread-self/ns/net") == before
