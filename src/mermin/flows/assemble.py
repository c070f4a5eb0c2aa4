"""Report assembly: kernel entries (a/b sides) + per-flow identity -> `FlowReport` objects.

A flow's identity is fixed by its first report: initiator side (`direction.py`), span kind,
trace id, Community ID and address strings, kept per slot in numpy arrays. Reports are built
column by column: every `FlowReport` field becomes one Python list computed with numpy for the
whole batch (None where a field does not apply), then `map(FlowReport, *columns)` builds the
objects without a Python-level loop body.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from mermin.config.span import SpanConfig
from mermin.flows import names
from mermin.flows.community_id import CommunityIdHasher, community_ids
from mermin.flows.decode import ICMP, ICMPV6, PORT_PROTOCOLS, TCP, addr_str
from mermin.flows.direction import DirectionResolver
from mermin.flows.record import FlowReport, SpanKind

__all__ = ["ReportBuilder"]

_UDP, _ESP, _AH = 17, 50, 51
_FIELDS = dataclasses.fields(FlowReport)
_KINDS = np.array([SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT], dtype=object)
_STATE_NAMES = np.array([*names.TCP_STATE_NAMES, None], dtype=object)
_TUNNEL_NAMES = np.array([names.TUNNEL_NAMES.get(i) for i in range(256)], dtype=object)


def _opt(values: np.ndarray, mask: np.ndarray) -> list:
    """values.tolist() with None where mask is False."""
    if mask.all():
        return values.tolist()
    if not mask.any():
        return [None] * len(mask)
    return np.where(mask, values.astype(object), None).tolist()


def _rows(addrs: np.ndarray) -> list[bytes]:
    return np.ascontiguousarray(addrs).view(np.dtype((np.void, 16))).ravel().tolist()


def _addr_strings(addrs: np.ndarray, versions: np.ndarray) -> list[str]:
    return [addr_str(a, v) for a, v in zip(_rows(addrs), versions.tolist(), strict=True)]


def _chunks(buf: bytes, size: int) -> list[bytes]:
    return [buf[i : i + size] for i in range(0, len(buf), size)]


class ReportBuilder:
    """Holds per-slot identity and builds reports for batches of rows."""

    def __init__(
        self,
        direction: DirectionResolver,
        cfg: SpanConfig,
        ifname: Callable[[int], str | None] | None = None,
    ) -> None:
        self._direction = direction
        self._seed = cfg.community_id_seed
        self._hasher = CommunityIdHasher(cfg.community_id_seed)
        self._ifname = ifname
        self._next_flow_id = 1
        self._size = 0
        self._known = np.zeros(0, dtype=bool)
        self._src_is_b = np.zeros(0, dtype=bool)
        self._src_local = np.zeros(0, dtype=bool)
        self._dst_local = np.zeros(0, dtype=bool)
        self._flow_id = np.zeros(0, dtype=np.int64)
        # object columns: trace, community id, direction, kind, src, dst, sport, dport
        self._obj = np.empty((0, 8), dtype=object)

    def grow(self, size: int) -> None:
        old = self._size
        self._size = size
        for name in ("_known", "_src_is_b", "_src_local", "_dst_local", "_flow_id"):
            arr = getattr(self, name)
            new = np.zeros(size, dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)
        obj = np.empty((size, 8), dtype=object)
        obj[:old] = self._obj
        self._obj = obj

    def reset(self, slots: np.ndarray) -> None:
        self._known[slots] = False
        self._obj[slots] = None

    def reconfigure(self, cfg: SpanConfig) -> None:
        if cfg.community_id_seed != self._seed:
            self._seed = cfg.community_id_seed
            self._hasher = CommunityIdHasher(cfg.community_id_seed)

    # --- identity ---------------------------------------------------------------------------

    def _identify(self, keys: np.ndarray, values: np.ndarray, slots: np.ndarray) -> None:
        """Fix the identity of the flows in `slots` that have none yet."""
        new = np.flatnonzero(~self._known[slots])
        if not len(new):
            return
        k, v, s = keys[new], values[new], slots[new]
        m = len(new)
        src_is_b, determined = self._direction.resolve(k, v)
        a_local, b_local = self._direction.locality(k)
        src_local = np.where(src_is_b, b_local, a_local)
        dst_local = np.where(src_is_b, a_local, b_local)
        self._known[s] = True
        self._src_is_b[s] = src_is_b
        self._src_local[s] = src_local
        self._dst_local[s] = dst_local
        self._flow_id[s] = np.arange(self._next_flow_id, self._next_flow_id + m)
        self._next_flow_id += m
        ver = k["ip_version"]
        sb = src_is_b[:, None]
        src16 = np.where(sb, k["addr_b"], k["addr_a"])
        dst16 = np.where(sb, k["addr_a"], k["addr_b"])
        sport = np.where(src_is_b, k["port_b"], k["port_a"])
        dport = np.where(src_is_b, k["port_a"], k["port_b"])
        ported = np.isin(k["protocol"], PORT_PROTOCOLS)
        obj = self._obj
        obj[s, 0] = _chunks(os.urandom(16 * m), 16)
        obj[s, 1] = self._community_ids(k, v, src_is_b, src16, dst16)
        obj[s, 2] = np.where(determined, "forward", "unknown")
        obj[s, 3] = _KINDS[np.where(src_local, 2, np.where(dst_local, 1, 0))]
        obj[s, 4] = _addr_strings(src16, ver)
        obj[s, 5] = _addr_strings(dst16, ver)
        obj[s, 6] = _opt(sport, ported)
        obj[s, 7] = _opt(dport, ported)

    def _community_ids(
        self, k: np.ndarray, v: np.ndarray, src_is_b: np.ndarray, src16: np.ndarray,
        dst16: np.ndarray,
    ) -> list[str]:  # fmt: skip
        out = community_ids(k, self._seed)
        proto = k["protocol"]
        icmp = np.flatnonzero((proto == ICMP) | (proto == ICMPV6))
        if len(icmp):
            # ICMP hashes a message: the initiator's when it sent one, else the responder's
            d = v["dir"][icmp]
            si = src_is_b[icmp].astype(np.intp)
            r = np.arange(len(icmp))
            sent_src = d["packets"][r, si] > 0
            sent_dst = d["packets"][r, 1 - si] > 0
            use_src = sent_src | ~sent_dst
            pick = np.where(use_src, si, 1 - si)
            types = d["icmp_type"][r, pick].tolist()
            codes = d["icmp_code"][r, pick].tolist()
            hasher = self._hasher
            for j, (row, ver, p) in enumerate(zip(icmp.tolist(), k["ip_version"][icmp].tolist(),
                                                  proto[icmp].tolist(), strict=True)):  # fmt: skip
                alen = 4 if ver == 4 else 16
                a, b = bytes(src16[row, :alen]), bytes(dst16[row, :alen])
                if not use_src[j]:
                    a, b = b, a
                out[row] = hasher(p, a, b, types[j], codes[j])
        return out

    # --- reports ----------------------------------------------------------------------------

    def build(
        self,
        keys: np.ndarray,
        values: np.ndarray,
        slots: np.ndarray,
        cur: np.ndarray,
        prev: np.ndarray,
        reasons: str | list[str],
        wall_offset: int,
    ) -> list[FlowReport]:
        """Reports for the given rows; `cur`/`prev` are (m, 4) totals in a/b order."""
        m = len(keys)
        if m == 0:
            return []
        self._identify(keys, values, slots)
        sb = self._src_is_b[slots]
        si = sb.astype(np.intp)
        r = np.arange(m)
        c: dict[str, list] = {}
        obj = self._obj[slots]
        for j, name in enumerate(("trace_id", "community_id", "direction", "kind", "src_addr",
                                  "dst_addr", "src_port", "dst_port")):  # fmt: skip
            c[name] = obj[:, j].tolist()
        c["span_id"] = _chunks(os.urandom(8 * m), 8)
        c["start_ns"] = (values["first_seen_ns"].astype(np.int64) + wall_offset).tolist()
        c["end_ns"] = (values["last_seen_ns"].astype(np.int64) + wall_offset).tolist()
        c["end_reason"] = [reasons] * m if isinstance(reasons, str) else list(reasons)
        proto = keys["protocol"]
        ver = keys["ip_version"]
        c["ip_version"] = ver.tolist()
        c["protocol"] = proto.tolist()
        # counters: cur/prev columns are (packets a->b, bytes a->b, packets b->a, bytes b->a)
        delta = cur - prev
        s_tot = np.where(sb[:, None], cur[:, 2:4], cur[:, 0:2])
        d_tot = np.where(sb[:, None], cur[:, 0:2], cur[:, 2:4])
        s_del = np.where(sb[:, None], delta[:, 2:4], delta[:, 0:2])
        d_del = np.where(sb[:, None], delta[:, 0:2], delta[:, 2:4])
        c["packets_delta"], c["bytes_delta"] = s_del[:, 0].tolist(), s_del[:, 1].tolist()
        c["packets_total"], c["bytes_total"] = s_tot[:, 0].tolist(), s_tot[:, 1].tolist()
        c["rev_packets_delta"], c["rev_bytes_delta"] = d_del[:, 0].tolist(), d_del[:, 1].tolist()
        c["rev_packets_total"], c["rev_bytes_total"] = d_tot[:, 0].tolist(), d_tot[:, 1].tolist()
        # where the flow was seen
        ifindex = values["ifindex"]
        c["iface_index"] = _opt(ifindex, ifindex != 0)
        if self._ifname is not None:
            lookup = {i: self._ifname(i) for i in np.unique(ifindex).tolist() if i}
            c["iface_name"] = [lookup.get(i) for i in ifindex.tolist()]
        vlan = values["vlan_id"]
        c["vlan_id"] = _opt(vlan, vlan != 0)
        # per-direction facts
        d = values["dir"]
        sd, dd = d[r, si], d[r, 1 - si]
        s_has, d_has = s_tot[:, 0] > 0, d_tot[:, 0] > 0
        tcp = proto == TCP
        c["tcp_flags"] = _opt(sd["tcp_flags"], tcp)
        c["rev_tcp_flags"] = _opt(dd["tcp_flags"], tcp)
        c["retransmits"] = _opt(sd["retransmits"], tcp)
        c["rev_retransmits"] = _opt(dd["retransmits"], tcp)
        state = np.minimum(values["tcp_state"], len(_STATE_NAMES) - 1)
        c["tcp_state"] = np.where(tcp, _STATE_NAMES[state], None).tolist()
        syn = values["tcp_syn_ns"].astype(np.int64)
        synack = values["tcp_synack_ns"].astype(np.int64)
        c["handshake_latency_ns"] = _opt(synack - syn, tcp & (syn > 0) & (synack >= syn))
        for prefix, dd_, has in (("", sd, s_has), ("rev_", dd, d_has)):
            c[prefix + "dscp"] = _opt(dd_["dscp"], has)
            c[prefix + "ecn"] = _opt(dd_["ecn"], has)
            c[prefix + "ttl"] = _opt(dd_["ttl"], has)
            c[prefix + "flow_label"] = _opt(dd_["flow_label"], has & (ver == 6))
            icmp = has & ((proto == ICMP) | (proto == ICMPV6))
            c[prefix + "icmp_type"] = _opt(dd_["icmp_type"], icmp)
            c[prefix + "icmp_code"] = _opt(dd_["icmp_code"], icmp)
        spi_flow = (proto == _ESP) | (proto == _AH) | (
            (proto == _UDP) & ((sd["spi"] != 0) | (dd["spi"] != 0))
        )
        c["spi"] = _opt(sd["spi"], spi_flow & s_has)
        c["rev_spi"] = _opt(dd["spi"], spi_flow & d_has)
        self._tunnel_columns(values, c)
        c["flow_id"] = self._flow_id[slots].tolist()
        c["src_local"] = self._src_local[slots].tolist()
        c["dst_local"] = self._dst_local[slots].tolist()
        columns = []
        for f in _FIELDS:
            col = c.get(f.name)
            if col is None:
                if f.default_factory is not dataclasses.MISSING:
                    col = [f.default_factory() for _ in range(m)]
                else:
                    col = [f.default] * m
            columns.append(col)
        return list(map(FlowReport, *columns))

    @staticmethod
    def _tunnel_columns(values: np.ndarray, c: dict[str, list]) -> None:
        ttype = values["tunnel_type"]
        has = ttype != 0
        if not has.any():
            return
        m = len(values)
        c["tunnel_type"] = np.where(has, _TUNNEL_NAMES[ttype], None).tolist()
        tid = values["tunnel_id"]
        c["tunnel_id"] = _opt(tid, has & (np.isin(ttype, (1, 2)) | (tid != 0)))
        tver = values["tunnel_ip_version"]
        known_ver = has & np.isin(tver, (4, 6))
        src: list[str | None] = [None] * m
        dst: list[str | None] = [None] * m
        rows = np.flatnonzero(known_ver)
        for i, a, b, tv in zip(rows.tolist(), _rows(values["tunnel_src"][rows]),
                               _rows(values["tunnel_dst"][rows]), tver[rows].tolist(),
                               strict=True):  # fmt: skip
            src[i], dst[i] = addr_str(a, tv), addr_str(b, tv)
        c["tunnel_src_addr"], c["tunnel_dst_addr"] = src, dst
        udp = has & (values["tunnel_protocol"] == _UDP)
        c["tunnel_src_port"] = _opt(values["tunnel_sport"], udp)
        c["tunnel_dst_port"] = _opt(values["tunnel_dport"], udp)
        c["tunnel_ip_version"] = _opt(tver, known_ver)
        tproto = values["tunnel_protocol"]
        c["tunnel_protocol"] = _opt(tproto, has & (tproto != 0))
