"""Flow report filters: the `filter "source"|"destination"|"network"|"flow"` blocks.

`FlowFilter.from_config(config)` compiles every rule once; `.apply(reports)` returns the
reports to keep, in order. Per attribute: a report is rejected when its value matches
`not_match`, or when `match` is non-empty and the value does not match it; all configured
attributes are ANDed. Evaluation is on flow reports, after enrichment, before export.

Which reports are judged
    Every report is judged (the original judged only the first packet of a flow). Attributes
    that cannot change during a flow (addresses, ports, transport, IP version, interface
    name/index/MAC) are judged once per flow and the verdict is cached by `report.flow_id`
    until the flow's final report; attributes that can change (TCP state and flags, DSCP, ECN,
    TTL, flow label, ICMP type/code) are judged on each report, so e.g.
    `connection_state = { match = ["established"] }` keeps only the reports taken while the
    connection was established. A flow rejected on a static attribute stays rejected.

Attributes that do not apply
    TCP state/flags apply to TCP flows only, ICMP names to ICMP/ICMPv6 flows only and the flow
    label to IPv6 flows only; other flows pass those attributes (as in the original). Flows
    without ports (ICMP, ...) have port 0 (as in the original). An unknown interface name or
    MAC fails a non-empty `match` and passes `not_match`.

interface_mac
    FlowReport has no MAC. `FlowFilter(..., mac_of=callable)` takes `ifindex -> "aa:bb:..."`
    (or None when unknown), typically the interface manager's; the MAC of the interface the
    flow was seen on is matched. Without `mac_of`, every MAC is unknown.

Cost: table lookups (protocol, DSCP, ECN, TTL, TCP flag bits are precomputed over their whole
value range), bisect over merged ranges for ports and addresses, small dict caches for
strings. Nothing per packet: reports arrive in batches from the flow table.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mermin.config.filter import FilterConfig, compile_globs, parse_networks, parse_ranges
from mermin.flows import names
from mermin.flows.record import EndReason, FlowReport

__all__ = ["FilterStats", "FlowFilter"]

MacLookup = Callable[[int], str | None]
_Test = Callable[[FlowReport], bool]

_CACHE_LIMIT = 1 << 20  # flow verdicts kept at most (then the cache is cleared, and counted)
_STRING_CACHE_LIMIT = 1 << 16
_TCP, _ICMP, _ICMPV6 = 6, 1, 58
_DSCP_ALIASES = {0: ("cs0", "be", "default")}


@dataclass
class FilterStats:
    """Counters of one FlowFilter (read by the agent and the metrics exporter)."""

    evaluated: int = 0  # reports judged
    rejected: int = 0  # reports dropped
    cache_hits: int = 0  # static verdicts taken from the per-flow cache
    cache_resets: int = 0  # times the per-flow cache hit its limit and was cleared
    rejected_by: dict[str, int] = field(default_factory=dict)  # "source.port" -> reports


class _Matcher:
    """`match` / `not_match` of one attribute: `allowed(value)` with the original's rule."""

    __slots__ = ("match", "not_match")

    def __init__(
        self, match: Callable[[Any], bool] | None, not_match: Callable[[Any], bool] | None
    ) -> None:
        self.match = match
        self.not_match = not_match

    def allowed(self, value: Any) -> bool:
        if self.not_match is not None and self.not_match(value):
            return False
        return self.match is None or self.match(value)

    def allowed_unknown(self) -> bool:
        """Verdict for a value that is not known (unknown interface): fails a `match`."""
        return self.match is None


def _ranges_test(values: list[str], high: int, what: str) -> Callable[[int], bool] | None:
    if not values:
        return None
    merged: list[list[int]] = []
    for start, end in sorted(parse_ranges(values, 0, high, what)):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = [r[0] for r in merged]
    ends = [r[1] for r in merged]

    def contains(value: int) -> bool:
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    return contains


