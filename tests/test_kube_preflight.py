"""`llmctl gpu` preflight: the Kubernetes reads (kube/preflight.py) and the pure checks on
them, against the real API server of the `control_plane` fixture.

The cluster objects are built with the kubernetes client's own models (V1StorageClass,
V1DaemonSet, V1Deployment, V1RuntimeClass) and minimal CRDs, created on the real kube-apiserver
for each test and deleted after it (the control plane is shared by the session).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests import cluster_setup_objects
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import get_json
from tests.support.kube_lists import (
    ClusterObjects,
    crd,
    daemon_set,
    deployment,
    runtime_class,
    storage_class,
)


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[ClusterObjects]:
    objects = ClusterObjects(control_plane)
    yield objects
    objects.cleanup()


@pytest.fixture
def api(control_plane: ControlPlane, cluster: ClusterObjects) -> Any:
    return kube.api_client(str(control_plane.kubeconfig))


def test_empty_cluster_on_eks_lacks_an_autoscaler_and_a_default_class(api: Any) -> None:
    facts = kube.cluster_facts(api)
    assert facts == kube.ClusterFacts(None, (), False, (), False, {})
    checks = {c.name: c for c in kube.preflight(CloudName.AWS, facts)}
    assert not checks["default StorageClass"].ok
    assert "storageclass.kubernetes.io/is-default-class" in checks["default StorageClass"].fix
    autoscaler = checks["node autoscaler"]
    assert not autoscaler.ok and autoscaler.blocks_scale_from_zero
    assert "--node-group-auto-discovery" in autoscaler.fix
    blockers = kube.cluster_blockers(CloudName.AWS, facts)
    assert len(blockers) == 2 and "no NVIDIA device plugin" in blockers[1]


def test_ready_eks_cluster(api: Any, cluster: ClusterObjects) -> None:
    cluster.add(
        storage_class("gp2", False),
        storage_class("gp3", True),
        deployment(
            "kube-system",
            "aws-cluster-autoscaler",
            "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.0",
        ),
    )
    ours = next(
        o for o in cluster_setup_objects(Stack(), CloudName.AWS) if o["kind"] == "DaemonSet"
    )
    cluster.add(ours)
    facts = kube.cluster_facts(api)
    assert facts.default_storage_class == "gp3"
    assert facts.autoscalers == ("kube-system/aws-cluster-autoscaler",)
    assert [p.by_llmctl for p in facts.device_plugins] == [True]
    assert all(c.ok for c in kube.preflight(CloudName.AWS, facts))
    assert kube.cluster_blockers(CloudName.AWS, facts) == []
    # llmctl's own plugin is re-applied, not skipped.
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    assert kube.setup_objects(CloudName.AWS, objects, facts) == objects


def test_karpenter_only_cluster_is_told_to_use_a_nodepool(
    api: Any, cluster: ClusterObjects
) -> None:
    cluster.add(crd(kube.KARPENTER_CRD))
    facts = kube.cluster_facts(api)
    autoscaler = {c.name: c for c in kube.preflight(CloudName.AWS, facts)}["node autoscaler"]
    assert (
        not autoscaler.ok and "Karpenter does not scale managed node groups" in autoscaler.message
    )
    assert "Karpenter NodePool" in autoscaler.fix


@pytest.mark.parametrize(
    ("namespace", "name", "image", "operator"),
    [
        (
            "kube-system",
            "nvidia-device-plugin-daemonset",
            "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
            False,
        ),
        (
            "gpu-operator",
            "nvidia-device-plugin-daemonset",
            "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
            True,
        ),
    ],
)
@pytest.mark.parametrize("cloud", [CloudName.AWS, CloudName.AZURE])
def test_existing_plugin_or_operator_is_not_doubled(
    api: Any,
    cluster: ClusterObjects,
    cloud: CloudName,
    namespace: str,
    name: str,
    image: str,
    operator: bool,
) -> None:
    """Review item 8: no second device plugin next to the static manifest or the GPU Operator."""
    cluster.add(daemon_set(namespace, name, image))
    if operator:
        cluster.add(crd(kube.GPU_OPERATOR_CRD))
    facts = kube.cluster_facts(api)
    assert facts.gpu_operator is operator
    assert [p.where for p in facts.device_plugins] == [f"{namespace}/{name}"]
    plugin = {c.name: c for c in kube.preflight(cloud, facts)}["NVIDIA device plugin"]
    assert plugin.ok and "does not apply a second one" in plugin.message
    kinds = [
        o["kind"] for o in kube.setup_objects(cloud, cluster_setup_objects(Stack(), cloud), facts)
    ]
    assert "DaemonSet" not in kinds


@pytest.mark.parametrize("cloud", [CloudName.GCP, CloudName.AZURE])
def test_runtime_class_only_where_the_handler_exists(
    api: Any, cluster: ClusterObjects, cloud: CloudName
) -> None:
    """Review item 9: GKE and AKS nodes have no `nvidia` containerd handler."""
    objects = cluster_setup_objects(Stack(), cloud)
    assert "RuntimeClass" not in [o["kind"] for o in kube.setup_objects(cloud, objects, None)]
    aws = cluster_setup_objects(Stack(), CloudName.AWS)
    assert "RuntimeClass" in [o["kind"] for o in kube.setup_objects(CloudName.AWS, aws, None)]
    cluster.add(runtime_class("nvidia", "nvidia"))
    facts = kube.cluster_facts(api)
    assert facts.runtime_classes == {"nvidia": "nvidia"}
    check = {c.name: c for c in kube.preflight(cloud, facts)}["RuntimeClass nvidia"]
    assert not check.ok and "fail at sandbox creation" in check.message


def test_gke_warns_about_nvidia_plugin_beside_its_own(api: Any, cluster: ClusterObjects) -> None:
    cluster.add(
        daemon_set(
            "kube-system",
            "nvidia-gpu-device-plugin-small-cos",
            "gke.gcr.io/nvidia-gpu-device-plugin@sha256:0",
        ),
        daemon_set("default", "extra", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"),
    )
    facts = kube.cluster_facts(api)
    plugin = {c.name: c for c in kube.preflight(CloudName.GCP, facts)}["NVIDIA device plugin"]
    assert not plugin.ok and "default/extra" in plugin.message
    assert kube.cluster_blockers(CloudName.GCP, facts) == []


def test_preflight_rbac_refusal_is_one_line(control_plane: ControlPlane) -> None:
    """A user without RBAC rights: the API server refuses the first list (403), in one line."""
    limited = kube.api_client(str(control_plane.user_kubeconfig("limited")))
    with pytest.raises(kube.LlmctlError, match="refused listing StorageClasses") as info:
        kube.cluster_facts(limited)
    assert "HTTP 403" in info.value.message or "forbidden" in info.value.message
    assert "CustomResourceDefinitions" in (info.value.hint or "")


def test_apply_does_not_force_and_reports_a_conflict(
    api: Any, cluster: ClusterObjects, control_plane: ControlPlane
) -> None:
    """Review item 8: no `force=true`; another manager's fields are a clear error."""
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    ours = next(o for o in objects if o["kind"] == "DaemonSet")
    theirs = copy.deepcopy(ours)
    container = theirs["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "nvcr.io/nvidia/k8s-device-plugin:v0.16.0"
    control_plane.kubectl(
        "apply", "--server-side", "--field-manager=helm", "-f", "-",
        input_text=json.dumps(theirs),
    )  # fmt: skip
    cluster.created += [*objects, theirs]  # whatever got applied is deleted after the test
    with pytest.raises(kube.LlmctlError, match='conflict with "helm"') as info:
        kube.apply(api, objects)
    assert "--skip-cluster-setup" in (info.value.hint or "")
    meta = ours["metadata"]
    stored = get_json(
        control_plane, "daemonset", meta["name"], "-n", meta["namespace"], "--show-managed-fields"
    )
    # Not forced: helm still owns the image, and llmctl took no field of the DaemonSet.
    stored_image = stored["spec"]["template"]["spec"]["containers"][0]["image"]
    assert stored_image == container["image"]
    assert "llmctl" not in {m["manager"] for m in stored["metadata"]["managedFields"]}
