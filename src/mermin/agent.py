"""The live agent (`mermin run`): builds the pipeline from settings, runs it, reloads it, stops it.

    datapath (kernel map) -> FlowTable.poll -> enrich -> filter -> exporters
    interfaces: InterfaceManager (netlink) -> Attacher        telemetry: metrics, health, logs

Lifecycle (uvicorn-style): `Agent.run()` = `startup()` -> wait for a stop signal -> `shutdown()`.
SIGTERM/SIGINT stop (a second one forces exit), SIGHUP reloads (or a config file change when
auto_reload is on). Reload keeps the kernel program, its maps and the flow table; only the
userspace stages that depend on changed settings are rebuilt.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from mermin.config.loader import load_config
from mermin.config.schema import Config
from mermin.errors import ConfigError, MerminError
from mermin.flows.record import EndReason, FlowReport

__all__ = ["Agent", "run"]

log = logging.getLogger("mermin.agent")


@dataclass
class PipelineStats:
    """Counters of the poll loop itself."""

    polls: int = 0
    reports: int = 0
    reports_filtered: int = 0
    poll_errors: int = 0
    last_poll_seconds: float = 0.0
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})


class Agent:
    """One node agent. Not reusable: build a new one to run again."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        cli_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.cli_overrides = cli_overrides or {}
        self.stats = PipelineStats()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._ready = threading.Event()
        self._wake = threading.Event()  # set with _stop or _reload: wakes the main thread
        self._lock = threading.Lock()  # guards stage swaps during reload
        self._closers: list[Callable[[], None]] = []
        self._signals_seen = 0
        self._previous_handlers: dict[int, Any] = {}
        self.datapath: Any = None
        self.attacher: Any = None
        self.interfaces: Any = None
        self.table: Any = None
        self.enricher: Any = None
        self.filter: Any = None
        self.exporters: list[Any] = []
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the process exit code."""
        self._install_signal_handlers()
        try:
            try:
                self.startup()
            except BaseException:
                self._teardown()
                raise
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
            return self.shutdown()
        finally:
            self._restore_signal_handlers()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def startup(self) -> None:
        """Load the kernel program, attach, start every stage. Raises MerminError on failure,
        leaving nothing attached."""
        from mermin.datapath.attach import Attacher
        from mermin.datapath.loader import Datapath, DatapathSettings

        cfg = self.config
        self._setup_logging(cfg)
        self._start_telemetry(cfg)
        self.datapath = Datapath.load(
            settings=DatapathSettings(
                flows_capacity=cfg.pipeline.flow_capture.flow_stats_capacity,
                vxlan_port=cfg.parser.vxlan_port,
                geneve_port=cfg.parser.geneve_port,
                wireguard_port=cfg.parser.wireguard_port,
                replay=False,
                pin=cfg.pipeline.flow_capture.pin_maps,
            )
        )
        self._closers.append(self.datapath.close)
        instrument = cfg.discovery.instrument
        self.attacher = Attacher(
            self.datapath,
            mode=instrument.attach_mode,
            tcx_order=instrument.tcx_order,
            tc_priority=instrument.tc_priority,
        )
        # the interface manager removes a crashed run's leftovers after its first attach pass
        # (adopting pinned links first, so counting never pauses) and enters the host netns
        # in its own thread
        self._closers.append(self.attacher.detach_all)
        self._build_userspace_stages(cfg)
        self.interfaces = self._make_interface_manager(cfg)
        self.interfaces.start()
        self._closers.append(self.interfaces.stop)
        poller = threading.Thread(target=self._poll_loop, name="mermin-poll", daemon=True)
        poller.start()
        self._threads.append(poller)
        if cfg.auto_reload and self.config_path:
            watcher = threading.Thread(
                target=self._watch_config_file, name="mermin-config-watch", daemon=True
            )
            watcher.start()
            self._threads.append(watcher)
        self._publish_datapath_facts()
        self._ready.set()
        log.info(
            "mermin started: %d interface(s) attached via %s, exporters: %s",
            len(self.attacher.attached),
            self.attacher.method,
            ", ".join(e.name for e in self.exporters) or "none",
        )

    def _publish_datapath_facts(self) -> None:
        from mermin.telemetry import metrics

        for method in ("tcx", "tc"):
            metrics.EBPF_METHOD.labels(attachment=method).set(int(self.attacher.method == method))
        bpffs = "/sys/fs/bpf"
        metrics.EBPF_BPF_FS_WRITABLE.set(int(os.path.ismount(bpffs) and os.access(bpffs, os.W_OK)))

    def shutdown(self) -> int:
        """Final reports for every active flow, flush exporters, detach, exit 0 within
        shutdown_timeout."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        flushed = 0
        try:
            with self._lock:
                reports = self.table.flush(EndReason.FORCED_END) if self.table else []
                flushed = len(reports)
                self._deliver(reports)
        except Exception:
            log.exception("final flush failed")
        for exporter in self.exporters:
            exporter.shutdown(max(0.1, deadline - time.monotonic()))
        self.exporters = []
        self._teardown()
        self._observe_shutdown(deadline, flushed)
        log.info("mermin stopped: %d active flow(s) flushed", flushed)
        return 0

    def _observe_shutdown(self, deadline: float, flushed: int) -> None:
        from mermin.telemetry import metrics

        took = self.config.shutdown_timeout - (deadline - time.monotonic())
        metrics.SHUTDOWN_DURATION.observe(took)
        metrics.SHUTDOWN_FLOWS.labels(status="preserved").inc(flushed)
        if time.monotonic() > deadline:
            metrics.SHUTDOWN_TIMEOUTS.inc()

    def _teardown(self) -> None:
        """Undo startup in reverse order; every step runs even if one fails."""
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("cleanup step %s failed", getattr(close, "__qualname__", close))
        self._closers.clear()

    # ------------------------------------------------------------------ stages
    def _build_userspace_stages(self, cfg: Config) -> None:
        from mermin.filters import FlowFilter
        from mermin.flows.table import FlowTable

        self.table = FlowTable(
            self.datapath.flows,
            cfg.span,
            counters=self.datapath.counters,
            ifname=self._iface_name,
        )
        self._closers.append(self.table.close)  # stops its listening-socket scanner
        self.filter = FlowFilter.from_config(cfg, mac_of=self._iface_mac)
        self.enricher = self._make_enricher(cfg)
        if self.enricher is not None:
            self.enricher.start()
            self._closers.append(self._stop_enricher)
        self.exporters = self._make_exporters(cfg)

    def _stop_enricher(self) -> None:
        if self.enricher is not None:
            self.enricher.stop()

    def _iface_name(self, ifindex: int) -> str | None:
        if self.interfaces is None:
            return None
        return self.interfaces.names.get(ifindex)

    def _iface_mac(self, ifindex: int) -> str | None:
        if self.interfaces is None:
            return None
        return self.interfaces.macs.get(ifindex)

    def _make_interface_manager(self, cfg: Config) -> Any:
        from mermin.interfaces.manager import InterfaceManager

        return InterfaceManager(cfg.discovery.instrument, self.attacher)

    def _make_enricher(self, cfg: Config) -> Any:
        from mermin.enrich import build_enricher

        return build_enricher(cfg)

    def _make_exporters(self, cfg: Config) -> list[Any]:
        from mermin.export import build_exporters
        from mermin.export.resource import build_resource

        extra: dict[str, str] = {}
        uid = getattr(self.enricher, "cluster_uid", None)
        if uid:
            extra["k8s.cluster.uid"] = uid
        exporters = build_exporters(cfg.export, build_resource(extra))
        for exporter in exporters:
            exporter.start()
        return exporters

    # ------------------------------------------------------------------ poll loop
    def _poll_loop(self) -> None:
        interval = self.config.span.poll_interval
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with self._lock:
                    reports = self.table.poll()
                    self._deliver(reports)
            except MerminError as exc:
                self.stats.poll_errors += 1
                log.warning("poll failed: %s", exc)
            except Exception:
                self.stats.poll_errors += 1
                log.exception("poll failed")
            self.stats.polls += 1
            self.stats.last_poll_seconds = time.monotonic() - started
            self._observe_poll()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: do not try to catch up with a burst of polls
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def _deliver(self, reports: list[FlowReport]) -> None:
        """enrich -> filter -> export one batch."""
        if not reports:
            return
        from mermin.telemetry.metrics import PIPELINE_DURATION

        started = time.perf_counter()
        if self.enricher is not None:
            self.enricher.enrich(reports)
            PIPELINE_DURATION.labels(stage="k8s_decorator_out").observe(
                time.perf_counter() - started
            )
        kept = self.filter.apply(reports)
        self.stats.reports += len(kept)
        self.stats.reports_filtered += len(reports) - len(kept)
        export_started = time.perf_counter()
        for exporter in self.exporters:
            exporter.export(kept)
        PIPELINE_DURATION.labels(stage="export_out").observe(time.perf_counter() - export_started)

    def _observe_poll(self) -> None:
        """Per-poll gauges the stages do not set themselves."""
        from mermin.telemetry import metrics

        stats = self.table.stats
        metrics.set_map_gauges("FLOWS", stats.map_entries, self.datapath.flows.capacity)

    # ------------------------------------------------------------------ reload
    def reload(self) -> bool:
        """Re-read the config; apply a valid one without touching the kernel program or
        the flow state; keep the old one when the new one is invalid."""
        if not self.config_path:
            log.warning("reload requested but the agent runs without a config file")
            return False
        try:
            new = load_config(self.config_path, cli_overrides=self.cli_overrides)
        except ConfigError as exc:
            self.stats.reloads["error"] += 1
            self._count_reload("failure")
            log.error("config reload rejected, keeping the running config: %s", exc)
            return False
        old = self.config
        with self._lock:
            self._setup_logging(new)
            self.table.reconfigure(new.span)
            from mermin.filters import FlowFilter

            self.filter = FlowFilter.from_config(new, mac_of=self._iface_mac)
            if new.export != old.export:
                for exporter in self.exporters:
                    exporter.shutdown(5.0)
                self.exporters = self._make_exporters(new)
            if new.discovery.instrument != old.discovery.instrument:
                self.interfaces.reconfigure(new.discovery.instrument)
            if new.discovery.informer != old.discovery.informer or new.attributes != old.attributes:
                self._stop_enricher()
                self.enricher = self._make_enricher(new)
                if self.enricher is not None:
                    self.enricher.start()
            self.config = new
        self.stats.reloads["ok"] += 1
        self._count_reload("success")
        log.info("config reloaded from %s", self.config_path)
        return True

    @staticmethod
    def _count_reload(result: str) -> None:
        from mermin.telemetry.metrics import CONFIG_RELOADS

        CONFIG_RELOADS.labels(result=result).inc()

    def _watch_config_file(self) -> None:
        """auto_reload: reload when the file's content changes (checked every second)."""
        path = self.config_path
        assert path is not None
        last = _file_signature(path)
        while not self._stop.wait(1.0):
            current = _file_signature(path)
            if current != last:
                last = current
                self.request_reload()

    # ------------------------------------------------------------------ plumbing
    def _setup_logging(self, cfg: Config) -> None:
        from mermin.telemetry.logging import setup_logging

        setup_logging(cfg.log_level, cfg.log_format)

    def _start_telemetry(self, cfg: Config) -> None:
        from mermin.telemetry.health import HealthServer
        from mermin.telemetry.metrics import start_metrics_server

        stop_metrics = start_metrics_server(cfg.internal.metrics, kernel_counters=self._counters)
        if stop_metrics is not None:
            self._closers.append(stop_metrics)
        health = HealthServer(
            cfg.internal.server,
            checks={
                "ebpf_attached": lambda: self.attacher is not None and self._ready.is_set(),
                "caches_synced": lambda: self.enricher is None or self.enricher.ready,
                "exporters_healthy": lambda: all(
                    getattr(e, "healthy", True) for e in self.exporters
                ),
            },
            startup=self._ready.is_set,
        )
        health.start()
        self._closers.append(health.stop)

    def _counters(self) -> dict[str, int]:
        return self.datapath.counters() if self.datapath is not None else {}

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        self._signals_seen += 1
        if self._signals_seen > 1:
            log.warning("second stop signal: exiting now")
            self._teardown()
            os._exit(1)
        self.request_stop()


def _file_signature(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def _pin_malloc_mmap_threshold(threshold: int = 128 * 1024) -> None:
    """Make glibc serve blocks >= 128 KiB with mmap for the whole run.

    Each poll allocates MiB-sized short-lived buffers (the map copy, decoded columns, a batch's
    encoding). glibc's dynamic mmap threshold would rise to that size and carve them from the
    heap, where long-lived objects allocated in between keep freed space from being returned:
    RSS crept by ~1.5 MiB/min at 22,000 flows (docs/bench/agent.md). A fixed threshold keeps it
    flat. Same as MALLOC_MMAP_THRESHOLD_=131072; a no-op outside glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, threshold)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run(args: Any) -> int:
    """Entry point of `mermin run`."""
    _pin_malloc_mmap_threshold()
    overrides: dict[str, Any] = {}
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.auto_reload:
        overrides["auto_reload"] = True
    path = args.config or os.environ.get("MERMIN_CONFIG_PATH") or None
    config = load_config(path, cli_overrides=overrides)
    return Agent(config, config_path=path, cli_overrides=overrides).run()
