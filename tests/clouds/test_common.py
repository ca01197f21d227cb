"""Behaviour that is the same on the three clouds, run once per cloud against its stand-in:
EKS through moto, GKE and AKS through the real SDK clients against tests/support/fake_gke.py and
fake_aks.py. What differs between clouds stays in test_aws.py, test_gcp.py and test_azure.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from llmctl.catalog import CloudName
from llmctl.clouds.aws import AwsCloud
from llmctl.clouds.azure import AzureCloud
from llmctl.clouds.base import Cloud, Feature, PlanChangedError, PoolDiffersError, PoolOptions
from llmctl.clouds.gcp import GcpCloud
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.clouds.harness import HARNESSES, SUBSCRIPTION, Harness
from tests.support.fake_aks import arm_error
from tests.support.fake_eks import answer
from tests.support.fake_gke import google_error

# What a new, empty pool reads as: its instance type (the default for a T4), its current nodes
# (None where the pool API does not count them: GKE) and its status; then another T4 type.
NEW_POOL = {
    CloudName.AWS: ("g4dn.xlarge", 0, "ACTIVE"),
    CloudName.GCP: ("n1-standard-4", None, "RUNNING"),
    CloudName.AZURE: ("Standard_NC4as_T4_v3", 0, "Succeeded"),
}
OTHER_T4 = {
    CloudName.AWS: "g4dn.2xlarge",
    CloudName.GCP: "n1-standard-8",
    CloudName.AZURE: "Standard_NC8as_T4_v3",
}


@pytest.fixture(params=list(HARNESSES), ids=lambda c: c.value)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from HARNESSES[request.param]()


def test_second_run_changes_nothing(harness: Harness) -> None:
    spec = harness.spec()
    assert harness.cloud.ensure_gpu_pool(spec).action == "created"
    before = harness.writes()
    assert harness.cloud.ensure_gpu_pool(spec).action == "unchanged"
    assert harness.writes() == before


def test_a_plan_is_applied_only_to_the_pool_it_was_made_for(harness: Harness) -> None:
    """Issue 29: `gpu enable` shows a plan, then applies it; a pool changed in between (here
    resized by another run) is refused with nothing written, not brought to the spec anyway."""
    harness.cloud.ensure_gpu_pool(harness.spec())
    bigger = harness.spec(max_nodes=3)
    plan = harness.cloud.current_plan(bigger)
    assert [(d.field, d.have, d.want) for d in plan.differences] == [("max nodes", "2", "3")]
    harness.cloud.ensure_gpu_pool(harness.spec(max_nodes=1))  # someone else, meanwhile
    before = harness.writes()
    with pytest.raises(PlanChangedError) as refused:
        harness.cloud.apply_plan(bigger, plan)
    assert refused.value.exit_code == 1
    assert (
        "it was to be updated (max nodes: 2 -> 3), but it would now be updated (max nodes: "
        "1 -> 3)" in refused.value.message
    )
    assert harness.writes() == before
    assert harness.stored_max() == 1
    # A plan made for the pool as it is is applied.
    plan = harness.cloud.current_plan(bigger)
    assert harness.cloud.apply_plan(bigger, plan).action == "updated"
    assert harness.stored_max() == 3


def test_status_reads_the_pool(harness: Harness) -> None:
    spec = harness.spec()
    assert harness.cloud.read_pool(spec) is None
    harness.cloud.ensure_gpu_pool(spec)
    state = harness.cloud.read_pool(spec)
    assert state is not None
    instance_type, current_nodes, status = NEW_POOL[spec.cloud]
    assert spec.instance_type == instance_type
    assert (
        state.instance_type,
        state.capacity,
        state.min_nodes,
        state.current_nodes,
        state.max_nodes,
        state.status,
    ) == (instance_type, "spot", 0, current_nodes, 2, status)
    assert harness.cloud.pool_blockers(spec, state) == []


def test_scaling_difference_is_updated_in_place(harness: Harness) -> None:
    harness.cloud.ensure_gpu_pool(harness.spec())
    bigger = harness.spec(max_nodes=3)
    result = harness.cloud.ensure_gpu_pool(bigger)
    assert result.action == "updated"
    assert [(d.field, d.have, d.want) for d in result.differences] == [("max nodes", "2", "3")]
    state = harness.cloud.read_pool(bigger)
    assert state is not None and (state.min_nodes, state.max_nodes) == (0, 3)
    assert harness.stored_max() == 3  # what the stand-in keeps, not only what llmctl reads


@pytest.mark.parametrize(
    ("on_demand", "fields"),
    [(False, {"instance type"}), (True, {"instance type", "capacity type"})],
    ids=["instance-type", "and-capacity"],
)
def test_instance_type_difference_is_refused(
    harness: Harness, on_demand: bool, fields: set[str]
) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    other_type = OTHER_T4[spec.cloud]
    other = harness.spec(instance_type=other_type, on_demand=on_demand)
    with pytest.raises(PoolDiffersError, match=f"instance type: wants {other_type}") as info:
        harness.cloud.ensure_gpu_pool(other)
    assert {d.field for d in info.value.differences} == fields
    assert harness.stored_max() == 2  # untouched


def test_other_differences_are_refused_and_nothing_changes(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    before = harness.writes()
    with pytest.raises(LlmctlError, match="capacity type: wants on-demand, has spot") as info:
        harness.cloud.ensure_gpu_pool(harness.spec(on_demand=True, max_nodes=3))
    assert f"llmctl gpu disable --cloud {spec.cloud.value}" in (info.value.hint or "")
    assert harness.writes() == before


def test_scale_to_zero_then_enable_restores_scaling(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    assert harness.cloud.disable(spec, scale_to_zero=True) is True
    state = harness.cloud.read_pool(spec)
    assert state is not None
    if spec.cloud is CloudName.AWS:  # EKS keeps maxSize >= 1 (AwsCloud.unsupported says why)
        assert (state.min_nodes, state.max_nodes, state.current_nodes) == (0, 1, 0)
    else:  # GKE and AKS: autoscaling off; status says why it cannot scale
        assert state.max_nodes == 0
        assert "autoscaling is off" in harness.cloud.pool_blockers(spec, state)[0]
    assert harness.cloud.ensure_gpu_pool(spec).action == "updated"
    state = harness.cloud.read_pool(spec)
    assert state is not None and (state.min_nodes, state.max_nodes) == (0, 2)


def test_disable_deletes(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    assert harness.cloud.disable(spec, scale_to_zero=False) is True
    assert harness.cloud.read_pool(spec) is None
    assert harness.cloud.disable(spec, scale_to_zero=False) is False


def test_cluster_not_found(harness: Harness) -> None:
    spec = harness.spec(cluster="missing")
    with pytest.raises(LlmctlError, match="cluster 'missing' not found") as info:
        harness.cloud.ensure_gpu_pool(spec)
    assert "list" in (info.value.hint or "")  # how to list the clusters that exist


def test_permission_denied_names_the_permission(harness: Harness) -> None:
    harness.deny_writes()
    with pytest.raises(LlmctlError, match=harness.denied):
        harness.cloud.ensure_gpu_pool(harness.spec())


@pytest.mark.usefixtures("clean_cloud_env")
@pytest.mark.parametrize(
    ("make", "message", "hint_words"),
    [
        (
            lambda: AwsCloud(endpoint_url="http://127.0.0.1:9"),
            "no usable AWS credentials",
            ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "aws configure"),
        ),
        (
            lambda: GcpCloud(endpoint="http://127.0.0.1:9"),
            "no Google Cloud credentials",
            ("gcloud auth application-default login", "GOOGLE_APPLICATION_CREDENTIALS"),
        ),
        (
            lambda: AzureCloud(endpoint="https://127.0.0.1:9", poll_delay=0),
            "no usable Azure credentials",
            ("az login", "AZURE_CLIENT_ID"),
        ),
    ],
    ids=["aws", "gcp", "azure"],
)
def test_no_credentials_says_how_to_log_in(
    make: Callable[[], Cloud], message: str, hint_words: tuple[str, ...]
) -> None:
    cloud = make()
    spec = cloud.node_pool_spec(Stack(), PoolOptions(project="proj", subscription=SUBSCRIPTION))
    with pytest.raises(LlmctlError, match=message) as info:
        cloud.read_pool(spec)
    for words in hint_words:
        assert words in (info.value.hint or "")


def test_dry_run_requests_are_json_and_call_nothing(harness: Harness) -> None:
    spec = harness.spec()
    before = harness.writes()
    for request in harness.cloud.create_requests(spec):
        json.dumps(request.as_dict())
    assert harness.writes() == before


Steer = Callable[[Harness], None]


def _set(attribute: str, value: Any) -> Steer:
    """Give the stand-in an answer to refuse with."""
    return lambda harness: setattr(harness.fake, attribute, value)


def _eks_answers(status: int, error: str, **body: str) -> Steer:
    return lambda harness: answer(harness.fake, "CreateNodegroup", status, body, error)


_PASS_ROLE = (
    "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iam:PassRole on "
    "resource: arn:aws:iam::123456789012:role/eks-node"
)
_AZURE_QUOTA = (
    "Insufficient regional vcpu quota left for location eastus. left regional vcpu quota 0, "
    "requested quota 4."
)
_AZURE_SKU = (
    "The requested VM size Standard_NC4as_T4_v3 is currently not available in location "
    "'eastus'. Please try another size or deploy to a different location."
)
_AZURE_FAILED = {
    "code": "ReconcileVMSSAgentPoolFailed",
    "message": 'Code="OverconstrainedAllocationRequest" Message="Allocation failed."',
}
_GKE_QUOTA = (
    'Insufficient regional quota to satisfy request: resource "NVIDIA_T4_GPUS": request '
    "requires '1.0' and is short '1.0'. project has a quota of '0.0' with '0.0' available."
)
_GKE_STOCKOUT = (
    "The zone 'projects/proj/zones/us-central1-a' does not have enough resources available to "
    "fulfill the request. Try a different zone, or try again later."
)
_GKE_ALL_REGIONS = {"code": 8, "message": "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0"}
_GKE_BUSY = "Cluster is running incompatible operation operation-1234."

# id: the cloud, how its stand-in refuses, the options, llmctl's one sentence, its hint's words.
REFUSALS: dict[str, tuple[CloudName, Steer, dict[str, Any], str, tuple[str, ...]]] = {
    "aws-permission-denied-for-pass-role": (
        CloudName.AWS,
        _eks_answers(403, "AccessDeniedException", message=_PASS_ROLE),
        {},
        "may not call iam:PassRole",
        (),
    ),
    "aws-quota-exceeded": (
        CloudName.AWS,
        _eks_answers(
            400,
            "ResourceLimitExceededException",
            message="Nodegroups per cluster quota exceeded",
            clusterName="llm-aws",
        ),
        {},
        "quota exceeded",
        ("--on-demand", "--instance-type"),
    ),
    "azure-quota-exceeded": (
        CloudName.AZURE,
        _set("put_error", arm_error(400, "ErrCode_InsufficientVCPUQuota", _AZURE_QUOTA)),
        {},
        "Azure quota exceeded",
        # The quota Spot VMs use and how to raise it; not "--on-demand": another VM size or
        # capacity type does not lift a quota of 0 (review N1).
        ("lowPriorityCores", "az quota update"),
    ),
    "azure-no-spot-capacity": (
        CloudName.AZURE,
        _set("put_error", arm_error(400, "SkuNotAvailable", _AZURE_SKU)),
        {},
        "no capacity for Standard_NC4as_T4_v3",
        ("--instance-type",),
    ),
    "azure-failed-operation-after-acceptance": (
        CloudName.AZURE,
        _set("operation_error", _AZURE_FAILED),
        {},
        "no capacity for Standard_NC4as_T4_v3",
        (),
    ),
    "gcp-quota-error-from-the-operation": (
        CloudName.GCP,
        _set("create_error", {"code": 8, "message": _GKE_QUOTA}),
        {},
        "GPU quota exceeded.*NVIDIA_T4_GPUS",
        ("--on-demand",),
    ),
    "gcp-stockout-from-the-api": (
        CloudName.GCP,
        _set("create_http_error", google_error(503, "UNAVAILABLE", _GKE_STOCKOUT)),
        {},
        "no capacity for n1-standard-4",
        ("another region or zone",),
    ),
    # the quota hint names the quota the capacity uses
    "gcp-quota-hint-spot": (
        CloudName.GCP,
        _set("create_error", _GKE_ALL_REGIONS),
        {},
        "GPU quota exceeded",
        ("PREEMPTIBLE_NVIDIA_T4_GPUS",),
    ),
    "gcp-quota-hint-on-demand": (
        CloudName.GCP,
        _set("create_error", _GKE_ALL_REGIONS),
        {"on_demand": True},
        "GPU quota exceeded",
        ("NVIDIA_T4_GPUS and GPUS_ALL",),
    ),
    "gcp-concurrent-operation-says-wait-and-retry": (
        CloudName.GCP,
        _set("create_http_error", google_error(400, "FAILED_PRECONDITION", _GKE_BUSY)),
        {},
        "incompatible operation",
        ("run the same command again",),
    ),
}


@pytest.mark.parametrize(
    ("cloud", "steer", "options", "message", "hints"), REFUSALS.values(), ids=list(REFUSALS)
)
def test_refusal_is_one_sentence_and_a_hint(
    cloud: CloudName,
    steer: Steer,
    options: dict[str, Any],
    message: str,
    hints: tuple[str, ...],
) -> None:
    with contextmanager(HARNESSES[cloud])() as harness:
        steer(harness)
        with pytest.raises(LlmctlError, match=message) as info:
            harness.cloud.ensure_gpu_pool(harness.spec(**options))
    for words in hints:
        assert words in (info.value.hint or "")


def test_each_cloud_carries_its_own_unsupported_features(harness: Harness) -> None:
    """Issue 29: what a cloud cannot do is on its class, not in a table of every cloud in base;
    a feature it lacks is refused with its own reason (exit 2)."""
    import llmctl.clouds.base as base

    assert not hasattr(base, "UNSUPPORTED")
    cloud = harness.cloud
    assert "unsupported" in type(cloud).__dict__
    assert Cloud.unsupported == {}
    assert Feature.ZERO_MAX_NODES in cloud.unsupported
    asked = {
        CloudName.AWS: (Feature.ZONES, {"zones": ("us-east-1a",)}),
        CloudName.GCP: (Feature.SUBNETS, {"subnets": ("subnet-1",)}),
        CloudName.AZURE: (Feature.NODE_ROLE, {"node_role": "arn:aws:iam::1:role/r"}),
    }
    feature, options = asked[cloud.name]
    with pytest.raises(ConfigError) as refused:
        cloud.node_pool_spec(Stack(), PoolOptions(**options))
    assert refused.value.exit_code == 2
    assert refused.value.message.endswith(cloud.unsupported[feature])
