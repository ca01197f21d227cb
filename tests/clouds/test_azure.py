"""The AKS adapter with the real azure-mgmt-containerservice client against a local ARM."""

from __future__ import annotations

from typing import Any

import pytest

from llmctl.clouds.azure import AzureCloud
from llmctl.clouds.base import PoolOptions, PoolSpec
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.clouds.harness import (
    SUBSCRIPTION,
    StaticToken,
    azure_cloud,
    cloud_and_spec_on,
    serving,
)
from tests.support.fake_aks import SPOT_LABEL, SPOT_TAINT, TOKEN, FakeAks, rest_property_names
from tests.support.http_fake import FakeServer, Response


@pytest.fixture
def aks() -> FakeAks:
    return FakeAks()


server = serving("aks")
cloud_and_spec = cloud_and_spec_on(azure_cloud, subscription=SUBSCRIPTION)


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
            "tags": {"llmctl-managed-by": "llmctl"},  # llmctl's mark
            # The local disk (issue 30): the OS disk, and the kubelet's storage, on the temp disk.
            "osDiskType": "Ephemeral",
            "osDiskSizeGB": 128,
            "scaleSetPriority": "Spot",
            "scaleSetEvictionPolicy": "Delete",
            "spotMaxPrice": -1,
        }
    }
    assert any("/operations/" in r.path for r in server.requests)  # Azure-AsyncOperation


def test_on_demand_is_regular_priority(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server, on_demand=True)
    cloud.ensure_gpu_pool(spec)
    props = aks.pools["gput4"]["properties"]
    assert props["scaleSetPriority"] == "Regular" and "spotMaxPrice" not in props


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


def test_resource_group_not_found(server: FakeServer) -> None:
    cloud, spec = cloud_and_spec(server, resource_group="nope")
    with pytest.raises(LlmctlError, match="resource group 'nope' not found"):
        cloud.read_pool(spec)


