"""`llmctl gpu` preflight: the Kubernetes reads (kube.py) and the pure checks on them.

The cluster objects are built with the kubernetes client's own models (V1StorageClass,
V1DaemonSet, V1Deployment, V1RuntimeClass) and served as the API lists them, so the reads parse
what a real kube-apiserver answers. (Once tests/cluster's real kube-apiserver is available these
reads can run against it unchanged: create the same objects there.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests import cluster_setup_objects
from tests.support.fake_kube import kubeconfig, status
from tests.support.http_fake import Request, Response, serve
from tests.support.kube_lists import (
    Cluster,
    daemon_set,
    deployment,
    runtime_class,
    storage_class,
)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def api(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    with serve(cluster.route) as server:
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig(server.url))
        yield kube.api_client(str(path))


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


def test_ready_eks_cluster(api: Any, cluster: Cluster) -> None:
    cluster.objects["/apis/storage.k8s.io/v1/storageclasses"] += [
        storage_class("gp2", False),
        storage_class("gp3", True),
    ]
    cluster.objects["/apis/apps/v1/deployments"].append(
        deployment(
            "kube-system",
            "aws-cluster-autoscaler",
            "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.0",
        )
    )
    ours = next(
        o for o in cluster_setup_objects(Stack(), CloudName.AWS) if o["kind"] == "DaemonSet"
    )
    cluster.objects["/apis/apps/v1/daemonsets"].append(ours)
    facts = kube.cluster_facts(api)
    assert facts.default_storage_class == "gp3"
    assert facts.autoscalers == ("kube-system/aws-cluster-autoscaler",)
    assert [p.by_llmctl for p in facts.device_plugins] == [True]
    assert all(c.ok for c in kube.preflight(CloudName.AWS, facts))
    assert kube.cluster_blockers(CloudName.AWS, facts) == []
    # llmctl's own plugin is re-applied, not skipped.
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    assert kube.setup_objects(CloudName.AWS, objects, facts) == objects


def test_karpenter_only_cluster_is_told_to_use_a_nodepool(api: Any, cluster: Cluster) -> None:
    cluster.crds.add(kube.KARPENTER_CRD)
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
    cluster: Cluster,
    cloud: CloudName,
    namespace: str,
    name: str,
    image: str,
    operator: bool,
) -> None:
    """Review item 8: no second device plugin next to the static manifest or the GPU Operator."""
    cluster.objects["/apis/apps/v1/daemonsets"].append(daemon_set(namespace, name, image))
    if operator:
        cluster.crds.add(kube.GPU_OPERATOR_CRD)
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
    api: Any, cluster: Cluster, cloud: CloudName
) -> None:
    """Review item 9: GKE and AKS nodes have no `nvidia` containerd handler."""
    objects = cluster_setup_objects(Stack(), cloud)
    assert "RuntimeClass" not in [o["kind"] for o in kube.setup_objects(cloud, objects, None)]
    aws = cluster_setup_objects(Stack(), CloudName.AWS)
    assert "RuntimeClass" in [o["kind"] for o in kube.setup_objects(CloudName.AWS, aws, None)]
    cluster.objects["/apis/node.k8s.io/v1/runtimeclasses"].append(runtime_class("nvidia", "nvidia"))
    facts = kube.cluster_facts(api)
    assert facts.runtime_classes == {"nvidia": "nvidia"}
    check = {c.name: c for c in kube.preflight(cloud, facts)}["RuntimeClass nvidia"]
    assert not check.ok and "fail at sandbox creation" in check.message


def test_gke_warns_about_nvidia_plugin_beside_its_own(api: Any, cluster: Cluster) -> None:
    cluster.objects["/apis/apps/v1/daemonsets"] += [
        daemon_set(
            "kube-system",
            "nvidia-gpu-device-plugin-small-cos",
            "gke.gcr.io/nvidia-gpu-device-plugin@sha256:0",
        ),
        daemon_set("default", "extra", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"),
    ]
    facts = kube.cluster_facts(api)
    plugin = {c.name: c for c in kube.preflight(CloudName.GCP, facts)}["NVIDIA device plugin"]
    assert not plugin.ok and "default/extra" in plugin.message
    assert kube.cluster_blockers(CloudName.GCP, facts) == []


def test_preflight_rbac_refusal_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    def forbid(request: Request) -> Response:
        return status(403, "Forbidden", 'storageclasses.storage.k8s.io is forbidden: User "x"')

    with serve(forbid) as server:
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig(server.url))
        api = kube.api_client(str(path))
        with pytest.raises(kube.LlmctlError, match="refused listing StorageClasses") as info:
            kube.cluster_facts(api)
    assert "CustomResourceDefinitions" in (info.value.hint or "")


def test_apply_does_not_force_and_reports_a_conflict(tmp_path: Path) -> None:
    """Review item 8: no `force=true`; another manager's fields are a clear error."""
    seen: list[Request] = []

    def conflict(request: Request) -> Response:
        seen.append(request)
        return status(
            409,
            "Conflict",
            'Apply failed with 1 conflict: conflict with "helm" using apps/v1: '
            '.spec.template.spec.containers[name="nvidia-device-plugin-ctr"].image',
        )

    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    with serve(conflict) as server:
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig(server.url))
        api = kube.api_client(str(path))
        with pytest.raises(kube.LlmctlError, match='conflict with "helm"') as info:
            kube.apply(api, objects)
    assert seen[0].query == {"fieldManager": "llmctl"}
    assert "--skip-cluster-setup" in (info.value.hint or "")
