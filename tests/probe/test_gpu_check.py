"""`--gpu-check`'s pod and its lifecycle against the real API server of the `control_plane`
fixture: Pod Security admits it, the scheduler places it on a GPU node shaped as `gpu enable`
makes them, kwok (the node's kubelet) runs it, its log is read through the API server from the
kubelet, and it is deleted on success, on failure, on a timeout and on Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmctl import catalog, kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import LlmctlError
from llmctl.manifests import cluster_setup_objects
from llmctl.manifests.render import gpu_node_selector, gpu_tolerations
from llmctl.probe.gpu_check import CHECK_IMAGE, check_pod, run_check
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    apply_objects,
    cpu_node,
    ensure_namespace,
    ensure_nodes_ready,
    gpu_node,
    only_these_gpu_nodes,
)
from tests.support.gpu_check_pod import SMI_LOG, check_pods, serve_smi_log
from tests.support.kube_schema import validate_strict

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def gpu_check_cluster(
    plane: ControlPlane, tmp_path: Path, log: str | None, nodes: list[dict[str, Any]]
) -> None:
    """The restricted namespace, these nodes, and kwok serving `log` as nvidia-smi's output
    (None: no log at all, as for a container that never started)."""
    ensure_namespace(plane)
    # What `llmctl gpu enable` applies (the `nvidia` RuntimeClass the pod names on AWS).
    for cloud in CloudName:
        apply_objects(plane, cluster_setup_objects(Stack(), cloud))
    ensure_nodes_ready(plane, nodes)
    if log is None:
        plane.kubectl("delete", "clusterlogs", "nvidia-smi", "--ignore-not-found")
        return
    serve_smi_log(plane, tmp_path, log)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_check_pod_lands_on_this_clouds_gpu_nodes(cloud: CloudName) -> None:
    stack = Stack()
    pod = check_pod(stack, cloud, name="llmctl-gpu-check-test")
    validate_strict(pod)
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == "llm-server"
    assert spec["nodeSelector"] == gpu_node_selector(stack, cloud)
    assert spec["nodeSelector"]["compute"] == "gpu-enabled"
    assert spec["nodeSelector"][catalog.GPU_NODE_ACCELERATOR_LABEL] == stack.gpu.gpu_of(cloud).label
    assert spec["tolerations"] == gpu_tolerations(cloud)
    keys = {t["key"] for t in spec["tolerations"]}
    assert catalog.GPU_TAINT.key in keys
    spot = catalog.CLOUD_FACTS[cloud].spot_taint
    assert (spot.key in keys) if spot else len(keys) == 1
    container = spec["containers"][0]
    assert container["image"] == CHECK_IMAGE
    assert ":latest" not in CHECK_IMAGE and CHECK_IMAGE.count(":") == 1
    assert container["command"] == ["nvidia-smi"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert spec["restartPolicy"] == "Never"
    assert ("runtimeClassName" in spec) == catalog.CLOUD_FACTS[cloud].nvidia_runtime_handler


def test_names_differ_between_runs() -> None:
    names = {check_pod(Stack(), CloudName.AWS)["metadata"]["name"] for _ in range(5)}
    assert len(names) == 5


@pytest.mark.parametrize("cloud", list(CloudName))
def test_success_on_each_clouds_gpu_node_prints_the_log_and_deletes_the_pod(
    cloud: CloudName, control_plane: ControlPlane, tmp_path: Path
) -> None:
    gpu_check_cluster(control_plane, tmp_path, SMI_LOG, [cpu_node("cpu-1")])
    only_these_gpu_nodes(control_plane, [gpu_node(cloud, f"gpu-{cloud.value}-1")])
    api = kube.api_client(str(control_plane.kubeconfig))
    pod = check_pod(Stack(), cloud)
    seen: list[str] = []
    result = run_check(api, pod, timeout_s=120, poll_s=0.2, on_status=seen.append)
    assert result.ok and result.phase == "Succeeded", seen
    assert result.log == SMI_LOG  # nvidia-smi's output, read through the API server from kwok
    assert result.node == f"gpu-{cloud.value}-1"  # the scheduler placed it on the GPU node
    assert result.deleted
    assert seen[-1].startswith("Succeeded: exit code 0")
    assert check_pods(control_plane) == []


def test_failed_pod_is_reported_and_deleted(control_plane: ControlPlane, tmp_path: Path) -> None:
    gpu_check_cluster(control_plane, tmp_path, NO_DRIVER, [])
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.AWS, "gpu-no-driver")])
    api = kube.api_client(str(control_plane.kubeconfig))
    result = run_check(api, check_pod(Stack(), CloudName.AWS), timeout_s=120, poll_s=0.2)
    assert not result.ok and result.phase == "Failed"
    assert "couldn't communicate with the NVIDIA driver" in result.log
    assert result.node == "gpu-no-driver"
    assert result.deleted and check_pods(control_plane) == []


def test_image_pull_backoff_stops_waiting_and_deletes(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    gpu_check_cluster(control_plane, tmp_path, None, [])
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.AZURE, "gpu-azure-1")])
    api = kube.api_client(str(control_plane.kubeconfig))
    pod = check_pod(Stack(), CloudName.AZURE)
    pod["metadata"]["labels"]["llmctl.test/outcome"] = "image-pull-backoff"  # kwok's stage
    result = run_check(api, pod, timeout_s=120, poll_s=0.2)
    assert result.phase == "Failed (ImagePullBackOff)"
    assert result.log.startswith("(no log:")
    assert result.deleted and check_pods(control_plane) == []


def test_timeout_raises_and_still_deletes(control_plane: ControlPlane, tmp_path: Path) -> None:
    gpu_check_cluster(control_plane, tmp_path, SMI_LOG, [cpu_node("cpu-1")])
    only_these_gpu_nodes(control_plane, [])  # no GPU node: the scheduler can't place it
    api = kube.api_client(str(control_plane.kubeconfig))
    pod = check_pod(Stack(), CloudName.AWS)
    with pytest.raises(LlmctlError, match="did not finish within 3 s") as info:
        run_check(api, pod, timeout_s=3, poll_s=0.2)
    # The real scheduler's reason.
    assert "Unschedulable" in info.value.message and "nodes are available" in info.value.message
    assert check_pods(control_plane) == []


def test_ctrl_c_while_waiting_still_deletes(control_plane: ControlPlane, tmp_path: Path) -> None:
    gpu_check_cluster(control_plane, tmp_path, SMI_LOG, [])
    only_these_gpu_nodes(control_plane, [])
    api = kube.api_client(str(control_plane.kubeconfig))
    pod = check_pod(Stack(), CloudName.GCP)

    def interrupt(_line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_check(api, pod, poll_s=0.2, on_status=interrupt)
    assert check_pods(control_plane) == []


def test_forbidden_create_names_the_rights_and_leaves_nothing(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    gpu_check_cluster(control_plane, tmp_path, SMI_LOG, [])
    limited = kube.api_client(str(control_plane.user_kubeconfig("limited")))
    with pytest.raises(LlmctlError) as info:
        run_check(limited, check_pod(Stack(), CloudName.AWS), poll_s=0.2)
    assert "HTTP 403" in info.value.message and 'User "limited"' in info.value.message
    assert info.value.hint is not None and "create, get, delete pods" in info.value.hint
    assert check_pods(control_plane) == []


def test_the_runtime_class_is_nvidia_or_one_with_its_handler() -> None:
    from llmctl.probe.gpu_check import nvidia_runtime_class

    assert nvidia_runtime_class({"nvidia": "nvidia", "llm-nvidia": "nvidia"}) == "nvidia"
    assert nvidia_runtime_class({"gvisor": "runsc", "llm-nvidia": "nvidia"}) == "llm-nvidia"
    assert nvidia_runtime_class({"gvisor": "runsc"}) == "nvidia"  # refused by name, as before
