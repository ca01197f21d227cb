"""The AKS adapter with the real azure-mgmt-containerservice client against a local ARM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from llmctl.clouds.azure import AzureCloud
from llmctl.clouds.base import PoolDiffersError, PoolOptions, PoolSpec
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.support.fake_aks import TOKEN, FakeAks, arm_error
from tests.support.http_fake import FakeServer, serve

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class StaticToken:
    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture
def aks() -> FakeAks:
    return FakeAks()


@pytest.fixture
def server(aks: FakeAks) -> Iterator[FakeServer]:
    with serve(aks.route) as srv:
        yield srv


def cloud_and_spec(server: FakeServer, **options: Any) -> tuple[AzureCloud, PoolSpec]:
    cloud = AzureCloud(endpoint=server.url, credential=StaticToken(), poll_delay=0)
    options.setdefault("subscription", SUBSCRIPTION)
    return cloud, cloud.node_pool_spec(Stack(), PoolOptions(**options))


def test_create_puts_the_agent_pool_and_follows_the_poller(
    server: FakeServer, aks: FakeAks
) -> None:
    cloud, spec = cloud_and_spec(server)
    seen: list[str] = []
    assert cloud.ensure_gpu_pool(spec, seen.append).action == "created"
    assert seen[-1] == "Succeeded"
    put = next(r for r in server.requests if r.method == "PUT")
    assert put.path == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/llm-rg/providers/"
        "Microsoft.ContainerService/managedClusters/llm-azure/agentPools/gput4"
    )
    assert put.query["api-version"] == "2026-08-01"
    assert put.body == {
        "properties": {
            "vmSize": "Standard_NC4as_T4_v3",
            "mode": "User",
            "osType": "Linux",
            "count": 0,
            "enableAutoScaling": True,
            "minCount": 0,
            "maxCount": 2,
            "nodeLabels": {"compute": "gpu-enabled", "llmctl.dev/accelerator": "nvidia-tesla-t4"},
            "nodeTaints": ["nvidia.com/gpu=present:NoSchedule"],
            "scaleSetPriority": "Spot",
            "scaleSetEvictionPolicy": "Delete",
            "spotMaxPrice": -1,
        }
    }
    polls = [r for r in server.requests if r.method == "GET" and r.path == put.path]
    assert len(polls) >= 2  # the first read (absent), the poller's read(s)
    state = cloud.read_pool(spec)
    assert state is not None
    assert (
        state.instance_type,
        state.capacity,
        state.min_nodes,
        state.current_nodes,
        state.max_nodes,
        state.status,
    ) == ("Standard_NC4as_T4_v3", "spot", 0, 0, 2, "Succeeded")


def test_on_demand_is_regular_priority(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server, on_demand=True)
    cloud.ensure_gpu_pool(spec)
    props = aks.pools["gput4"]["properties"]
    assert props["scaleSetPriority"] == "Regular" and "spotMaxPrice" not in props


def test_second_run_changes_nothing(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    before = len(server.requests)
    assert cloud.ensure_gpu_pool(spec).action == "unchanged"
    assert all(r.method == "GET" for r in server.requests[before:])


def test_scaling_update_and_refused_change(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    _, bigger = cloud_and_spec(server, max_nodes=3)
    assert cloud.ensure_gpu_pool(bigger).action == "updated"
    assert aks.pools["gput4"]["properties"]["maxCount"] == 3
    _, other = cloud_and_spec(server, max_nodes=3, instance_type="Standard_NC8as_T4_v3")
    with pytest.raises(PoolDiffersError, match="instance type: wants Standard_NC8as_T4_v3"):
        cloud.ensure_gpu_pool(other)


def test_scale_to_zero_then_delete(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    cloud.disable(spec, scale_to_zero=True)
    props = aks.pools["gput4"]["properties"]
    assert (props["enableAutoScaling"], props["count"]) == (False, 0)
    assert "maxCount" not in props
    seen: list[str] = []
    assert cloud.disable(spec, scale_to_zero=False, progress=seen.append)
    assert "gput4" not in aks.pools
    assert seen[-1] == "Succeeded"
    assert any("/operations/" in r.path for r in server.requests)


def test_cluster_not_found(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server, cluster="missing")
    with pytest.raises(LlmctlError, match="AKS cluster 'missing' not found in resource group"):
        cloud.ensure_gpu_pool(spec)


def test_resource_group_not_found(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server, resource_group="nope")
    with pytest.raises(LlmctlError, match="resource group 'nope' not found"):
        cloud.read_pool(spec)


def test_permission_denied_names_the_action(server: FakeServer, aks: FakeAks) -> None:
    aks.forbidden_action = "Microsoft.ContainerService/managedClusters/agentPools/write"
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(
        LlmctlError,
        match="Azure requires Microsoft.ContainerService/managedClusters/agentPools/write",
    ):
        cloud.ensure_gpu_pool(spec)


def test_quota_exceeded(server: FakeServer, aks: FakeAks) -> None:
    aks.put_error = arm_error(
        400,
        "ErrCode_InsufficientVCPUQuota",
        "Insufficient regional vcpu quota left for location eastus. left "
        "regional vcpu quota 0, requested quota 4.",
    )
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="Azure quota exceeded") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--on-demand" in (info.value.hint or "")


def test_no_spot_capacity(server: FakeServer, aks: FakeAks) -> None:
    aks.put_error = arm_error(
        400,
        "SkuNotAvailable",
        "The requested VM size Standard_NC4as_T4_v3 is currently not "
        "available in location 'eastus'. Please try another size or "
        "deploy to a different location.",
    )
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="no capacity for Standard_NC4as_T4_v3") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--instance-type" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_no_credentials_says_how_to_log_in(server: FakeServer) -> None:
    cloud = AzureCloud(endpoint="https://127.0.0.1:9", poll_delay=0)
    spec = cloud.node_pool_spec(Stack(), PoolOptions(subscription=SUBSCRIPTION))
    with pytest.raises(LlmctlError, match="no usable Azure credentials") as info:
        cloud.read_pool(spec)
    assert "az login" in (info.value.hint or "") and "AZURE_CLIENT_ID" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_subscription_is_required() -> None:
    with pytest.raises(ConfigError, match="no Azure subscription") as info:
        AzureCloud().node_pool_spec(Stack(), PoolOptions())
    assert "AZURE_SUBSCRIPTION_ID" in (info.value.hint or "")
