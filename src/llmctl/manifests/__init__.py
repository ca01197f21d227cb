"""Stack -> Kustomize trees and Helm values. Pure, apart from `writer`.

Imports config and catalog only: never clouds/, kube/ or network clients.
"""

from __future__ import annotations

from typing import Any

from llmctl.catalog import CloudName
from llmctl.config import Stack


def cluster_setup_objects(stack: Stack, cloud: CloudName) -> list[dict[str, Any]]:
    """The cluster-wide NVIDIA pieces of a cloud's GPU overlay (RuntimeClass, device plugin),
    exactly as the overlay builds them: `llmctl gpu enable` applies these, so there is one source.
    """
    from llmctl.manifests.build import built_objects

    return [
        obj
        for obj in built_objects(stack, cloud, gpu=True)
        if obj["kind"] == "RuntimeClass"
        or obj["metadata"]["labels"].get("app.kubernetes.io/component") == "device-plugin"
    ]
