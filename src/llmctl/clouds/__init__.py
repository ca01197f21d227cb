"""Cloud adapters for GPU node pools, found by name through one registry.

Importing this package imports no cloud SDK: each adapter loads its SDK inside the functions that
call it, so `llmctl --help` stays fast and a missing SDK is a clear error only where it is needed.
"""

from __future__ import annotations

from collections.abc import Callable

from llmctl.catalog import CloudName
from llmctl.clouds.base import Cloud
from llmctl.errors import ConfigError


def _aws() -> Cloud:
    from llmctl.clouds.aws import AwsCloud

    return AwsCloud()


def _azure() -> Cloud:
    from llmctl.clouds.azure import AzureCloud

    return AzureCloud()


def _gcp() -> Cloud:
    from llmctl.clouds.gcp import GcpCloud

    return GcpCloud()


# How to build each cloud's adapter. Tests replace an entry to point it at a local endpoint.
FACTORIES: dict[CloudName, Callable[[], Cloud]] = {
    CloudName.AWS: _aws,
    CloudName.AZURE: _azure,
    CloudName.GCP: _gcp,
}


def cloud_name(name: str) -> CloudName:
    try:
        return CloudName(name.strip().lower())
    except ValueError:
        known = ", ".join(c.value for c in CloudName)
        raise ConfigError(f"unknown cloud {name!r}", hint=f"use one of: {known}") from None


def get_cloud(name: str | CloudName) -> Cloud:
    """The adapter for a cloud, by name ("aws", "azure", "gcp")."""
    return FACTORIES[cloud_name(str(name))]()
