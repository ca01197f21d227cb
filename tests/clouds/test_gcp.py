"""The GKE adapter with the real google-cloud-container client (REST) against a local GKE."""

from __future__ import annotations

from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from llmctl.clouds.base import PoolOptions
from llmctl.clouds.gcp import GcpCloud
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.clouds.harness import cloud_and_spec_on, gcp_cloud, serving
from tests.support.fake_gke import GKE_GPU_TAINT, FakeGke
from tests.support.http_fake import FakeServer, serve


@pytest.fixture
def gke() -> FakeGke:
    return FakeGke()


server = serving("gke")
cloud_and_spec = cloud_and_spec_on(gcp_cloud, project="proj")


def test_create_sends_the_node_pool_and_polls_the_operation(
    server: FakeServer, gke: FakeGke
) -> None:
    cloud, spec = cloud_and_spec(server)
    seen: list[str] = []
    result = cloud.ensure_gpu_pool(spec, seen.append)
    assert result.action == "created"
    # the zone lookup, the create answer, one poll RUNNING, then DONE
    assert seen == ["finding zones with nvidia-tesla-t4", "RUNNING", "RUNNING", "DONE"]
    create = next(r for r in server.requests if r.method == "POST")
    assert create.path == "/v1/projects/proj/locations/us-central1/clusters/llm-gcp/nodePools"
    pool = create.body["nodePool"]
    config = pool["config"]
    assert config["machineType"] == "n1-standard-4"
    assert config["accelerators"] == [
        {
            "acceleratorCount": "1",
            "acceleratorType": "nvidia-tesla-t4",
            "gpuDriverInstallationConfig": {"gpuDriverVersion": 3},
        }
    ]  # LATEST is enum 3: the image's CUDA 12.8 PTX needs driver R570+, DEFAULT may be older
    assert config["spot"] is True and "preemptible" not in config
    assert config["labels"] == {
        "compute": "gpu-enabled",
        "llmctl.dev/accelerator": "nvidia-tesla-t4",
    }
    assert config["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": 1}]
    # proto3 leaves out zeros: no initialNodeCount, no totalMinNodeCount.
    assert pool["autoscaling"] == {"enabled": True, "totalMaxNodeCount": 2, "locationPolicy": 2}
    assert "initialNodeCount" not in pool
    assert pool["locations"] == gke.cluster_zones  # all four us-central1 zones offer T4
    polls = [r.path for r in server.requests if "/operations/" in r.path]
    assert polls == ["/v1/projects/proj/locations/us-central1/operations/operation-1"] * 2


def test_preemptible(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server, preemptible=True)
    cloud.ensure_gpu_pool(spec)
    config = gke.pools["gpu-t4"]["config"]
    assert config["preemptible"] is True and "spot" not in config