def _networks_test(values: list[str]) -> Callable[[str], bool] | None:
    if not values:
        return None
    by_version: dict[int, tuple[list[int], list[int]]] = {}
    for version in (4, 6):
        nets = [n for n in parse_networks(values) if n.version == version]
        collapsed = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
        by_version[version] = (
            [int(n.network_address) for n in collapsed],
            [int(n.broadcast_address) for n in collapsed],
        )

    def contains(address: str) -> bool:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:  # inet_pton is ~10x faster than ipaddress.ip_address
            value = int.from_bytes(socket.inet_pton(family, address), "big")
        except OSError:
            return False
        starts, ends = by_version[6 if family == socket.AF_INET6 else 4]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    return contains


def _glob_test(values: list[str]) -> Callable[[Iterable[str]], bool] | None:
    """Test whether any of several spellings of a value (name, decimal) matches a glob."""
    pattern: re.Pattern[str] | None = compile_globs(values)
    if pattern is None:
        return None
    fullmatch = pattern.match  # fnmatch.translate anchors with \Z

    def matches(spellings: Iterable[str]) -> bool:
        return any(fullmatch(s.lower()) for s in spellings)

    return matches


def _table(size: int, matcher: _Matcher, spellings: Callable[[int], Iterable[Any]]) -> list[bool]:
    return [matcher.allowed(spellings(v)) for v in range(size)]


def _bounded_cache(cache: dict[Any, bool], key: Any, compute: Callable[[], bool]) -> bool:
    verdict = cache.get(key)
    if verdict is None:
        if len(cache) >= _STRING_CACHE_LIMIT:
            cache.clear()
        verdict = cache[key] = compute()
    return verdict


class FlowFilter:
    """Compiled filter rules; `apply(reports)` keeps the reports that pass all of them."""

    def __init__(
        self,
        static: Sequence[tuple[str, _Test]] = (),
        dynamic: Sequence[tuple[str, _Test]] = (),
    ) -> None:
        self._static = list(static)
        self._dynamic = list(dynamic)
        self._verdicts: dict[int, str | None] = {}  # flow_id -> failing rule name or None
        self.stats = FilterStats()

    @property
    def active(self) -> bool:
        """False when no rule is configured (apply() then keeps everything, at no cost)."""
        return bool(self._static or self._dynamic)

    @classmethod
    def from_config(cls, config: Any, *, mac_of: MacLookup | None = None) -> FlowFilter:
        """Compile `config.filter` (a Config, or a FilterConfig itself)."""
        filters: FilterConfig = getattr(config, "filter", config)
        static: list[tuple[str, _Test]] = []
        dynamic: list[tuple[str, _Test]] = []
        for block in ("source", "destination"):
            endpoint = getattr(filters, block)
            _add(static, f"{block}.address", _address_rule(endpoint.address, block))
            _add(static, f"{block}.port", _port_rule(endpoint.port, block))
        net = filters.network
        _add(static, "network.transport", _transport_rule(net.transport))
        _add(static, "network.type", _type_rule(net.type_))
        _add(static, "network.interface_name", _iface_name_rule(net.interface_name))
        _add(static, "network.interface_index", _iface_index_rule(net.interface_index))
        _add(static, "network.interface_mac", _iface_mac_rule(net.interface_mac, mac_of))
        flow = filters.flow
        _add(dynamic, "flow.connection_state", _state_rule(flow.connection_state))
        _add(dynamic, "flow.tcp_flags_tags", _tcp_flags_rule(flow.tcp_flags_tags))
        _add(dynamic, "flow.ip_dscp_name", _dscp_rule(flow.ip_dscp_name))
        _add(dynamic, "flow.ip_ecn_name", _ecn_rule(flow.ip_ecn_name))
        _add(dynamic, "flow.ip_ttl", _ttl_rule(flow.ip_ttl))
        _add(dynamic, "flow.ip_flow_label", _label_rule(flow.ip_flow_label))
        _add(dynamic, "flow.icmp_type_name", _icmp_type_rule(flow.icmp_type_name))
        _add(dynamic, "flow.icmp_code_name", _icmp_code_rule(flow.icmp_code_name))
        return cls(static, dynamic)

    def apply(self, reports: Sequence[FlowReport]) -> list[FlowReport]:
        """The reports that pass every rule, in their order."""
        stats = self.stats
        stats.evaluated += len(reports)
        if not self._static and not self._dynamic:
            return list(reports)
        kept: list[FlowReport] = []
        failed: dict[str, int] = {}
        for report in reports:
            reason = self._static_verdict(report)
            if reason is None:
                for name, test in self._dynamic:
                    if not test(report):
                        reason = name
                        break
            if reason is None:
                kept.append(report)
            else:
                failed[reason] = failed.get(reason, 0) + 1
        if failed:
            self._count(failed, len(reports) - len(kept))
        return kept

    def _static_verdict(self, report: FlowReport) -> str | None:
        if not self._static:
            return None
        flow_id = report.flow_id
        final = report.end_reason != EndReason.ACTIVE_TIMEOUT
        if flow_id and flow_id in self._verdicts:
            self.stats.cache_hits += 1
            return self._verdicts.pop(flow_id) if final else self._verdicts[flow_id]
        reason = next((name for name, test in self._static if not test(report)), None)
        if flow_id and not final:
            if len(self._verdicts) >= _CACHE_LIMIT:
                self._verdicts.clear()
                self.stats.cache_resets += 1
            self._verdicts[flow_id] = reason
        return reason

    def _count(self, failed: dict[str, int], rejected: int) -> None:
        self.stats.rejected += rejected
        by_block: dict[str, int] = {}
        for name, count in failed.items():
            self.stats.rejected_by[name] = self.stats.rejected_by.get(name, 0) + count
            block = name.split(".", 1)[0]
            by_block[block] = by_block.get(block, 0) + count
        try:
            from mermin.telemetry.metrics import FILTER_REJECTED
        except ImportError:  # metrics are optional for library use
            return
        for block, count in by_block.items():
            FILTER_REJECTED.labels(block).inc(count)


