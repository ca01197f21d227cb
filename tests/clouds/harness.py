"""Each cloud's adapter wired to its stand-in, shared by test_common.py (behaviour that is the same
on every cloud, run once per cloud) and the per-cloud files test_aws.py, test_gcp.py and
test_azure.py: EKS through moto, GKE and AKS through the real SDK clients against
tests/support/fake_gke.py and fake_aks.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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
from tests.support import fake_aks
from tests.support.fake_aks import FakeAks
from tests.support.fake_eks import answer, eks_cluster, strict_launch_templates, tag_node_groups
from tests.support.fake_gke import FakeGke
from tests.support.fake_service_quotas import ec2_quotas
from tests.support.http_fake import FakeServer, serve

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

C = TypeVar("C", bound=Cloud)


class StaticToken:
    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken(fake_aks.TOKEN, int(time.time()) + 3600)


def azure_cloud(url: str) -> AzureCloud:
    return AzureCloud(endpoint=url, credential=StaticToken(), poll_delay=0)


def gcp_cloud(url: str) -> GcpCloud:
    return GcpCloud(endpoint=url, credentials=AnonymousCredentials(), poll_delay=0)


def pool_spec(cloud: Cloud, defaults: Mapping[str, Any], options: Mapping[str, Any]) -> PoolSpec:
    return cloud.node_pool_spec(Stack(), PoolOptions(**{**defaults, **options}))


def cloud_and_spec_on(
    make: Callable[[str], C], **defaults: Any
) -> Callable[..., tuple[C, PoolSpec]]:
    """`cloud_and_spec(server, **options)`: the adapter `make` builds for the stand-in at
    `server`, and the spec of `options` over `defaults` (the option a cloud cannot do without)."""

    def cloud_and_spec(server: FakeServer, **options: Any) -> tuple[C, PoolSpec]:
        cloud = make(server.url)
        return cloud, pool_spec(cloud, defaults, options)

    return cloud_and_spec


def serving(stand_in: str) -> Any:
    """A `server` fixture: the stand-in that fixture `stand_in` gives, served on loopback."""

    @pytest.fixture
    def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
        with serve(request.getfixturevalue(stand_in).route) as srv:
            yield srv

    return server


@dataclass
class Harness:
    """One cloud's adapter wired to its stand-in, and the few ways its stand-in is steered."""

    cloud: Cloud
    fake: Any  # the stand-in: moto's EKS client the adapter uses, FakeGke or FakeAks
    defaults: dict[str, Any]
    writes: Callable[[], int]  # how many changing calls the stand-in has received
    deny_writes: Callable[[], None]  # the cloud refuses changes for lack of a permission
    denied: str  # what llmctl's error names then
    stored_max: Callable[[], int]  # the pool's maximum as the stand-in keeps it
    zero_quota: Callable[[], None]  # a new account: no GPU quota at all
    quota_names: tuple[str, ...]  # what llmctl's message names then (spot, default region)
    raise_how: str  # and how it says to raise it
    unmark: Callable[[], None]  # the pool loses llmctl's mark (another team made it)
    marked: Callable[[], bool]  # whether the stand-in's pool carries llmctl's mark

    def spec(self, **options: Any) -> PoolSpec:
        return pool_spec(self.cloud, self.defaults, options)