@pytest.mark.usefixtures("clean_cloud_env")
def test_no_credentials_is_one_message_without_identity_noise(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Review item 12: azure-identity's multi-line WARNING is not printed before the error."""
    cloud = AzureCloud(endpoint="https://127.0.0.1:9", poll_delay=0)
    spec = cloud.node_pool_spec(Stack(), PoolOptions(subscription=SUBSCRIPTION))
    with pytest.raises(LlmctlError, match="no usable Azure credentials"):
        cloud.read_pool(spec)
    # Outside pytest these records reach stderr through logging's last-resort handler.
    assert not [r for r in caplog.records if r.name.startswith("azure.identity")]


def test_unreachable_token_endpoint_is_not_called_missing_credentials() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    from llmctl.clouds.azure import _azure_errors

    _, spec = cloud_and_spec(FakeServer("http://127.0.0.1:9", []))
    message = (
        "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "Attempted credentials:\n\tEnvironmentCredential: Authentication failed: "
        "HTTPSConnection(host='login.microsoftonline.com', port=443): Failed to resolve "
        "'login.microsoftonline.com' ([Errno -2] Name or service not known)"
    )
    with pytest.raises(LlmctlError, match="cannot reach the Azure token endpoint") as info:
        with _azure_errors(spec, "read"):
            raise ClientAuthenticationError(message=message)
    assert "HTTPS_PROXY" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_subscription_is_required() -> None:
    with pytest.raises(ConfigError, match="no Azure subscription") as info:
        AzureCloud().node_pool_spec(Stack(), PoolOptions())
    assert "AZURE_SUBSCRIPTION_ID" in (info.value.hint or "")


def _puts(server: FakeServer) -> list[Any]:
    return [r for r in server.requests if r.method == "PUT"]


def _live_pool(server: FakeServer, aks: FakeAks) -> tuple[AzureCloud, PoolSpec]:
    """A Spot pool as it looks after a while: AKS's own label and taint, the autoscaler at 2 nodes,
    a tag and an OS disk size someone gave it. (Not a max surge: AKS refuses one on a Spot pool
    and shows it null, review N4.)"""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    props = aks.pools["gput4"]["properties"]
    props["tags"] = {**props["tags"], "team": "ml"}
    props["osDiskSizeGB"] = 256
    aks.autoscale("gput4", 2)
    return cloud, spec


MARKED = {"llmctl-managed-by": "llmctl", "team": "ml"}


def test_update_keeps_everything_the_pool_has(server: FakeServer, aks: FakeAks) -> None:
    """Review item 1: GET, change only the counts, PUT with If-Match, like azurerm and CAPZ."""
    _live_pool(server, aks)
    etag = aks.pools["gput4"]["properties"]["eTag"]
    cloud, bigger = cloud_and_spec(server, max_nodes=3)
    assert cloud.ensure_gpu_pool(bigger).action == "updated"
    put = _puts(server)[-1]
    assert put.headers["if-match"] == f'"{etag}"'
    sent = put.body["properties"]
    assert (sent["count"], sent["minCount"], sent["maxCount"]) == (2, 0, 3)
    assert sent["nodeLabels"][SPOT_LABEL[0]] == SPOT_LABEL[1]
    assert SPOT_TAINT in sent["nodeTaints"]
    assert sent["tags"] == MARKED
    assert sent["osDiskSizeGB"] == 256
    assert (sent.get("upgradeSettings") or {}).get("maxSurge") is None
    assert sent["orchestratorVersion"] == "1.33.2" and sent["maxPods"] == 250
    assert "provisioningState" not in sent and "eTag" not in sent  # read-only: not sent back
    kept = aks.pools["gput4"]["properties"]
    assert (kept["count"], kept["maxCount"], kept["tags"]) == (2, 3, MARKED)
    assert kept["nodeLabels"][SPOT_LABEL[0]] == "spot"


def test_scale_to_zero_keeps_everything_else(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = _live_pool(server, aks)
    cloud.disable(spec, scale_to_zero=True)
    sent = _puts(server)[-1].body["properties"]
    assert (sent["enableAutoScaling"], sent["count"]) == (False, 0)
    assert "minCount" not in sent and "maxCount" not in sent
    assert sent["tags"] == MARKED and sent["nodeLabels"][SPOT_LABEL[0]] == "spot"
    again = cloud.ensure_gpu_pool(spec)
    assert again.action == "updated"
    props = aks.pools["gput4"]["properties"]
    assert (props["enableAutoScaling"], props["count"], props["maxCount"]) == (True, 0, 2)


def test_missing_label_and_taint_are_added_in_place(server: FakeServer, aks: FakeAks) -> None:
    """Review item 7: labels and taints are updatable (Azure/AKS#1515), not a recreate."""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    props = aks.pools["gput4"]["properties"]
    props["nodeLabels"].pop("llmctl.dev/accelerator")
    props["nodeTaints"].remove("nvidia.com/gpu=present:NoSchedule")
    result = cloud.ensure_gpu_pool(spec)
    assert result.action == "updated"
    assert {d.field for d in result.differences} == {"labels", "taints"}
    props = aks.pools["gput4"]["properties"]
    assert props["nodeLabels"]["llmctl.dev/accelerator"] == "nvidia-tesla-t4"
    assert "nvidia.com/gpu=present:NoSchedule" in props["nodeTaints"]
    assert SPOT_TAINT in props["nodeTaints"]


def test_concurrent_change_is_refused_by_etag(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    original = cloud._get

    def stale(s: PoolSpec) -> Any:
        current = original(s)
        aks.pools["gput4"]["properties"]["eTag"] = "changed-by-someone-else"
        return current

    cloud._get = stale  # type: ignore[method-assign]
    _, bigger = cloud_and_spec(server, max_nodes=3)
    with pytest.raises(LlmctlError, match="PreconditionFailed") as info:
        cloud.update_pool(bigger, lambda _: None)
    assert "run the same command again" in (info.value.hint or "")


def test_sdk_floor_matches_the_pinned_api_version() -> None:
    """Review item 3: llmctl reads REST JSON from `as_dict()` and pins api-version 2026-08-01,
    both true from azure-mgmt-containerservice 41.8 on; pyproject must not allow older ones."""
    import tomllib
    from pathlib import Path

    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.containerservice.models import AgentPool

    from llmctl.clouds.azure import AKS_API_VERSION

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "azure-mgmt-containerservice>=41.8" in deps["cloud"]
    client = ContainerServiceClient(StaticToken(), SUBSCRIPTION)
    assert client._config.api_version == AKS_API_VERSION
    assert AgentPool({"properties": {"vmSize": "x"}}).as_dict() == {"properties": {"vmSize": "x"}}


# ---- the stand-in itself is as strict as AKS on what llmctl depends on ------------------------


def _put_raw(server: FakeServer, body: Any, name: str = "gput4", **headers: str) -> Any:
    import httpx

    url = (
        f"{server.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/llm-rg/providers/"
        f"Microsoft.ContainerService/managedClusters/llm-azure/agentPools/{name}"
    )
    return httpx.put(
        url,
        params={"api-version": "2026-08-01"},
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}", **headers},
    )


def _props(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vmSize": "Standard_NC4as_T4_v3",
        "count": 0,
        "enableAutoScaling": True,
        "minCount": 0,
        "maxCount": 2,
        "scaleSetPriority": "Spot",
    }
    return {"properties": {**base, **extra}}


def test_stand_in_knows_the_sdk_property_names() -> None:
    names = rest_property_names()
    assert {"vmSize", "nodeLabels", "nodeTaints", "eTag", "upgradeSettings"} <= names


@pytest.mark.parametrize(
    ("props", "code", "words"),
    [
        ({"vmsize": "x"}, "InvalidRequestContent", "vmsize"),
        ({"count": "2"}, "InvalidRequestContent", "count"),
        ({"nodeLabels": {"accelerator": "nvidia-tesla-t4"}}, "InvalidParameter", "reserved"),
        ({"nodeLabels": {SPOT_LABEL[0]: "x"}}, "InvalidParameter", "reserved"),
        ({"nodeLabels": {"node-role.kubernetes.io/gpu": ""}}, "BadRequest", "allowed prefix"),
        ({"count": 3}, "InvalidParameter", "between minCount 0 and maxCount 2"),
        ({"maxCount": 0}, "InvalidParameter", "at least 1"),
    ],
)
def test_stand_in_refuses_what_aks_refuses(
    server: FakeServer, props: dict[str, Any], code: str, words: str
) -> None:
    answer = _put_raw(server, _props(**props))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code and words in answer.json()["error"]["message"]


def test_stand_in_adds_spot_label_taint_defaults_and_async_header(
    server: FakeServer, aks: FakeAks
) -> None:
    answer = _put_raw(server, _props())
    assert answer.status_code == 201
    assert "/operations/" in answer.headers["Azure-AsyncOperation"]
    props = aks.pools["gput4"]["properties"]
    assert props["nodeLabels"] == {SPOT_LABEL[0]: "spot"}
    assert props["nodeTaints"] == [SPOT_TAINT]
    assert props["orchestratorVersion"] == "1.33.2" and props["upgradeSettings"]
    assert props["provisioningState"] == "Creating" and props["eTag"]


def test_stand_in_put_replaces_and_refuses_immutable_changes(
    server: FakeServer, aks: FakeAks
) -> None:
    assert _put_raw(server, _props(tags={"a": "b"})).status_code == 201
    replaced = _put_raw(server, _props(nodeLabels={"x": "y"}))
    assert replaced.status_code == 200
    props = aks.pools["gput4"]["properties"]
    assert "tags" not in props  # PUT replaces: left out is gone
    assert props["nodeLabels"] == {"x": "y"}  # the spot label with it (Azure/AKS#3152)
    assert SPOT_TAINT in props["nodeTaints"]
    changed = _put_raw(server, _props(vmSize="Standard_NC8as_T4_v3"))
    assert changed.status_code == 400
    assert changed.json()["error"]["code"] == "PropertyChangeNotAllowed"
    stale = _put_raw(server, _props(), **{"If-Match": "old"})
    assert stale.status_code == 412


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"resource_group": "rg/../x"}, "not a valid resource group name"),
        ({"resource_group": "rg."}, "not a valid resource group name"),
        ({"cluster": "-x"}, "not a valid AKS cluster name"),
    ],
)
def test_malformed_names_are_config_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        AzureCloud().node_pool_spec(Stack(), PoolOptions(subscription=SUBSCRIPTION, **options))


