"""The `span { ... }` block: flow lifecycle timing and Community ID seed (inventory §5.9)."""

from __future__ import annotations

from pydantic import Field, model_validator

from mermin.config.base import Duration, StrictModel

__all__ = ["SpanConfig"]


class SpanConfig(StrictModel):
    """When a flow is reported and when it ends. Durations accept "500ms", "5s", "1m30s", ...

    A TCP flow's idle timeout follows its state as packets arrive: `tcp_timeout` while open,
    `tcp_fin_timeout` once FIN was seen in both directions, `tcp_close_linger` once the close
    completed (the last FIN acknowledged), `tcp_rst_timeout` once a RST was seen.
    """

    max_record_interval: Duration = Field(
        60.0,
        description="Report an active flow at least this often (active timeout).",
        gt=0,
    )
    generic_timeout: Duration = Field(
        30.0, description="Idle timeout of flows that are not TCP, UDP or ICMP.", gt=0
    )
    icmp_timeout: Duration = Field(10.0, description="Idle timeout of ICMP/ICMPv6 flows.", gt=0)
    tcp_timeout: Duration = Field(
        20.0, description="Idle timeout of open TCP connections (no FIN both ways, no RST).", gt=0
    )
    tcp_fin_timeout: Duration = Field(
        5.0,
        description="Idle timeout of a TCP connection once FIN was seen in both directions.",
        gt=0,
    )
    tcp_close_linger: Duration = Field(
        0.5,
        description=(
            "New. Idle time after a TCP connection has closed completely (FIN both ways and "
            "the last FIN acknowledged) before its final report (end_of_flow) leaves: the "
            "last ACK can trail the FIN by a moment. With the default poll_interval a closed "
            "connection is reported within about 1.5 s of its last packet."
        ),
        ge=0,
    )
    tcp_rst_timeout: Duration = Field(
        5.0, description="Idle timeout of a TCP connection once a RST was seen.", gt=0
    )
    udp_timeout: Duration = Field(60.0, description="Idle timeout of UDP flows.", gt=0)
    community_id_seed: int = Field(
        0, description="Seed of the Community ID v1 hash (0-65535).", ge=0, le=65535
    )
    trace_id_timeout: Duration = Field(
        86400.0,
        description=(
            "Accepted for compatibility with the original; a flow keeps one trace id for its "
            "whole life, so this has no effect."
        ),
        ge=0,
    )
    poll_interval: Duration = Field(
        1.0,
        description=(
            "How often the flow table reads the kernel map (live: wall time; replay: capture "
            "time). Timeouts and report times are rounded up to this granularity. The "
            "original polled every 5 s (flow_store_poll_interval); 1 s keeps reports of "
            "closed connections within 2 s of their last packet at a cost of one batched map "
            "read per second (about 5 ms per 10,000 flows)."
        ),
        gt=0,
    )
    map_high_water: float = Field(
        0.9,
        description=(
            "When the kernel flow map holds more than this fraction of its capacity, the "
            "least recently active flows are ended early with end reason lack_of_resources "
            "until it is back at map_low_water."
        ),
        gt=0,
        le=1,
    )
    map_low_water: float = Field(
        0.8, description="Target fill fraction after a lack_of_resources eviction.", gt=0, le=1
    )

    @model_validator(mode="after")
    def _water_marks(self) -> SpanConfig:
        if self.map_low_water >= self.map_high_water:
            raise ValueError(
                f"span.map_low_water ({self.map_low_water}) must be below span.map_high_water "
                f"({self.map_high_water})"
            )
        return self
