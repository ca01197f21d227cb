"""The GKE adapter with the real google-cloud-container client (REST) against a local GKE."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from llmctl.clouds.base import PoolDiffersError, PoolOptions, PoolSpec
from llmctl.clouds.gcp import GcpCloud
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.support.fake_gke import FakeGke, google_error
from tests.support.http_fake import FakeServer, serve


@pytest.fixture
def gke() -> FakeGke:
    return FakeGke()


@pytest.fixture
def server(gke: FakeGke) -> Iterator[FakeServer]:
    with serve(gke.route) as srv:
        yield srv


def cloud_and_spec(server: FakeServer, **options: Any) -> tuple[GcpCloud, PoolSpec]:
    cloud = GcpCloud(endpoint=server.url, credentials=AnonymousCredentials(), poll_delay=0)
    options.setdefault("project", "proj")
    return cloud, cloud.node_pool_spec(Stack(), PoolOptions(**options))


def test_create_sends_the_node_pool_and_polls_the_operation(
    server: FakeServer, gke: FakeGke
) -> None:
    cloud, spec = cloud_and_spec(server)
    seen: list[str] = []
    result = cloud.ensure_gpu_pool(spec, seen.append)
    assert result.action == "created"
    assert seen == ["RUNNING", "RUNNING", "DONE"]  # the create answer, one poll RUNNING, then DONE
    create = next(r for r in server.requests if r.method == "POST")
    assert create.path == "/v1/projects/proj/locations/us-central1/clusters/llm-gcp/nodePools"
    pool = create.body["nodePool"]
    config = pool["config"]
    assert config["machineType"] == "n1-standard-4"
    assert config["accelerators"] == [
        {
            "acceleratorCount": "1",
            "acceleratorType": "nvidia-tesla-t4",
            "gpuDriverInstallationConfig": {"gpuDriverVersion": 2},
        }
    ]  # DEFAULT is enum 2
    assert config["spot"] is True and "preemptible" not in config
    assert config["labels"] == {"compute": "gpu-enabled", "llmctl.dev/accelerator": "nvidia-tesla-t4"}
    assert config["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": 1}]
    # proto3 leaves out zeros: no initialNodeCount, no totalMinNodeCount.
    assert pool["autoscaling"] == {"enabled": True, "totalMaxNodeCount": 2, "locationPolicy": 2}
    assert "initialNodeCount" not in pool
    polls = [r.path for r in server.requests if "/operations/" in r.path]
    assert polls == ["/v1/projects/proj/locations/us-central1/operations/operation-1"] * 2
    state = cloud.read_pool(spec)
    assert state is not None
    assert (
        state.instance_type,
        state.capacity,
        state.min_nodes,
        state.max_nodes,
        state.status,
    ) == ("n1-standard-4", "spot", 0, 2, "RUNNING")


def test_preemptible(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server, preemptible=True)
    cloud.ensure_gpu_pool(spec)
    config = gke.pools["gpu-t4"]["config"]
    assert config["preemptible"] is True and "spot" not in config


def test_second_run_changes_nothing(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    before = len(server.requests)
    assert cloud.ensure_gpu_pool(spec).action == "unchanged"
    assert all(r.method == "GET" for r in server.requests[before:])


def test_scaling_is_updated_and_other_changes_refused(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    _, bigger = cloud_and_spec(server, max_nodes=3)
    assert cloud.ensure_gpu_pool(bigger).action == "updated"
    assert gke.pools["gpu-t4"]["autoscaling"]["totalMaxNodeCount"] == 3
    _, other = cloud_and_spec(server, max_nodes=3, instance_type="n1-standard-8", on_demand=True)
    with pytest.raises(PoolDiffersError) as info:
        cloud.ensure_gpu_pool(other)
    assert {d.field for d in info.value.differences} == {"instance type", "capacity type"}


def test_disable_and_scale_to_zero(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    cloud.disable(spec, scale_to_zero=True)
    pool = gke.pools["gpu-t4"]
    assert pool["autoscaling"] == {}  # enabled=false is a proto3 zero: an empty message
    assert pool["initialNodeCount"] == 0
    set_size = next(r for r in server.requests if r.path.endswith(":setSize"))
    assert "nodeCount" not in set_size.body  # 0 is left out on the wire
    assert cloud.disable(spec, scale_to_zero=False) is True
    assert "gpu-t4" not in gke.pools
    assert cloud.read_pool(spec) is None


def test_cluster_not_found(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server, cluster="missing")
    with pytest.raises(LlmctlError, match="GKE cluster 'missing' not found in project proj"):
        cloud.ensure_gpu_pool(spec)


def test_permission_denied_names_the_permission(server: FakeServer, gke: FakeGke) -> None:
    gke.forbidden = "container.clusters.update"
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="GKE requires container.clusters.update") as info:
        cloud.ensure_gpu_pool(spec)
    assert "roles/container.admin" in (info.value.hint or "")


def test_quota_error_from_the_operation(server: FakeServer, gke: FakeGke) -> None:
    gke.create_error = {
        "code": 8,
        "message": (
            'Insufficient regional quota to satisfy request: resource "NVIDIA_T4_GPUS": request '
            "requires '1.0' and is short '1.0'. project has a quota of '0.0' with '0.0' available."
        ),
    }
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="GPU quota exceeded.*NVIDIA_T4_GPUS") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--on-demand" in (info.value.hint or "")


def test_stockout_from_the_api(server: FakeServer, gke: FakeGke) -> None:
    gke.create_http_error = google_error(
        503,
        "UNAVAILABLE",
        "The zone 'projects/proj/zones/us-central1-a' does not have enough resources available "
        "to fulfill the request. Try a different zone, or try again later.",
    )
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="no capacity for n1-standard-4") as info:
        cloud.ensure_gpu_pool(spec)
    assert "another region or zone" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_no_credentials_says_how_to_log_in() -> None:
    cloud = GcpCloud(endpoint="http://127.0.0.1:9")
    spec = cloud.node_pool_spec(Stack(), PoolOptions(project="proj"))
    with pytest.raises(LlmctlError, match="no Google Cloud credentials") as info:
        cloud.read_pool(spec)
    assert "gcloud auth application-default login" in (info.value.hint or "")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_project_is_required() -> None:
    with pytest.raises(ConfigError, match="no GCP project"):
        GcpCloud().node_pool_spec(Stack(), PoolOptions())