def _add(rules: list[tuple[str, _Test]], name: str, test: _Test | None) -> None:
    if test is not None:
        rules.append((name, test))


def _glob_matcher(pair: Any) -> _Matcher | None:
    if not pair.match and not pair.not_match:
        return None
    return _Matcher(_glob_test(pair.match), _glob_test(pair.not_match))


# -- static rules (cached per flow) ------------------------------------------------------------


def _address_rule(pair: Any, block: str) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    matcher = _Matcher(_networks_test(pair.match), _networks_test(pair.not_match))
    cache: dict[str, bool] = {}
    attr = "src_addr" if block == "source" else "dst_addr"

    def test(report: FlowReport) -> bool:
        address = getattr(report, attr)
        return _bounded_cache(cache, address, lambda: matcher.allowed(address))

    return test


def _port_rule(pair: Any, block: str) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    matcher = _Matcher(
        _ranges_test(pair.match, 65535, "port"), _ranges_test(pair.not_match, 65535, "port")
    )
    table = _table(65536, matcher, lambda v: v)
    attr = "src_port" if block == "source" else "dst_port"

    def test(report: FlowReport) -> bool:
        return table[getattr(report, attr) or 0]

    return test


def _transport_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    table = _table(256, matcher, lambda p: (names.transport_name(p), str(p)))
    return lambda report: table[report.protocol & 0xFF]


def _type_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    v4, v6 = matcher.allowed(("ipv4",)), matcher.allowed(("ipv6",))
    return lambda report: v6 if report.ip_version == 6 else v4


def _iface_name_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    unknown = matcher.allowed_unknown()
    cache: dict[str, bool] = {}

    def test(report: FlowReport) -> bool:
        name = report.iface_name
        if not name:
            return unknown
        return _bounded_cache(cache, name, lambda: matcher.allowed((name,)))

    return test


