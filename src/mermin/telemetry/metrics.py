"""Every Prometheus metric of the agent, in one registry.

Names follow the original Mermin (``mermin_*``, see docs/operations.md) where they apply; the
rest are new and documented there too. Importing this module has no side effect beyond creating
the metric objects in :data:`REGISTRY` (no server, no global default registry).

Stages update metrics once per batch (``.inc(n)``), never per packet. Kernel counters are not
pushed: :class:`KernelCountersCollector` reads them from a callable at scrape time (the per-CPU
``COUNTERS`` array, summed by ``Datapath.counters()``).

A part needing a metric not listed here adds it at the end of this file in a block marked with
its area name, and documents it in docs/operations.md (a test checks every metric is documented).
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ATTACH_ERRORS",
    "BUILD_INFO",
    "CONFIG_RELOADS",
    "DEFAULT_BUCKETS",
    "EBPF_BPF_FS_WRITABLE",
    "EBPF_MAP_CAPACITY",
    "EBPF_MAP_FILL_RATIO",
    "EBPF_MAP_OPS",
    "EBPF_MAP_SIZE",
    "EBPF_METHOD",
    "EBPF_ORPHANS_CLEANED",
    "EBPF_TC_PROGRAMS",
    "EXPORT_BATCH_SIZE",
    "EXPORT_DROPPED",
    "EXPORT_DURATION",
    "EXPORT_FLOW_SPANS",
    "EXPORT_QUEUE_CAPACITY",
    "EXPORT_QUEUE_SIZE",
    "EXPORT_RETRIES",
    "EXPORT_TIMEOUTS",
    "FILTER_REJECTED",
    "FLOW_REPORTS",
    "FLOW_SPANS_ACTIVE",
    "FLOW_SPANS_CREATED",
    "INTERFACES_ATTACHED",
    "INTERFACE_BYTES",
    "INTERFACE_PACKETS",
    "K8S_CACHE_OBJECTS",
    "K8S_DECORATOR_FLOW_SPANS",
    "K8S_WATCHER_EVENTS",
    "K8S_WATCHER_IP_INDEX_UPDATE_DURATION",
    "KERNEL_COUNTERS",
    "KERNEL_COUNTER_KEYS",
    "PIPELINE_DURATION",
    "POLL_DURATION",
    "REGISTRY",
    "SHUTDOWN_DURATION",
    "SHUTDOWN_FLOWS",
    "SHUTDOWN_TIMEOUTS",
    "KernelCountersCollector",
    "apply_histogram_buckets",
    "metric_names",
    "set_build_info",
    "set_map_gauges",
    "start_metrics_server",
]

REGISTRY = CollectorRegistry(auto_describe=True)
"""The agent's registry: the metrics server serves exactly this."""

# No `*_created` companion series: they double the series count and the original has none.
disable_created_metrics()

# Default histogram buckets (the original's, inventory §7.1); `internal "metrics"
# histogram_buckets { <name> = [...] }` overrides them through apply_histogram_buckets().
DEFAULT_BUCKETS: dict[str, tuple[float, ...]] = {
    "mermin_pipeline_duration_seconds": (
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5,
        1.0, 10.0, 60.0,
    ),
    "mermin_export_batch_size": (1, 10, 50, 100, 250, 500, 1000),
    "mermin_k8s_watcher_ip_index_update_duration_seconds": (
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ),
    "mermin_shutdown_duration_seconds": (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0),
    "mermin_export_duration_seconds": (
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ),
    "mermin_poll_duration_seconds": (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ),
}  # fmt: skip


def _histogram(name: str, doc: str, labels: Sequence[str] = ()) -> Histogram:
    return Histogram(name, doc, labels, registry=REGISTRY, buckets=DEFAULT_BUCKETS[name])


# --- build -------------------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "mermin_build_info", "Always 1; labels carry the agent version and Python version.",
    ["version", "python"], registry=REGISTRY,
)

