"""Real OTLP receivers for the export tests: a grpcio TraceService server and an HTTP server
decoding application/x-protobuf (and OTLP/JSON), both on ephemeral 127.0.0.1 ports, recording
every request with its metadata/headers, and scriptable: answer with an error (+ retry hint),
a partial success, or slowly; stop and restart on the same port; optional TLS / mTLS.

Also a byte-counting TCP relay, to see on the wire whether gRPC requests were compressed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
from tests.export.certs import Pki

__all__ = [
    "GrpcReceiver",
    "HttpReceiver",
    "Received",
    "Reply",
    "TcpRelay",
    "free_port",
]


def free_port() -> int:
    """A port nobody listens on right now (for "receiver down at start")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    """How to answer one request. Defaults: success.

    grpc_code: a grpc.StatusCode to fail with; retry_delay: seconds sent as RetryInfo (gRPC) or
    Retry-After (HTTP); http_status: an HTTP status to answer; rejected: partial success;
    delay: sleep before answering (a slow receiver).
    """

    grpc_code: grpc.StatusCode | None = None
    http_status: int | None = None
    retry_delay: float | None = None
    rejected: int = 0
    message: str = ""
    delay: float = 0.0


@dataclass
class Received:
    request: ts.ExportTraceServiceRequest
    headers: dict[str, str]
    body_size: int  # bytes as received (compressed if it was)
    gzip: bool
    json: bool = False
    path: str = ""


@dataclass
class _Base:
    received: list[Received] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    attempts: int = 0  # requests seen, failed ones included
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self) -> Reply:
        with self.lock:
            self.attempts += 1
            return self.script.pop(0) if self.script else self.default

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def spans(self) -> list[Any]:
        with self.lock:
            reqs = [r.request for r in self.received]
        return [
            s for q in reqs for rs in q.resource_spans for ss in rs.scope_spans for s in ss.spans
        ]

    def span_count(self) -> int:
        return len(self.spans())

    def wait_spans(self, n: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.span_count()
            if got >= n:
                return got
            time.sleep(0.02)
        return self.span_count()


class _Servicer(tsg.TraceServiceServicer):
    def __init__(self, owner: GrpcReceiver) -> None:
        self.owner = owner

    def Export(self, request: ts.ExportTraceServiceRequest, context: grpc.ServicerContext
               ) -> ts.ExportTraceServiceResponse:  # fmt: skip
        o = self.owner
        reply = o.next_reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.grpc_code is not None:
            status = status_pb2.Status(code=reply.grpc_code.value[0], message=reply.message or "no")
            if reply.retry_delay is not None:
                info = error_details_pb2.RetryInfo()
                info.retry_delay.FromNanoseconds(int(reply.retry_delay * 1e9))
                status.details.add().Pack(info)
            details = status.SerializeToString()
            context.set_trailing_metadata((("grpc-status-details-bin", details),))
            context.abort(reply.grpc_code, status.message)
        headers = {m.key: m.value for m in context.invocation_metadata()}
        o.record(Received(request, headers, request.ByteSize(), gzip=False))
        resp = ts.ExportTraceServiceResponse()
        if reply.rejected:
            resp.partial_success.rejected_spans = reply.rejected
            resp.partial_success.error_message = reply.message or "rejected some"
        return resp


class GrpcReceiver(_Base):
    """grpcio server implementing opentelemetry's TraceService."""

    def __init__(self, pki: Pki | None = None, require_client_cert: bool = False,
                 port: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.pki = pki
        self.require_client_cert = require_client_cert
        self.port = port
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(8), options=[("grpc.so_reuseport", 1)])
        tsg.add_TraceServiceServicer_to_server(_Servicer(self), server)
        addr = f"127.0.0.1:{self.port}"
        if self.pki is None:
            port = server.add_insecure_port(addr)
        else:
            creds = grpc.ssl_server_credentials(
                [(self.pki.server_key.read_bytes(), self.pki.server_cert.read_bytes())],
                root_certificates=self.pki.ca_cert.read_bytes(),
                require_client_auth=self.require_client_cert,
            )
            port = server.add_secure_port(addr, creds)
        if not port:
            raise RuntimeError(f"cannot bind {addr}")
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (timeouts, shutdown) is normal in these tests."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON writes trace/span ids as hex; protobuf's JSON parser expects base64."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                out[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(obj, list):
        return [_hex_ids_to_base64(x) for x in obj]
    return obj


class HttpReceiver(_Base):
    """OTLP/HTTP receiver (POST /v1/traces) on http.server."""

    def __init__(self, pki: Pki | None = None, require_client_cert: bool = False,
                 port: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.pki = pki
        self.require_client_cert = require_client_cert
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner._conns.add(self.connection)

            def finish(self) -> None:
                with owner.lock:
                    owner._conns.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                size = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(size)
                reply = owner.next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.http_status is not None:
                    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=reply.message)
                    body = status.SerializeToString()
                    self.send_response(reply.http_status)
                    if reply.retry_delay is not None:
                        self.send_header("Retry-After", str(int(reply.retry_delay)))
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                zipped = self.headers.get("content-encoding") == "gzip"
                data = gzip.decompress(raw) if zipped else raw
                is_json = self.headers.get("content-type") == "application/json"
                req = ts.ExportTraceServiceRequest()
                if is_json:
                    json_format.ParseDict(_hex_ids_to_base64(json.loads(data)), req)
                else:
                    req.ParseFromString(data)
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.record(Received(req, headers, len(raw), zipped, is_json, self.path))
                resp = ts.ExportTraceServiceResponse()
                if reply.rejected:
                    resp.partial_success.rejected_spans = reply.rejected
                    resp.partial_success.error_message = reply.message or "rejected some"
                if is_json:
                    body = json_format.MessageToJson(resp).encode()
                else:
                    body = resp.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", self.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def start(self) -> HttpReceiver:
        server = _QuietServer(("127.0.0.1", self.port), self._handler())
        if self.pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            if self.require_client_cert:
                ctx.load_verify_locations(self.pki.ca_cert)
                ctx.verify_mode = ssl.CERT_REQUIRED
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections (a real outage)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target port and counts the client->server bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            self._spawn(self._pipe, client, upstream, True)
            self._spawn(self._pipe, upstream, client, False)

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.upstream_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
            with contextlib.suppress(OSError):
                c.close()
        for t in self._threads:
            t.join(2)
