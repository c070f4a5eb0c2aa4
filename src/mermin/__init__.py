"""Mermin: Kubernetes-native network flow observability agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mermin")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
