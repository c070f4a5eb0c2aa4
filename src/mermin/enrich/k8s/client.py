"""Connection to the API server, built with the official `kubernetes` client's config loaders.

Auth and TLS come from the library: the in-cluster service account (token file re-read on
rotation), or a kubeconfig (client certificates, static tokens, exec/auth-provider plugins
refreshed through `refresh_api_key_hook`). Requests go through its `ApiClient` (urllib3 pool) with
`preload_content=False`, so list bodies and watch streams are read as raw bytes and projected
without building model objects.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mermin.errors import KubernetesError

__all__ = ["ApiStatusError", "KubeClient"]


class ApiStatusError(KubernetesError):
    """The API server answered with a non-2xx status."""

    def __init__(self, status: int, path: str, body: bytes = b"") -> None:
        text = body[:200].decode("utf-8", "replace").strip()
        super().__init__(f"Kubernetes API {path}: HTTP {status} {text}",
                         retryable=status >= 500 or status == 429)
        self.status = status


class KubeClient:
    """Thin wrapper over `kubernetes.client.ApiClient` for streamed GETs."""

    def __init__(self, kubeconfig_path: str = "", *, pool_size: int = 32) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            if kubeconfig_path:
                if not Path(kubeconfig_path).is_file():
                    raise KubernetesError(
                        f"kubeconfig_path {kubeconfig_path!r} does not exist: fix "
                        "discovery \"informer\" \"k8s\" { kubeconfig_path } or leave it empty "
                        "for the in-cluster service account")
                config.load_kube_config(config_file=kubeconfig_path, client_configuration=cfg,
                                        persist_config=False)
                self.source = f"kubeconfig {kubeconfig_path}"
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                self.source = "in-cluster service account"
            else:
                config.load_kube_config(client_configuration=cfg, persist_config=False)
                self.source = "kubeconfig " + os.environ.get("KUBECONFIG", "~/.kube/config")
        except ConfigException as exc:
            raise KubernetesError(
                f"no Kubernetes credentials: {exc}; run inside a pod with a service account or "
                "set discovery \"informer\" \"k8s\" { kubeconfig_path }") from exc
        except KubernetesError:
            raise
        except Exception as exc:  # unreadable/malformed kubeconfig (YAML, missing keys)
            raise KubernetesError(
                f"cannot use the kubeconfig ({type(exc).__name__}: {exc}); fix the file or "
                "discovery \"informer\" \"k8s\" { kubeconfig_path }") from exc
        cfg.connection_pool_maxsize = pool_size
        self.host = cfg.host
        self.api = client.ApiClient(cfg)

    @staticmethod
    def available(kubeconfig_path: str = "") -> bool:
        """Whether credentials can be found without connecting (for a static-only fallback)."""
        if kubeconfig_path:
            return True  # an explicit path that is wrong must fail loudly, not be skipped
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return True
        paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
        return any(Path(p).expanduser().is_file() for p in paths if p)

    def get(self, path: str, query: Sequence[tuple[str, Any]],
            timeout: tuple[float, float]) -> Any:
        """GET `path?query` and return the raw urllib3 response (not read yet)."""
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET", resource_path=path, query_params=list(query),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        return self.api.call_api(method, url, header_params=headers,
                                 _request_timeout=timeout).response

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort at shutdown
            self.api.close()