def _iface_index_rule(pair: Any) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    high = 2**32 - 1
    matcher = _Matcher(
        _ranges_test(pair.match, high, "interface index"),
        _ranges_test(pair.not_match, high, "interface index"),
    )
    unknown = matcher.allowed_unknown()

    def test(report: FlowReport) -> bool:
        index = report.iface_index
        return unknown if index is None else matcher.allowed(index)

    return test


def _iface_mac_rule(pair: Any, mac_of: MacLookup | None) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    unknown = matcher.allowed_unknown()

    def test(report: FlowReport) -> bool:
        index = report.iface_index
        mac = mac_of(index) if (mac_of is not None and index is not None) else None
        return unknown if not mac else matcher.allowed((mac,))

    return test


# -- dynamic rules (judged on every report) ----------------------------------------------------


def _state_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    cache: dict[str, bool] = {}

    def test(report: FlowReport) -> bool:
        state = report.tcp_state
        if report.protocol != _TCP or state is None:
            return True
        return _bounded_cache(cache, state, lambda: matcher.allowed((state,)))

    return test


def _tcp_flags_rule(pair: Any) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    match, not_match = _glob_test(pair.match), _glob_test(pair.not_match)

    def judge(bits: int) -> bool:
        tags = names.tcp_flag_tags(bits)
        if not_match is not None and any(not_match((tag,)) for tag in tags):
            return False  # any flag in not_match rejects
        return match is None or any(match((tag,)) for tag in tags)  # one flag must match

    table = [judge(bits) for bits in range(256)]

    def test(report: FlowReport) -> bool:
        if report.protocol != _TCP:
            return True
        return table[((report.tcp_flags or 0) | (report.rev_tcp_flags or 0)) & 0xFF]

    return test


def _dscp_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    table = _table(64, matcher, lambda d: (names.dscp_name(d), str(d), *_DSCP_ALIASES.get(d, ())))

    def test(report: FlowReport) -> bool:
        return True if report.dscp is None else table[report.dscp & 63]

    return test


def _ecn_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    table = _table(4, matcher, lambda e: (names.ecn_name(e), str(e)))

    def test(report: FlowReport) -> bool:
        return True if report.ecn is None else table[report.ecn & 3]

    return test


def _ttl_rule(pair: Any) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    matcher = _Matcher(
        _ranges_test(pair.match, 255, "TTL"), _ranges_test(pair.not_match, 255, "TTL")
    )
    table = _table(256, matcher, lambda v: v)

    def test(report: FlowReport) -> bool:
        return True if report.ttl is None else table[report.ttl & 0xFF]

    return test


def _label_rule(pair: Any) -> _Test | None:
    if not pair.match and not pair.not_match:
        return None
    high = 2**20 - 1
    matcher = _Matcher(
        _ranges_test(pair.match, high, "flow label"),
        _ranges_test(pair.not_match, high, "flow label"),
    )

    def test(report: FlowReport) -> bool:
        if report.ip_version != 6 or report.flow_label is None:
            return True
        return matcher.allowed(report.flow_label)

    return test


def _icmp_type_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    cache: dict[tuple[bool, int], bool] = {}

    def test(report: FlowReport) -> bool:
        if report.protocol not in (_ICMP, _ICMPV6) or report.icmp_type is None:
            return True
        v6, itype = report.protocol == _ICMPV6, report.icmp_type
        return _bounded_cache(
            cache,
            (v6, itype),
            lambda: matcher.allowed((names.icmp_type_name(itype, v6), str(itype))),
        )

    return test


def _icmp_code_rule(pair: Any) -> _Test | None:
    matcher = _glob_matcher(pair)
    if matcher is None:
        return None
    cache: dict[tuple[bool, int, int], bool] = {}

    def test(report: FlowReport) -> bool:
        if report.protocol not in (_ICMP, _ICMPV6) or report.icmp_type is None:
            return True
        v6, itype, code = report.protocol == _ICMPV6, report.icmp_type, report.icmp_code or 0
        return _bounded_cache(
            cache,
            (v6, itype, code),
            lambda: matcher.allowed((names.icmp_code_name(itype, code, v6), str(code))),
        )

    return test
