"""The `export "traces" { stdout = ..., otlp = { ... } }` block (inventory §5.10).

Keys and defaults are the original Mermin's code defaults; `compression`, `retry` and the
`http_json` protocol are additions. Secrets (`auth.basic.pass`, `auth.bearer`) are `SecretStr`:
they print as `**********` in dumps, reprs and error messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from mermin.config.base import Duration, StrictModel, normalized_choice

__all__ = [
    "AuthConfig",
    "BasicAuthConfig",
    "ExportConfig",
    "OtlpConfig",
    "RetryConfig",
    "StdoutConfig",
    "TlsConfig",
    "TracesExportConfig",
]

_FORMAT_ALIASES = {"text_indent": "text", "full": "text", "pretty": "text", "jsonl": "json"}


StdoutFormat = Annotated[
    Literal["text", "json"], BeforeValidator(normalized_choice(_FORMAT_ALIASES))
]


class StdoutConfig(StrictModel):
    """Print every report on standard output."""

    format: StdoutFormat = Field(
        "text",
        description=(
            'Output format: "text" (one readable block per report; the original\'s '
            '"text_indent" is accepted as an alias) or "json" (one JSON object per line with '
            "the span attributes plus start/end times, ids, kind and name)."
        ),
    )


class BasicAuthConfig(StrictModel):
    """HTTP Basic credentials, sent as `Authorization: Basic base64(user:pass)`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    user: str = Field(description="User name.")
    password: SecretStr = Field(
        alias="pass", description='Password (HCL: `pass = env("OTLP_PASSWORD", "")`).'
    )


class AuthConfig(StrictModel):
    """Authentication header for the OTLP endpoint: `basic` or `bearer`, not both."""

    basic: BasicAuthConfig | None = Field(None, description="HTTP Basic credentials.")
    bearer: SecretStr | None = Field(
        None, description="Bearer token, sent as `Authorization: Bearer <token>`."
    )

    @model_validator(mode="after")
    def _one_scheme(self) -> AuthConfig:
        if self.basic is not None and self.bearer is not None:
            raise ValueError("set either auth.basic or auth.bearer, not both")
        return self


class TlsConfig(StrictModel):
    """TLS settings. An `https://` endpoint uses TLS with the system roots unless `ca_cert`
    replaces them; `client_cert` + `client_key` add mutual TLS."""

    insecure_skip_verify: bool = Field(
        False,
        description=(
            "Do not verify the server certificate (name or chain). For tests and lab setups "
            "only: anyone on the path can read and alter the data."
        ),
    )
    ca_cert: str | None = Field(
        None, description="PEM file of the CA(s) that sign the server certificate."
    )
    client_cert: str | None = Field(
        None, description="PEM file of the client certificate (mTLS); needs client_key."
    )
    client_key: str | None = Field(
        None, description="PEM file of the client private key (mTLS); needs client_cert."
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both tls.client_cert and tls.client_key")
        return self


class RetryConfig(StrictModel):
    """Retry of failed export requests (addition). Only failures the OTLP specification calls
    retryable are retried (gRPC CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
    UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED when the server sends RetryInfo; HTTP 429,
    502, 503, 504; connection errors); a server's RetryInfo / Retry-After delay is honoured.
    Every retry of a batch ends at `max_export_timeout` after its first attempt."""

    enabled: bool = Field(True, description="Retry retryable failures.")
    initial_backoff: Duration = Field(
        1.0, gt=0, description="Delay before the first retry (before jitter)."
    )
    max_backoff: Duration = Field(5.0, gt=0, description="Upper bound of one retry delay.")
    multiplier: float = Field(
        2.0, ge=1.0, description="Growth of the delay after each failed attempt."
    )
    jitter: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Random fraction taken off or added to each delay (0.2 = +/-20%).",
    )