def test_disable_and_scale_to_zero(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    cloud.disable(spec, scale_to_zero=True)
    pool = gke.pools["gpu-t4"]
    assert not pool["autoscaling"].get("enabled")  # enabled=false is a proto3 zero: left out
    assert gke.node_count("gpu-t4") == 0
    set_size = next(r for r in server.requests if r.path.endswith(":setSize"))
    assert "nodeCount" not in set_size.body  # 0 is left out on the wire
    assert cloud.disable(spec, scale_to_zero=False) is True
    assert "gpu-t4" not in gke.pools
    assert cloud.read_pool(spec) is None


@pytest.mark.usefixtures("clean_cloud_env")
def test_project_is_required() -> None:
    with pytest.raises(ConfigError, match="no GCP project"):
        GcpCloud().node_pool_spec(Stack(), PoolOptions())


def test_pool_names_only_zones_with_the_gpu(gke: FakeGke) -> None:
    """Review item 2: in us-west1 T4 is in a and b, not c; without locations GKE answers 400."""
    gke.location = "us-west1"
    with serve(gke.route) as server:
        cloud, spec = cloud_and_spec(server, location="us-west1")
        cloud.ensure_gpu_pool(spec)
        create = next(r for r in server.requests if r.method == "POST")
        assert create.body["nodePool"]["locations"] == ["us-west1-a", "us-west1-b"]
        looked_up = [r.path.split("/")[6] for r in server.requests if "/compute/" in r.path]
        assert looked_up == ["us-west1-a", "us-west1-b", "us-west1-c"]
    assert gke.pools["gpu-t4"]["locations"] == ["us-west1-a", "us-west1-b"]


def test_stand_in_refuses_a_zone_without_the_gpu(gke: FakeGke) -> None:
    gke.location = "us-west1"
    with serve(gke.route) as server:
        cloud, spec = cloud_and_spec(server, location="us-west1", zones=("us-west1-c",))
        with pytest.raises(
            LlmctlError, match='"nvidia-tesla-t4" does not exist in zone us-west1-c'
        ):
            cloud.ensure_gpu_pool(spec)


def test_no_zone_with_the_gpu_fails_before_creating(gke: FakeGke) -> None:
    gke.location = "us-west1"
    with serve(gke.route) as server:
        cloud, spec = cloud_and_spec(server, location="us-west1")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("tests.support.fake_gke.T4_ZONES", set())
            with pytest.raises(LlmctlError, match="none of cluster 'llm-gcp'") as info:
                cloud.ensure_gpu_pool(spec)
        assert "gcloud compute accelerator-types list" in (info.value.hint or "")
        assert not [r for r in server.requests if r.method == "POST"]


def test_compute_permission_missing_names_it_and_zones_option(
    server: FakeServer, gke: FakeGke
) -> None:
    gke.compute_forbidden = True
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="compute.acceleratorTypes.get") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--zones" in (info.value.hint or "")
    _, named = cloud_and_spec(server, zones=("us-central1-a",))
    assert cloud.ensure_gpu_pool(named).action == "created"


@pytest.mark.parametrize(("min_nodes", "per_zone", "nodes"), [(0, 0, 0), (1, 0, 0), (4, 1, 4)])
def test_initial_count_is_per_zone_and_never_above_the_minimum(
    server: FakeServer, gke: FakeGke, min_nodes: int, per_zone: int, nodes: int
) -> None:
    """Review item 2: initialNodeCount is per zone; 4 zones x --min-nodes 1 must not start 4."""
    cloud, spec = cloud_and_spec(server, min_nodes=min_nodes, max_nodes=max(min_nodes, 2))
    cloud.ensure_gpu_pool(spec)
    pool = gke.pools["gpu-t4"]
    assert int(pool.get("initialNodeCount", 0)) == per_zone
    assert gke.node_count("gpu-t4") == nodes <= min_nodes
    assert int(pool["autoscaling"].get("totalMinNodeCount", 0)) == min_nodes


def test_missing_label_and_taint_are_updated_in_place(server: FakeServer, gke: FakeGke) -> None:
    """Review item 7: UpdateNodePool takes labels and taints; other labels/taints are kept."""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    config = gke.pools["gpu-t4"]["config"]
    config["labels"] = {"team": "ml"}
    config["taints"] = [{"key": "dedicated", "value": "ml", "effect": 1}]
    result = cloud.ensure_gpu_pool(spec)
    assert result.action == "updated"
    assert {d.field for d in result.differences} == {"labels", "taints"}
    update = next(r for r in server.requests if r.method == "PUT")
    assert update.body["nodeVersion"] and update.body["imageType"] == "COS_CONTAINERD"
    assert gke.pools["gpu-t4"]["config"]["labels"] == {"team": "ml", **spec.labels}
    keys = [t["key"] for t in gke.pools["gpu-t4"]["config"]["taints"]]
    assert keys == ["dedicated", "nvidia.com/gpu"]
    assert not [r for r in server.requests if r.path.endswith(":setAutoscaling")]


