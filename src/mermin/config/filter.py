"""The `filter "source"|"destination"|"network"|"flow" { ... }` blocks (inventory §6).

Each attribute takes `{ match = [...], not_match = [...] }`. A flow report is dropped when its
value matches `not_match`, or when `match` is non-empty and the value does not match it; the
attributes of all blocks are ANDed. Values are validated here, when the config is loaded (the
original skipped bad entries with a warning); `mermin.filters` compiles them for evaluation.

Value kinds:

* addresses: IPs, CIDRs (`10.0.0.0/8`, `fd00::/8`) or IPv4 wildcards (`10.1.*.*`);
* numbers: single values and inclusive ranges (`"8000-9000"`), numbers or strings;
* globs: `*`, `?`, `[abc]`, matched case-insensitively against the whole value.

A list may also be written as one comma-separated string (`"80, 443"`), as older configs did.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from mermin.config.base import StrictModel

__all__ = [
    "AddressFilter",
    "EndpointFilter",
    "FilterConfig",
    "FlowAttributeFilter",
    "GlobFilter",
    "IndexFilter",
    "LabelFilter",
    "NetworkFilter",
    "PortFilter",
    "TtlFilter",
    "compile_globs",
    "parse_networks",
    "parse_ranges",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _as_list(value: Any) -> Any:
    """Accept a list, one scalar, or a comma-separated string; return a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple):
        return value  # let pydantic report the type
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(f"expected strings or numbers, got {item!r}")
        text = str(item).strip()
        if text:
            out.append(text)
    return out


FilterValues = Annotated[list[str], BeforeValidator(_as_list)]


def parse_networks(values: list[str]) -> list[IPNetwork]:
    """Parse IPs, CIDRs and IPv4 wildcards (`192.168.*.*`, `10.*`) into networks."""
    nets: list[IPNetwork] = []
    for text in values:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
            continue
        except ValueError:
            pass
        net = _wildcard_network(text)
        if net is None:
            raise ValueError(
                f"invalid address {text!r}: use an IP, a CIDR (10.0.0.0/8, fd00::/8) or an IPv4 "
                "wildcard (10.1.*.*)"
            )
        nets.append(net)
    return nets


def _wildcard_network(text: str) -> IPNetwork | None:
    parts = text.split(".")
    if "*" not in text or len(parts) > 4 or parts[0] == "*":
        return None
    octets: list[str] = []
    for part in parts:
        if part == "*":
            break
        if not part.isdigit() or int(part) > 255:
            return None
        octets.append(part)
    if any(p != "*" for p in parts[len(octets) :]):
        return None  # "10.*.3" : a wildcard must be trailing
    prefix = 8 * len(octets)
    address = ".".join(octets + ["0"] * (4 - len(octets)))
    return ipaddress.IPv4Network(f"{address}/{prefix}")


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_ranges(values: list[str], low: int, high: int, what: str) -> list[tuple[int, int]]:
    """Parse numbers and inclusive ranges ("8000-9000") bounded by [low, high]."""
    out: list[tuple[int, int]] = []
    for text in values:
        match = _RANGE.match(text)
        if match:
            start, end = int(match.group(1)), int(match.group(2))
        elif text.isdigit():
            start = end = int(text)
        else:
            raise ValueError(f"invalid {what} {text!r}: use a number or a range like '8000-9000'")
        if start > end:
            raise ValueError(f"invalid {what} range {text!r}: start is after end")
        if start < low or end > high:
            raise ValueError(f"{what} {text!r} out of range {low}-{high}")
        out.append((start, end))
    return out


