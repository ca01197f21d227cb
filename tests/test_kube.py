"""kube/, the Kubernetes calls of `llmctl gpu enable/status`, against the real API server of
the `control_plane` fixture: server-side apply as the field manager `llmctl`, GPU nodes as kwok
runs them, device plugin pods the DaemonSet controller really creates, and real RBAC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl import catalog, kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import LlmctlError
from llmctl.kube.kinds import KINDS
from llmctl.manifests import cluster_setup_objects
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    apply_objects,
    cpu_node,
    delete_namespace,
    ensure_nodes_ready,
    get_json,
    gpu_node,
    wait_for,
)


def delete_setup_objects(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if meta.get("namespace") else []
        plane.kubectl("delete", obj["kind"].lower(), meta["name"], *where, "--ignore-not-found")


def delete_every_cloud_setup(plane: ControlPlane) -> None:
    for cloud in CloudName:
        delete_setup_objects(plane, cluster_setup_objects(Stack(), cloud))


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[Any]:
    # Before too: the session's control plane is shared, and an earlier test (tests/cluster's
    # `apply -k` of an overlay) may have left the device plugin there under another manager.
    delete_every_cloud_setup(control_plane)
    yield kube.api_client(str(control_plane.kubeconfig))
    delete_every_cloud_setup(control_plane)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_apply_creates_the_objects_as_field_manager_llmctl(
    cloud: CloudName, api: Any, control_plane: ControlPlane
) -> None:
    objects = cluster_setup_objects(Stack(), cloud)
    assert "RuntimeClass" in {o["kind"] for o in objects}
    applied = kube.apply(api, objects)
    assert [(a["kind"], a["metadata"]["name"]) for a in applied] == [
        (o["kind"], o["metadata"]["name"]) for o in objects
    ]
    for obj in objects:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if meta.get("namespace") else []
        stored = get_json(
            control_plane, obj["kind"].lower(), meta["name"], *where, "--show-managed-fields"
        )
        managers = {(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]}
        assert ("llmctl", "Apply") in managers
    runtime = get_json(control_plane, "runtimeclass", "nvidia")
    assert runtime["handler"] == "nvidia"


def test_apply_twice_changes_nothing(api: Any, control_plane: ControlPlane) -> None:
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    first = kube.apply(api, objects)
    second = kube.apply(api, objects)
    # The same objects (uid), and the second apply was a no-op: no new spec (generation), and
    # where there is no generation (RuntimeClass) no new version at all. (Controllers still
    # write a DaemonSet's status between the two, which changes its resourceVersion.)
    assert [a["metadata"]["uid"] for a in second] == [a["metadata"]["uid"] for a in first]
    for a, b in zip(first, second, strict=True):
        if "generation" in a["metadata"]:
            assert b["metadata"]["generation"] == a["metadata"]["generation"], b["kind"]
        else:
            assert b["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"], b["kind"]


def test_apply_request_paths() -> None:
    ds = kube.apply_request(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "x", "namespace": "kube-system"},
        }
    )
    assert ds.path == "/apis/apps/v1/namespaces/kube-system/daemonsets/x"
    sa = kube.apply_request(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "y", "namespace": "n"}}
    )
    assert sa.path == "/api/v1/namespaces/n/serviceaccounts/y"
    rc = kube.apply_request(
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}}
    )
    assert rc.path == "/apis/node.k8s.io/v1/runtimeclasses/nvidia"
    # The plural the old `_plural` guess got wrong ("endpointses"), and a cluster-scoped kind
    # given a namespace it does not have: the table knows both.
    ep = kube.apply_request(
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "n"}}
    )
    assert ep.path == "/api/v1/namespaces/n/endpoints/e"
    pc = kube.apply_request(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "p", "namespace": "ignored"},
        }
    )
    assert pc.path == "/apis/scheduling.k8s.io/v1/priorityclasses/p"
    with pytest.raises(LlmctlError, match="no metadata.namespace"):
        kube.apply_request(
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "z"}}
        )


def test_an_unknown_kind_is_refused_with_where_to_add_it() -> None:
    with pytest.raises(LlmctlError, match=r"REST path of CronJob \(batch/v1\)") as caught:
        kube.apply_request(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "c", "namespace": "n"},
            }
        )
    assert "kube/kinds.py" in (caught.value.hint or "")


@pytest.mark.parametrize("cloud", list(CloudName))
def test_every_kind_llmctl_applies_has_a_row(cloud: CloudName) -> None:
    for obj in cluster_setup_objects(Stack(), cloud):
        kube.apply_request(obj)  # raises for a kind with no row


def test_the_kind_table_matches_the_api_servers_discovery(control_plane: ControlPlane) -> None:
    """Each row's plural and scope are what the real kube-apiserver's discovery says; a wrong
    plural or scope for a kind added later fails here, not at a user's apply."""
    rows = []
    for api_version in dict.fromkeys(k.api_version for k in KINDS):
        base = "/api/" if "/" not in api_version else "/apis/"
        listing = json.loads(control_plane.kubectl("get", "--raw", base + api_version))
        for resource in listing["resources"]:
            if "/" not in resource["name"]:  # skip subresources such as pods/log
                rows.append(
                    (api_version, resource["kind"], resource["name"], resource["namespaced"])
                )
    discovered = {(v, kind): (plural, ns) for v, kind, plural, ns in rows}
    wrong = [
        f"{row}: discovery says {discovered.get((row.api_version, row.kind))}"
        for row in KINDS
        if discovered.get((row.api_version, row.kind)) != (row.plural, row.namespaced)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.fixture
def nodes(control_plane: ControlPlane) -> Iterator[None]:
    """A Ready GPU node (kwok), a GPU node that never got a kubelet, and a CPU node."""
    ready = gpu_node(CloudName.AWS, "gpu-a")
    orphan = gpu_node(CloudName.AWS, "gpu-b")
    orphan["metadata"]["name"] = "gpu-b"
    del orphan["metadata"]["annotations"]  # kwok leaves it alone: no kubelet, never Ready
    orphan["status"]["capacity"]["nvidia.com/gpu"] = "0"
    orphan["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    # Exactly these nodes: the session's control plane is shared, and tests/cluster leaves the
    # GPU nodes it shaped for each cloud (each DaemonSet would get a pod on them too).
    control_plane.kubectl("delete", "nodes", "--all", "--ignore-not-found")
    ensure_nodes_ready(control_plane, [ready, cpu_node("cpu-a")])
    control_plane.kubectl(
        "apply", "--server-side", "-f", "-", input_text=__import__("json").dumps(orphan)
    )
    yield
    control_plane.kubectl("delete", "node", "gpu-a", "gpu-b", "cpu-a", "--ignore-not-found")


def test_gpu_nodes_and_device_plugin_pods(
    api: Any, nodes: None, control_plane: ControlPlane
) -> None:
    found = sorted(kube.gpu_nodes(api), key=lambda n: n.name)
    assert [(n.name, n.accelerator, n.allocatable_gpus, n.ready) for n in found] == [
        ("gpu-a", catalog.GPUS["t4"].label, 1, True),
        ("gpu-b", catalog.GPUS["t4"].label, 0, False),
    ]
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    kube.apply(api, objects)
    where = kube.device_plugin_pods(objects)
    assert where is not None
    namespace, selector = where
    # The DaemonSet controller makes a pod per GPU node; kwok runs the one on the Ready node.
    wait_for(
        "the device plugin pod on gpu-a to be Ready",
        lambda: kube.pods_ready(api, namespace, selector).ready == 1,
    )
    pods = get_json(control_plane, "pods", "-n", namespace, "-l", selector)["items"]
    assert sorted(p["spec"].get("nodeName") or p["spec"]["affinity"]["nodeAffinity"]
                  ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                  ["matchFields"][0]["values"][0] for p in pods) == ["gpu-a", "gpu-b"]  # fmt: skip
    assert kube.pods_ready(api, namespace, selector) == kube.PodsReady(1, 2)


def test_forbidden_apply_names_the_rbac_need(control_plane: ControlPlane) -> None:
    limited = kube.api_client(str(control_plane.user_kubeconfig("limited")))
    with pytest.raises(LlmctlError, match="refused applying .*HTTP 403") as info:
        kube.apply(limited, cluster_setup_objects(Stack(), CloudName.AWS))
    assert 'User "limited" cannot patch' in info.value.message
    assert "RBAC" in (info.value.hint or "")


def test_missing_kubeconfig_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="no usable kubeconfig") as info:
        kube.api_client(str(tmp_path / "absent"), hint="aws eks update-kubeconfig --name c")
    assert "aws eks update-kubeconfig --name c" in (info.value.hint or "")


def test_pod_log_is_read_through_the_api_server(
    api: Any, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The API server answers a pod's log as text/plain but refuses `Accept: text/plain` (406):
    the log is fetched from the node's kubelet (kwok, serving a CRI log file)."""
    ensure_nodes_ready(control_plane, [cpu_node("cpu-log")])
    log = tmp_path / "container.log"
    log.write_text(
        "2026-12-02T03:00:00.000000000Z stdout F first line\n"
        "2026-12-02T03:00:00.100000000Z stderr F second line\n"
    )
    control_plane.kubectl("create", "namespace", "kube-log-test")
    try:
        apply_objects(control_plane, [
            {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
             "metadata": {"name": "talker", "namespace": "kube-log-test"},
             "spec": {"logs": [{"containers": ["talk"], "logsFile": str(log)}]}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "talker", "namespace": "kube-log-test"},
             "spec": {"nodeName": "cpu-log",
                      "containers": [{"name": "talk", "image": "busybox:1.36"}]}},
        ])  # fmt: skip
        wait_for(
            "the pod to run",
            lambda: (
                get_json(control_plane, "pod", "-n", "kube-log-test", "talker")["status"].get(
                    "phase"
                )
                == "Running"
            ),
        )
        assert kube.pod_log(api, "kube-log-test", "talker") == "first line\nsecond line\n"
    finally:
        delete_namespace(control_plane, "kube-log-test")
