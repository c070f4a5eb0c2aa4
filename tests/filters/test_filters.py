"""FlowFilter on synthetic FlowReports: every attribute kind, match/not_match semantics,
ranges, globs, CIDRs v4/v6, per-flow caching and stats."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from mermin.config.filter import FilterConfig
from mermin.config.loader import parse_config
from mermin.filters import FlowFilter
from mermin.flows.record import EndReason, FlowReport, SpanKind

_NEXT_ID = iter(range(1, 1 << 30))


def report(**fields: Any) -> FlowReport:
    """A TCP/IPv4 report 10.0.0.1:40000 -> 10.0.0.2:80 on eth0 (ifindex 2); override anything."""
    base: dict[str, Any] = dict(
        trace_id=os.urandom(16), span_id=os.urandom(8), start_ns=1, end_ns=2,
        kind=SpanKind.CLIENT, community_id="1:x", direction="forward",
        end_reason=EndReason.ACTIVE_TIMEOUT, ip_version=4, protocol=6,
        src_addr="10.0.0.1", dst_addr="10.0.0.2", src_port=40000, dst_port=80,
        iface_name="eth0", iface_index=2, tcp_flags=0x12, rev_tcp_flags=0x10,
        tcp_state="established", dscp=0, ecn=0, ttl=64, flow_id=next(_NEXT_ID),
    )  # fmt: skip
    base.update(fields)
    return FlowReport(**base)


def icmp(**fields: Any) -> FlowReport:
    defaults: dict[str, Any] = dict(
        protocol=1,
        src_port=None,
        dst_port=None,
        tcp_flags=None,
        rev_tcp_flags=None,
        tcp_state=None,
        icmp_type=8,
        icmp_code=0,
    )
    return report(**{**defaults, **fields})  # fmt: skip


def v6(**fields: Any) -> FlowReport:
    defaults: dict[str, Any] = dict(
        ip_version=6, src_addr="fd00::1", dst_addr="fd00::2", flow_label=0x12345
    )
    return report(**{**defaults, **fields})  # fmt: skip


def make(block: str, attribute: str, match: Any = (), not_match: Any = (), **kw: Any) -> FlowFilter:
    config = FilterConfig.model_validate(
        {block: {attribute: {"match": list(match), "not_match": list(not_match)}}}
    )
    return FlowFilter.from_config(config, **kw)


def kept(flt: FlowFilter, *reports: FlowReport) -> list[bool]:
    out = flt.apply(list(reports))
    return [any(r is k for k in out) for r in reports]


def test_no_rules_keeps_everything() -> None:
    flt = FlowFilter.from_config(parse_config("", fmt="hcl"))
    batch = [report(), icmp(), v6()]
    assert flt.apply(batch) == batch
    assert not flt.active
    assert flt.stats.evaluated == 3 and flt.stats.rejected == 0


def test_source_address_cidr_v4_and_v6_and_wildcard() -> None:
    flt = make("source", "address", match=["10.0.0.0/24", "fd00::/64", "192.168.*.*"])
    assert kept(
        flt, report(src_addr="10.0.0.9"), report(src_addr="10.0.1.9"), v6(src_addr="fd00::9"),
        v6(src_addr="fd01::9"), report(src_addr="192.168.7.7"),
    ) == [True, False, True, False, True]  # fmt: skip


def test_not_match_wins_over_match() -> None:
    flt = make("destination", "address", match=["10.0.0.0/8"], not_match=["10.0.0.2"])
    assert kept(flt, report(dst_addr="10.0.0.2"), report(dst_addr="10.0.0.3")) == [False, True]


def test_ports_numbers_and_ranges() -> None:
    flt = make("destination", "port", match=[80, "8000-9000"], not_match=["8500-8501"])
    assert kept(
        flt, report(dst_port=80), report(dst_port=8000), report(dst_port=9000),
        report(dst_port=8500), report(dst_port=9001), report(dst_port=443),
    ) == [True, True, True, False, False, False]  # fmt: skip


def test_portless_flows_have_port_zero() -> None:
    assert kept(make("destination", "port", match=["53"]), icmp()) == [False]
    assert kept(make("destination", "port", match=["0"]), icmp()) == [True]
    assert kept(make("source", "port", not_match=["1-65535"]), icmp()) == [True]


def test_transport_and_type_globs_case_insensitive() -> None:
    flt = make("network", "transport", match=["TCP", "icmp*"])
    assert kept(flt, report(), icmp(), icmp(protocol=58), report(protocol=17)) == [
        True, True, True, False]  # fmt: skip
    assert kept(make("network", "transport", match=["132"]), report(protocol=132)) == [True]
    flt = make("network", "type", not_match=["ipv6"])
    assert kept(flt, report(), v6()) == [True, False]


def test_interface_name_index_and_unknown() -> None:
    flt = make("network", "interface_name", match=["eth*", "veth?"])
    assert kept(flt, report(iface_name="eth0"), report(iface_name="veth1"),
                report(iface_name="veth12"), report(iface_name=None)) == [
        True, True, False, False]  # fmt: skip
    flt = make("network", "interface_name", not_match=["lo"])
    assert kept(flt, report(iface_name="lo"), report(iface_name=None)) == [False, True]
    flt = make("network", "interface_index", match=["2-4"], not_match=["3"])
    assert kept(flt, report(iface_index=2), report(iface_index=3), report(iface_index=5)) == [
        True, False, False]  # fmt: skip


def test_interface_mac_from_lookup() -> None:
    macs = {2: "AA:BB:CC:00:00:01", 3: "02:42:ac:11:00:02"}
    flt = make("network", "interface_mac", match=["aa:bb:cc:*"], mac_of=macs.get)
    assert kept(flt, report(iface_index=2), report(iface_index=3), report(iface_index=9)) == [
        True, False, False]  # fmt: skip
    no_lookup = make("network", "interface_mac", match=["*"])
    assert kept(no_lookup, report()) == [False]  # MAC unknown fails a match


def test_connection_state_is_judged_per_report_and_tcp_only() -> None:
    flt = make("flow", "connection_state", match=["established"])
    first = report(tcp_state="syn_sent")
    later = dataclasses.replace(first, tcp_state="established", span_id=os.urandom(8))
    assert kept(flt, first) == [False]
    assert kept(flt, later) == [True]  # same flow, other state: judged again
    assert kept(flt, report(protocol=17, tcp_state=None)) == [True]


def test_tcp_flags_any_not_match_rejects_and_one_match_needed() -> None:
    flt = make("flow", "tcp_flags_tags", match=["SYN"], not_match=["rst"])
    assert kept(
        flt, report(tcp_flags=0x02, rev_tcp_flags=0x12), report(tcp_flags=0x10, rev_tcp_flags=0x10),
        report(tcp_flags=0x02, rev_tcp_flags=0x04), icmp(),
    ) == [True, False, False, True]  # fmt: skip


def test_dscp_and_ecn_names_decimals_and_aliases() -> None:
    flt = make("flow", "ip_dscp_name", match=["ef", "af2?", "cs0"])
    assert kept(flt, report(dscp=46), report(dscp=18), report(dscp=0), report(dscp=10)) == [
        True, True, True, False]  # fmt: skip
    assert kept(make("flow", "ip_dscp_name", match=["46"]), report(dscp=46)) == [True]
    flt = make("flow", "ip_ecn_name", not_match=["ce", "1"])
    assert kept(flt, report(ecn=3), report(ecn=1), report(ecn=2)) == [False, False, True]


def test_ttl_ranges_and_flow_label_v6_only() -> None:
    flt = make("flow", "ip_ttl", match=["1-64"], not_match=[1])
    assert kept(flt, report(ttl=64), report(ttl=1), report(ttl=128)) == [True, False, False]
    flt = make("flow", "ip_flow_label", match=["74565"])  # 0x12345
    assert kept(flt, v6(), v6(flow_label=1), report()) == [True, False, True]


def test_icmp_type_and_code_names() -> None:
    flt = make("flow", "icmp_type_name", match=["echo_*"])
    assert kept(flt, icmp(icmp_type=8), icmp(icmp_type=0), icmp(icmp_type=3), report()) == [
        True, True, False, True]  # fmt: skip
    assert kept(make("flow", "icmp_type_name", match=["128"]), icmp(protocol=58, icmp_type=128)
                ) == [True]  # fmt: skip
    flt = make("flow", "icmp_code_name", not_match=["port_unreachable"])
    assert kept(flt, icmp(icmp_type=3, icmp_code=3), icmp(icmp_type=3, icmp_code=1)) == [
        False, True]  # fmt: skip


def test_attributes_and_blocks_are_anded_and_stats_count_the_first_failure() -> None:
    config = parse_config(
        'filter "source" {\n  address = { match = ["10.0.0.0/8"] }\n}\n'
        'filter "destination" {\n  port = { not_match = ["22"] }\n}\n'
        'filter "network" {\n  transport = { match = ["tcp"] }\n}\n', fmt="hcl",
    )  # fmt: skip
    flt = FlowFilter.from_config(config)
    batch = [report(), report(dst_port=22), report(src_addr="192.0.2.1"), report(protocol=17)]
    assert kept(flt, *batch) == [True, False, False, False]
    assert flt.stats.evaluated == 4 and flt.stats.rejected == 3
    assert flt.stats.rejected_by == {"destination.port": 1, "source.address": 1,
                                     "network.transport": 1}  # fmt: skip


def test_static_verdict_is_cached_per_flow_until_its_final_report() -> None:
    flt = make("source", "address", not_match=["10.0.0.1"])
    first = report()
    again = dataclasses.replace(first, span_id=os.urandom(8))
    last = dataclasses.replace(first, end_reason=EndReason.END_OF_FLOW)
    assert kept(flt, first, again, last) == [False, False, False]
    assert flt.stats.cache_hits == 2
    assert flt._verdicts == {}  # the final report released the cache entry


def test_filter_counts_rejections_in_the_prometheus_metric() -> None:
    from mermin.telemetry.metrics import FILTER_REJECTED, REGISTRY

    before = REGISTRY.get_sample_value("mermin_filter_rejected_total", {"filter": "network"}) or 0
    flt = make("network", "type", match=["ipv6"])
    flt.apply([report(), report(), v6()])
    after = REGISTRY.get_sample_value("mermin_filter_rejected_total", {"filter": "network"})
    assert after == before + 2
    assert FILTER_REJECTED is not None


@pytest.mark.parametrize(
    ("block", "attribute", "value", "message"),
    [
        ("source", "address", "10.0.0.300", "invalid address"),
        ("destination", "port", "80-", "invalid port"),
        ("network", "interface_index", "-1", "invalid interface index"),
        ("flow", "ip_ttl", "256", "TTL '256' out of range 0-255"),
        ("flow", "ip_flow_label", "1048576", "flow label '1048576' out of range"),
    ],
)
def test_bad_filter_values_are_config_errors(block: str, attribute: str, value: str,
                                             message: str) -> None:  # fmt: skip
    from mermin.errors import ConfigError

    text = f'filter "{block}" {{\n  {attribute} = {{ match = ["{value}"] }}\n}}\n'
    with pytest.raises(ConfigError, match=rf"^f.hcl:2: filter\.{block}\.{attribute}\.match: "
                       rf".*{message}"):  # fmt: skip
        parse_config(text, fmt="hcl", name="f.hcl")


def test_comma_separated_string_form_of_the_original() -> None:
    flt = make("destination", "port", match=[])
    config = FilterConfig.model_validate({"destination": {"port": {"match": "80, 443,8000-8001"}}})
    assert config.destination.port.match == ["80", "443", "8000-8001"]
    flt = FlowFilter.from_config(config)
    assert kept(flt, report(dst_port=443), report(dst_port=8001), report(dst_port=22)) == [
        True, True, False]  # fmt: skip
