"""OTLP export throughput and memory: mermin's exporter vs the OpenTelemetry Python SDK.

    uv run python bench/bench_otlp.py [--spans 100000] [--quick]

* A receiver runs in a separate process (pinned to the last CPU) so only the sender side is
  measured: gRPC (generic handler, empty ExportTraceServiceResponse) and HTTP (POST
  /v1/traces -> 200). It counts requests and bytes, without decoding.
* The sender (this process) is pinned to CPU 0. For each case it reports wall-clock spans/s and
  spans per CPU-second of this process (all threads: encode, queue, gRPC/HTTP I/O, compression).
* Same spans both sides: FlowReports from tests/export/samples.py (TCP with Kubernetes metadata
  of ~300 pods, shared read-only AttrMaps per pod as the Kubernetes enricher hands them out,
  some UDP/IPv6/VXLAN and ICMP; ~52 attributes per span), and a variant without
  Kubernetes metadata (~27 attributes). The SDK gets ReadableSpans with the same name, ids,
  kind, times, attributes, resource and scope, through BatchSpanProcessor + OTLPSpanExporter;
  building those ReadableSpans is NOT counted against the SDK.
* Each case runs `--repeat` times (default 3) on both sides; the run with the least CPU time
  is reported (the machine is shared: the least disturbed run is the most representative).
* Memory: RSS growth of a fresh process whose exporter (default max_queue_size 32768) holds a
  full queue while the receiver is down.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.export.samples import flow_reports  # noqa: E402

from mermin.flows.record import FlowReport  # noqa: E402

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# -- receiver process ------------------------------------------------------------------------


def _receiver(kind: str, conn: Any) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    stats = {"requests": 0, "bytes": 0}
    if kind == "grpc":
        import grpc

        def handle(req: bytes, ctx: Any) -> bytes:
            stats["requests"] += 1
            stats["bytes"] += len(req)
            return b""

        server = grpc.server(
            futures.ThreadPoolExecutor(4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(handle)},
        )
        server.add_generic_rpc_handlers([handler])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
    else:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                stats["requests"] += 1
                stats["bytes"] += len(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    conn.send(port)
    while True:
        msg = conn.recv()
        if msg == "stats":
            conn.send(dict(stats))
        elif msg == "reset":
            stats.update(requests=0, bytes=0)
        elif msg == "stop":
            return


class Receiver:
    def __init__(self, kind: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_receiver, args=(kind, child), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()

    def stats(self) -> dict[str, int]:
        self.conn.send("stats")
        return self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# -- ours --------------------------------------------------------------------------------------


def bench_mermin(reports: list[FlowReport], endpoint: str, protocol: str, compression: str,
                 resource: dict[str, str]) -> dict[str, float]:  # fmt: skip
    from mermin.config.export import OtlpConfig
    from mermin.export import OtlpExporter

    cfg = OtlpConfig(endpoint=endpoint, protocol=protocol, compression=compression,
                     max_queue_size=len(reports) + 1, max_batch_interval=0.05)  # fmt: skip
    ex = OtlpExporter(cfg, resource)
    ex.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(reports), 1024):  # as the poll loop hands them over
        ex.export(reports[i : i + 1024])
    ok = ex.force_flush(300)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    ex.shutdown(5)
    s = ex.stats
    assert ok and s.exported == len(reports) and s.dropped_total == 0, s.snapshot()
    return {"wall_s": wall, "cpu_s": cpu, "spans_per_s": len(reports) / wall,
            "spans_per_cpu_s": len(reports) / cpu}  # fmt: skip


def bench_encode(reports: list[FlowReport], resource: dict[str, str]) -> dict[str, float]:
    from mermin.export.encode import SpanEncoder

    enc = SpanEncoder(resource)
    enc.encode(reports[:2048])  # warm the caches like a running agent
    t0 = time.process_time()
    size = 0
    for i in range(0, len(reports), 1024):
        size += len(enc.encode(reports[i : i + 1024]))
    cpu = time.process_time() - t0
    return {"cpu_s": cpu, "spans_per_cpu_s": len(reports) / cpu,
            "bytes_per_span": size / len(reports)}  # fmt: skip


def bench_gzip(reports: list[FlowReport], resource: dict[str, str]) -> dict[str, Any]:
    """CPU per span of compressing 1024-span requests: ISA-L (what http uses for levels 1-3)
    and zlib (levels 4-9 here; level 6 is what the gRPC core always uses)."""
    import zlib

    from mermin.export.encode import SpanEncoder
    from mermin.export.http import gzip_compressor

    enc = SpanEncoder(resource)
    bodies = [enc.encode(reports[i : i + 1024]) for i in range(0, min(len(reports), 8192), 1024)]
    n = 1024 * len(bodies)
    out: dict[str, Any] = {}

    def zlib_level(level: int) -> Any:
        def compress(body: bytes) -> bytes:
            c = zlib.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(body) + c.flush()

        return compress

    for name, fn in (("isal-1", gzip_compressor(1)), ("isal-3", gzip_compressor(3)),
                     ("zlib-1", zlib_level(1)), ("zlib-6", zlib_level(6))):  # fmt: skip
        best, size = 1e9, 0
        for _ in range(3):
            t0 = time.process_time()
            size = sum(len(fn(b)) for b in bodies)
            best = min(best, time.process_time() - t0)
        out[name] = {"us_per_span": best / n * 1e6,
                     "ratio": sum(map(len, bodies)) / size}  # fmt: skip
    return out


def bench_official_encode(reports: list[FlowReport], resource: dict[str, str]) -> float:
    """Spans per CPU-second filling the official generated messages (the alternative)."""
    from tests.export.otlp_helpers import official_request

    t0 = time.process_time()
    for i in range(0, len(reports), 1024):
        official_request(reports[i : i + 1024], resource)
    return len(reports) / (time.process_time() - t0)


# -- the OpenTelemetry SDK ---------------------------------------------------------------------


def sdk_spans(reports: list[FlowReport], resource: dict[str, str]) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    import mermin

    res = Resource(resource)
    scope = InstrumentationScope("mermin", mermin.__version__)
    kinds = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
    out = []
    for r in reports:
        ctx = SpanContext(int.from_bytes(r.trace_id, "big"), int.from_bytes(r.span_id, "big"),
                          is_remote=False, trace_flags=TraceFlags(1))  # fmt: skip
        out.append(ReadableSpan(
            name=r.name, context=ctx, parent=None, resource=res, attributes=r.attributes(),
            kind=kinds[int(r.kind)], start_time=r.start_ns, end_time=r.end_ns,
            instrumentation_scope=scope,
        ))  # fmt: skip
    return out


def bench_sdk(spans: list[Any], endpoint: str, protocol: str, compression: str
              ) -> dict[str, float]:  # fmt: skip
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=(
            Compression.Gzip if compression == "gzip" else Compression.NoCompression))
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", compression=(
            Compression.Gzip if compression == "gzip" else Compression.NoCompression))
    proc = BatchSpanProcessor(exporter, max_queue_size=len(spans) + 1,
                              max_export_batch_size=1024, schedule_delay_millis=50)  # fmt: skip
    cpu0, t0 = time.process_time(), time.perf_counter()
    for s in spans:
        proc.on_end(s)
    ok = proc.force_flush(600_000)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    proc.shutdown()
    assert ok
    return {"wall_s": wall, "cpu_s": cpu, "spans_per_s": len(spans) / wall,
            "spans_per_cpu_s": len(spans) / cpu}  # fmt: skip


# -- memory --------------------------------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_child(queue_size: int) -> None:
    """Run in a fresh process: fill the queue of an exporter whose receiver is down."""
    from mermin.config.export import OtlpConfig
    from mermin.export import OtlpExporter

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = OtlpConfig(endpoint=f"http://127.0.0.1:{dead}", max_queue_size=queue_size,
                     max_export_timeout=3600, timeout=1)  # fmt: skip
    ex = OtlpExporter(cfg, {"service.name": "mermin"})
    ex.start()
    time.sleep(0.5)
    base = _rss_kib()
    rss = []
    total = 0
    for round_ in range(4):  # 4x the capacity through the queue: it must stay bounded
        for i in range(0, queue_size, 1024):  # made and handed over per poll, as the agent does
            batch = flow_reports(min(1024, queue_size - i), seed=round_ * queue_size + i)
            ex.export(batch)
            total += len(batch)
        del batch
        time.sleep(0.5)
        rss.append(_rss_kib())
    print(json.dumps({
        "queue_size": queue_size, "queued": ex.queued, "exported_total": total,
        "dropped_queue_full": ex.stats.dropped["queue_full"], "rss_base_kib": base,
        "rss_after_rounds_kib": rss, "rss_full_kib": rss[0], "rss_growth_kib": rss[0] - base,
    }))  # fmt: skip
    ex.shutdown(0.2)


def bench_memory(queue_size: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(queue_size)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--sdk-spans", type=int, default=20_000,
                    help="spans for the (much slower) SDK runs")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per case; the best (least CPU) is reported")  # fmt: skip
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small run to check the script")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.quick:
        args.spans, args.sdk_spans, args.repeat = 5000, 2000, 1
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import mermin
    from mermin.export.resource import build_resource

    resource = build_resource({"k8s.cluster.uid": "bench"})
    print(f"# mermin {mermin.__version__} OTLP bench, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"python {platform.python_version()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; sender pinned to 1 CPU, receiver in another process")
    results: dict[str, Any] = {}
    for label, k8s in (("k8s", True), ("no-k8s", False)):
        reports = flow_reports(args.spans, seed=1, k8s=k8s)
        nattr = sum(len(r.attributes()) for r in reports[:1000]) / 1000
        enc = bench_encode(reports, resource)
        off = bench_official_encode(reports[: args.sdk_spans // 4], resource)
        print(f"\n## spans {label}: {nattr:.1f} attributes/span, "
              f"{enc['bytes_per_span']:.0f} bytes/span encoded")  # fmt: skip
        print(f"encode only: mermin {enc['spans_per_cpu_s']:,.0f} spans/CPU-s; official "
              f"opentelemetry-proto messages {off:,.0f} spans/CPU-s "
              f"({enc['spans_per_cpu_s'] / off:.1f}x)")  # fmt: skip
        results[f"{label}/encode"] = {"mermin": enc, "official": off}
        if k8s:  # the static enricher's per-report copies instead of the shared AttrMaps
            copies = bench_encode(flow_reports(args.spans, seed=1, shared=False), resource)
            results[f"{label}/encode_copies"] = copies
            print(f"encode only, a metadata dict copy per report: "
                  f"{copies['spans_per_cpu_s']:,.0f} spans/CPU-s")  # fmt: skip
        gz = bench_gzip(reports, resource)
        results[f"{label}/gzip"] = gz
        print("gzip of 1024-span requests: " + ", ".join(
            f"{k} {v['us_per_span']:.2f} us/span ({v['ratio']:.1f}x)" for k, v in gz.items()))
        sdk_input = sdk_spans(reports[: args.sdk_spans], resource)
        for kind in ("grpc", "http"):
            rx = Receiver(kind)
            endpoint = f"http://127.0.0.1:{rx.port}"
            try:
                for compression in ("gzip", "none"):
                    protocol = "grpc" if kind == "grpc" else "http_binary"
                    ours = min(
                        (bench_mermin(reports, endpoint, protocol, compression, resource)
                         for _ in range(args.repeat)),
                        key=lambda r: r["cpu_s"],
                    )  # fmt: skip
                    theirs = min(
                        (bench_sdk(sdk_input, endpoint, kind, compression)
                         for _ in range(args.repeat)),
                        key=lambda r: r["cpu_s"],
                    )  # fmt: skip
                    ratio = ours["spans_per_cpu_s"] / theirs["spans_per_cpu_s"]
                    key = f"{label}/{protocol}/{compression}"
                    results[key] = {"mermin": ours, "sdk": theirs, "ratio_cpu": ratio}
                    print(f"{protocol:11s} {compression:4s}: mermin {ours['spans_per_s']:9,.0f} "
                          f"spans/s wall, {ours['spans_per_cpu_s']:9,.0f} spans/CPU-s | SDK "
                          f"{theirs['spans_per_s']:8,.0f} wall, {theirs['spans_per_cpu_s']:8,.0f}"
                          f" /CPU-s | ratio {ratio:5.1f}x")  # fmt: skip
                print(f"  receiver saw {rx.stats()}")
            finally:
                rx.close()
    mem = bench_memory(32768)
    results["memory"] = mem
    print(f"\n## memory, queue full (max_queue_size {mem['queue_size']}), receiver down: "
          f"{mem['queued']} queued, {mem['dropped_queue_full']} dropped of "
          f"{mem['exported_total']}; RSS {mem['rss_base_kib'] / 1024:.1f} MiB -> "
          f"{mem['rss_full_kib'] / 1024:.1f} MiB with the queue full once "
          f"(+{mem['rss_growth_kib'] / 1024:.1f} MiB, "
          f"{mem['rss_growth_kib'] * 1024 / mem['queue_size']:.0f} B/report); after each of 4 "
          f"fills: {[round(x / 1024, 1) for x in mem['rss_after_rounds_kib']]} MiB")  # fmt: skip
    print("\n" + json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