def test_gke_gpu_taint_and_llmctl_taint_are_one_on_the_node(
    server: FakeServer, gke: FakeGke
) -> None:
    """Review item 10 (decision in docs/gpu.md): llmctl's taint equals GKE's own GPU taint."""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    taints = gke.node_taints("gpu-t4")
    assert taints.count(GKE_GPU_TAINT) == 1 and len(taints) == 1


def test_stand_in_refuses_duplicate_taints_and_mixed_counts(server: FakeServer) -> None:
    import httpx

    url = f"{server.url}/v1/projects/proj/locations/us-central1/clusters/llm-gcp/nodePools"
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": 1}
    pool = {"name": "p", "config": {"taints": [taint, taint]}}
    answer = httpx.post(url, json={"nodePool": pool})
    assert answer.status_code == 400 and "more than one taint" in answer.json()["error"]["message"]
    pool = {
        "name": "p",
        "autoscaling": {"enabled": True, "totalMaxNodeCount": 2, "maxNodeCount": 1},
    }
    answer = httpx.post(url, json={"nodePool": pool})
    assert answer.status_code == 400 and "mutually exclusive" in answer.json()["error"]["message"]
    answer = httpx.post(url, json={"nodePool": {"name": "p", "initalNodeCount": 1}})
    assert answer.status_code == 400 and "initalNodeCount" in answer.json()["error"]["message"]


def test_scaled_to_zero_pool_reads_as_zero_even_with_old_totals(
    server: FakeServer, gke: FakeGke
) -> None:
    """Review item 14: `enabled` is read first; the stand-in keeps the totals beside it."""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    cloud.disable(spec, scale_to_zero=True)
    assert gke.pools["gpu-t4"]["autoscaling"].get("totalMaxNodeCount") == 2
    state = cloud.read_pool(spec)
    assert state is not None and (state.min_nodes, state.max_nodes) == (0, 0)
    assert cloud.ensure_gpu_pool(spec).action == "updated"
    assert gke.pools["gpu-t4"]["autoscaling"]["enabled"] is True


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"cluster": "a/b"}, "--cluster"),
        ({"location": "bad region!"}, "--location"),
        ({"project": "p q"}, "--project"),
        ({"zones": ("us-central1",)}, "--zones"),
    ],
)
def test_malformed_names_are_config_errors(options: dict[str, Any], flag: str) -> None:
    """Review item 5: `--cluster a/b` was a ValueError traceback from the SDK's path builder."""
    options.setdefault("project", "proj")
    with pytest.raises(ConfigError, match=f"{flag} .* is not a valid GCP name"):
        GcpCloud().node_pool_spec(Stack(), PoolOptions(**options))


def test_network_failure_is_one_line() -> None:
    """Review item 5: a refused connection (no network, wrong proxy) is not a traceback."""
    cloud = GcpCloud(endpoint="http://127.0.0.1:9", credentials=AnonymousCredentials())
    spec = cloud.node_pool_spec(Stack(), PoolOptions(project="proj"))
    with pytest.raises(LlmctlError, match="cannot reach the Google Cloud API") as info:
        cloud.read_pool(spec)
    assert "HTTPS_PROXY" in (info.value.hint or "")


def test_token_transport_failure_is_one_line(server: FakeServer) -> None:
    """google.auth's TransportError (metadata server or token endpoint unreachable)."""
    from google.auth.credentials import Credentials
    from google.auth.exceptions import TransportError

    class Unreachable(Credentials):  # type: ignore[misc]
        def refresh(self, request: Any) -> None:
            raise TransportError("Failed to retrieve http://metadata.google.internal/token")

    cloud = GcpCloud(endpoint=server.url, credentials=Unreachable())
    spec = cloud.node_pool_spec(Stack(), PoolOptions(project="proj"))
    message = "cannot reach the Google Cloud API: TransportError: Failed to retrieve"
    with pytest.raises(LlmctlError, match=message):
        cloud.read_pool(spec)