def compile_globs(values: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of the globs (None when there are none)."""
    if not values:
        return None
    return re.compile("|".join(fnmatch.translate(v.lower()) for v in values))


class _Pair(StrictModel):
    """`{ match = [...], not_match = [...] }` for one attribute."""

    kind: ClassVar[str] = "glob values"
    hcl_inline: ClassVar[bool] = True  # written `{ match = [], not_match = [] }` on one line
    match: FilterValues = Field(
        default_factory=list, description="Keep only values matching one of these (empty: all)."
    )
    not_match: FilterValues = Field(
        default_factory=list, description="Drop values matching one of these (wins over match)."
    )

    @classmethod
    def check(cls, values: list[str]) -> list[str]:
        return [v.lower() for v in values]

    @field_validator("match", "not_match")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        return cls.check(value)


class GlobFilter(_Pair):
    """Case-insensitive glob patterns (`tcp`, `eth*`, `af?1`)."""

    kind: ClassVar[str] = "globs"


class AddressFilter(_Pair):
    """IPs, CIDRs or IPv4 wildcards."""

    kind: ClassVar[str] = "IPs/CIDRs"

    @classmethod
    def check(cls, values: list[str]) -> list[str]:
        parse_networks(values)
        return values


class _NumberFilter(_Pair):
    low: ClassVar[int] = 0
    high: ClassVar[int] = 0
    what: ClassVar[str] = "number"

    @classmethod
    def check(cls, values: list[str]) -> list[str]:
        parse_ranges(values, cls.low, cls.high, cls.what)
        return values


class PortFilter(_NumberFilter):
    """Ports and port ranges (0-65535)."""

    kind: ClassVar[str] = "ports/ranges"
    high, what = 65535, "port"


class IndexFilter(_NumberFilter):
    """Interface indexes and ranges."""

    kind: ClassVar[str] = "numbers/ranges"
    high, what = 2**32 - 1, "interface index"


class TtlFilter(_NumberFilter):
    """TTL / hop limit values and ranges (0-255)."""

    kind: ClassVar[str] = "numbers/ranges"
    high, what = 255, "TTL"


class LabelFilter(_NumberFilter):
    """IPv6 flow label values and ranges (0-1048575)."""

    kind: ClassVar[str] = "numbers/ranges"
    high, what = 2**20 - 1, "flow label"


class EndpointFilter(StrictModel):
    """`filter "source"` / `filter "destination"`: the endpoint's address and port."""

    address: AddressFilter = Field(
        default_factory=AddressFilter,
        description="IPs, CIDRs or IPv4 wildcards (`10.0.0.0/8`, `fd00::/8`, `10.1.*.*`).",
    )
    port: PortFilter = Field(
        default_factory=PortFilter,
        description=(
            'Ports and inclusive ranges (`443`, `"8000-9000"`). Flows without ports (ICMP, '
            "...) have port 0, as in the original."
        ),
    )


class NetworkFilter(StrictModel):
    """`filter "network"`: transport, IP version and the interface the flow was seen on."""

    model_config = ConfigDict(populate_by_name=True)

    transport: GlobFilter = Field(
        default_factory=GlobFilter,
        description="Transport name globs: `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, ... or the "
        "protocol number.",
    )
    type_: GlobFilter = Field(
        default_factory=GlobFilter, alias="type", description="`ipv4` / `ipv6` globs."
    )
    interface_name: GlobFilter = Field(
        default_factory=GlobFilter,
        description="Interface name globs (`eth*`). A flow on an interface whose name is not "
        "known fails a non-empty `match`.",
    )
    interface_index: IndexFilter = Field(
        default_factory=IndexFilter, description="Interface indexes and ranges."
    )
    interface_mac: GlobFilter = Field(
        default_factory=GlobFilter,
        description="Globs on the MAC address (`aa:bb:cc:*`, lowercase) of the interface the "
        "flow was seen on (the original used the first packet's source MAC). A flow whose "
        "interface MAC is unknown fails a non-empty `match`.",
    )


class FlowAttributeFilter(StrictModel):
    """`filter "flow"`: TCP, IP header and ICMP facts of the flow."""

    connection_state: GlobFilter = Field(
        default_factory=GlobFilter,
        description="TCP state globs (`established`, `fin_wait_*`, ...), judged on every "
        "report. TCP flows only (new: the original never applied it).",
    )
    tcp_flags_tags: GlobFilter = Field(
        default_factory=GlobFilter,
        description="TCP flag globs (`syn`, `rst`, ...) over the flags seen so far in both "
        "directions: dropped if any flag matches not_match; with match, at least one flag "
        "must match. TCP flows only.",
    )
    ip_dscp_name: GlobFilter = Field(
        default_factory=GlobFilter,
        description="DSCP (source->destination) name or decimal globs: `ef`, `af2?`, `cs0`, `46`.",
    )
    ip_ecn_name: GlobFilter = Field(
        default_factory=GlobFilter,
        description="ECN (source->destination) name or decimal globs: `non-ect`, `ect0`, "
        "`ect1`, `ce`.",
    )
    ip_ttl: TtlFilter = Field(
        default_factory=TtlFilter,
        description="TTL / hop limit (source->destination) values and ranges.",
    )
    ip_flow_label: LabelFilter = Field(
        default_factory=LabelFilter,
        description="IPv6 flow label values and ranges. IPv6 flows only.",
    )
    icmp_type_name: GlobFilter = Field(
        default_factory=GlobFilter,
        description="ICMP/ICMPv6 type name or decimal globs (`echo_request`, `8`). ICMP flows "
        "only.",
    )
    icmp_code_name: GlobFilter = Field(
        default_factory=GlobFilter,
        description="ICMP/ICMPv6 code name or decimal globs (`port_unreachable`, `3`). ICMP "
        "flows only.",
    )


class FilterConfig(StrictModel):
    """The four `filter` blocks. Empty lists filter nothing."""

    source: EndpointFilter = Field(
        default_factory=EndpointFilter, description="Filters on the source (initiator) endpoint."
    )
    destination: EndpointFilter = Field(
        default_factory=EndpointFilter, description="Filters on the destination endpoint."
    )
    network: NetworkFilter = Field(
        default_factory=NetworkFilter, description="Filters on transport, IP version, interface."
    )
    flow: FlowAttributeFilter = Field(
        default_factory=FlowAttributeFilter,
        description="Filters on TCP state/flags, DSCP, ECN, TTL, flow label, ICMP type/code.",
    )

    def is_empty(self) -> bool:
        """True when no attribute of any block has a match or not_match entry."""
        for block in (self.source, self.destination, self.network, self.flow):
            for name in type(block).model_fields:
                pair = getattr(block, name)
                if pair.match or pair.not_match:
                    return False
        return True
