"""Pod Security admission, for real: the namespace llmctl creates enforces `restricted`, and the
API server admits every pod llmctl renders (both deploy paths, every cloud) or creates
(`test-inference --gpu-check`). Each pod goes through a server-side dry-run create, so the
PodSecurity admission plugin judges it and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE, Stack
from llmctl.manifests import cluster_setup_objects
from llmctl.probe.gpu_check import check_pod
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    apply_objects,
    delete_namespace,
    get_json,
    reset_llmctl_objects,
    wait_for,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.tools

WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


@pytest.fixture(scope="module")
def restricted_namespace(control_plane: ControlPlane, repo: Path) -> Iterator[str]:
    """The namespace exactly as the base renders it (labels included)."""
    reset_llmctl_objects(control_plane)
    for cloud in CloudName:  # `gpu enable`'s cluster setup: the `nvidia` RuntimeClass pods name
        apply_objects(control_plane, cluster_setup_objects(Stack(), cloud))
    namespace = yaml.safe_load((repo / "clusters" / "aws" / "base" / "namespace.yaml").read_text())
    apply_objects(control_plane, [namespace])
    yield namespace["metadata"]["name"]
    delete_namespace(control_plane, namespace["metadata"]["name"])


def _pods(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """A Pod for each workload template in `namespace`, as its controller would create it."""
    pods = []
    for obj in objects:
        if obj.get("kind") not in WORKLOADS or obj["metadata"].get("namespace") != namespace:
            continue
        template = obj["spec"]["template"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{obj['metadata']['name']}-psa-check",
                    "namespace": namespace,
                    "labels": template.get("metadata", {}).get("labels", {}),
                },
                "spec": template["spec"],
            }
        )
    return pods


def _service_accounts(plane: ControlPlane, objects: list[dict[str, Any]], namespace: str) -> None:
    """The ServiceAccounts the pods name must exist before the API server admits them."""
    accounts = [
        o
        for o in objects
        if o.get("kind") == "ServiceAccount" and o["metadata"].get("namespace") == namespace
    ]
    if accounts:
        apply_objects(plane, accounts)
    wait_for(
        "the namespace's default ServiceAccount",
        lambda: plane.kubectl(
            "get", "serviceaccount", "-n", namespace, "--ignore-not-found", "-o", "name", "default"
        ).strip(),
    )


def _admit(plane: ControlPlane, pod: dict[str, Any]) -> None:
    plane.kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input_text=json.dumps(pod))


def test_the_namespace_enforces_restricted(
    control_plane: ControlPlane, restricted_namespace: str
) -> None:
    labels = get_json(control_plane, "namespace", restricted_namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The API server enforces it: a root pod with no securityContext is refused.
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": restricted_namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    with pytest.raises(RuntimeError, match="violates PodSecurity"):
        _admit(control_plane, bare)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_every_rendered_pod_is_admitted(
    cloud: CloudName, control_plane: ControlPlane, restricted_namespace: str, repo: Path
) -> None:
    rendered = control_plane.kubectl(
        "kustomize", str(repo / "clusters" / cloud.value / "overlays" / "gpu")
    )
    objects = list(yaml.safe_load_all(rendered))
    _service_accounts(control_plane, objects, restricted_namespace)
    pods = _pods(objects, restricted_namespace)
    names = {p["metadata"]["name"] for p in pods}
    assert {"llm-router-psa-check", "cpu-llm-server-psa-check", "gpu-llm-server-psa-check"} <= names
    for pod in pods:
        _admit(control_plane, pod)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_every_helm_pod_is_admitted(
    cloud: CloudName, control_plane: ControlPlane, restricted_namespace: str, repo: Path
) -> None:
    helm = require_tool("helm")
    import subprocess

    chart = repo / "charts" / "llm-router"
    rendered = subprocess.run(
        [helm, "template", "llm", str(chart), "--namespace", restricted_namespace,
         "-f", str(chart / f"values-{cloud.value}-gpu.yaml")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    _service_accounts(control_plane, objects, restricted_namespace)
    runtime_classes = [o for o in objects if o["kind"] == "RuntimeClass"]  # the pods name them
    if runtime_classes:
        apply_objects(control_plane, runtime_classes)
    pods = _pods(objects, restricted_namespace)
    assert len(pods) >= 3
    for pod in pods:
        _admit(control_plane, pod)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_the_gpu_check_pod_is_admitted(
    cloud: CloudName, control_plane: ControlPlane, restricted_namespace: str
) -> None:
    assert restricted_namespace == NAMESPACE
    _service_accounts(control_plane, [], restricted_namespace)
    _admit(control_plane, check_pod(Stack(), cloud, name="llmctl-gpu-check-psa"))


def test_the_gpu_check_pod_names_a_helm_only_clusters_runtime_class(
    control_plane: ControlPlane, restricted_namespace: str
) -> None:
    """Issue 28: on EKS set up by the Helm chart alone, the only RuntimeClass with the nvidia
    handler is the release's `<release>-nvidia`; the check pod names it and is admitted."""
    from llmctl import kube
    from llmctl.probe.gpu_check import runtime_class_in

    helm_only = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "llm-nvidia", "labels": {"app.kubernetes.io/part-of": "llm-router"}},
        "handler": "nvidia",
    }
    control_plane.kubectl("delete", "runtimeclass", "nvidia", "--ignore-not-found")
    apply_objects(control_plane, [helm_only])
    try:
        api = kube.api_client(str(control_plane.kubeconfig))
        runtime = runtime_class_in(api, CloudName.AWS)
        assert runtime == "llm-nvidia"
        _service_accounts(control_plane, [], restricted_namespace)
        pod = check_pod(Stack(), CloudName.AWS, name="llmctl-gpu-check-helm", runtime_class=runtime)
        _admit(control_plane, pod)
        assert runtime_class_in(api, CloudName.GCP) is None
    finally:
        control_plane.kubectl("delete", "runtimeclass", "llm-nvidia", "--ignore-not-found")
        apply_objects(control_plane, cluster_setup_objects(Stack(), CloudName.AWS))