def test_missing_sdk_is_named_even_after_it_was_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review item 13: once imported, `from google.cloud import container_v1` found the module
    through the package attribute even with sys.modules hiding it, so the missing-SDK test
    depended on test order. llmctl now imports through importlib, which honours sys.modules."""
    import sys

    import google.cloud.container_v1  # noqa: F401  (as an earlier test would have)

    monkeypatch.setitem(sys.modules, "google.cloud.container_v1", None)
    with pytest.raises(LlmctlError, match=r"google-cloud-container\) is not installed"):
        GcpCloud(credentials=AnonymousCredentials())._gke()


def _existing_pool(gke: FakeGke, server: FakeServer, **config: Any) -> Any:
    """llmctl's pool, then changed the way another tool or person would have made it."""
    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    gke.pools["gpu-t4"]["config"].update(config)
    return cloud, spec


@pytest.mark.parametrize(
    ("config", "difference"),
    [
        ({"accelerators": []}, "GPU: wants nvidia-tesla-t4, has none"),
        (
            {"accelerators": [{"acceleratorCount": "1", "acceleratorType": "nvidia-tesla-p4"}]},
            "GPU: wants nvidia-tesla-t4, has nvidia-tesla-p4",
        ),
        (
            {
                "accelerators": [
                    {
                        "acceleratorCount": "1",
                        "acceleratorType": "nvidia-tesla-t4",
                        "gpuDriverInstallationConfig": {
                            "gpuDriverVersion": "INSTALLATION_DISABLED"
                        },
                    }
                ]
            },
            "GPU driver: wants installed by the cloud, has none",
        ),
        (
            {"accelerators": [{"acceleratorCount": "2", "acceleratorType": "nvidia-tesla-t4"}]},
            "GPUs per node: wants 1, has 2",
        ),
    ],
    ids=["no-gpu", "p4", "no-driver", "two-gpus"],
)
def test_a_pool_that_is_not_what_llmctl_makes_is_refused(
    server: FakeServer, gke: FakeGke, config: dict[str, Any], difference: str
) -> None:
    """Review N2: GKE compared only the machine type, so these read as "unchanged"."""
    cloud, spec = _existing_pool(gke, server, **config)
    from llmctl.clouds.base import PoolDiffersError

    with pytest.raises(PoolDiffersError) as info:
        cloud.ensure_gpu_pool(spec)
    assert difference in str(info.value)


def test_the_pool_gets_the_clusters_node_service_account(server: FakeServer, gke: FakeGke) -> None:
    """Review N3: without serviceAccount GKE uses the project's default Compute Engine account."""
    from tests.support.fake_gke import CLOUD_PLATFORM, NODE_SERVICE_ACCOUNT

    cloud, spec = cloud_and_spec(server)
    cloud.ensure_gpu_pool(spec)
    config = gke.pools["gpu-t4"]["config"]
    assert config["serviceAccount"] == NODE_SERVICE_ACCOUNT
    assert config["oauthScopes"] == [CLOUD_PLATFORM]


def test_service_account_option_names_the_account(server: FakeServer, gke: FakeGke) -> None:
    cloud, spec = cloud_and_spec(server, service_account="gpu@proj.iam.gserviceaccount.com")
    cloud.ensure_gpu_pool(spec)
    assert gke.pools["gpu-t4"]["config"]["serviceAccount"] == "gpu@proj.iam.gserviceaccount.com"


def test_pools_with_different_accounts_ask_for_one(server: FakeServer, gke: FakeGke) -> None:
    gke.system_pools["batch"] = {
        "name": "batch",
        "config": {"serviceAccount": "batch@proj.iam.gserviceaccount.com"},
    }
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(ConfigError, match="different node service accounts") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--service-account" in (info.value.hint or "")
    assert "gpu-t4" not in gke.pools


