"""The exception tree. Errors are translated into these types at each boundary (libbpf errno,
netlink, Kubernetes API, gRPC/HTTP) and chained with `from`.

    MerminError                     one-line user-facing message, exit code
    ├── ConfigError                 bad config file or value (exit 2)
    ├── CaptureError                unreadable capture file for `mermin replay` (exit 2)
    ├── DatapathError               BPF object, load, attach (exit 1)
    │   ├── VerifierError           the verifier rejected a program (carries its last lines)
    │   └── PermissionDeniedError   missing capability (names it)
    ├── ExportError                 exporter failure; `.retryable` tells the retry loop
    └── KubernetesError             Kubernetes API failure; `.retryable`
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "ConfigError",
    "DatapathError",
    "ExportError",
    "KubernetesError",
    "MerminError",
    "PermissionDeniedError",
    "VerifierError",
]


class MerminError(Exception):
    """An error with a one-line message meant for the user (what, where, how to fix)."""

    exit_code = 1
    retryable = False


class ConfigError(MerminError):
    exit_code = 2


class CaptureError(MerminError):
    exit_code = 2


class DatapathError(MerminError):
    pass


class VerifierError(DatapathError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class PermissionDeniedError(DatapathError):
    pass


class ExportError(MerminError):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class KubernetesError(MerminError):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
