"""Cluster-wide objects that llmctl's preflight reads (kube.cluster_facts), built with the
kubernetes client's own models, and `ClusterObjects`, which creates them on the real API server of
the `control_plane` fixture (tests/cluster) and deletes them again: that control plane is shared
by the whole test session, so every test leaves it as it found it.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s

from llmctl import kube
from tests.cluster.controlplane import ControlPlane


def plain(model: Any) -> dict[str, Any]:
    return dict(k8s.ApiClient().sanitize_for_serialization(model))


def storage_class(name: str, default: bool) -> dict[str, Any]:
    annotations = {kube.DEFAULT_CLASS_ANNOTATION: "true"} if default else None
    return plain(
        k8s.V1StorageClass(
            api_version="storage.k8s.io/v1",
            kind="StorageClass",
            metadata=k8s.V1ObjectMeta(name=name, annotations=annotations),
            provisioner="ebs.csi.aws.com",
        )
    )


def _pod_template(image: str, labels: dict[str, str]) -> Any:
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="main", image=image)]),
    )


def daemon_set(
    namespace: str, name: str, image: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    selector = {"app": name}
    return plain(
        k8s.V1DaemonSet(
            api_version="apps/v1",
            kind="DaemonSet",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
            spec=k8s.V1DaemonSetSpec(
                selector=k8s.V1LabelSelector(match_labels=selector),
                template=_pod_template(image, selector),
            ),
        )
    )


def deployment(namespace: str, name: str, image: str) -> dict[str, Any]:
    selector = {"app": name}
    return plain(
        k8s.V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
            spec=k8s.V1DeploymentSpec(
                replicas=0,  # only listed by the preflight; nothing needs to run
                selector=k8s.V1LabelSelector(match_labels=selector),
                template=_pod_template(image, selector),
            ),
        )
    )


def runtime_class(name: str, handler: str) -> dict[str, Any]:
    return plain(
        k8s.V1RuntimeClass(
            api_version="node.k8s.io/v1",
            kind="RuntimeClass",
            metadata=k8s.V1ObjectMeta(name=name),
            handler=handler,
        )
    )


def crd(name: str) -> dict[str, Any]:
    """A minimal cluster-scoped CustomResourceDefinition `name` (plural.group), e.g. Karpenter's
    nodepools.karpenter.sh or the GPU Operator's clusterpolicies.nvidia.com."""
    plural, _, group = name.partition(".")
    kind = {
        "nodepools": "NodePool",
        "clusterpolicies": "ClusterPolicy",
        "nodeclaims": "NodeClaim",
    }.get(plural, plural.capitalize())
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def _where(obj: dict[str, Any]) -> list[str]:
    namespace = obj["metadata"].get("namespace")
    return ["-n", namespace] if namespace else []


class ClusterObjects:
    """Objects a test creates on the shared real API server; `cleanup` deletes them (and the
    namespaces made for them), waiting until they are gone."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.created: list[dict[str, Any]] = []
        self.namespaces: list[str] = []

    def add(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            namespace = obj["metadata"].get("namespace")
            if namespace and namespace not in self.namespaces:
                exists = self.plane.kubectl(
                    "get", "namespace", namespace, "--ignore-not-found", "-o", "name"
                ).strip()
                if not exists:
                    self.plane.kubectl("create", "namespace", namespace)
                    self.namespaces.append(namespace)
            self.created.append(obj)
            self.plane.kubectl(
                "apply",
                "--server-side",
                "--field-manager=llmctl-tests",
                "-f",
                "-",
                input_text=json.dumps(obj),
            )
            if obj["kind"] == "CustomResourceDefinition":
                self.plane.kubectl(
                    "wait", "--for=condition=Established", f"crd/{obj['metadata']['name']}"
                )

    def cleanup(self) -> None:
        for obj in reversed(self.created):
            self.plane.kubectl(
                "delete",
                obj["kind"].lower(),
                obj["metadata"]["name"],
                *_where(obj),
                "--ignore-not-found",
                "--wait",
                "--cascade=foreground",  # a DaemonSet's pods go before it does
            )
        for namespace in self.namespaces:
            self.plane.kubectl("delete", "namespace", namespace, "--ignore-not-found")
        self.created.clear()
        self.namespaces.clear()
