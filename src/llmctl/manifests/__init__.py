"""Stack -> Kubernetes manifests.

TEMPORARY STAND-IN (branch `gpu`): the lead is writing the real `llmctl.manifests`; at merge,
replace this whole file with the real package. Only `cluster_setup_objects` is used by
`llmctl gpu enable`, and its signature below is the agreed one. Its tests compare what is applied
with whatever this function returns, so they keep passing with the real renderer.
"""

from __future__ import annotations

from typing import Any

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack

_LABELS = {
    "app.kubernetes.io/name": "nvidia-device-plugin",
    "app.kubernetes.io/instance": "nvidia-device-plugin",
    "app.kubernetes.io/component": "device-plugin",
    "app.kubernetes.io/part-of": "llm-router",
    "app.kubernetes.io/managed-by": "llmctl",
}


def cluster_setup_objects(stack: Stack, cloud: CloudName) -> list[dict[str, Any]]:
    """The cluster-wide GPU objects: the NVIDIA device plugin (where needed) and RuntimeClass."""
    facts = catalog.CLOUD_FACTS[cloud]
    objects: list[dict[str, Any]] = []
    if facts.needs_device_plugin:
        selector = {"app.kubernetes.io/name": "nvidia-device-plugin"}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": "nvidia-device-plugin",
                    "namespace": "kube-system",
                    "labels": dict(_LABELS),
                },
                "spec": {
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": dict(_LABELS)},
                        "spec": {
                            "nodeSelector": {
                                catalog.GPU_NODE_LABEL_COMPUTE[0]: catalog.GPU_NODE_LABEL_COMPUTE[1]
                            },
                            "tolerations": [
                                {
                                    "key": catalog.GPU_TAINT.key,
                                    "operator": "Exists",
                                    "effect": "NoSchedule",
                                }
                            ],
                            "priorityClassName": "system-node-critical",
                            "containers": [
                                {
                                    "name": "nvidia-device-plugin",
                                    "image": stack.images.device_plugin,
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                    "volumeMounts": [
                                        {
                                            "name": "device-plugin",
                                            "mountPath": "/var/lib/kubelet/device-plugins",
                                        }
                                    ],
                                }
                            ],
                            "volumes": [
                                {
                                    "name": "device-plugin",
                                    "hostPath": {"path": "/var/lib/kubelet/device-plugins"},
                                }
                            ],
                        },
                    },
                },
            }
        )
    objects.append(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "nvidia", "labels": dict(_LABELS)},
            "handler": "nvidia",
        }
    )
    return objects
