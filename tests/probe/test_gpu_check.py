"""`--gpu-check`'s pod and its lifecycle, through the real Kubernetes client against the local
Kubernetes API stand-in: created with the GPU scheduling of each cloud, waited on, its log read,
and deleted on success, on failure, on a timeout and on Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl import catalog, kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import LlmctlError
from llmctl.manifests.render import gpu_node_selector, gpu_tolerations
from llmctl.probe.gpu_check import CHECK_IMAGE, check_pod, run_check
from tests.support.fake_kube import FakeKube, kubeconfig, pod_status
from tests.support.http_fake import FakeServer, serve
from tests.support.kube_schema import validate_strict

SMI_LOG = (
    "+-----------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |\n"
    "|   0  Tesla T4            On   | 00000000:00:1E.0 Off |                    0 |\n"
)
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(pod_log=SMI_LOG)


@pytest.fixture
def server(fake: FakeKube) -> Iterator[FakeServer]:
    with serve(fake.route) as srv:
        yield srv


@pytest.fixture
def api(server: FakeServer, tmp_path: Path) -> Any:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(server.url))
    return kube.api_client(str(path))


@pytest.mark.parametrize("cloud", list(CloudName))
def test_check_pod_lands_on_this_clouds_gpu_nodes(cloud: CloudName) -> None:
    stack = Stack()
    pod = check_pod(stack, cloud, name="llmctl-gpu-check-test")
    validate_strict(pod)
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == "llm-server"
    assert spec["nodeSelector"] == gpu_node_selector(stack, cloud)
    assert spec["nodeSelector"]["compute"] == "gpu-enabled"
    assert spec["nodeSelector"]["llmctl.dev/accelerator"] == stack.gpu.gpu_of(cloud).label
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


def test_success_prints_the_log_and_deletes_the_pod(
    api: Any, fake: FakeKube, server: FakeServer
) -> None:
    pod = check_pod(Stack(), CloudName.GCP)
    seen: list[str] = []
    result = run_check(api, pod, poll_s=0.01, on_status=seen.append)
    assert result.ok and result.phase == "Succeeded"
    assert result.log == SMI_LOG
    assert result.node == "gpu-node-1"
    assert result.deleted and fake.deleted == [pod["metadata"]["name"]]
    assert fake.pods == []
    # What reached the API server is the pod as built, in the namespace's pods collection.
    create = next(r for r in server.requests if r.method == "POST")
    assert create.path == "/api/v1/namespaces/llm-server/pods"
    assert create.body == pod
    delete = next(r for r in server.requests if r.method == "DELETE")
    assert delete.query == {"gracePeriodSeconds": "0"}
    assert seen[0].startswith("Pending: Unschedulable")
    assert seen[-1].startswith("Succeeded: exit code 0")


def test_failed_pod_is_reported_and_deleted(api: Any, fake: FakeKube) -> None:
    fake.pod_log = NO_DRIVER
    fake.pod_script = [
        pod_status("Running", "gpu-node-1"),
        pod_status("Failed", "gpu-node-1", terminated={"exitCode": 9}),
    ]
    result = run_check(api, check_pod(Stack(), CloudName.AWS), poll_s=0.01)
    assert not result.ok and result.phase == "Failed"
    assert "couldn't communicate with the NVIDIA driver" in result.log
    assert result.deleted and len(fake.deleted) == 1 and fake.pods == []


def test_image_pull_backoff_stops_waiting_and_deletes(api: Any, fake: FakeKube) -> None:
    fake.pod_script = [
        pod_status(
            "Pending",
            "gpu-node-1",
            waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image"},
        )
    ]
    result = run_check(api, check_pod(Stack(), CloudName.AZURE), poll_s=0.01)
    assert result.phase == "Failed (ImagePullBackOff)"
    assert result.log.startswith("(no log:") and "waiting to start" in result.log
    assert result.deleted and fake.pods == []


def test_timeout_raises_and_still_deletes(api: Any, fake: FakeKube) -> None:
    fake.pod_script = [pod_status("Pending")]
    pod = check_pod(Stack(), CloudName.AWS)
    with pytest.raises(LlmctlError, match="did not finish within 0.2 s") as info:
        run_check(api, pod, timeout_s=0.2, poll_s=0.02)
    assert "Unschedulable" in info.value.message
    assert fake.deleted == [pod["metadata"]["name"]] and fake.pods == []


def test_ctrl_c_while_waiting_still_deletes(api: Any, fake: FakeKube) -> None:
    fake.pod_script = [pod_status("Pending")]
    pod = check_pod(Stack(), CloudName.GCP)

    def interrupt(_line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_check(api, pod, poll_s=0.01, on_status=interrupt)
    assert fake.deleted == [pod["metadata"]["name"]] and fake.pods == []


def test_forbidden_create_names_the_rights_and_leaves_nothing(api: Any, fake: FakeKube) -> None:
    fake.forbid_pods = True
    with pytest.raises(LlmctlError) as info:
        run_check(api, check_pod(Stack(), CloudName.AWS), poll_s=0.01)
    assert "HTTP 403" in info.value.message
    assert info.value.hint is not None and "create, get, delete pods" in info.value.hint
    assert fake.created == [] and fake.deleted == []