def _aws() -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        ec2_quotas(patch)
        strict_launch_templates(patch)
        eks_cluster()
        cloud = AwsCloud(poll_delay=0, max_attempts=5)
        eks = cloud._eks(cloud.node_pool_spec(Stack(), PoolOptions()))
        writes: list[str] = []

        def count(event_name: str, **_: Any) -> None:
            if not event_name.split(".")[-1].startswith(("Describe", "List")):
                writes.append(event_name)

        def deny() -> None:
            message = (
                "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: "
                "eks:CreateNodegroup on resource: arn:aws:eks:us-east-1:123456789012:"
                "cluster/llm-aws"
            )
            answer(eks, "CreateNodegroup", 403, {"message": message}, "AccessDeniedException")

        def stored_max() -> int:
            group = eks.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")
            return int(group["nodegroup"]["scalingConfig"]["maxSize"])

        def tags() -> dict[str, str]:
            group = eks.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")
            return dict(group["nodegroup"].get("tags") or {})

        def unmark() -> None:
            # The same group, made by another team: without llmctl's tag (moto cannot untag one).
            group = eks.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")
            group = group["nodegroup"]
            eks.delete_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")
            keep = ("scalingConfig", "subnets", "instanceTypes", "amiType", "capacityType")
            eks.create_nodegroup(
                clusterName="llm-aws",
                nodegroupName="gpu-t4",
                nodeRole=group["nodeRole"],
                labels=group["labels"],
                taints=group["taints"],
                tags={k: v for k, v in group["tags"].items() if k != "llmctl-managed-by"},
                **{k: group[k] for k in keep},
            )

        tag_node_groups(eks)
        eks.meta.events.register("before-send.eks", count)
        denied = "may not call eks:CreateNodegroup"
        yield Harness(
            cloud,
            eks,
            {},
            lambda: len(writes),
            deny,
            denied,
            stored_max,
            lambda: ec2_quotas(patch, {}, {}),
            ("All G and VT Spot Instance Requests (L-3819A6DF)",),
            "aws service-quotas request-service-quota-increase --service-code ec2 "
            "--quota-code L-3819A6DF --desired-value 8 --region us-east-1",
            unmark,
            lambda: tags().get("llmctl-managed-by") == "llmctl",
        )


def _writes(server: FakeServer) -> Callable[[], int]:
    return lambda: sum(1 for r in server.requests if r.method != "GET")


def _gcp() -> Iterator[Harness]:
    gke = FakeGke()
    with serve(gke.route) as server:

        def deny() -> None:
            gke.forbidden = "container.clusters.update"

        def stored_max() -> int:
            return int(gke.pools["gpu-t4"]["autoscaling"]["totalMaxNodeCount"])

        def zero_quota() -> None:
            gke.region_quotas.update(
                {"PREEMPTIBLE_NVIDIA_T4_GPUS": (0.0, 0.0), "NVIDIA_T4_GPUS": (0.0, 0.0)}
            )
            gke.project_quotas["GPUS_ALL_REGIONS"] = (0.0, 0.0)

        def resource_labels() -> dict[str, str]:
            return dict(gke.pools["gpu-t4"]["config"].get("resourceLabels") or {})

        denied = "GKE requires container.clusters.update"
        yield Harness(
            gcp_cloud(server.url),
            gke,
            {"project": "proj"},
            _writes(server),
            deny,
            denied,
            stored_max,
            zero_quota,
            ("NVIDIA_T4_GPUS in us-central1", "GPUS_ALL_REGIONS"),
            "https://console.cloud.google.com/iam-admin/quotas?project=proj",
            lambda: gke.pools["gpu-t4"]["config"].pop("resourceLabels", None) and None,
            lambda: resource_labels().get("llmctl-managed-by") == "llmctl",
        )


def _azure() -> Iterator[Harness]:
    aks = FakeAks()
    with serve(aks.route) as server:
        action = "Microsoft.ContainerService/managedClusters/agentPools/write"

        def deny() -> None:
            aks.forbidden = action

        def stored_max() -> int:
            return int(aks.pools["gput4"]["properties"]["maxCount"])

        def zero_quota() -> None:
            shown = aks.usages["lowPriorityCores"][0]
            aks.usages["lowPriorityCores"] = (shown, 0.0, 0.0)

        def tags() -> dict[str, str]:
            return dict(aks.pools["gput4"]["properties"].get("tags") or {})

        cloud = azure_cloud(server.url)
        defaults = {"subscription": SUBSCRIPTION}
        yield Harness(
            cloud,
            aks,
            defaults,
            _writes(server),
            deny,
            f"Azure requires {action}",
            stored_max,
            zero_quota,
            ("Total Regional Spot vCPUs (lowPriorityCores)",),
            "az quota update --resource-name lowPriorityCores --scope "
            f"subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/eastus "
            "--limit-object value=8 --resource-type lowPriority",
            lambda: aks.pools["gput4"]["properties"].pop("tags", None) and None,
            lambda: tags().get("llmctl-managed-by") == "llmctl",
        )


HARNESSES = {CloudName.AWS: _aws, CloudName.GCP: _gcp, CloudName.AZURE: _azure}
