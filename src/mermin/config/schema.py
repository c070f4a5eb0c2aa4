"""The root `Config`: every top-level key of the original Mermin config (inventory §5).

`Config()` is the default configuration. Blocks owned by other parts are imported from their
modules (span, export, k8s, discovery, internal); this module owns the top-level scalars,
`pipeline`, `parser`, the `discovery` / `discovery "informer"` grouping and (in
`mermin.config.filter`) the `filter` blocks.

HCL labelled blocks are nested keys: `discovery "instrument" {}` is `discovery.instrument`,
`discovery "informer" "k8s" {}` is `discovery.informer.k8s`, `attributes "source" "k8s" {}` is
`attributes.source.k8s`, `export "traces" {}` is `export.traces`, `internal "metrics" {}` is
`internal.metrics`, `filter "source" {}` is `filter.source`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from mermin.config.base import Duration, StrictModel, normalized_choice
from mermin.config.discovery import InstrumentConfig
from mermin.config.export import ExportConfig
from mermin.config.filter import FilterConfig
from mermin.config.internal import InternalConfig
from mermin.config.k8s import AttributesConfig, InformerConfig
from mermin.config.span import SpanConfig

__all__ = [
    "Config",
    "DiscoveryConfig",
    "FlowCaptureConfig",
    "FlowProducerConfig",
    "InformerGroup",
    "K8sDecoratorConfig",
    "LogLevel",
    "ParserConfig",
    "PipelineConfig",
]

_LEVEL_ALIASES = {"warning": "warn", "err": "error", "critical": "error", "fatal": "error"}

LogLevel = Annotated[
    Literal["trace", "debug", "info", "warn", "error"],
    BeforeValidator(normalized_choice(_LEVEL_ALIASES)),
]
Port = Annotated[int, Field(ge=1, le=65535)]
Capacity = Annotated[int, Field(gt=0)]


class FlowCaptureConfig(StrictModel):
    """Kernel-side capacities (`pipeline { flow_capture { ... } }`)."""

    flow_stats_capacity: Capacity = Field(
        16384,
        description=(
            "Maximum number of flows tracked at once: the max_entries of the kernel FLOWS map "
            "(the original's FLOW_STATS). Fixed when the program loads: a reload that changes "
            "it takes effect at the next restart."
        ),
    )
    flow_events_capacity: Capacity = Field(
        1024,
        description=(
            "Accepted for compatibility; no effect. The original sized its new-flow ring "
            "buffer with it; this agent finds new flows by reading the map in batches."
        ),
    )
    pin_maps: bool = Field(
        True,
        description=(
            "Pin the kernel maps (and TCX links) under /sys/fs/bpf/mermin_v<ABI> so a restarted "
            "agent keeps the flows counted meanwhile and can remove a crashed run's "
            "attachments. false: nothing is pinned and everything goes with the process."
        ),
    )


class FlowProducerConfig(StrictModel):
    """Userspace producer settings of the original (`pipeline { flow_producer { ... } }`)."""

    workers: Capacity = Field(
        4, description="Accepted for compatibility; no effect (one poll thread reads the map)."
    )
    worker_queue_capacity: Capacity = Field(
        1024, description="Accepted for compatibility; no effect (there are no worker queues)."
    )
    flow_store_poll_interval: Duration | None = Field(
        None,
        gt=0,
        description=(
            "The original's map poll interval. When set (and `span.poll_interval` is not), it "
            "sets `span.poll_interval`, the interval at which the agent reads the kernel map."
        ),
    )
    flow_span_queue_capacity: Capacity = Field(
        4096,
        description=(
            "Accepted for compatibility; no effect. Reports go from the poll loop to the "
            "exporters' own bounded queues (export.traces.otlp.max_queue_size)."
        ),
    )


class K8sDecoratorConfig(StrictModel):
    """`pipeline { k8s_decorator { ... } }` of the original."""

    decorated_span_queue_capacity: Capacity = Field(
        8192,
        description="Accepted for compatibility; no effect (enrichment runs in the poll "
        "loop on each batch).",
    )
    threads: Capacity | None = Field(
        None,
        description="Appears in some of the original's examples but never existed there; "
        "accepted and ignored so those files load.",
    )


class PipelineConfig(StrictModel):
    """Capacities and queue sizes of the flow pipeline."""

    flow_capture: FlowCaptureConfig = Field(
        default_factory=FlowCaptureConfig, description="Kernel flow map size."
    )
    flow_producer: FlowProducerConfig = Field(
        default_factory=FlowProducerConfig, description="Map polling (original's producer)."
    )
    k8s_decorator: K8sDecoratorConfig = Field(
        default_factory=K8sDecoratorConfig, description="Original's decorator stage settings."
    )


class ParserConfig(StrictModel):
    """UDP ports on which the kernel program recognises tunnels and decapsulates them."""

    vxlan_port: Port = Field(4789, description="UDP destination port of VXLAN (IANA 4789).")
    geneve_port: Port = Field(6081, description="UDP destination port of Geneve (IANA 6081).")
    wireguard_port: Port = Field(
        51820,
        description="UDP port of WireGuard (51820); its flows carry the receiver index.",
    )


class InformerGroup(StrictModel):
    """`discovery "informer" ...` blocks."""

    k8s: InformerConfig = Field(
        default_factory=InformerConfig,
        description='Kubernetes API watchers (`discovery "informer" "k8s"`).',
    )


class DiscoveryConfig(StrictModel):
    """`discovery "instrument"` and `discovery "informer" "k8s"`."""

    instrument: InstrumentConfig = Field(
        default_factory=InstrumentConfig,
        description='Which interfaces get the eBPF programs (`discovery "instrument"`).',
    )
    informer: InformerGroup = Field(
        default_factory=InformerGroup, description="Metadata sources (Kubernetes)."
    )


class Config(StrictModel):
    """The whole agent configuration; `Config()` is the default one."""

    log_level: LogLevel = Field(
        "info", description="Log level: trace, debug, info, warn or error (env MERMIN_LOG_LEVEL)."
    )
    log_color: bool = Field(False, description="Colour the text log lines (ANSI).")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log line format: `text` or `json` (one object per line). New."
    )
    auto_reload: bool = Field(
        False,
        description=(
            "Reload the config when the file changes (and on SIGHUP). Env "
            "MERMIN_CONFIG_AUTO_RELOAD. SIGHUP always reloads here (the original ignored it "
            "when this was false)."
        ),
    )
    shutdown_timeout: Duration = Field(
        28.0,
        description=(
            "On SIGTERM/SIGINT: time allowed for final reports, exporter flush and detach "
            "before the agent exits anyway."
        ),
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig, description="Flow map capacity and pipeline queues."
    )
    parser: ParserConfig = Field(
        default_factory=ParserConfig, description="Tunnel ports for in-kernel decapsulation."
    )
    discovery: DiscoveryConfig = Field(
        default_factory=DiscoveryConfig,
        description="Interface discovery and Kubernetes informers.",
    )
    attributes: AttributesConfig = Field(
        default_factory=AttributesConfig,
        description='Kubernetes metadata attached to each endpoint (`attributes "source" "k8s"`).',
    )
    filter: FilterConfig = Field(
        default_factory=FilterConfig,
        description='Which flow reports are exported (`filter "source"|"destination"|...`).',
    )
    span: SpanConfig = Field(
        default_factory=SpanConfig, description="Flow report timing (active/idle timeouts)."
    )
    export: ExportConfig = Field(
        default_factory=ExportConfig, description='Where reports go (`export "traces"`).'
    )
    internal: InternalConfig = Field(
        default_factory=InternalConfig,
        description='The agent\'s own metrics, health server and traces (`internal "..."`).',
    )

    @model_validator(mode="after")
    def _map_poll_interval(self) -> Config:
        """`pipeline.flow_producer.flow_store_poll_interval` (original) feeds span.poll_interval."""
        legacy = self.pipeline.flow_producer.flow_store_poll_interval
        if legacy is None or not hasattr(self.span, "poll_interval"):
            return self
        if "poll_interval" in self.span.model_fields_set:
            if abs(self.span.poll_interval - legacy) > 1e-9:
                raise ValueError(
                    "pipeline.flow_producer.flow_store_poll_interval and span.poll_interval "
                    "disagree; set only span.poll_interval"
                )
            return self
        span = self.span.model_copy(update={"poll_interval": legacy})
        object.__setattr__(self, "span", span)
        return self
