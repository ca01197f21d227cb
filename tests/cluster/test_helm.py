"""The chart against a real API server with the real CRDs: `helm install`, `helm upgrade` with
changed values (the change reaches the cluster), `helm uninstall` (nothing the release made is
left behind)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests import cluster_setup_objects
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    delete_namespace,
    get_json,
    gpu_node,
    only_these_gpu_nodes,
    reset_llmctl_objects,
    wait_for,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.tools

RELEASE, NAMESPACE = "llm", "llm-helm"
# Objects that come and go on their own (controllers, leader election, events): not the release's.
# componentstatuses is deprecated and probes the components rather than listing stored objects.
TRANSIENT = {"events", "events.events.k8s.io", "leases.coordination.k8s.io", "componentstatuses"}


def helm(plane: ControlPlane, *args: str) -> str:
    done = subprocess.run(
        [require_tool("helm"), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


CHECKSUM = "llmctl.dev/router-config-sha256"


def _router_yaml(plane: ControlPlane) -> dict[str, Any]:
    """The router's router.yaml as the API server stores it, checked by the router's schema."""
    from llmctl.router.table import RouterConfig

    config = get_json(plane, "configmap", f"{RELEASE}-llm-router-config", "-n", NAMESPACE)
    table: dict[str, Any] = yaml.safe_load(config["data"]["router.yaml"])
    RouterConfig.model_validate(table)
    return table


def everything(plane: ControlPlane) -> set[str]:
    """Every object of every listable kind in the cluster, by kind, namespace and name."""
    kinds = [
        k
        for k in plane.kubectl("api-resources", "--verbs=list", "-o", "name").split()
        if k not in TRANSIENT
    ]
    listed = json.loads(plane.kubectl("get", ",".join(kinds), "-A", "-o", "json"))
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in listed["items"]
        if not (o["kind"] == "Namespace" and o["metadata"]["name"] == NAMESPACE)
    }


@pytest.mark.parametrize("cloud", list(CloudName))
def test_install_upgrade_uninstall_leaves_nothing(
    cloud: CloudName, control_plane: ControlPlane, repo: Path
) -> None:
    chart = repo / "charts" / "llm-router"
    values = str(chart / f"values-{cloud.value}-gpu.yaml")
    control_plane.kubectl("create", "namespace", NAMESPACE)
    before = everything(control_plane)
    try:
        helm(
            control_plane,
            "install",
            RELEASE,
            str(chart),
            "-n",
            NAMESPACE,
            "-f",
            values,
            "--wait=false",
        )
        router = get_json(control_plane, "deployment", "-n", NAMESPACE, "-l",
                          "app.kubernetes.io/component=router")["items"]  # fmt: skip
        assert len(router) == 1 and router[0]["spec"]["replicas"] == 2
        scaled = get_json(control_plane, "scaledobject", "-n", NAMESPACE)["items"]
        assert len(scaled) == 1 and scaled[0]["spec"]["cooldownPeriod"] == 300
        assert "gpuWait" not in _router_yaml(control_plane)
        checksum = router[0]["spec"]["template"]["metadata"]["annotations"][CHECKSUM]

        # router.gpuWait (session 34) reaches the router's ConfigMap, and rolls its pods.
        helm(control_plane, "upgrade", RELEASE, str(chart), "-n", NAMESPACE, "-f", values,
             "--set", "router.replicas=3", "--set", "gpu.idleTimeoutSeconds=600",
             "--set", "router.gpuWait.defaultSeconds=30")  # fmt: skip
        router = get_json(control_plane, "deployment", "-n", NAMESPACE, "-l",
                          "app.kubernetes.io/component=router")["items"]  # fmt: skip
        assert router[0]["spec"]["replicas"] == 3
        assert _router_yaml(control_plane)["gpuWait"] == {"defaultSeconds": 30}
        assert router[0]["spec"]["template"]["metadata"]["annotations"][CHECKSUM] != checksum
        scaled = get_json(control_plane, "scaledobject", "-n", NAMESPACE)["items"]
        assert scaled[0]["spec"]["cooldownPeriod"] == 600
        assert "STATUS: deployed" in helm(control_plane, "status", RELEASE, "-n", NAMESPACE)
        history = json.loads(helm(control_plane, "history", RELEASE, "-n", NAMESPACE, "-o", "json"))
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"),
            (2, "deployed"),
        ]

        helm(
            control_plane,
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--wait",
            "--cascade",
            "foreground",
        )

        def leftovers() -> set[str] | None:
            left = everything(control_plane) - before
            return None if left else {"none"}

        try:
            wait_for("the release's objects to be gone", leftovers, timeout_s=90)
        except AssertionError:
            raise AssertionError(
                f"left behind: {sorted(everything(control_plane) - before)}"
            ) from None
    finally:
        subprocess.run([require_tool("helm"), f"--kubeconfig={control_plane.kubeconfig}",
                        "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found"],
                       capture_output=True)  # fmt: skip
        delete_namespace(control_plane, NAMESPACE)


def _runs_device_plugin(obj: dict[str, Any]) -> bool:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return any("k8s-device-plugin" in c["image"] for c in spec["containers"])


def device_plugin_pods_on(plane: ControlPlane, node: str) -> list[str]:
    """Every pod on the node that runs an NVIDIA device plugin image, in any namespace."""
    pods = get_json(plane, "pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp") and _runs_device_plugin(p)
    )


@pytest.mark.parametrize("cloud", [CloudName.AWS, CloudName.AZURE])
def test_the_readme_flow_runs_one_device_plugin_per_gpu_node(
    cloud: CloudName, control_plane: ControlPlane, repo: Path
) -> None:
    """Issue 28: `llmctl gpu enable` applies kube-system/nvidia-device-plugin and the `nvidia`
    RuntimeClass (through kube.apply, as the command does), then `helm install -f
    values-<cloud>-gpu.yaml`: one NVIDIA device plugin pod on the GPU node, and the chart's GPU
    pods name the `nvidia` RuntimeClass that `test-inference --gpu-check` uses. The clouds whose
    nodes need llmctl's plugin (GKE runs its own)."""
    reset_llmctl_objects(control_plane)
    node = f"gpu-{cloud.value}-1"
    only_these_gpu_nodes(control_plane, [gpu_node(cloud, node)])
    chart = repo / "charts" / "llm-router"
    api = kube.api_client(str(control_plane.kubeconfig))
    kube.apply(api, cluster_setup_objects(Stack(), cloud))
    wait_for("gpu enable's device plugin pod", lambda: device_plugin_pods_on(control_plane, node))
    control_plane.kubectl("create", "namespace", NAMESPACE)
    try:
        helm(control_plane, "install", RELEASE, str(chart), "-n", NAMESPACE,
             "-f", str(chart / f"values-{cloud.value}-gpu.yaml"), "--wait=false")  # fmt: skip
        daemonsets = get_json(control_plane, "daemonsets", "-n", "kube-system")["items"]
        plugins = [d["metadata"]["name"] for d in daemonsets if _runs_device_plugin(d)]
        assert plugins == ["nvidia-device-plugin"], plugins

        # The release's DCGM exporter has its pod on the node: the DaemonSets have been seen.
        def release_agents() -> list[Any]:
            items: list[Any] = get_json(
                control_plane, "pods", "-n", "kube-system",
                "--field-selector", f"spec.nodeName={node}",
                "-l", f"app.kubernetes.io/instance={RELEASE}",
            )["items"]  # fmt: skip
            return items

        wait_for("the release's DCGM exporter pod on the GPU node", release_agents)
        assert len(device_plugin_pods_on(control_plane, node)) == 1
        gpu = get_json(control_plane, "deployment", "-n", NAMESPACE, f"{RELEASE}-gpu-llm-server")
        runtime = gpu["spec"]["template"]["spec"].get("runtimeClassName")
        assert runtime == ("nvidia" if cloud is CloudName.AWS else None)
        classes = control_plane.kubectl("get", "runtimeclass", "-o", "name").split()
        assert f"runtimeclass.node.k8s.io/{RELEASE}-nvidia" not in classes, classes
    finally:
        subprocess.run([require_tool("helm"), f"--kubeconfig={control_plane.kubeconfig}",
                        "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found"],
                       capture_output=True)  # fmt: skip
        delete_namespace(control_plane, NAMESPACE)
        reset_llmctl_objects(control_plane)


