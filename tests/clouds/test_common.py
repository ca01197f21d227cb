"""Behaviour that is the same on the three clouds, run once per cloud against its stand-in:
EKS through moto, GKE and AKS through the real SDK clients against tests/support/fake_gke.py and
fake_aks.py. What differs between clouds stays in test_aws.py, test_gcp.py and test_azure.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from google.auth.credentials import AnonymousCredentials
from moto import mock_aws

from llmctl.catalog import CloudName
from llmctl.clouds.aws import AwsCloud
from llmctl.clouds.azure import AzureCloud
from llmctl.clouds.base import Cloud, PoolOptions, PoolSpec
from llmctl.clouds.gcp import GcpCloud
from llmctl.config import Stack
from llmctl.errors import LlmctlError
from tests.support import fake_aks
from tests.support.fake_aks import FakeAks
from tests.support.fake_eks import eks_cluster, wire
from tests.support.fake_gke import FakeGke
from tests.support.http_fake import serve

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class StaticToken:
    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken(fake_aks.TOKEN, int(time.time()) + 3600)


@dataclass
class Harness:
    """One cloud's adapter wired to its stand-in, and the few ways its stand-in is steered."""

    cloud: Cloud
    defaults: dict[str, Any]
    writes: Callable[[], int]  # how many changing calls the stand-in has received
    deny_writes: Callable[[], None]  # the cloud refuses changes for lack of a permission
    denied: str  # what llmctl's error names then

    def spec(self, **options: Any) -> PoolSpec:
        return self.cloud.node_pool_spec(Stack(), PoolOptions(**{**self.defaults, **options}))


def _aws() -> Iterator[Harness]:
    with mock_aws():
        eks_cluster()
        cloud = AwsCloud(poll_delay=0, max_attempts=5)
        eks = cloud._eks(cloud.node_pool_spec(Stack(), PoolOptions()))
        writes: list[str] = []

        def count(event_name: str, **_: Any) -> None:
            if not event_name.split(".")[-1].startswith(("Describe", "List")):
                writes.append(event_name)

        def deny() -> None:
            def refuse(request: Any, **_: Any) -> Any:
                message = (
                    "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: "
                    "eks:CreateNodegroup on resource: arn:aws:eks:us-east-1:123456789012:"
                    "cluster/llm-aws"
                )
                return wire(request, 403, {"message": message}, "AccessDeniedException")

            eks.meta.events.register("before-send.eks.CreateNodegroup", refuse)

        eks.meta.events.register("before-send.eks", count)
        yield Harness(cloud, {}, lambda: len(writes), deny, "may not call eks:CreateNodegroup")


def _gcp() -> Iterator[Harness]:
    gke = FakeGke()
    with serve(gke.route) as server:
        cloud = GcpCloud(endpoint=server.url, credentials=AnonymousCredentials(), poll_delay=0)

        def writes() -> int:
            return sum(1 for r in server.requests if r.method != "GET")

        def deny() -> None:
            gke.forbidden = "container.clusters.update"

        yield Harness(
            cloud, {"project": "proj"}, writes, deny, "GKE requires container.clusters.update"
        )


def _azure() -> Iterator[Harness]:
    aks = FakeAks()
    with serve(aks.route) as server:
        cloud = AzureCloud(endpoint=server.url, credential=StaticToken(), poll_delay=0)

        def writes() -> int:
            return sum(1 for r in server.requests if r.method not in ("GET",))

        def deny() -> None:
            aks.forbidden_action = "Microsoft.ContainerService/managedClusters/agentPools/write"

        yield Harness(
            cloud,
            {"subscription": SUBSCRIPTION},
            writes,
            deny,
            "Azure requires Microsoft.ContainerService/managedClusters/agentPools/write",
        )


HARNESSES = {CloudName.AWS: _aws, CloudName.GCP: _gcp, CloudName.AZURE: _azure}


@pytest.fixture(params=list(HARNESSES), ids=lambda c: c.value)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from HARNESSES[request.param]()


def test_second_run_changes_nothing(harness: Harness) -> None:
    spec = harness.spec()
    assert harness.cloud.ensure_gpu_pool(spec).action == "created"
    before = harness.writes()
    assert harness.cloud.ensure_gpu_pool(spec).action == "unchanged"
    assert harness.writes() == before


def test_status_reads_the_pool(harness: Harness) -> None:
    spec = harness.spec()
    assert harness.cloud.read_pool(spec) is None
    harness.cloud.ensure_gpu_pool(spec)
    state = harness.cloud.read_pool(spec)
    assert state is not None
    assert (state.instance_type, state.capacity, state.min_nodes, state.max_nodes) == (
        spec.instance_type,
        "spot",
        0,
        2,
    )
    assert harness.cloud.pool_blockers(spec, state) == []


def test_scaling_difference_is_updated_in_place(harness: Harness) -> None:
    harness.cloud.ensure_gpu_pool(harness.spec())
    bigger = harness.spec(max_nodes=3)
    result = harness.cloud.ensure_gpu_pool(bigger)
    assert result.action == "updated"
    assert [(d.field, d.have, d.want) for d in result.differences] == [("max nodes", "2", "3")]
    state = harness.cloud.read_pool(bigger)
    assert state is not None and (state.min_nodes, state.max_nodes) == (0, 3)


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
    if spec.cloud is CloudName.AWS:  # EKS keeps maxSize >= 1 (UNSUPPORTED says why)
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
