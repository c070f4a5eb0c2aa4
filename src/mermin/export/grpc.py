"""OTLP/gRPC transport: `TraceService/Export` with pre-encoded request bytes.

The request is encoded once per batch (encode.py) and passed through grpcio untouched (no
serializer); compression (gzip by default) is done by the gRPC core. Failures become
`TransportError`s classified per the OTLP specification (retry.py).

The gRPC core always gzips at zlib's default level 6 (`deflateInit2(Z_DEFAULT_COMPRESSION)` in
its message_compress.cc; no channel argument changes it: `grpc.default_compression_level`
picks an *algorithm* (none/deflate/gzip), and measured the same CPU at every value), which
costs more CPU per span than our whole encoding. Nor can a request be handed over already
compressed: the core writes the message's "compressed" flag itself, and only when it
compresses. So `compression_level` does not apply here; for cheaper compression use
`http_binary` (ISA-L, docs/export.md).
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from urllib.parse import urlsplit

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from mermin import __version__
from mermin.config.export import OtlpConfig
from mermin.export.base import TransportError
from mermin.export.retry import grpc_retry_delay
from mermin.export.security import (
    auth_headers,
    fetch_server_certificate,
    read_pem,
    redact_endpoint,
)

__all__ = ["EXPORT_METHOD", "RETRYABLE_GRPC", "GrpcTransport"]

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEFAULT_PORT = 4317

# RESOURCE_EXHAUSTED is retryable only when the server says when (RetryInfo): see below.
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class GrpcTransport:
    """One channel to the receiver, shared by all concurrent exports (HTTP/2 multiplexing)."""

    content_type = "application/x-protobuf"  # what `prepare` expects: the protobuf encoding

    def __init__(self, config: OtlpConfig) -> None:
        parts = urlsplit(config.endpoint)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or DEFAULT_PORT
        self.tls = parts.scheme == "https"
        self.where = redact_endpoint(config.endpoint)
        self._config = config
        self._target = f"{self.host}:{self.port}"
        if ":" in self.host:  # IPv6 literal
            self._target = f"[{self.host}]:{self.port}"
        self._metadata = tuple(auth_headers(config))
        gzip = config.compression == "gzip"
        self._compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
        tls = config.tls
        self._root = read_pem(tls.ca_cert, "ca_cert") if tls else None
        self._key = read_pem(tls.client_key, "client_key") if tls else None
        self._chain = read_pem(tls.client_cert, "client_cert") if tls else None
        self._skip_verify = bool(tls and tls.insecure_skip_verify)
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._call: grpc.UnaryUnaryMultiCallable | None = None
        self._inflight: set[grpc.Future] = set()
        self._closed = False

    # -- channel ------------------------------------------------------------------------------

    def _options(self) -> list[tuple[str, object]]:
        return [
            ("grpc.primary_user_agent", f"mermin/{__version__}"),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.enable_retries", 0),  # the exporter retries, with the OTLP rules
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]

    def _connect(self, timeout: float) -> grpc.UnaryUnaryMultiCallable:
        with self._lock:
            if self._closed:
                raise TransportError("exporter is shut down", retryable=False)
            if self._call is not None:
                return self._call
            options = self._options()
            if not self.tls:
                channel = grpc.insecure_channel(self._target, options=options)
            else:
                root = self._root
                if self._skip_verify:
                    root, name = self._pinned_server_certificate(timeout)
                    if name:
                        options.append(("grpc.ssl_target_name_override", name))
                creds = grpc.ssl_channel_credentials(
                    root_certificates=root, private_key=self._key, certificate_chain=self._chain
                )
                channel = grpc.secure_channel(self._target, creds, options=options)
            self._channel = channel
            self._call = channel.unary_unary(EXPORT_METHOD)  # bytes in, bytes out
            return self._call

    def _pinned_server_certificate(self, timeout: float) -> tuple[bytes, str | None]:
        """insecure_skip_verify: trust whatever certificate the server presents (read once,
        unverified) and accept the name written in it."""
        try:
            pem = fetch_server_certificate(self.host, self.port, max(0.5, timeout))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"cannot reach {self.where} to read its certificate: "
                f"{getattr(exc, 'strerror', None) or exc}",
                retryable=True,
            ) from None
        return pem, _certificate_name(pem)

    # -- export -------------------------------------------------------------------------------

    def prepare(self, body: bytes) -> bytes:
        """Nothing to do: the gRPC core compresses."""
        return body

    def send(self, body: bytes, timeout: float) -> int:
        """Send one request; returns the number of spans the receiver rejected."""
        call = self._connect(timeout)
        future = call.future(
            body, timeout=timeout, metadata=self._metadata, compression=self._compression
        )
        with self._lock:
            self._inflight.add(future)
        try:
            response = future.result()
        except grpc.FutureCancelledError:
            raise TransportError("export cancelled by shutdown", retryable=False) from None
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            with self._lock:
                self._inflight.discard(future)
        return _rejected(response)

    def _error(self, exc: grpc.RpcError) -> TransportError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else ()
        hint = grpc_retry_delay(trailers)
        retryable = code in RETRYABLE_GRPC or (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED and hint is not None
        )
        text = f"gRPC export to {self.where} failed: {code.name}: {_short(details)}"
        return TransportError(
            text,
            retryable=retryable,
            retry_after=hint,
            timeout=code == grpc.StatusCode.DEADLINE_EXCEEDED,
        )

    def cancel(self) -> None:
        """Abort the requests in flight (shutdown deadline reached)."""
        with self._lock:
            inflight = list(self._inflight)
        for future in inflight:
            future.cancel()

    def close(self) -> None:
        self.cancel()
        with self._lock:
            self._closed = True
            channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            channel.close()


def _rejected(response: bytes) -> int:
    if not response:
        return 0
    msg = ExportTraceServiceResponse()
    try:
        msg.ParseFromString(response)
    except Exception:  # a garbled response body still means the export succeeded
        return 0
    return int(msg.partial_success.rejected_spans) if msg.HasField("partial_success") else 0


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _certificate_name(pem: bytes) -> str | None:
    """A DNS name (or the CN) the certificate is issued to, for the target name override."""
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        info = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]  # stdlib, no deps
    except Exception:
        return None
    finally:
        os.unlink(path)
    for kind, value in info.get("subjectAltName", ()):
        if kind == "DNS":
            return str(value)
    for rdn in info.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
