"""Credentials for the OTLP transports: auth headers, TLS material, and redaction.

Secret values live only in the header tuples handed to grpc/httpx; nothing here formats them
into a string that could reach a log or an exception message.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mermin.config.export import OtlpConfig, TlsConfig
from mermin.errors import ConfigError

__all__ = [
    "auth_headers",
    "fetch_server_certificate",
    "read_pem",
    "redact_endpoint",
    "ssl_context",
]


def auth_headers(config: OtlpConfig) -> list[tuple[str, str]]:
    """Custom headers plus `authorization` from auth.basic / auth.bearer (lowercase names, as
    gRPC metadata requires; HTTP is case-insensitive)."""
    out = [(k.lower(), v) for k, v in config.headers.items()]
    auth = config.auth
    if auth is not None:
        if auth.basic is not None:
            raw = f"{auth.basic.user}:{auth.basic.password.get_secret_value()}".encode()
            token = base64.b64encode(raw).decode()
            out = [(k, v) for k, v in out if k != "authorization"]
            out.append(("authorization", f"Basic {token}"))
        elif auth.bearer is not None:
            out = [(k, v) for k, v in out if k != "authorization"]
            out.append(("authorization", f"Bearer {auth.bearer.get_secret_value()}"))
    return out


def redact_endpoint(endpoint: str) -> str:
    """The endpoint without any `user:password@` part, for messages."""
    parts = urlsplit(endpoint)
    if parts.username is None and parts.password is None:
        return endpoint
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def read_pem(path: str | None, what: str) -> bytes | None:
    """Contents of a PEM file named in tls.*; a clear ConfigError (path only) if unreadable."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"export.traces.otlp.tls.{what}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def ssl_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """Client SSL context for HTTPS: system roots or tls.ca_cert, optional client cert, and
    no verification at all with insecure_skip_verify."""
    tls = tls or TlsConfig()
    ctx = ssl.create_default_context()
    try:
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif tls.ca_cert is not None:
            ctx = ssl.create_default_context(cafile=tls.ca_cert)
        if tls.client_cert is not None and tls.client_key is not None:
            ctx.load_cert_chain(tls.client_cert, tls.client_key)
    except (OSError, ssl.SSLError) as exc:
        # the message names files only; an SSLError never echoes key material
        raise ConfigError(
            f"export.traces.otlp.tls: cannot load certificates "
            f"(ca_cert={tls.ca_cert}, client_cert={tls.client_cert}, "
            f"client_key={tls.client_key}): {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return ctx


def fetch_server_certificate(host: str, port: int, timeout: float) -> bytes:
    """PEM of the certificate the server presents, read without verifying it.

    gRPC (BoringSSL through grpcio) has no switch to skip verification; for
    insecure_skip_verify the gRPC transport trusts exactly the certificate the server shows
    at connect time instead.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import socket

    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("server sent no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()