# --- eBPF (original names) ---------------------------------------------------------------------
EBPF_MAP_SIZE = Gauge(
    "mermin_ebpf_map_size", "Current size of an eBPF map (entries or bytes).",
    ["map", "unit"], registry=REGISTRY,
)
EBPF_MAP_CAPACITY = Gauge(
    "mermin_ebpf_map_capacity", "Configured capacity of an eBPF map (max_entries or bytes).",
    ["map", "unit"], registry=REGISTRY,
)
EBPF_METHOD = Gauge(
    "mermin_ebpf_method", "1 for the attachment method in use (tcx or tc), 0 for the other.",
    ["attachment"], registry=REGISTRY,
)
EBPF_BPF_FS_WRITABLE = Gauge(
    "mermin_ebpf_bpf_fs_writable", "1 if /sys/fs/bpf is mounted and writable (pinning works).",
    registry=REGISTRY,
)
EBPF_MAP_OPS = Counter(
    "mermin_ebpf_map_ops_total",
    "eBPF map operations issued by the agent (batched calls count once).",
    ["map", "operation", "status"], registry=REGISTRY,
)
EBPF_ORPHANS_CLEANED = Counter(
    "mermin_ebpf_orphans_cleaned_total",
    "Programs/links left by a previous agent instance that were removed at startup.",
    registry=REGISTRY,
)
EBPF_TC_PROGRAMS = Counter(
    "mermin_ebpf_tc_programs_total", "Program attach/detach operations that succeeded.",
    ["operation"], registry=REGISTRY,
)

# --- eBPF (new) --------------------------------------------------------------------------------
EBPF_MAP_FILL_RATIO = Gauge(
    "mermin_ebpf_map_fill_ratio", "entries / max_entries of an eBPF map (0..1).",
    ["map"], registry=REGISTRY,
)
INTERFACES_ATTACHED = Gauge(
    "mermin_interfaces_attached", "Interfaces the programs are currently attached to.",
    registry=REGISTRY,
)
ATTACH_ERRORS = Counter(
    "mermin_ebpf_attach_errors_total", "Attach or detach attempts that failed.",
    ["operation"], registry=REGISTRY,
)

# --- flows (original names) --------------------------------------------------------------------
FLOW_SPANS_CREATED = Counter(
    "mermin_flow_spans_created_total", "New flows seen by the flow table.", registry=REGISTRY,
)
FLOW_SPANS_ACTIVE = Gauge(
    "mermin_flow_spans_active_total", "Flows currently tracked by the flow table.",
    registry=REGISTRY,
)
PIPELINE_DURATION = _histogram(
    "mermin_pipeline_duration_seconds",
    "Time a batch spends in a pipeline stage (flow_producer_out, k8s_decorator_out, export_out).",
    ["stage"],
)
INTERFACE_PACKETS = Counter(
    "mermin_interface_packets_total", "Packets counted into flows (sum of flow deltas).",
    registry=REGISTRY,
)
INTERFACE_BYTES = Counter(
    "mermin_interface_bytes_total", "Bytes counted into flows (sum of flow deltas).",
    registry=REGISTRY,
)

# --- flows (new) -------------------------------------------------------------------------------
POLL_DURATION = _histogram(
    "mermin_poll_duration_seconds", "Duration of one flow-map poll (read, diff, due reports).",
)
FLOW_REPORTS = Counter(
    "mermin_flow_reports_total", "Flow reports produced, by end reason "
    "(active_timeout, idle_timeout, end_of_flow, forced_end, ...).", ["reason"], registry=REGISTRY,
)
FILTER_REJECTED = Counter(
    "mermin_filter_rejected_total", "Flow reports rejected by a filter block "
    "(source, destination, network, flow).", ["filter"], registry=REGISTRY,
)

# --- export (original names) -------------------------------------------------------------------
EXPORT_FLOW_SPANS = Counter(
    "mermin_export_flow_spans_total", "Flow spans handed to an exporter, by outcome (ok, error).",
    ["exporter", "status"], registry=REGISTRY,
)
EXPORT_BATCH_SIZE = _histogram("mermin_export_batch_size", "Spans per export request.")
EXPORT_TIMEOUTS = Counter(
    "mermin_export_timeouts_total", "Export requests that hit their timeout.", ["exporter"],
    registry=REGISTRY,
)

