"""The `discovery "instrument" { ... }` block: which network interfaces get the eBPF programs.

HCL::

    discovery "instrument" {
      interfaces               = ["veth*", "cali*", "/^eni[0-9a-f]+$/"]
      exclude                  = ["veth-test*"]
      auto_discover_interfaces = true
      attach_mode              = "auto"     # auto | tcx | tc
      tcx_order                = "first"    # first | last   (TCX only)
      tc_priority              = 1          # 1..32767        (classic TC only)
      netns                    = "host"     # host | current | /path/to/netns
    }

Pattern syntax and semantics live in `mermin.interfaces.patterns` and docs/interfaces.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mermin.config.base import StrictModel
from mermin.interfaces.patterns import DEFAULT_INTERFACE_PATTERNS, check_pattern

__all__ = ["DEFAULT_INTERFACE_PATTERNS", "InstrumentConfig"]


class InstrumentConfig(StrictModel):
    """Interface discovery and attachment settings (`discovery "instrument"`)."""

    interfaces: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INTERFACE_PATTERNS),
        description=(
            "Interfaces to instrument: glob patterns (`*`, `?`, `[a-z]`, `[!0-9]`, `{a,b}`, "
            "matched against the whole name) or regular expressions written `/regex/` "
            "(Python syntax, searched anywhere in the name: anchor with ^ and $). Names are "
            "case-sensitive. An entry starting with `!` is an exclusion. With no include entry "
            "(an empty list, or only `!` entries) the default list is used."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description=(
            "Interfaces never instrumented even when they match `interfaces` (same syntax). "
            "Exclusion always wins."
        ),
    )
    auto_discover_interfaces: bool = Field(
        default=True,
        description=(
            "Watch netlink and attach to matching interfaces as they appear (and detach when "
            "they go). false: attach only to the interfaces that match at start-up (and again "
            "on a configuration reload); interfaces created later are not instrumented."
        ),
    )
    attach_mode: Literal["auto", "tcx", "tc"] = Field(
        default="auto",
        description=(
            "How programs are attached: `tcx` (bpf_link, kernel 6.6+), `tc` (clsact qdisc + "
            "cls_bpf filter), or `auto` (TCX when the kernel supports it, else TC)."
        ),
    )
    tcx_order: Literal["first", "last"] = Field(
        default="first",
        description="TCX only: put our program before (`first`) or after (`last`) the others.",
    )
    tc_priority: int = Field(
        default=1,
        ge=1,
        le=32767,
        description="Classic TC only: cls_bpf filter priority (1 runs first, 1..32767).",
    )
    netns: str = Field(
        default="host",
        description=(
            "Network namespace whose interfaces are instrumented: `host` (the namespace of PID "
            "1, /proc/1/ns/net: the node's namespace when the pod has hostPID; no change when "
            "it is already ours or cannot be read), `current` (the agent's own namespace), or "
            "the path of a namespace file such as /var/run/netns/NAME."
        ),
    )

    @field_validator("interfaces", "exclude")
    @classmethod
    def _check_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_pattern(pattern)
        return value

    @field_validator("netns")
    @classmethod
    def _check_netns(cls, value: str) -> str:
        if value in ("host", "current") or value.startswith("/"):
            return value
        raise ValueError(
            f"invalid netns {value!r}: use 'host', 'current' or an absolute path "
            "(e.g. /var/run/netns/NAME)"
        )