def test_the_readme_local_recipe_runs_one_agent_of_each_kind(
    control_plane: ControlPlane, repo: Path
) -> None:
    """Issue 27 (newcomer review, finding 7): the README's local-cluster recipe applies the AWS
    GPU overlay, then installs the chart beside it with the recipe's flags: one NVIDIA device
    plugin pod and one DCGM exporter pod on the GPU node, one RuntimeClass."""
    reset_llmctl_objects(control_plane)
    node = "gpu-aws-1"
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.AWS, node)])
    control_plane.kubectl(
        "apply", "--server-side", "-k", str(repo / "clusters" / "aws" / "overlays" / "gpu")
    )
    chart = repo / "charts" / "llm-router"
    control_plane.kubectl("create", "namespace", NAMESPACE)
    try:
        helm(control_plane, "install", RELEASE, str(chart), "-n", NAMESPACE,
             "-f", str(chart / "values-aws-gpu.yaml"),
             "--set", "observability.dcgmExporter.enabled=false", "--wait=false")  # fmt: skip

        def agents() -> dict[str, int] | None:
            pods = get_json(control_plane, "pods", "-n", "kube-system", "--field-selector",
                            f"spec.nodeName={node}")["items"]  # fmt: skip
            images = [c["image"] for p in pods for c in p["spec"]["containers"]]
            counts = {
                "device-plugin": sum("k8s-device-plugin" in i for i in images),
                "dcgm-exporter": sum("dcgm-exporter" in i for i in images),
            }
            return counts if all(counts.values()) else None

        assert wait_for("the node agents on the GPU node", agents) == {
            "device-plugin": 1,
            "dcgm-exporter": 1,
        }
        classes = control_plane.kubectl("get", "runtimeclass", "-o", "name").split()
        assert classes == ["runtimeclass.node.k8s.io/nvidia"], classes
    finally:
        subprocess.run([require_tool("helm"), f"--kubeconfig={control_plane.kubeconfig}",
                        "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found"],
                       capture_output=True)  # fmt: skip
        delete_namespace(control_plane, NAMESPACE)
        reset_llmctl_objects(control_plane)