# --- export (new) ------------------------------------------------------------------------------
EXPORT_DROPPED = Counter(
    "mermin_export_dropped_total", "Flow spans an exporter dropped, by reason "
    "(queue_full, retries_exhausted, non_retryable, shutdown, closed_pipe).",
    ["exporter", "reason"], registry=REGISTRY,
)
EXPORT_DURATION = _histogram(
    "mermin_export_duration_seconds", "Latency of one export request, retries included.",
    ["exporter"],
)
EXPORT_RETRIES = Counter(
    "mermin_export_retries_total", "Export request retries.", ["exporter"], registry=REGISTRY,
)
EXPORT_QUEUE_SIZE = Gauge(
    "mermin_export_queue_size", "Spans waiting in an exporter's queue.", ["exporter"],
    registry=REGISTRY,
)
EXPORT_QUEUE_CAPACITY = Gauge(
    "mermin_export_queue_capacity", "Capacity of an exporter's queue.", ["exporter"],
    registry=REGISTRY,
)

# --- kubernetes (original names) ---------------------------------------------------------------
K8S_DECORATOR_FLOW_SPANS = Counter(
    "mermin_k8s_decorator_flow_spans_total", "Flow spans through the Kubernetes decorator, "
    "by status (ok, undecorated, error, dropped).", ["status"], registry=REGISTRY,
)
K8S_WATCHER_EVENTS = Counter(
    "mermin_k8s_watcher_events_total", "Kubernetes watch events, by kind and event "
    "(apply, delete, init, init_done, error).", ["kind", "event"], registry=REGISTRY,
)
K8S_WATCHER_IP_INDEX_UPDATE_DURATION = _histogram(
    "mermin_k8s_watcher_ip_index_update_duration_seconds", "Time to rebuild the IP index.",
)

# --- kubernetes (new) --------------------------------------------------------------------------
K8S_CACHE_OBJECTS = Gauge(
    "mermin_k8s_cache_objects", "Objects held in the Kubernetes cache, by kind.", ["kind"],
    registry=REGISTRY,
)

# --- lifecycle ---------------------------------------------------------------------------------
SHUTDOWN_DURATION = _histogram(
    "mermin_shutdown_duration_seconds", "Time the agent took to shut down.",
)
SHUTDOWN_TIMEOUTS = Counter(
    "mermin_shutdown_timeouts_total", "Shutdowns that hit shutdown_timeout.", registry=REGISTRY,
)
SHUTDOWN_FLOWS = Counter(
    "mermin_shutdown_flows_total", "Flows at shutdown, by status (preserved: final report sent; "
    "lost: could not be reported).", ["status"], registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "mermin_config_reloads_total", "Config reloads, by result (success, failure).", ["result"],
    registry=REGISTRY,
)


# --- kernel counters, read at scrape time ------------------------------------------------------
KERNEL_COUNTER_KEYS = (
    "seen", "counted", "duplicate", "unparsed_truncated", "unparsed_ethertype",
    "unparsed_protocol", "unparsed_too_deep", "map_full", "frag_unmatched", "frag_map_full",
)  # fmt: skip
"""Keys of the dict `Datapath.counters()` returns (abi.Counter names, lowercased)."""


class KernelCountersCollector(Collector):
    """Exposes the kernel's per-CPU COUNTERS array (already summed) as Prometheus counters.

    ``source`` returns ``{"seen": n, "counted": n, ...}``; it is called once per scrape. With no
    source (datapath not loaded yet) the families are described but carry no samples. A source
    that raises is treated as absent for that scrape (the scrape itself never fails).
    """

    def __init__(self, source: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._source = source
        self._lock = threading.Lock()

    def set_source(self, source: Callable[[], Mapping[str, int]] | None) -> None:
        """Install (or with None, remove) the callable that reads the kernel counters."""
        with self._lock:
            self._source = source

    def _read(self) -> Mapping[str, int] | None:
        with self._lock:
            source = self._source
        if source is None:
            return None
        try:
            return source()
        except Exception:  # a scrape must not fail because the datapath is closing
            return None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._read())

    @staticmethod
    def _families(values: Mapping[str, int] | None) -> list[Metric]:
        packets = CounterMetricFamily(
            "mermin_ebpf_packets", "Packets seen by the eBPF programs, by result "
            "(seen, counted into a flow, duplicate: already counted at another hook).",
            labels=["result"],
        )
        unparsed = CounterMetricFamily(
            "mermin_ebpf_unparsed_packets", "Packets the eBPF programs could not turn into a "
            "flow, by reason (truncated, ethertype, protocol, too_deep).", labels=["reason"],
        )
        map_full = CounterMetricFamily(
            "mermin_ebpf_map_full", "Packets of new flows not recorded because FLOWS was full.",
        )
        frags = CounterMetricFamily(
            "mermin_ebpf_fragments_untracked", "IP fragments not attributed to a flow, by reason "
            "(unmatched: first fragment never seen; map_full: FRAGS map full).",
            labels=["reason"],
        )
        if values is not None:
            for result in ("seen", "counted", "duplicate"):
                packets.add_metric([result], int(values.get(result, 0)))
            for reason in ("truncated", "ethertype", "protocol", "too_deep"):
                unparsed.add_metric([reason], int(values.get(f"unparsed_{reason}", 0)))
            map_full.add_metric([], int(values.get("map_full", 0)))
            frags.add_metric(["unmatched"], int(values.get("frag_unmatched", 0)))
            frags.add_metric(["map_full"], int(values.get("frag_map_full", 0)))
        return [packets, unparsed, map_full, frags]


