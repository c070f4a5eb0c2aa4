"""IP -> candidate objects, with a fixed precedence when several objects claim one address.

Precedence (lower wins; documented in docs/kubernetes.md):

    0 POD       a running pod's own IP (status.podIPs, v4 and v6; not hostNetwork)
    1 FADING    a terminating pod, or a deleted one within `deleted_pod_grace`
    2 SERVICE   clusterIP(s), externalIPs, loadBalancerIP, load-balancer ingress IPs
    3 HOSTNET   a hostNetwork pod on its node's address, only when the flow's port is one the
                pod declares (containerPort/hostPort); otherwise it does not claim the address
    4 NODE      a node's InternalIP/ExternalIP
    5 ENDPOINT  an EndpointSlice address (its targetRef pod, or just the Service) for addresses
                no object above claims (pods filtered out, endpoints outside the cluster)

Among equals the most recently added wins (a new pod that reuses an IP beats a stale one).
Candidate lists are replaced, never mutated, so readers need no lock.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

__all__ = ["ENDPOINT", "FADING", "HOSTNET", "NODE", "POD", "SERVICE", "Candidate", "IpIndex"]

POD, FADING, SERVICE, HOSTNET, NODE, ENDPOINT = range(6)


class Candidate(NamedTuple):
    prio: int
    order: int  # negative insertion counter: newer first among equals
    kind: str  # "pod", "service", "node", "endpoint"
    uid: str
    obj: Any
    tag: str  # which association path gave this address (see config.k8s.ASSOCIATION_PATHS)


class IpIndex:
    """Address -> sorted candidates. Mutated by watcher threads under the state lock."""

    def __init__(self) -> None:
        self._by_ip: dict[str, tuple[Candidate, ...]] = {}
        self._counter = itertools.count()
        self.dirty: set[str] = set()

    def get(self, ip: str) -> tuple[Candidate, ...]:
        return self._by_ip.get(ip, ())

    def __len__(self) -> int:
        return len(self._by_ip)

    def add(self, ip: str, prio: int, kind: str, uid: str, obj: Any, tag: str) -> None:
        cand = Candidate(prio, -next(self._counter), kind, uid, obj, tag)
        old = self._by_ip.get(ip, ())
        kept = [c for c in old if not (c.uid == uid and c.kind == kind)]
        kept.append(cand)
        kept.sort()
        self._by_ip[ip] = tuple(kept)
        self.dirty.add(ip)

    def remove(self, ip: str, kind: str, uid: str) -> None:
        old = self._by_ip.get(ip)
        if not old:
            return
        kept = tuple(c for c in old if not (c.uid == uid and c.kind == kind))
        if len(kept) == len(old):
            return
        if kept:
            self._by_ip[ip] = kept
        else:
            del self._by_ip[ip]
        self.dirty.add(ip)

    def take_dirty(self) -> set[str]:
        """Addresses changed since the last call (caller holds the state lock)."""
        dirty, self.dirty = self.dirty, set()
        return dirty