def test_dry_run_shows_where_the_account_comes_from() -> None:
    from llmctl.clouds.gcp import FROM_CLUSTER_POOLS

    cloud = GcpCloud()
    spec = cloud.node_pool_spec(Stack(), PoolOptions(project="proj"))
    body = cloud.create_requests(spec)[0].body["nodePool"]
    assert body["config"]["serviceAccount"] == FROM_CLUSTER_POOLS
    assert body["config"]["resourceLabels"] == {"llmctl-managed-by": "llmctl"}


def test_service_account_is_gcp_only() -> None:
    from llmctl.clouds.aws import AwsCloud

    with pytest.raises(ConfigError, match="--service-account is not supported on AWS"):
        AwsCloud().node_pool_spec(Stack(), PoolOptions(service_account="x@y"))


def test_zones_of_the_region_outside_the_clusters_own_are_accepted() -> None:
    """Review N4/N5: GKE takes any zone of the cluster's region for a pool."""
    gke = FakeGke(location="us-west1", node_locations=["us-west1-c"])
    with serve(gke.route) as srv:
        cloud, spec = cloud_and_spec(srv, location="us-west1")
        with pytest.raises(LlmctlError, match="none of cluster") as info:
            cloud.ensure_gpu_pool(spec)  # us-west1-c has no T4
        assert "--zones" in (info.value.hint or "")
        cloud, spec = cloud_and_spec(srv, location="us-west1", zones=("us-west1-a",))
        assert cloud.ensure_gpu_pool(spec).action == "created"
        assert gke.pools["gpu-t4"]["locations"] == ["us-west1-a"]
        cloud, spec = cloud_and_spec(srv, location="us-west1", zones=("us-central1-a",))
        cloud.ensure_gpu_pool(spec)  # the same pool: nothing to create
    other = FakeGke(location="us-west1", node_locations=["us-west1-c"])
    with serve(other.route) as srv:
        cloud, spec = cloud_and_spec(srv, location="us-west1", zones=("us-central1-a",))
        with pytest.raises(LlmctlError, match="must be in the cluster's region"):
            cloud.ensure_gpu_pool(spec)


def test_preemptible_quota_absent_uses_the_regular_one(server: FakeServer, gke: FakeGke) -> None:
    """Spot VMs draw on the PREEMPTIBLE_ quota where the project has one, else the regular."""
    gke.region_quotas.pop("PREEMPTIBLE_NVIDIA_T4_GPUS")
    gke.region_quotas["NVIDIA_T4_GPUS"] = (1.0, 0.0)
    cloud, spec = cloud_and_spec(server)
    report = cloud.read_quotas(spec)
    short = [q.name for q in report.short]
    assert short == ["NVIDIA_T4_GPUS in us-central1"]
    assert report.quotas[0].needed == 2 and report.quotas[0].limit == 1


def test_quota_read_permission_missing_is_a_reason_not_an_error(
    server: FakeServer, gke: FakeGke
) -> None:
    gke.compute_forbidden = True
    cloud, spec = cloud_and_spec(server)
    report = cloud.read_quotas(spec)
    assert report.quotas == () and "compute.regions.get" in (report.unread or "")


def test_api_rate_limit_is_not_called_a_gpu_quota(server: FakeServer, gke: FakeGke) -> None:
    """Review N6: a 429 RESOURCE_EXHAUSTED on reads got the GPU-quota advice."""
    from tests.support.fake_gke import google_error

    gke.create_http_error = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute' "
        "of service 'container.googleapis.com' for consumer 'project_number:1'.",
    )
    cloud, spec = cloud_and_spec(server)
    with pytest.raises(LlmctlError, match="rate-limited") as info:
        cloud.ensure_gpu_pool(spec)
    assert "wait a minute" in (info.value.hint or "")
    assert "PREEMPTIBLE" not in (info.value.hint or "")
    assert "http://" not in str(info.value)  # no "POST url:" prefix (review N13)