def test_reserved_label_is_refused_before_any_call() -> None:
    """AKS owns `accelerator` (and kubernetes.azure.com/*): a spec that sets it is exit 2."""
    from dataclasses import replace

    cloud = AzureCloud()
    spec = cloud.node_pool_spec(Stack(), PoolOptions(subscription=SUBSCRIPTION))
    with pytest.raises(ConfigError, match="AKS reserves the node label 'accelerator'"):
        cloud.complete_spec(replace(spec, labels={"accelerator": "nvidia-tesla-t4"}), {})


def test_a_pool_without_a_gpu_driver_is_refused(server: FakeServer, aks: FakeAks) -> None:
    """Review N2: AKS ignored gpuProfile.driver None and called the pool unchanged."""
    from llmctl.clouds.base import PoolDiffersError

    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    aks.pools["gput4"]["properties"]["gpuProfile"] = {"driver": "None"}
    with pytest.raises(PoolDiffersError, match="GPU driver: wants installed by the cloud"):
        cloud.ensure_gpu_pool(spec)


def test_stand_in_refuses_max_surge_on_a_spot_pool(server: FakeServer, aks: FakeAks) -> None:
    """Review N4: real AKS refuses it and shows maxSurge null for Spot pools."""
    answer = _put_raw(server, _props(upgradeSettings={"maxSurge": "10%"}))
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Spot pools can't set max surge"
    assert _put_raw(server, _props()).status_code == 201
    assert aks.pools["gput4"]["properties"]["upgradeSettings"] == {"maxSurge": None}