class OtlpConfig(StrictModel):
    """Export reports as OTLP spans to an OpenTelemetry Collector or any OTLP backend."""

    endpoint: str = Field(
        "http://localhost:4317",
        description=(
            "URL of the receiver. `http://` is plaintext, `https://` is TLS. gRPC: "
            "host:port of the TraceService. HTTP: without a path (or with `/`) requests go "
            "to `/v1/traces`; with a path, to that path as is."
        ),
    )
    protocol: Literal["grpc", "http_binary", "http_json"] = Field(
        "grpc",
        description=(
            "`grpc` (OTLP/gRPC), `http_binary` (OTLP/HTTP, application/x-protobuf) or "
            "`http_json` (OTLP/HTTP, application/json)."
        ),
    )
    timeout: Duration = Field(10.0, gt=0, description="Timeout of one export request.")
    max_batch_size: int = Field(
        1024, gt=0, description="Most reports in one export request."
    )
    max_batch_interval: Duration = Field(
        2.0,
        gt=0,
        description="Longest a report waits in the queue for its batch to fill up.",
    )
    max_queue_size: int = Field(
        32768,
        gt=0,
        description=(
            "Reports waiting to be sent. When full, the oldest are dropped and counted "
            "(mermin_export_dropped_total{reason=\"queue_full\"}); memory stays bounded."
        ),
    )
    max_concurrent_exports: int = Field(
        4, gt=0, description="Export requests in flight at once."
    )
    max_export_timeout: Duration = Field(
        10.0,
        gt=0,
        description=(
            "Longest one batch is tried, retries included; after that it is dropped and "
            "counted."
        ),
    )
    compression: Literal["gzip", "none"] = Field(
        "gzip", description="Request compression (addition): `gzip` or `none`."
    )
    compression_level: int = Field(
        1,
        ge=1,
        le=9,
        description=(
            "gzip level for `http_binary` / `http_json` (addition), 1 (fastest) to 9 "
            "(smallest). Levels 1-3 use the ISA-L compressor (python-isal): level 1 costs "
            "~1.3 us per flow span and shrinks it ~9x; 4-9 use zlib (level 6: ~14 us per span, "
            "~12x). gRPC ignores it: the gRPC core always compresses at zlib's default level 6 "
            "(docs/export.md)."
        ),
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig, description="Retry with exponential backoff (addition)."
    )
    auth: AuthConfig | None = Field(None, description="`basic = {user, pass}` or `bearer`.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra gRPC metadata / HTTP headers sent with every request.",
    )
    tls: TlsConfig | None = Field(None, description="TLS / mTLS settings.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = value.strip()
        if "://" not in value:  # the original accepted a bare host:port for gRPC
            value = "http://" + value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(
                f"endpoint {value!r} must start with http:// (plaintext) or https:// (TLS)"
            )
        if not parts.hostname:
            raise ValueError(f"endpoint {value!r} has no host")
        try:
            parts.port  # noqa: B018 - validates the port number
        except ValueError as exc:
            raise ValueError(f"endpoint {value!r} has an invalid port") from exc
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or any(c.isspace() or c in ':"' for c in key):
                raise ValueError(f"invalid header name {key!r}")
        return value


def _stdout(value: Any) -> Any:
    """`stdout = "json"` is shorthand for `stdout = { format = "json" }`."""
    if isinstance(value, str):
        return {"format": value}
    return value


class TracesExportConfig(StrictModel):
    """`export "traces" { ... }`: stdout and otlp may both be set; neither = no export."""

    stdout: Annotated[StdoutConfig | None, BeforeValidator(_stdout)] = Field(
        None,
        description='Print reports: `stdout = "text"`, `"json"` or `{ format = "..." }`.',
    )
    otlp: OtlpConfig | None = Field(None, description="Send reports over OTLP.")


class ExportConfig(StrictModel):
    """The `export` block; only the `traces` signal exists."""

    traces: TracesExportConfig = Field(
        default_factory=TracesExportConfig, description='`export "traces" { ... }`.'
    )