KERNEL_COUNTERS = KernelCountersCollector()
"""The registered kernel-counter collector: the agent calls ``set_source(dp.counters)``."""
REGISTRY.register(KERNEL_COUNTERS)


# --- helpers -----------------------------------------------------------------------------------
def set_map_gauges(name: str, entries: int, capacity: int, entry_bytes: int | None = None) -> None:
    """Set size, capacity and fill ratio of one eBPF map (called once per poll)."""
    EBPF_MAP_SIZE.labels(name, "entries").set(entries)
    EBPF_MAP_CAPACITY.labels(name, "entries").set(capacity)
    if entry_bytes:
        EBPF_MAP_SIZE.labels(name, "bytes").set(entries * entry_bytes)
        EBPF_MAP_CAPACITY.labels(name, "bytes").set(capacity * entry_bytes)
    EBPF_MAP_FILL_RATIO.labels(name).set(entries / capacity if capacity else 0.0)


def apply_histogram_buckets(buckets: Mapping[str, Sequence[float]]) -> None:
    """Replace the buckets of the named histograms (config `histogram_buckets`).

    Call before the pipeline starts: observations already recorded are discarded. Unknown names
    raise ValueError (the config layer reports it as a config error).
    """
    by_name = {h._name: h for h in _HISTOGRAMS}
    for name, values in buckets.items():
        hist = by_name.get(name)
        if hist is None:
            raise ValueError(f"no histogram named {name!r}; known: {sorted(by_name)}")
        hist._prepare_buckets(values)  # validates sorted, appends +Inf
        hist._kwargs["buckets"] = tuple(values)
        if hist._labelnames:
            with hist._lock:
                hist._metrics.clear()  # children are re-created with the new buckets
        else:
            hist._metric_init()


_HISTOGRAMS = (
    PIPELINE_DURATION, POLL_DURATION, EXPORT_BATCH_SIZE, EXPORT_DURATION,
    K8S_WATCHER_IP_INDEX_UPDATE_DURATION, SHUTDOWN_DURATION,
)  # fmt: skip


def set_build_info() -> None:
    """Publish mermin_build_info{version, python} = 1."""
    from mermin import __version__

    BUILD_INFO.labels(__version__, platform.python_version()).set(1)


def start_metrics_server(
    config: Any, kernel_counters: Callable[[], Mapping[str, int]] | None = None,
) -> Callable[[], None] | None:
    """Serve REGISTRY on `internal "metrics"` (a MetricsConfig); returns a stop function.

    Returns None when metrics are disabled. `kernel_counters` (e.g. ``Datapath.counters``)
    becomes the source of the kernel counter families; the stop function removes it again.
    Histogram buckets from the config are applied first. A busy port raises MerminError.
    """
    from mermin.telemetry.server import serve_metrics  # late: the server imports this module

    if config.histogram_buckets:
        apply_histogram_buckets(config.histogram_buckets)
    set_build_info()
    server = serve_metrics(config)
    if server is None:
        return None
    if kernel_counters is not None:
        KERNEL_COUNTERS.set_source(kernel_counters)

    def stop() -> None:
        if kernel_counters is not None:
            KERNEL_COUNTERS.set_source(None)
        server.stop()

    return stop


def metric_names(registry: CollectorRegistry = REGISTRY) -> list[str]:
    """Names of every metric family in the registry, as exposed (counters with `_total`)."""
    names = []
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.append(family.name + suffix)
    return sorted(names)


# --- additions by other areas go below, one block per area --------------------------------------