def test_spot_quota_is_the_regional_spot_quota(server: FakeServer, aks: FakeAks) -> None:
    cloud, spec = cloud_and_spec(server)
    report = cloud.read_quotas(spec)
    assert [q.name for q in report.quotas] == ["Total Regional Spot vCPUs (lowPriorityCores)"]
    cloud, spec = cloud_and_spec(server, on_demand=True, max_nodes=5)
    aks.usages["standardNCASv3_T4Family"] = ("Standard NCASv3_T4 Family vCPUs", 0.0, 0.0)
    report = cloud.read_quotas(spec)
    assert [q.name for q in report.short] == [
        "Standard NCASv3_T4 Family vCPUs (standardNCASv3_T4Family)"
    ]
    assert report.short[0].needed == 20 and "--resource-type dedicated" in report.short[0].raise_how


def test_throttling_says_wait_and_rerun(server: FakeServer, aks: FakeAks) -> None:
    aks.put_error = Response(
        429,
        {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}},
        {"Retry-After": "0"},
    )
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="429") as info:
        cloud.ensure_gpu_pool(spec)
    assert "wait a minute" in (info.value.hint or "")


def test_credential_failure_keeps_each_credentials_reason() -> None:
    """Review N12: only the first line of DefaultAzureCredential's message was kept."""
    from azure.core.exceptions import ClientAuthenticationError

    from llmctl.clouds.azure import _azure_errors

    _, spec = cloud_and_spec(FakeServer("http://127.0.0.1:9", []))
    message = (
        "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "Attempted credentials:\n"
        "\tEnvironmentCredential: EnvironmentCredential authentication unavailable. "
        "Environment variables are not fully configured.\n"
        "\tAzureCliCredential: Please run 'az login' to set up an account\n"
        "To mitigate this issue, please refer to the troubleshooting guidelines here at "
        "https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot."
    )
    with pytest.raises(LlmctlError) as info:
        with _azure_errors(spec, "read"):
            raise ClientAuthenticationError(message=message)
    text = str(info.value)
    assert "not fully configured" in text and "Please run 'az login'" in text
    assert "troubleshooting" not in text
